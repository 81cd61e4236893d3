"""Regenerate the figures of docs/pretrained.md (no network needed).

    python docs/figures/pretrained/make_figures.py

resize_modes.png: scikit-learn's china.jpg and flower.jpg (the course's ResNet-50 examples)
through cnnkit's three resize modes at 224 × 224, exactly as `cnnkit predict --resize` feeds
them to a model (before normalisation).

fashion_photos.png, and the accuracy it prints: Fashion-MNIST test images made to look like
shop photos (inverted to dark-on-light, enlarged 10×, placed off-centre on a noisy light-grey
background), then converted back by `cnnkit predict fashion`'s photo conversion and classified
by the shipped model, next to the same images given directly.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure  # no pyplot: no GUI backend, nothing global
from PIL import Image
from sklearn.datasets import load_sample_image

from cnnkit import create_model
from cnnkit.cli.predict import fashion_asset
from cnnkit.data.fashion_mnist import load_split
from cnnkit.data.image_io import load_image
from cnnkit.data.preprocess import Preprocess

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


def shop_photo(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 [28, 28] Fashion-MNIST image -> uint8 [420, 360, 3] dark-on-light "photo"."""
    big = np.asarray(Image.fromarray(255 - image).resize((280, 280), Image.BICUBIC), np.float32)
    canvas = np.full((420, 360), 225.0, np.float32)
    top, left = rng.integers(20, 120), rng.integers(20, 60)
    canvas[top : top + 280, left : left + 280] = big * (225 / 255)
    canvas += rng.normal(0, 4, canvas.shape)
    return np.repeat(np.clip(canvas, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def fashion_photos(out: Path, count: int = 500) -> None:
    test = load_split(None, "test").take(count, seed=1)
    model = create_model("hongong_cnn", weights=str(fashion_asset())).eval()
    pre = Preprocess.from_config(model.pretrained_info.preprocess_config())
    rng = np.random.default_rng(0)
    photos = [shop_photo(img[0].numpy(), rng) for img in test.images]
    with torch.no_grad():
        direct = model(test.images.float() / 255).argmax(1)
        converted = model(torch.stack([pre(p) for p in photos])).argmax(1)
    acc_direct = float((direct == test.labels).float().mean())
    acc_photo = float((converted == test.labels).float().mean())
    names = model.class_names
    fig = Figure(figsize=(12, 5.2))
    axes = fig.subplots(2, 6)
    for col in range(6):
        axes[0, col].imshow(photos[col])
        axes[0, col].set_title(f"photo: {names[int(test.labels[col])]}", fontsize=10)
        axes[1, col].imshow(pre.pixels(photos[col])[..., 0], cmap="gray", vmin=0, vmax=255)
        axes[1, col].set_title(f"28×28 → {names[int(converted[col])]}", fontsize=10)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(
        f"cnnkit predict fashion: {count} simulated shop photos {acc_photo:.1%} right "
        f"(the same test images given directly: {acc_direct:.1%})",
        fontsize=12,
    )
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    print(f"{out}: simulated photos {acc_photo:.4f}, direct {acc_direct:.4f} on {count} test images")


if __name__ == "__main__":
    resize_modes(HERE / "resize_modes.png")
    print(HERE / "resize_modes.png")
    fashion_photos(HERE / "fashion_photos.png")
