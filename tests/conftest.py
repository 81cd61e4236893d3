"""Shared fixtures: the real Fashion-MNIST, loaded once per test session."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from cnnkit.data import ArrayDataset, load_fashion_mnist

# Runs the suite compares bit for bit keep the thread count they start with: adaptive threads
# (engine/threads.py) follow the load of the moment. tests/engine/test_adaptive_threads.py turns them on.
os.environ.setdefault("CNNKIT_ADAPTIVE_THREADS", "0")


@pytest.fixture(scope="session")
def fashion() -> tuple[ArrayDataset, ArrayDataset]:
    """(train, test) of the real Fashion-MNIST (60,000 + 10,000 images)."""
    return load_fashion_mnist()


@pytest.fixture(scope="session")
def fashion_small(fashion) -> tuple[ArrayDataset, ArrayDataset]:
    """A class-balanced real subset: 2,000 training and 500 test images."""
    train, test = fashion
    return train.take(2000, seed=0), test.take(500, seed=0)


@pytest.fixture(scope="session")
def write_fashion_folders(fashion):
    """Builder of image folders made of REAL Fashion-MNIST test items (PNG, every 4th one JPEG).

    ``write(root, per_class)`` takes the first ``per_class`` test items of each class, cut per
    class into 70 % train, 10 % val and 20 % test, and writes ``root/idx`` (the same items as IDX
    files: train + val as ``train-images``, test as ``t10k-images``), ``root/splits`` (``train/``,
    ``val/``, ``test/`` of class folders) and ``root/flat`` (one folder per class, all items).
    Class folders are named ``0_T-shirt-top``... so their sorted order is the label order.
    Returns ``{"idx", "splits", "flat": Path, "items": {split: [(test index, file name)]}}``.
    """
    import numpy as np
    import torch
    from PIL import Image

    from cnnkit.data import write_idx

    _, test = fashion

    def write(root, per_class: int = 100):
        folders = {name: root / name for name in ("idx", "splits", "flat")}
        names = [f"{c}_{n.replace('/', '-')}" for c, n in enumerate(test.class_names)]
        n_train, n_val = round(per_class * 0.7), round(per_class * 0.1)
        items = {"train": [], "val": [], "test": []}
        for c in range(len(names)):
            idx = torch.nonzero(test.labels == c).flatten()[:per_class].tolist()
            for k, i in enumerate(idx):
                split = "train" if k < n_train else "val" if k < n_train + n_val else "test"
                ext = ".jpg" if k % 4 == 3 else ".png"
                file = f"{i:05d}{ext}"
                items[split].append((i, names[c] + "/" + file))
                image = Image.fromarray(test.images[i, 0].numpy())
                for folder in (folders["splits"] / split / names[c], folders["flat"] / names[c]):
                    folder.mkdir(parents=True, exist_ok=True)
                    image.save(folder / file, **({"quality": 95} if ext == ".jpg" else {}))
        folders["idx"].mkdir(parents=True)
        for prefix, splits in (("train", ("train", "val")), ("t10k", ("test",))):
            index = torch.tensor([i for s in splits for i, _ in items[s]])
            write_idx(folders["idx"] / f"{prefix}-images-idx3-ubyte.gz", test.images[index, 0].numpy())
            write_idx(
                folders["idx"] / f"{prefix}-labels-idx1-ubyte.gz", test.labels[index].numpy().astype(np.uint8)
            )
        return {**folders, "items": items}

    return write


# One epoch on 16 tiny FashionScenes canvases (32 x 32): the tiny scene runs of the tests.
TINY_SCENES = ["--canvas", "32", "--item-sizes", "12,24", "--train-images", "16", "--limit-test", "4",
               "--epochs", "1", "--batch-size", "8", "--no-progress"]  # fmt: skip
TINY_SCENE_RUNS = {
    "localize": ["train", "--task", "localize", "--head-width", "16", *TINY_SCENES],
    "maskrcnn": ["train", "--task", "segment", "--head", "maskrcnn", "--model", "hongong_cnn", *TINY_SCENES],
}


def _tiny_scene_run(tmp_path_factory, kind: str):
    from cnnkit.cli.__main__ import main

    root = tmp_path_factory.mktemp(f"tiny-{kind}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CNNKIT_CACHE", str(root / "cache"))  # the generated scenes stay in the test's folder
        assert main([*TINY_SCENE_RUNS[kind], "--out", str(root / f"{kind}-run")]) == 0
    return root / f"{kind}-run"


@pytest.fixture(scope="session")
def localize_run_dir(tmp_path_factory):
    """A real localization run (TINY_SCENE_RUNS), trained once per session; read it, do not change it."""
    return _tiny_scene_run(tmp_path_factory, "localize")


@pytest.fixture(scope="session")
def maskrcnn_run_dir(tmp_path_factory):
    """A real Mask R-CNN run on hongong_cnn (TINY_SCENE_RUNS), trained once per session; read it,
    do not change it."""
    return _tiny_scene_run(tmp_path_factory, "maskrcnn")


@pytest.fixture(scope="session")
def fashion_onnx(tmp_path_factory):
    """The shipped course model exported by `cnnkit export` (parity-checked on 500 test images)."""
    from cnnkit.cli.__main__ import main

    path = tmp_path_factory.mktemp("export") / "fashion.onnx"
    assert main(["export", "fashion", "--out", str(path), "--check-images", "500"]) == 0
    return path


@pytest.fixture(scope="module")
def one_intra_op_thread():
    """One intra-op thread for a module: on shared, busy cores a second OpenMP thread only waits
    (10x slower). Use it from an autouse fixture of a module or folder."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class _NanAt:
    """Wraps a loss function: its total becomes NaN at call ``step`` (from 1)."""

    def __init__(self, loss_fn, step: int) -> None:
        self.loss_fn, self.step, self.calls = loss_fn, step, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        total, parts = self.loss_fn(*args, **kwargs)
        return (total * float("nan") if self.calls == self.step else total), parts


@pytest.fixture
def nan_at():
    """``nan_at(loss_fn, step)``: the loss function whose total becomes NaN at call ``step``."""
    return _NanAt


def _tile_cells(png, fig, dpi: float) -> list[np.ndarray]:
    """The PNG's RGB at the centre of every cell of every image tile of ``fig``, tile by tile."""
    pixels = np.asarray(Image.open(png).convert("RGB")).astype(float)
    fig.set_dpi(dpi)
    fig.canvas.draw()  # the layout at the file's resolution
    assert pixels.shape[:2] == (round(fig.bbox.height), round(fig.bbox.width))
    out = []
    for ax in fig.axes:
        for image in ax.get_images():
            rows, cols = image.get_array().shape[:2]
            box = ax.get_window_extent()
            xs = box.x0 + (np.arange(cols) + 0.5) * box.width / cols
            ys = pixels.shape[0] - (box.y1 - (np.arange(rows) + 0.5) * box.height / rows)  # row 0 on top
            out.append(pixels[np.floor(ys).astype(int)][:, np.floor(xs).astype(int)])
    return out


@pytest.fixture
def tile_cells():
    """``tile_cells(png, fig, dpi)``: the saved PNG's RGB at the centre of every cell of every
    image of ``fig`` (the figure behind the file, kept by the test), one array per image."""
    return _tile_cells


def _overlay_reference(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """A segmentation overlay computed in NumPy: the grey ``image`` [H, W] as RGB, each pixel of
    class k > 0 in ``labels`` [H, W] blended with matplotlib's k-th strong tab20 hue, 55 % opaque
    (the documented colours: black background, then the even entries of tab20)."""
    from matplotlib import colormaps

    colours = np.array([(0.0, 0.0, 0.0), *colormaps["tab20"].colors[0:20:2]]) * 255
    grey = np.repeat(np.asarray(image, dtype=float)[..., None], 3, axis=2)
    return np.where(labels[..., None] > 0, 0.45 * grey + 0.55 * colours[labels], grey)


@pytest.fixture
def overlay_reference():
    """``overlay_reference(image, labels)``: what `cnnkit segment` should paint, in NumPy."""
    return _overlay_reference


def _drawn_boxes(picture, image, found, scale, truth=()) -> int:
    """Check a picture of `cnnkit detect` (or a tile of samples.png) against its inputs, in NumPy.

    ``picture`` uint8 [H*scale, W*scale, 3]; ``image`` uint8 [H, W]; ``found`` the detections as
    `cnnkit detect` prints them (``box`` xyxy in ``image``'s pixels to ±0.05, ``label``, ``class``,
    ``score``), drawn in this order 2 px wide inside the box's corners × ``scale`` (truncated to
    whole pixels) in matplotlib's tab10 colour of the label (its grey moved last), with a
    "class score" label (``max(10, 3 * scale)`` px) filled in at the top left; ``truth`` boxes
    1 px wide, white, under them. Checks that every pixel away from all boxes and labels is
    ``image``'s (enlarged nearest-neighbour), that the last box's bottom and right edges (on top
    of everything, below its own label) are in its colour, and the true boxes' outlines where no
    prediction covers them are white. Returns how many pixels were checked as the image's."""
    from matplotlib import colormaps

    tab10 = np.array(colormaps["tab10"].colors) * 255
    palette = tab10[[0, 1, 2, 3, 4, 5, 6, 8, 9, 7]]  # grey last: it stays apart on grey images
    boxes = [d["box"] for d in found]
    colours = [palette[d["label"] % 10] for d in found]
    texts = [f"{d['class']} {d['score']:.2f}" for d in found]
    font_size = max(10, 3 * scale)
    picture = np.asarray(picture, dtype=float)
    enlarged = np.repeat(np.repeat(np.asarray(image, dtype=float), scale, 0), scale, 1)
    assert picture.shape == (*enlarged.shape, 3)
    free = np.ones(enlarged.shape, bool)
    covered = np.zeros(enlarged.shape, bool)  # by a predicted box or its label
    d = 0.05 * scale  # the printed boxes' rounding, in picture pixels
    for (x1, y1, x2, y2), text in zip(np.asarray(boxes, float) * scale, texts):
        # DejaVu Sans: no character is wider than 0.75 em on average over a label, nor 2 em tall.
        right, bottom = max(x2, x1 + 0.75 * font_size * len(text)), max(y2, y1 + 2 * font_size)
        area = np.s_[max(int(y1 - d), 0) : int(bottom + d) + 1, max(int(x1 - d), 0) : int(right + d) + 1]
        free[area], covered[area] = False, True
    for x1, y1, x2, y2 in (np.asarray(truth, float).reshape(-1, 4) * scale).astype(int):
        outline = np.zeros_like(free)
        outline[y1 : y2 + 1, x1 : x2 + 1] = True
        outline[y1 + 1 : y2, x1 + 1 : x2] = False
        free &= ~outline
        shown = outline & ~covered
        assert shown.sum() > 0 and (picture[shown] == 255).all(), "the true box is drawn in white"
    np.testing.assert_allclose(picture[free], np.repeat(enlarged[free][:, None], 3, 1), atol=2)
    if len(boxes):
        x1, y1, x2, y2 = np.asarray(boxes[-1], float) * scale
        row, col = int(np.floor(y2 - d)), int(np.floor(x2 - d))  # drawn whatever the rounding
        below_label = int(y1 + d) + 2 * font_size
        shown = [picture[below_label : row - 1, col]]
        if row > below_label:
            shown.append(picture[row, int(x1 + d) + 3 : col - 1])
        shown = np.concatenate(shown)
        assert len(shown) > 0 and (np.abs(shown - colours[-1]) <= 2).all(), "the last box's outline"
    return int(free.sum())


@pytest.fixture
def drawn_boxes():
    """``drawn_boxes(picture, image, found, scale, truth=())``: see ``_drawn_boxes``; the number
    of pixels checked as the image's."""
    return _drawn_boxes
