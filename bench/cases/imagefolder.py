"""Training on an image folder: cnnkit's pipeline against a plain torchvision script.

The folder: Fashion-MNIST test items written as 96 × 96 grayscale PNGs, ``train/<class>/`` and
``test/<class>/`` (the held-out split). Both sides train torchvision's ResNet-18 layout from the
same saved initial state dict (cnnkit's ``resnet18`` loads it unchanged), Adam 1e-3, batch 64,
random horizontal flips, ImageNet normalisation, for the same number of epochs, evaluating the
held-out split after each epoch:

- plain: ``datasets.ImageFolder`` + ``transforms`` (RandomHorizontalFlip, ToTensor, Normalize) +
  ``DataLoader(num_workers=2)``, FP32, NCHW, in a fresh process (a plain script's conditions);
- cnnkit: the folder decoded once into the uint8 cache (``load_image_folder``, as ``cnnkit train
  --data DIR`` and ``cnnkit finetune --data DIR`` load it), flips and normalisation on whole
  batches, bf16 autocast and channels-last where the CPU has native bf16 (``pick_perf_settings``:
  the speed settings of ``finetune --precision auto`` and ``train --preset fast``), in this process.

Rows: training img/s (training steps only), the ratio, and the wall time from the start of each
pipeline (dataset construction or decoding included) to the stated held-out accuracy. Decode
rows: files/s of Pillow, ``torchvision.io.decode_png``, cnnkit's safe decoder one file at a time
and ``load_image_folder`` (its worker processes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from measure import load

from ._common import Context, _flops, _row, _with_threads

SIZE = 96
BATCH = 64
LR = 1e-3
TARGET = 0.75  # held-out accuracy the time-to-accuracy rows are measured to (every epoch is kept too)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
PLAIN_WORKERS = 2


def write_folder(root: Path, n_train: int, n_test: int, size: int = SIZE) -> Path:
    """Fashion-MNIST test items as ``size``-px PNGs: root/train/<label>/, root/test/<label>/."""
    from PIL import Image

    from cnnkit.data import load_fashion_mnist

    _, test = load_fashion_mnist()
    for split, indices in (("train", range(n_train)), ("test", range(n_train, n_train + n_test))):
        for i in indices:
            folder = root / split / str(int(test.labels[i]))
            folder.mkdir(parents=True, exist_ok=True)
            image = Image.fromarray(test.images[i, 0].numpy()).resize((size, size), Image.BILINEAR)
            image.save(folder / f"{i:05d}.png")
    return root


def _time_to(history: list[dict[str, float]], target: float) -> float | None:
    return next((row["elapsed_s"] for row in history if row["accuracy"] >= target), None)


def plain_imagefolder(root: str, epochs: int, init: str) -> dict[str, Any]:
    """The plain script (run in a fresh process by ``python -m cases --imagefolder ROOT``)."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, models, transforms

    start = time.perf_counter()
    normalize = transforms.Normalize(MEAN, STD)
    train_tf = transforms.Compose([transforms.RandomHorizontalFlip(), transforms.ToTensor(), normalize])
    test_tf = transforms.Compose([transforms.ToTensor(), normalize])
    train = datasets.ImageFolder(os.path.join(root, "train"), train_tf)
    test = datasets.ImageFolder(os.path.join(root, "test"), test_tf)
    train_loader = DataLoader(train, batch_size=BATCH, shuffle=True, num_workers=PLAIN_WORKERS)
    test_loader = DataLoader(test, batch_size=256, num_workers=PLAIN_WORKERS)
    torch.manual_seed(0)
    model = models.resnet18(num_classes=10)
    model.load_state_dict(torch.load(init, weights_only=True))
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    history = []
    for _ in range(epochs):
        model.train()
        t = time.perf_counter()
        for xb, yb in train_loader:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
        train_s = time.perf_counter() - t
        model.eval()
        correct = 0
        with torch.no_grad():
            for xb, yb in test_loader:
                correct += int((model(xb).argmax(1) == yb).sum())
        history.append(
            {
                "train_s": train_s,
                "accuracy": correct / len(test),
                "elapsed_s": time.perf_counter() - start,
            }
        )
    return {"history": history, "train_images": len(train), "threads": torch.get_num_threads()}


def _plain_subprocess(root: Path, epochs: int, init: Path, threads: int) -> dict[str, Any]:
    bench = str(Path(__file__).resolve().parents[1])
    argv = [sys.executable, "-m", "cases", "--plain", str(threads), "--imagefolder", str(root)]
    argv += ["--epochs", str(epochs), "--init", str(init)]
    path = os.pathsep.join(p for p in (bench, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "CNNKIT_TUNE_MALLOC": "0"}
    out = subprocess.run(argv, capture_output=True, text=True, check=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def _cnnkit_run(ctx: Context, root: Path, epochs: int, init: Path) -> dict[str, Any]:
    from cnnkit import create_model
    from cnnkit.data.folders import load_image_folder
    from cnnkit.engine.callbacks import Callback
    from cnnkit.tasks.classify.augment import random_flip
    from cnnkit.tasks.classify.task import ClassifyTrainer

    class Clock(Callback):
        def __init__(self) -> None:
            self.rows: list[dict[str, float]] = []

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any]) -> None:
            self.begin = self.last = time.perf_counter()

        def on_batch_end(self, step: int, logs: dict[str, Any]) -> None:
            self.last = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
            self.rows.append(
                {
                    "train_s": self.last - self.begin,
                    "accuracy": logs["val_accuracy"],
                    "elapsed_s": time.perf_counter() - start,
                }
            )

    start = time.perf_counter()
    train = load_image_folder(root / "train", SIZE, channels=3).data
    test = load_image_folder(root / "test", SIZE, channels=3).data
    decode_s = time.perf_counter() - start
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=10)
    model.load_state_dict(torch.load(init, weights_only=True))
    clock = Clock()
    trainer = ClassifyTrainer(
        model,
        optimizer="adam",
        lr=LR,
        device=ctx.device,
        seed=0,
        amp=ctx.perf.amp,
        channels_last=ctx.perf.channels_last,
        normalize=(MEAN, STD),
        augment=random_flip,
        callbacks=[clock],
    )
    trainer.fit(train, test, epochs=epochs, batch_size=BATCH, verbose=0)
    return {"history": clock.rows, "train_images": len(train), "decode_s": decode_s}


def _decode_rows(ctx: Context, root: Path) -> list[dict]:
    import numpy as np
    import torchvision.io as tvio
    from PIL import Image

    from cnnkit.data.decode_pool import decode_workers
    from cnnkit.data.folders import FileDecoder, load_image_folder
    from cnnkit.data.image_io import ALLOWED_FORMATS, MAX_FILE_BYTES, MAX_PIXELS

    files = sorted((root / "train").rglob("*.png"))
    limits = (MAX_FILE_BYTES, MAX_PIXELS, ALLOWED_FORMATS)
    safe = FileDecoder((SIZE, SIZE), 3, "crop", (255, 255, 255), 0, *limits)
    ways = {
        "pil": lambda: [np.asarray(Image.open(p).convert("RGB")) for p in files],
        "torchvision_io": lambda: [
            tvio.decode_png(tvio.read_file(str(p)), mode=tvio.ImageReadMode.RGB) for p in files
        ],
        "cnnkit_safe_1proc": lambda: [safe((p, 0)) for p in files],
        "cnnkit_cache": lambda: load_image_folder(root / "train", SIZE, channels=3),
    }
    rows = []
    for name, fn in ways.items():
        before = load()
        workers = decode_workers() if name == "cnnkit_cache" else 1  # what the call below picks
        t = time.perf_counter()
        fn()
        seconds = time.perf_counter() - t
        rows.append(
            _row(
                f"imagefolder_decode[{name}]",
                len(files),
                seconds,
                0.0,
                ctx,
                load=[before, load()],
                workers=workers,
                note=f"{SIZE}px grayscale PNG files to RGB uint8 per second",
            )
        )
    return rows


def imagefolder(ctx: Context) -> list[dict]:
    """Plain torchvision ImageFolder + DataLoader script vs cnnkit on the same PNG folder."""
    from torchvision import models

    n_train, n_test, epochs = (600, 200, 1) if ctx.quick else (3_000, 1_000, 3)
    threads = ctx.perf.num_threads or torch.get_num_threads()
    fl = _flops("resnet18", num_classes=10, input_shape=(3, SIZE, SIZE))
    with tempfile.TemporaryDirectory(prefix="cnnkit-imagefolder-") as tmp:
        root = write_folder(Path(tmp), n_train, n_test)
        torch.manual_seed(0)
        init = root / "init.pt"
        torch.save(models.resnet18(num_classes=10).state_dict(), init)
        rows = _decode_rows(ctx, root)
        before = load()
        plain = _plain_subprocess(root, epochs, init, threads)
        mid = load()
        with _with_threads(threads):
            fast = _cnnkit_run(ctx, root, epochs, init)
        after = load()
    results = {"plain": plain, "cnnkit": fast}
    rates = {}
    for label, result in results.items():
        train_s = sum(row["train_s"] for row in result["history"])
        images = result["train_images"] * len(result["history"])
        rates[label] = images / train_s
        rows.append(
            _row(
                f"imagefolder_train[{label}]",
                images,
                train_s,
                fl["train"],
                ctx,
                epochs=len(result["history"]),
                batch_size=BATCH,
                threads=result.get("threads", threads),
                amp=ctx.perf.amp if label == "cnnkit" else None,
                channels_last=ctx.perf.channels_last if label == "cnnkit" else False,
                loader_workers=PLAIN_WORKERS if label == "plain" else 0,
                heldout_accuracy=[round(row["accuracy"], 4) for row in result["history"]],
                wall_s=[round(row["elapsed_s"], 1) for row in result["history"]],
                target_accuracy=TARGET,
                wall_to_target=_time_to(result["history"], TARGET),
                decode_s=round(result["decode_s"], 2) if "decode_s" in result else None,
                load=[before, mid, after],
                note="img/s of the training steps; wall_s from the pipeline's start (decoding "
                "or dataset construction included) to the end of each epoch's held-out evaluation",
            )
        )
    rows[-1]["x_plain"] = round(rates["cnnkit"] / rates["plain"], 2)
    return rows
