"""The plain PyTorch reference loop, measured in a fresh process (``python -m cases --plain N``)."""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from measure import load

from ._common import EPOCH_TRAIN, EPOCH_VAL, Context, _flops, _row


def plain_course_cnn() -> torch.nn.Module:
    """The course CNN as a tutorial writes it: torch.nn layers only (PyTorch's own conv, max-pool
    and linear kernels, none of cnnkit's layers), same architecture and parameter count as
    ``create_model("hongong_cnn")``."""
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding="same"),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding="same"),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 100),
        nn.ReLU(),
        nn.Dropout(0.4),
        nn.Linear(100, 10),
    )


def _plain_epoch(ctx: Context, train_n: int, val_n: int, budget_s: float) -> tuple[float, int, float, int]:
    """A typical tutorial loop: TensorDataset + DataLoader, batch 32, eager, NCHW, FP32, Adam.

    Runs up to ``train_n`` / ``val_n`` images, each part stopping early after ``budget_s``
    seconds (a busy machine can make the plain loop very slow).

    Returns:
        (train seconds, train images, val seconds, val images).
    """
    x = ctx.train.images[:train_n].float().div(255)
    y = ctx.train.labels[:train_n]
    model = plain_course_cnn().to(ctx.device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)
    model.train()
    seen = 0
    start = time.perf_counter()
    for xb, yb in loader:
        xb, yb = xb.to(ctx.device), yb.to(ctx.device)
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        seen += len(yb)
        if time.perf_counter() - start > budget_s:
            break
    train_s = time.perf_counter() - start
    xv = ctx.val.images[:val_n].float().div(255)
    model.eval()
    val_seen = 0
    start = time.perf_counter()
    with torch.no_grad():
        for (xb,) in DataLoader(TensorDataset(xv), batch_size=32):
            model(xb.to(ctx.device))
            val_seen += len(xb)
            if time.perf_counter() - start > budget_s / 4:
                break
    return train_s, seen, time.perf_counter() - start, val_seen


def _plain_infer(ctx: Context, n: int, budget_s: float) -> tuple[float, int]:
    model = plain_course_cnn().to(ctx.device).eval()
    x = ctx.test.images[:n].float().div(255)
    seen = 0
    start = time.perf_counter()
    with torch.no_grad():
        for (xb,) in DataLoader(TensorDataset(x), batch_size=32):
            model(xb.to(ctx.device))
            seen += len(xb)
            if time.perf_counter() - start > budget_s:
                break
    return time.perf_counter() - start, seen


def plain_loop(quick: bool, tuned_malloc: bool = False) -> dict[str, Any]:
    """One measurement of the plain loop in this process: training part-epoch and inference.

    Run by ``reference`` in a fresh process each time (``python -m cases --plain``), so
    that it gets glibc's default malloc (a plain script's) and no state of the other cases.
    """
    from cnnkit.data import load_fashion_mnist
    from cnnkit.engine.perf import tune_cpu_allocator

    if tuned_malloc:
        tune_cpu_allocator()
    train_all, test = load_fashion_mnist()
    train, val = train_all.split(0.2, seed=42)
    ctx = Context(train=train, val=val, test=test, device=torch.device("cpu"), perf=None, quick=quick)  # type: ignore[arg-type]
    train_n, val_n = (3_200, 800) if quick else (9_600, 2_400)
    budget = 20.0 if quick else 60.0
    before = load()
    train_s, train_seen, val_s, val_seen = _plain_epoch(ctx, train_n, val_n, budget)
    mid = load()
    infer_s, infer_seen = _plain_infer(ctx, 2_000 if quick else 10_000, budget / 2)
    return {
        "train_s": train_s,
        "train_seen": train_seen,
        "val_s": val_s,
        "val_seen": val_seen,
        "infer_s": infer_s,
        "infer_seen": infer_seen,
        "load": [before, mid, load()],
        "threads": torch.get_num_threads(),
    }


def _plain_subprocess(ctx: Context, threads: int, tuned_malloc: bool = False) -> dict[str, Any]:
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    bench = str(Path(__file__).resolve().parents[1])  # `cases` and `measure` are importable from here
    argv = [sys.executable, "-m", "cases", "--plain", str(threads)]
    argv += ["--quick"] if ctx.quick else []
    argv += ["--tuned-malloc"] if tuned_malloc else []
    # The ctx device is the fast path's; the plain loop is the CPU reference wherever it runs.
    path = os.pathsep.join(p for p in (bench, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "CNNKIT_TUNE_MALLOC": "1" if tuned_malloc else "0"}
    out = subprocess.run(argv, capture_output=True, text=True, check=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def reference(ctx: Context, when: str = "start") -> list[dict]:
    """The plain loop, each time in a fresh process: with torch's default threads and with the
    fast path's thread count, then once more with cnnkit's malloc settings (what they alone
    give; not used for the ratios). run.py measures the default variants again at the end of
    the run (``when="end"``) and keeps the faster of the two for the ratios: on this virtual
    machine a slow moment during a single plain-loop measurement inflated a ratio by 1.4x."""
    fl = _flops("hongong_cnn")
    rows = []
    variants = {"default": (ctx.default_threads, False)}
    if ctx.perf.num_threads and ctx.perf.num_threads != ctx.default_threads:
        variants["same_threads"] = (ctx.perf.num_threads, False)
    if when == "start":
        variants["tuned_malloc"] = (ctx.perf.num_threads or ctx.default_threads, True)
    suffix = "" if when == "start" else ", end"
    for label, (threads, tuned) in variants.items():
        m = _plain_subprocess(ctx, threads, tuned)
        # An epoch is 48,000 training + 12,000 validation images: scale the measured part.
        epoch_s = m["train_s"] * EPOCH_TRAIN / m["train_seen"] + m["val_s"] * EPOCH_VAL / m["val_seen"]
        flop_epoch = EPOCH_TRAIN * fl["train"] + EPOCH_VAL * fl["forward"]
        infer_rate = m["infer_seen"] / m["infer_s"]
        if not tuned:
            for kind, rate in (("train", EPOCH_TRAIN / epoch_s), ("infer", infer_rate)):
                key = f"{kind}_{label}"
                ctx.refs[key] = max(ctx.refs.get(key, 0.0), rate)
        rows.append(
            _row(
                f"ref_train[{label}{suffix}]",
                EPOCH_TRAIN,
                epoch_s,
                flop_epoch / EPOCH_TRAIN,
                ctx,
                s_per_epoch=round(epoch_s, 2),
                threads=m["threads"],
                load=m["load"][:2],
                measured_images=[m["train_seen"], m["val_seen"]],
                note="extrapolated from a part of an epoch; a fresh process",
            )
        )
        rows.append(
            _row(
                f"ref_infer[{label}{suffix}]",
                m["infer_seen"],
                m["infer_s"],
                fl["forward"],
                ctx,
                threads=m["threads"],
                load=m["load"][1:],
            )
        )
    return rows
