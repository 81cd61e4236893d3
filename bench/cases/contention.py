"""Epoch times while CPU-bound processes come and go: the fast preset with adaptive threads
(engine/threads.py) against the plain PyTorch loop with fixed threads, on one schedule.

Each loop runs EPOCHS epochs. Competitors are pure busy loops (``python -c BUSY_LOOP``);
they start or stop at a fraction of the loop's own idle epoch time into the epochs of EVENTS.
Every epoch is reported as a multiple of the loop's idle epoch (epoch 1; epoch 0 is warm-up),
with the bounds of issue 26: at most 2.2× while one competitor runs, back to idle (within
BACK_TOLERANCE) in the first whole epoch after it leaves, at most 5× with three.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from cnnkit import create_model
from cnnkit.engine.callbacks import Callback
from cnnkit.engine.threads import ThreadController
from cnnkit.tasks.classify.task import ClassifyTrainer
from measure import load

from ._common import EPOCH_TRAIN, EPOCH_VAL, Context, _with_threads
from .reference import plain_course_cnn

EPOCHS = 11
# epoch -> (competitors running from then on, when: a fraction of the idle epoch into it)
EVENTS = {2: (1, 0.5), 5: (0, 0.5), 7: (3, 0.5), 10: (0, 0.0)}
PHASES = ["warm-up", "idle", "one arrives", "one", "one", "one leaves", "idle after one"]
PHASES += ["three arrive", "three", "three", "idle after three"]
ONE, BACK, THREE = (2, 3, 4, 5), 6, (7, 8, 9)
BOUND_ONE, BOUND_THREE, BACK_TOLERANCE = 2.2, 5.0, 1.15
PLAIN_CAP = 6.0  # a plain epoch stops after this many idle epochs (--quick: 2); its time is extrapolated
FIRST_CAP_S = 60.0  # ... and the first two (no idle time yet) after this many seconds (--quick: 1/4)
# A pure busy loop that ends when the benchmark's process does (an orphan would spin on).
BUSY_LOOP = "import os\nparent = os.getppid()\nwhile os.getppid() == parent:\n    for _ in range(10**6): pass"


class Competitors:
    """CPU-bound processes started and stopped on the schedule (each a busy loop)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.timer: threading.Timer | None = None
        self.idle_s: float | None = None

    def set(self, n: int) -> None:
        while len(self.procs) < n:
            self.procs.append(subprocess.Popen([sys.executable, "-c", BUSY_LOOP]))
        while len(self.procs) > n:
            proc = self.procs.pop()
            proc.kill()
            proc.wait()

    def epoch_begin(self, epoch: int) -> None:
        if epoch in EVENTS:
            n, fraction = EVENTS[epoch]
            delay = fraction * (self.idle_s or 0.0)
            if delay <= 0:
                self.set(n)
            else:
                self.timer = threading.Timer(delay, self.set, [n])
                self.timer.start()

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.set(0)


def _verdict(seconds: list[float]) -> dict[str, Any]:
    idle = seconds[1]
    ratios = [round(s / idle, 2) for s in seconds]
    worst_one = max(ratios[e] for e in ONE)
    worst_three = max(ratios[e] for e in THREE)
    return {
        "idle_s": round(idle, 2),
        "epoch_seconds": [round(s, 2) for s in seconds],
        "x_idle": ratios,
        "worst_x_one": worst_one,
        "x_after_one_left": ratios[BACK],
        "worst_x_three": worst_three,
        "bounds": {
            f"one<={BOUND_ONE}x": worst_one <= BOUND_ONE,
            f"back_to_idle(<={BACK_TOLERANCE}x)": ratios[BACK] <= BACK_TOLERANCE,
            f"three<={BOUND_THREE}x": worst_three <= BOUND_THREE,
        },
    }


def _cnnkit(ctx: Context, competitors: Competitors, train_n: int, val_n: int) -> dict[str, Any]:
    from cnnkit.tasks.classify.presets import PRESETS, fast_trainer_options

    preset = PRESETS["fast"]
    threads: list[int] = []
    loads: list[float] = []

    class Schedule(Callback):
        def on_epoch_begin(self, epoch: int, logs: dict[str, Any]) -> None:
            competitors.epoch_begin(epoch)

        def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
            if epoch == 1:
                competitors.idle_s = logs["seconds"]
            threads.append(torch.get_num_threads())
            loads.append(load())
            print(f"  cnnkit epoch {epoch}: {logs['seconds']:.2f} s, {threads[-1]} thread(s)", flush=True)

    torch.manual_seed(0)
    controller = ThreadController()
    trainer = ClassifyTrainer(
        create_model(preset["model"], **preset.get("model_kwargs", {})),
        device=ctx.device,
        amp=ctx.perf.amp,
        channels_last=ctx.perf.channels_last,
        callbacks=[Schedule()],
        threads=controller,
        **fast_trainer_options(preset["model"], augment=False),
    )
    trainer.fit(
        ctx.train.subset(slice(0, train_n)),
        ctx.val.subset(slice(0, val_n)),
        epochs=EPOCHS,
        batch_size=preset["batch_size"],
        verbose=0,
    )
    seconds = [row["seconds"] for row in trainer.history.epochs]
    return {
        "case": "contention[cnnkit_adaptive]",
        "model": preset["model"],
        "images_per_epoch": [train_n, val_n],
        "batch_size": preset["batch_size"],
        **_verdict(seconds),
        "threads_at_epoch_end": threads,
        "thread_changes": controller.changes,
        "fused_pool": trainer.forward.fused_pool,
        "load": loads,
    }


def _plain(ctx: Context, competitors: Competitors, train_n: int, val_n: int) -> dict[str, Any]:
    """The tutorial loop of ``reference`` (batch 32, eager FP32 NCHW, Adam), epoch after epoch."""
    x = ctx.train.images[:train_n].float().div(255)
    y = ctx.train.labels[:train_n]
    xv = ctx.val.images[:val_n].float().div(255)
    torch.manual_seed(0)
    model = plain_course_cnn().to(ctx.device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)
    seconds: list[float] = []
    partial: list[int] = []
    loads: list[float] = []
    split = 1.0
    first_cap = FIRST_CAP_S / 4 if ctx.quick else FIRST_CAP_S
    for epoch in range(EPOCHS):
        competitors.epoch_begin(epoch)
        cap = (2 if ctx.quick else PLAIN_CAP) * competitors.idle_s if competitors.idle_s else first_cap
        start = time.perf_counter()
        model.train()
        seen = 0
        for xb, yb in loader:
            opt.zero_grad()
            F.cross_entropy(model(xb.to(ctx.device)), yb.to(ctx.device)).backward()
            opt.step()
            seen += len(yb)
            if time.perf_counter() - start > cap:
                break
        train_s = time.perf_counter() - start
        if seen < train_n and epoch > 1:  # the epoch from its training part and the idle split
            partial.append(epoch)
            seconds.append(train_s * train_n / seen * split)
            loads.append(load())
            print(f"  plain epoch {epoch}: {seconds[-1]:.2f} s (extrapolated from {seen} images)", flush=True)
            continue
        model.eval()
        with torch.no_grad():
            for (xb,) in DataLoader(TensorDataset(xv), batch_size=32):
                model(xb.to(ctx.device))
        took = time.perf_counter() - start
        if seen < train_n:  # a busy machine from the start: validation as measured, training scaled
            partial.append(epoch)
            took += train_s * (train_n / seen - 1)
        seconds.append(took)
        print(f"  plain epoch {epoch}: {took:.2f} s", flush=True)
        if epoch == 1:
            competitors.idle_s = took
            split = took / (train_s * train_n / seen)  # (training + validation) / training
        loads.append(load())
    return {
        "case": "contention[plain_fixed_threads]",
        "images_per_epoch": [train_n, val_n],
        "batch_size": 32,
        **_verdict(seconds),
        "threads": torch.get_num_threads(),
        "extrapolated_epochs": partial,
        "note": f"an epoch stops after {PLAIN_CAP:g} idle epochs; its time is extrapolated from the "
        "training images done and the idle epoch's share of validation",
        "load": loads,
    }


def contention(ctx: Context) -> list[dict]:
    """Both loops on the same schedule of competitors, one after the other, in this process."""
    # About 4-5 s idle epochs for both on 2 idle cores: the fast preset's full epoch, a quarter
    # of one for the plain loop (its ratios are to its own idle epoch).
    cnnkit_n = (4_800, 1_200) if ctx.quick else (EPOCH_TRAIN, EPOCH_VAL)
    plain_n = (1_200, 300) if ctx.quick else (12_000, 3_000)
    threads = ctx.perf.num_threads or torch.get_num_threads()
    rows = []
    for name, run, n in (("cnnkit", _cnnkit, cnnkit_n), ("plain", _plain, plain_n)):
        competitors = Competitors()
        started = time.perf_counter()
        try:
            with _with_threads(threads):  # both start at the same count; only cnnkit's may change
                row = run(ctx, competitors, *n)
        finally:
            competitors.close()
        row["start_threads"] = threads
        row["wall_s"] = round(time.perf_counter() - started, 1)
        row["schedule"] = {"events": {e: list(v) for e, v in EVENTS.items()}, "phases": PHASES}
        rows.append(row)
        print(f"  {name}: x idle per epoch {row['x_idle']}; bounds {row['bounds']}", flush=True)
    return rows
