"""Zoo models: resnet18 training steps and resnet50 inference."""

from __future__ import annotations

import torch

from cnnkit import create_model
from cnnkit.engine.perf import PerfSettings
from cnnkit.tasks.classify.task import ClassifyTrainer
from measure import load, timed

from ._common import EPOCH_TRAIN, Context, _flops, _row, _with_threads


# ------------------------------------------------------------------ zoo models
def resnet18_train(ctx: Context) -> list[dict]:
    """resnet18 (small_input) training steps on Fashion-MNIST; s/epoch extrapolated."""
    import cnnkit

    if "resnet18" not in cnnkit.list_models():
        return [{"case": "resnet18_train", "skipped": "resnet18 is not registered"}]
    kw = {"small_input": True, "in_chans": 1, "num_classes": 10}
    fl = _flops("resnet18", **kw)
    bs = 128
    steps = 2 if ctx.quick else 6
    rows = []
    with _with_threads(ctx.perf.num_threads or torch.get_num_threads()):
        for label, perf in (("auto", ctx.perf), ("fp32_cl", PerfSettings(None, True, None, 256))):
            torch.manual_seed(0)
            trainer = ClassifyTrainer(
                create_model("resnet18", **kw),
                device=ctx.device,
                amp=perf.amp,
                channels_last=perf.channels_last,
                optimizer="sgd",
                lr=0.05,
            )
            data = ctx.train.subset(slice(0, bs * (steps + 1)))
            before = load()
            trainer.fit(data, epochs=1, batch_size=bs)  # warm-up epoch of steps + 1 batches
            t = timed(
                lambda trainer=trainer, data=data: trainer._train_epoch(data, bs, 1), repeats=1, warmup=0
            )
            n = len(data)
            rows.append(
                _row(
                    f"resnet18_train[{label}]",
                    n,
                    t["best"],
                    fl["train"],
                    ctx,
                    s_per_epoch=round(t["best"] * EPOCH_TRAIN / n, 1),
                    batch_size=bs,
                    amp=perf.amp,
                    threads=torch.get_num_threads(),
                    load=[before, *t["load"]],
                    note="train-step time only; s/epoch extrapolated, validation not included",
                )
            )
    return rows


def resnet50_infer(ctx: Context) -> list[dict]:
    """resnet50 at 224×224×3, batch 8, inference (random weights and images: speed only)."""
    import cnnkit

    if "resnet50" not in cnnkit.list_models():
        return [{"case": "resnet50_infer", "skipped": "resnet50 is not registered"}]
    fl = _flops("resnet50", input_shape=(3, 224, 224))
    x = torch.rand(8, 3, 224, 224, device=ctx.device)
    rows = []
    repeats = 3 if ctx.quick else 5
    with _with_threads(ctx.perf.num_threads or torch.get_num_threads()):
        for label, amp, cl in (
            ("fp32_nchw", None, False),
            ("fp32_cl", None, True),
            ("bf16_cl", "bf16", True),
        ):
            if amp == "bf16" and ctx.device.type == "cpu" and ctx.perf.amp is None:
                continue
            torch.manual_seed(0)
            trainer = ClassifyTrainer(create_model("resnet50"), device=ctx.device, amp=amp, channels_last=cl)
            t = timed(lambda trainer=trainer: trainer.logits(x, 8), repeats=repeats, warmup=1)
            row = _row(
                f"resnet50_infer[{label}]",
                8,
                t["best"],
                fl["forward"],
                ctx,
                median_s=round(t["median"], 3),
                batch_size=8,
                amp=amp,
                channels_last=cl,
                threads=torch.get_num_threads(),
                load=t["load"],
            )
            if amp == "bf16" and ctx.peak_bf16:
                row["frac_bf16_peak"] = round(row["gflop_per_s"] / ctx.peak_bf16, 3)
            rows.append(row)
    return rows
