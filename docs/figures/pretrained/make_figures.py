"""Regenerate the figures of docs/pretrained.md (no network needed).

    python docs/figures/pretrained/make_figures.py

resize_modes.png: scikit-learn's china.jpg and flower.jpg (the course's ResNet-50 examples)
through cnnkit's three resize modes at 224 × 224, exactly as `cnnkit predict --resize` feeds
them to a model (before normalisation).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from matplotlib.figure import Figure  # no pyplot: no GUI backend, nothing global
from PIL import Image
from sklearn.datasets import load_sample_image

from cnnkit.data.images import Preprocess, load_image

HERE = Path(__file__).resolve().parent
MODES = [
    ("resize", "resize: stretched, nothing cut"),
    ("crop", "crop: centre crop, then resize"),
    ("pad", "pad: letterbox, nothing cut"),
]


def resize_modes(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        fig = Figure(figsize=(13, 6.8))
        axes = fig.subplots(2, 4, gridspec_kw={"width_ratios": [1.5, 1, 1, 1]})
        for row, name in enumerate(("china.jpg", "flower.jpg")):
            path = Path(tmp) / name
            Image.fromarray(load_sample_image(name)).save(path, quality=95)
            original = load_image(path)
            axes[row, 0].imshow(original)
            axes[row, 0].set_ylabel(f"{name}\n{original.shape[1]}×{original.shape[0]}", fontsize=11)
            for col, (mode, _) in enumerate(MODES, start=1):
                axes[row, col].imshow(Preprocess(size=(224, 224), resize=mode).pixels(path))
        axes[0, 0].set_title("original", fontsize=11)
        for col, (_, title) in enumerate(MODES, start=1):
            axes[0, col].set_title(f"{title}\n224×224", fontsize=11)
        for ax in axes.flat:
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle("cnnkit predict --resize {resize,crop,pad}: what the model sees", fontsize=12)
        fig.tight_layout()
        fig.savefig(out, dpi=80)


if __name__ == "__main__":
    resize_modes(HERE / "resize_modes.png")
    print(HERE / "resize_modes.png")
