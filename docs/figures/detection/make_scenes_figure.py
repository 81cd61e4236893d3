"""Regenerate docs/figures/detection/fashion_scenes.png (run from the repository root)."""

import torch

from cnnkit.data.scenes import FashionScenes
from cnnkit.tasks.detection.draw import PALETTE, draw_detections, grid, save_png

scenes = FashionScenes(split="test", num_images=4, canvas=96, max_objects=4, clutter=2, noise=6).generate()
tiles = []
for i in range(4):
    t = scenes.target(i)
    tiles.append(draw_detections(scenes.images[i], t["boxes"], t["labels"], scenes.class_names))
    colours = torch.tensor([(0, 0, 0), *PALETTE], dtype=torch.uint8)  # 0 = background
    semantic = colours[scenes.semantic_mask(i)].permute(2, 0, 1)
    tiles.append(draw_detections(semantic, t["boxes"][:0], t["labels"][:0], scenes.class_names))
save_png(grid(tiles, columns=4), "docs/figures/detection/fashion_scenes.png")
