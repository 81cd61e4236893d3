"""Time to accuracy and the best recipe in a time budget (30 and 5 minutes)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch

from cnnkit import create_model
from cnnkit.layers.whitening import whiten_first_conv
from cnnkit.tasks.classify.task import ClassifyTrainer
from measure import load

from ._common import Context, _concat, _with_threads

# ------------------------------------------------------------------ time to accuracy
SPEED_PRESETS = ("fast", "fast94")  # each as `cnnkit train --preset NAME` trains it


def time_to_accuracy(ctx: Context) -> list[dict]:
    """Each speed preset as `cnnkit train --preset NAME` runs it, timed from the process start:
    wall time until test accuracy (with flip TTA) first reaches 92 % and 94 %, checked after
    every epoch. As in the CLI, it trains on the 60,000 training images less the preset's
    validation share, which it evaluates after every epoch (the test images are never trained
    on). Each preset's clock starts as if it had run first: imports and data loading counted,
    the presets before it not. The test evaluations of the epochs before are not counted: the
    CLI evaluates the test set once, after its last epoch. Then the command itself runs in a
    fresh process (``cli``): when its last epoch ended, when it printed the test accuracy (after
    its curves, test scores and report.html) and when it exited."""
    startup_s = time.perf_counter() - ctx.t0
    rows = []
    for name in SPEED_PRESETS:
        row = _preset_to_accuracy(ctx, name, time.perf_counter() - startup_s)
        row["cli"] = _cli_timeline(name, ctx.quick)
        rows.append(row)
    return rows


def _cli_timeline(name: str, quick: bool) -> dict[str, Any]:
    """`cnnkit train --preset NAME` in a new process, its output lines timed from its start."""
    marks: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        argv = [sys.executable, "-m", "cnnkit", "train", "--preset", name, "--out", os.path.join(tmp, "run")]
        if quick:
            argv += ["--epochs", "1", "--limit-train", "2000", "--limit-test", "500"]
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            now = round(time.perf_counter() - start, 1)
            if re.search(r"(^|\r)epoch \d+/\d+ ", line):
                marks["last_epoch_end_s"] = now
            found = re.search(r"test accuracy ([0-9.]+) after", line)
            if found:
                marks["test_accuracy_printed_s"], marks["test_accuracy"] = now, float(found.group(1))
        marks["returncode"] = proc.wait()
        marks["exit_s"] = round(time.perf_counter() - start, 1)
    return marks


def _preset_to_accuracy(ctx: Context, name: str, t0: float) -> dict:
    from cnnkit.engine.callbacks import Callback
    from cnnkit.tasks.classify.presets import PRESETS, trainer_extras

    preset = PRESETS[name]
    epochs = 2 if ctx.quick else preset["epochs"]
    marks: dict[str, float | None] = {"0.92": None, "0.94": None}
    curve: list[dict] = []
    test = ctx.test

    probing = [0.0]  # seconds of the test evaluations before this one: the CLI does not run them

    class Probe(Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
            start = time.perf_counter()
            acc = float((self.trainer.logits(test).argmax(1) == test.labels).float().mean())
            wall = time.perf_counter() - t0 - probing[0]
            probing[0] += time.perf_counter() - start
            curve.append(
                {"epoch": epoch + 1, "test_accuracy": round(acc, 4), "wall_s": round(wall, 1), "load": load()}
            )
            print(
                f"  {name} epoch {epoch + 1}: test accuracy {acc:.4f} at {curve[-1]['wall_s']} s", flush=True
            )
            for mark in marks:
                if marks[mark] is None and acc >= float(mark):
                    marks[mark] = round(wall, 1)

    with _with_threads(ctx.perf.num_threads or torch.get_num_threads()):
        torch.manual_seed(0)
        model = create_model(preset["model"], **preset.get("model_kwargs", {}))
        # The CLI's split with its default seed (42): the course's 48,000 / 12,000 is ctx's own.
        fraction = preset.get("val_fraction", 0.2)
        train, val = ctx.train, ctx.val
        if fraction != 0.2:
            train, val = _concat(ctx.train, ctx.val).split(fraction, 42)
        if preset.get("whiten"):  # as runs/classify.py does
            whiten_first_conv(model, train.images)
        options = {key: preset[key] for key in ("optimizer", "lr", "weight_decay", "label_smoothing")}
        trainer = ClassifyTrainer(
            model,
            device=ctx.device,
            amp=ctx.perf.amp,
            channels_last=ctx.perf.channels_last,
            callbacks=[Probe()],
            **options,
            **trainer_extras(name, preset["lr"]),
        )
        if ctx.quick:
            val = val.subset(slice(0, 2_000))
        trainer.fit(train, val, epochs=epochs, batch_size=preset["batch_size"])
    return {
        "case": f"time_to_accuracy[{name}]",
        "command": f"cnnkit train --preset {name}",
        "train_images": len(train),
        "val_images": len(val),
        "model": preset["model"],
        "model_kwargs": preset.get("model_kwargs", {}),
        "epochs": epochs,
        "wall_to_92": marks["0.92"],
        "wall_to_94": marks["0.94"],
        "curve": curve,
        "final_test_accuracy": curve[-1]["test_accuracy"],
        "threads": torch.get_num_threads(),
        "fused_pool": trainer.forward.fused_pool,
        "compile_s": round(trainer.compile_seconds, 2),
        "note": "wall time counts from process start: imports, data loading, training, validation, "
        "this epoch's test evaluation (not the earlier epochs': the CLI runs only its last)",
    }


# ------------------------------------------------------------------ best recipe in a time budget
SHORT_MODEL_KWARGS = {"widths": (32, 64, 128), "depth": 2, "pool_first": True}
BEST_MODEL_KWARGS = {"widths": (48, 96, 192), "depth": 2, "pool_first": True}
BEST_MAX_SHIFT = 2
SHORT_MAX_SHIFT = 1  # 12 epochs: up to 1 pixel gave 94.28 %, 2 pixels 94.06 % (seed 0)
BUDGET_LR = 0.2  # the one-cycle peak these deeper models were tuned at (the preset's is 0.3)
BEST_BUDGET_S = 30 * 60
SHORT_BUDGET_S = 5 * 60


def _seconds(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def best_recipe(ctx: Context) -> list[dict]:
    """The best recipe in the 30-minute budget of issue 8's >= 95 % target."""
    return _budget_recipe(ctx, BEST_BUDGET_S, "best_recipe[30 min]", BEST_MODEL_KWARGS, BEST_MAX_SHIFT)


def recipe_5min(ctx: Context) -> list[dict]:
    """The same recipe in the 5-minute budget of issue 8's >= 94 % target."""
    return _budget_recipe(ctx, SHORT_BUDGET_S, "recipe_5min[5 min]", SHORT_MODEL_KWARGS, SHORT_MAX_SHIFT)


def _budget_recipe(
    ctx: Context, budget_s: float, case: str, model_kwargs: dict[str, Any], max_shift: int
) -> list[dict]:
    """The fast recipe on a deeper fashion_bn_cnn with translation, trained on all 60,000
    training images for as many epochs as fit in ``budget_s`` of wall time (from process
    start, as time_to_accuracy).

    The one-cycle schedule needs its length up front, so a short probe measures the seconds
    per epoch first (20 training batches and one test evaluation) and the epoch count is
    chosen to fill about 95 % of the budget.
    """
    from cnnkit.engine.callbacks import Callback
    from cnnkit.tasks.classify.presets import PRESETS, fast_trainer_options

    preset = PRESETS["fast"]
    budget = 120.0 if ctx.quick else budget_s
    train = ctx.train if ctx.quick else _concat(ctx.train, ctx.val)
    curve: list[dict] = []
    test = ctx.test

    class Probe(Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
            acc = float((self.trainer.logits(test).argmax(1) == test.labels).float().mean())
            curve.append(
                {
                    "epoch": epoch + 1,
                    "test_accuracy": round(acc, 4),
                    "wall_s": round(time.perf_counter() - ctx.t0, 1),
                    "load": load(),
                }
            )
            print(f"  epoch {epoch + 1}: test accuracy {acc:.4f} at {curve[-1]['wall_s']} s", flush=True)

    with _with_threads(ctx.perf.num_threads or torch.get_num_threads()):
        torch.manual_seed(0)
        probe = ClassifyTrainer(
            create_model(preset["model"], **model_kwargs),
            device=ctx.device,
            amp=ctx.perf.amp,
            channels_last=ctx.perf.channels_last,
            optimizer="sgd",
            lr=0.01,
            fused_pool=True,  # as the budget's fit will have it ('auto': it is long enough)
        )
        part = train.subset(slice(0, preset["batch_size"] * 20))
        probe.fit(part.subset(slice(0, preset["batch_size"] * 2)), epochs=1, batch_size=preset["batch_size"])
        # Each part is timed twice and the faster kept: one probe that overlapped another job
        # (21:14 run, docs/performance.md) once halved the epochs fitted.
        train_s = (
            min(_seconds(lambda: probe._train_epoch(part, preset["batch_size"], 1)) for _ in range(2))
            * len(train)
            / len(part)
        )
        probe.task.tta = True  # the per-epoch test evaluation below uses flip TTA (2 views)
        epoch_s = train_s + min(_seconds(lambda: probe.logits(test)) for _ in range(2))
        left = budget - (time.perf_counter() - ctx.t0)
        # 95 %: the probe's estimate was within 3 % of the epochs that followed (2026-11-23 runs).
        epochs = max(1, int(0.95 * left / epoch_s))
        torch.manual_seed(0)
        model = create_model(preset["model"], **model_kwargs)
        trainer = ClassifyTrainer(
            model,
            device=ctx.device,
            amp=ctx.perf.amp,
            channels_last=ctx.perf.channels_last,
            callbacks=[Probe()],
            **fast_trainer_options(preset["model"], max_shift=max_shift, lr=BUDGET_LR),
        )
        trainer.fit(train, epochs=epochs, batch_size=preset["batch_size"])
    return [
        {
            "case": case,
            "model": preset["model"],
            "model_kwargs": model_kwargs,
            "max_shift": max_shift,
            "train_images": len(train),
            "epochs": epochs,
            "estimated_epoch_s": round(epoch_s, 1),
            "budget_s": budget,
            "curve": curve,
            "final_test_accuracy": curve[-1]["test_accuracy"],
            "best_test_accuracy": max(p["test_accuracy"] for p in curve),
            "wall_to_94": next((p["wall_s"] for p in curve if p["test_accuracy"] >= 0.94), None),
            "wall_to_95": next((p["wall_s"] for p in curve if p["test_accuracy"] >= 0.95), None),
            "wall_s": curve[-1]["wall_s"],
            "threads": torch.get_num_threads(),
            "fused_pool": trainer.forward.fused_pool,
            "compile_s": round(trainer.compile_seconds, 2),
        }
    ]
