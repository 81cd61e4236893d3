"""Shared fixtures: the real Fashion-MNIST, loaded once per test session."""

from __future__ import annotations

import os

import pytest

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
