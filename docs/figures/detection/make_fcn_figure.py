"""Regenerate docs/figures/detection/fcn_score_maps.png (run from the repository root).

Usage: python docs/figures/detection/make_fcn_figure.py RUN
RUN is a classification run of hongong_cnn on 28×28 Fashion-MNIST, e.g. made by
`cnnkit train --model hongong_cnn --data fashion-mnist --out runs/hongong`.
"""

import sys

import torch
import torch.nn.functional as F

from cnnkit import create_model
from cnnkit.data.scenes import FashionScenes
from cnnkit.tasks.detection.draw import PALETTE, draw_detections, grid, save_png
from cnnkit.tasks.fully_conv import to_fully_convolutional

model = create_model("hongong_cnn", weights=sys.argv[1]).eval()
fcn = to_fully_convolutional(model).eval()
scenes = FashionScenes(
    split="test", num_images=4, canvas=96, max_objects=3, min_size=28, max_size=28
).generate()
colours = torch.tensor([(40, 40, 40), *PALETTE], dtype=torch.float32)
tiles = []
with torch.no_grad():
    probs = fcn(scenes.images.float() / 255).softmax(1)  # [4, 10, 18, 18]
for i in range(len(scenes)):
    t = scenes.target(i)
    tiles.append(draw_detections(scenes.images[i], t["boxes"], t["labels"], scenes.class_names))
    confidence, label = probs[i].max(0)
    # Cell (r, c) looks at the 28×28 window at (4r, 4c); paint the window's centre 4×4 block.
    cells = torch.where(confidence > 0.9, label + 1, torch.zeros_like(label))
    painted = colours[cells].permute(2, 0, 1)[None]
    painted = F.pad(F.interpolate(painted, scale_factor=4, mode="nearest"), (12, 12, 12, 12), value=40.0)
    tiles.append(
        draw_detections(
            painted[0].round().to(torch.uint8), t["boxes"][:0], t["labels"][:0], scenes.class_names
        )
    )
save_png(grid(tiles, columns=4), "docs/figures/detection/fcn_score_maps.png")
