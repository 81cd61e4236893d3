"""Does an ImageNet backbone help with few labels? EfficientNet-Lite0 on real Fashion-MNIST.

For 10, 50 and 200 labelled training images per class (drawn with each seed; 80 % train, 20 %
validation for early stopping, the smaller sets nested in the larger), every arm is scored on
all 10,000 Fashion-MNIST test images:

- ``finetune``: efficientnet_lite0 with its ImageNet weights (``cnnkit[imagenet]``) and a new
  head, trained the course's way with ``cnnkit.tasks.finetune.finetune``: base frozen, head
  trained at 1e-3, then every layer at 1e-4;
- ``linear``: a linear classifier (scikit-learn's logistic regression) on the frozen ImageNet
  features (1280 pooled maps), computed once per image;
- ``effnet_scratch``: the same architecture, freshly initialised, trained with the same loop;
- ``cnn_scratch``: the course CNN (``hongong_cnn``, 28 × 28) from scratch.

The 28 × 28 images are upsized to --size (48 px by default: the linear probe on 500 images gave
71 % at 32 px, 78 % at 48 and 79 % at 64 and 96) and repeated to 3 channels for EfficientNet.
Training lengths are set in optimizer steps, so a smaller set gets more epochs.

Run (one command; results.json is rewritten after every cell, and a second run skips the
cells already there)::

    nice -n 10 python scripts/transfer_imagenet.py --out runs/transfer-imagenet

It prints a Markdown table (mean ± std over the seeds, mean wall time per cell). Parts can run
as separate processes, each with its own --out below one folder (``--methods linear``;
``--labels 10 --seed 0 --methods finetune effnet_scratch cnn_scratch`` ...); then
``--table --out FOLDER`` prints the table of all of them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cnnkit.data import ArrayDataset, load_fashion_mnist
from cnnkit.engine import EarlyStopping, pick_device
from cnnkit.engine.perf import pick_num_threads, set_threads
from cnnkit.models import create_model
from cnnkit.runs.folder import machine_info, versions
from cnnkit.runs.pretrained import pretrained_model
from cnnkit.tasks.classify.task import ClassifyTrainer
from cnnkit.tasks.finetune import finetune

BACKBONE = "efficientnet_lite0"
WEIGHTS = "IMAGENET1K"
COURSE_CNN = "hongong_cnn"
# The weights' own normalisation: (x - 127.5) / 127.5.
TF_NORMALIZE = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
METHODS = ("finetune", "linear", "effnet_scratch", "cnn_scratch")


def upsized(data: ArrayDataset, size: int) -> ArrayDataset:
    """The images resized to size × size (bilinear, antialiased) and repeated to 3 channels."""
    chunks = []
    for start in range(0, len(data), 1000):
        x = data.images[start : start + 1000].float()
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        chunks.append(x.round().clamp(0, 255).to(torch.uint8).repeat(1, 3, 1, 1))
    return ArrayDataset(torch.cat(chunks), data.labels, data.class_names, f"{data.name}-{size}px")


def labelled_split(labels: torch.Tensor, per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, validation) indices: the first ``per_class`` of each class in a seeded order
    (so 10 ⊂ 50 ⊂ 200 for one seed), 80 % of each class for training."""
    generator = torch.Generator().manual_seed(seed)
    train, val = [], []
    n_train = round(0.8 * per_class)
    for cls in range(int(labels.max()) + 1):
        index = torch.nonzero(labels == cls).flatten()
        chosen = index[torch.randperm(len(index), generator=generator)][:per_class]
        train.append(chosen[:n_train])
        val.append(chosen[n_train:])
    return torch.cat(train), torch.cat(val)


def epochs_for(steps: int, n: int, batch_size: int) -> int:
    return max(1, math.ceil(steps / math.ceil(n / batch_size)))


@torch.inference_mode()
def imagenet_features(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 250) -> np.ndarray:
    """Pooled ImageNet features, Tensor[N, 3, H, W] uint8 -> float array [N, 1280]."""
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in TF_NORMALIZE)
    out = []
    for start in range(0, len(images), batch_size):
        x = (images[start : start + batch_size].float() / 255 - mean) / std
        out.append(model.forward_head(model.forward_features(x), pre_logits=True))
    return torch.cat(out).numpy()


def linear_probe(train: np.ndarray, y_train, val: np.ndarray, y_val, test: np.ndarray, y_test) -> dict:
    """Logistic regression on standardised features; C picked on the validation images."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    best = None
    for c in (0.01, 0.1, 1.0):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000))
        clf.fit(train, y_train)
        score = clf.score(val, y_val)
        if best is None or score > best[0]:
            best = (score, c, clf)
    _, c, clf = best
    return {"accuracy": float(clf.score(test, y_test)), "C": c}


def run_cell(method: str, per_class: int, seed: int, data: dict, args: argparse.Namespace) -> dict:
    """Train one arm on one labelled set and score it on the 10,000 test images."""
    train_idx, val_idx = data["split"][(per_class, seed)]
    big, small = data["big"], data["small"]
    torch.manual_seed(seed)
    if method == "linear":
        feats, labels = data["features"][seed], data["pool_labels"]
        return linear_probe(
            feats[train_idx.numpy()],
            labels[train_idx].numpy(),
            feats[val_idx.numpy()],
            labels[val_idx].numpy(),
            data["test_features"],
            data["test_big"].labels.numpy(),
        )
    source, test = (small, data["test_small"]) if method == "cnn_scratch" else (big, data["test_big"])
    train, val = source.subset(train_idx), source.subset(val_idx)
    if method == "finetune":
        model = pretrained_model(BACKBONE, WEIGHTS, 10)
        result = finetune(
            model,
            train,
            val,
            head_epochs=epochs_for(args.head_steps, len(train), args.batch_size),
            full_epochs=epochs_for(args.full_steps, len(train), args.batch_size),
            lr=1e-3,
            lr_factor=0.1,
            batch_size=args.batch_size,
            patience=args.patience,
            seed=seed,
            device=args.device,
            normalize=TF_NORMALIZE,
        )
        trainer, epochs = result.trainer, [result.head_epochs_run, result.full_epochs_run]
    else:
        name, steps = (
            (BACKBONE, args.scratch_steps) if method == "effnet_scratch" else (COURSE_CNN, args.cnn_steps)
        )
        model = create_model(name, num_classes=10)
        normalize = TF_NORMALIZE if method == "effnet_scratch" else None
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                # TensorFlow's momentum 0.99 needs ~500 steps to forget the initial statistics:
                # after 60 steps from scratch, eval mode would still use mostly mean 0, var 1.
                module.momentum = 0.1
        early = EarlyStopping("val_loss", patience=args.patience, restore_best_weights=True)
        trainer = ClassifyTrainer(
            model, lr=1e-3, callbacks=[early], device=args.device, seed=seed, normalize=normalize
        )
        trainer.fit(
            train, val, epochs=epochs_for(steps, len(train), args.batch_size), batch_size=args.batch_size
        )
        epochs = trainer.epoch
        if method == "effnet_scratch":
            recalibrate_batch_norm(model, train, trainer, args.batch_size)
    return {"accuracy": float(trainer.evaluate(test)["accuracy"]), "epochs": epochs}


@torch.no_grad()
def recalibrate_batch_norm(model: torch.nn.Module, train: ArrayDataset, trainer, batch_size: int) -> None:
    """Running statistics recomputed on the training images with the final weights.

    After a few dozen steps from scratch the running averages describe weights that no longer
    exist, and in eval mode EfficientNet's 49 batch norms then map every input to the same
    logits (10.00 % on all six 10- and 50-label cells before this was added)."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a cumulative average over all the batches below
    model.train()
    for start in range(0, len(train), batch_size):
        model(trainer.prepare(train.images[start : start + batch_size]))
    model.eval()


def table(cells: list[dict], seeds: int) -> str:
    lines = [
        "| labels per class | " + " | ".join(METHODS) + " |",
        "|---|" + "---|" * len(METHODS),
    ]
    for per_class in sorted({c["per_class"] for c in cells}):
        row = [f"{per_class}"]
        for method in METHODS:
            found = [c for c in cells if c["per_class"] == per_class and c["method"] == method]
            if not found:
                row.append("not run")
                continue
            acc = [100 * c["accuracy"] for c in found]
            spread = statistics.stdev(acc) if len(acc) > 1 else 0.0
            secs = statistics.mean(c["seconds"] for c in found)
            n = "" if len(found) == seeds else f", {len(found)} of {seeds} seeds"
            row.append(f"{statistics.mean(acc):.2f} ± {spread:.2f} % ({secs:.0f} s{n})")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--labels", type=int, nargs="+", default=[10, 50, 200], help="labels per class")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--seed", type=int, help="run only this one of the seeds (one process per seed)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--size", type=int, default=48, help="EfficientNet input side (default 48)")
    p.add_argument("--head-steps", type=int, default=40, help="finetune phase 1 optimizer steps")
    p.add_argument("--full-steps", type=int, default=40, help="finetune phase 2 optimizer steps")
    p.add_argument("--scratch-steps", type=int, default=60, help="EfficientNet from scratch steps")
    p.add_argument("--cnn-steps", type=int, default=200, help="course CNN from scratch steps")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--patience", type=int, default=1000, help="early stopping (default: keep the best)")
    p.add_argument("--threads", type=int, help="CPU threads (default: the cores others leave free)")
    p.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: best available)")
    p.add_argument("--limit-test", type=int, help="score on only N test images (quick tries)")
    p.add_argument("--out", default="runs/transfer-imagenet", help="where results.json goes")
    p.add_argument("--table", action="store_true", help="only print the table of --out/**/results.json")
    args = p.parse_args(argv)
    if args.table:
        found = sorted(Path(args.out).glob("**/results.json"))
        cells = [c for f in found for c in json.loads(f.read_text())["cells"]]
        print(table(cells, args.seeds))
        return 0
    args.device = pick_device(args.device)
    if args.device.type == "cpu":
        set_threads(args.threads or pick_num_threads())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_file = out / "results.json"
    previous = json.loads(results_file.read_text()) if results_file.is_file() else {}
    cells: list[dict] = previous.get("cells", [])
    done = {(c["per_class"], c["seed"], c["method"]) for c in cells}
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    load_before = os.getloadavg()

    train_all, test_all = load_fashion_mnist()
    if args.limit_test:
        test_all = test_all.take(args.limit_test, seed=0)
    data: dict = {"small": train_all, "test_small": test_all, "pool_labels": train_all.labels}
    seeds = range(args.seeds) if args.seed is None else [args.seed]
    pools = {seed: labelled_split(train_all.labels, max(args.labels), seed) for seed in seeds}
    data["split"] = {
        (k, seed): labelled_split(train_all.labels, k, seed)
        for k in args.labels
        for seed in range(args.seeds)
    }
    # Only the labelled images are ever upsized (the pool of the largest set, per seed).
    used = torch.unique(torch.cat([torch.cat(pools[s]) for s in pools]))
    start = time.perf_counter()
    big_used = upsized(train_all.subset(used), args.size)
    big_images = torch.zeros((len(train_all), 3, args.size, args.size), dtype=torch.uint8)
    big_images[used] = big_used.images
    data["big"] = ArrayDataset(big_images, train_all.labels, train_all.class_names, "fashion-mnist-up")
    data["test_big"] = upsized(test_all, args.size)
    if "linear" in args.methods:
        backbone = create_model(BACKBONE, weights=WEIGHTS).eval()
        data["test_features"] = imagenet_features(backbone, data["test_big"].images)
        data["features"] = {}
        for seed, (tr, va) in pools.items():
            index = torch.cat([tr, va])
            feats = np.zeros((len(train_all), backbone.num_features), dtype=np.float32)
            feats[index.numpy()] = imagenet_features(backbone, data["big"].images[index])
            data["features"][seed] = feats
    prep_seconds = time.perf_counter() - start
    print(f"data and frozen features ready in {prep_seconds:.0f} s", file=sys.stderr, flush=True)

    for per_class in args.labels:
        for seed in range(args.seeds) if args.seed is None else [args.seed]:
            for method in args.methods:
                if (per_class, seed, method) in done:
                    continue
                t0 = time.perf_counter()
                cell = run_cell(method, per_class, seed, data, args)
                cell.update(per_class=per_class, seed=seed, method=method, seconds=time.perf_counter() - t0)
                cell["load_average"] = os.getloadavg()[0]
                cells.append(cell)
                print(
                    f"{per_class:>3}/class seed {seed} {method:<15} {100 * cell['accuracy']:.2f} % "
                    f"({cell['seconds']:.0f} s, load {cell['load_average']:.1f})",
                    file=sys.stderr,
                    flush=True,
                )
                results = {
                    "command": " ".join(["scripts/transfer_imagenet.py", *(argv or sys.argv[1:])]),
                    "settings": {k: (str(v) if k == "device" else v) for k, v in vars(args).items()},
                    "cells": cells,
                    "prep_seconds": prep_seconds,
                    "started": previous.get("started", started),
                    "updated": time.strftime("%Y-%m-%d %H:%M %Z"),
                    "load_average_before": previous.get("load_average_before", load_before),
                    "torch_threads": torch.get_num_threads(),
                    "versions": versions(),
                    "machine": machine_info(args.device),
                }
                results_file.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(table(cells, args.seeds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
