"""Write FashionScenes test images as PNG files, inputs for `cnnkit detect` (docs/detection.md).

Usage (from the repository root): python docs/figures/detection/export_test_scenes.py OUT_DIR [N]
Scenes 0..N-1 of the test split with `cnnkit train --task detect`'s default scene settings:
the first test images of every detection run.
"""

import sys
from pathlib import Path

from PIL import Image

from cnnkit.data.scenes import FashionScenes

out, count = Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 4
out.mkdir(parents=True, exist_ok=True)
scenes = FashionScenes(split="test", num_images=count, canvas=96, min_objects=1, max_objects=4).generate()
for i in range(count):
    Image.fromarray(scenes.images[i, 0].numpy()).save(out / f"scene{i}.png")
    print(out / f"scene{i}.png")
