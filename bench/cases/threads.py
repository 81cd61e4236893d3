"""Thread scaling of the course CNN, and where its time goes (torch.profiler)."""

from __future__ import annotations

import torch

from cnnkit import create_model
from cnnkit.tasks.classify.task import ClassifyTrainer
from measure import load, timed

from ._common import Context, _flops, _row, _with_threads


# ------------------------------------------------------------------ threads and profile
def threads(ctx: Context) -> list[dict]:
    """hongong_cnn inference and training steps with each thread count (the thread choice)."""
    fl = _flops("hongong_cnn")
    test = ctx.test.subset(slice(0, 2_560))
    rows = []
    for n in range(1, max(ctx.default_threads, 1) + 1):
        with _with_threads(n):
            torch.manual_seed(0)
            trainer = ClassifyTrainer(
                create_model("hongong_cnn"),
                device=ctx.device,
                amp=ctx.perf.amp,
                channels_last=ctx.perf.channels_last,
            )
            t = timed(lambda trainer=trainer: trainer.logits(test, 256), repeats=3, warmup=1)
            rows.append(
                _row(
                    f"threads[infer,{n}]",
                    len(test),
                    t["best"],
                    fl["forward"],
                    ctx,
                    median_s=round(t["median"], 3),
                    threads=n,
                    load=t["load"],
                )
            )
            data = ctx.train.subset(slice(0, 2_560))
            trainer.fit(data.subset(slice(0, 512)), epochs=1, batch_size=256)
            t = timed(
                lambda trainer=trainer, data=data: trainer._train_epoch(data, 256, 1), repeats=2, warmup=0
            )
            rows.append(
                _row(
                    f"threads[train,{n}]",
                    len(data),
                    t["best"],
                    fl["train"],
                    ctx,
                    median_s=round(t["median"], 3),
                    threads=n,
                    load=t["load"],
                )
            )
    return rows


def profile(ctx: Context) -> list[dict]:
    """Per-op CPU time of hongong_cnn fast-path training steps and inference (torch.profiler)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    rows = []
    data = ctx.train.subset(slice(0, 2_560))
    with _with_threads(ctx.perf.num_threads or torch.get_num_threads()):
        torch.manual_seed(0)
        trainer = ClassifyTrainer(
            create_model("hongong_cnn"),
            device=ctx.device,
            amp=ctx.perf.amp,
            channels_last=ctx.perf.channels_last,
            optimizer="adam",
            lr=1e-3,
        )
        trainer.fit(data.subset(slice(0, 512)), epochs=1, batch_size=256)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if ctx.device.type == "cuda" else [])
        for label, fn in (
            ("train_bs256", lambda: trainer._train_epoch(data, 256, 1)),
            ("infer_bs256", lambda: trainer.logits(ctx.test.subset(slice(0, 2_560)), 256)),
        ):
            with torch_profile(activities=activities) as prof:
                fn()
            events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
            total = sum(e.self_cpu_time_total for e in events) or 1
            top = [
                {
                    "op": e.key,
                    "self_cpu_ms": round(e.self_cpu_time_total / 1e3, 1),
                    "share": round(e.self_cpu_time_total / total, 3),
                    "calls": e.count,
                }
                for e in events[:12]
            ]
            rows.append(
                {
                    "case": f"profile[{label}]",
                    "images": len(data),
                    "total_cpu_ms": round(total / 1e3, 1),
                    "top_ops": top,
                    "load": load(),
                }
            )
    return rows
