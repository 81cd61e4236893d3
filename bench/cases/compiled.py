"""``torch.compile`` against eager on the course CNN."""

from __future__ import annotations

import torch

from cnnkit import create_model
from cnnkit.tasks.classify.task import ClassifyTrainer
from measure import timed

from ._common import Context, _flops, _ratios, _row, _with_threads


# ------------------------------------------------------------------ torch.compile
def compiled(ctx: Context) -> list[dict]:
    """``ClassifyTrainer(compile=True)`` against eager on hongong_cnn: inference over 5,000 test images and
    a training part-epoch (batch 256, the fast path's settings), compile time reported apart.
    Inference runs twice: with the training Trainer, and with an inference-only one, whose
    compiled graph has the weights frozen in."""
    from cnnkit.tasks.classify.presets import fast_trainer_options

    fl = _flops("hongong_cnn")
    rows = []
    test = ctx.test.subset(slice(0, 5_000))
    part = ctx.train.subset(slice(0, 256 * (8 if ctx.quick else 40)))
    with _with_threads(ctx.perf.num_threads or torch.get_num_threads()):
        for label, compile_ in (("eager", False), ("compiled", True)):
            torch.manual_seed(0)
            trainer = ClassifyTrainer(
                create_model("hongong_cnn"),
                device=ctx.device,
                amp=ctx.perf.amp,
                channels_last=ctx.perf.channels_last,
                compile=compile_,
                **fast_trainer_options("hongong_cnn", augment=False),
            )
            trainer.fit(part.subset(slice(0, 512)), epochs=1, batch_size=256)  # compiles the train graph
            trainer.scheduler = None
            trainer.logits(test.subset(slice(0, 256)))  # compiles the eval graph
            t = timed(lambda trainer=trainer: trainer._train_epoch(part, 256, 1), repeats=3, warmup=0)
            rows.append(
                _row(
                    f"compile_train[{label}]",
                    len(part),
                    t["best"],
                    fl["train"],
                    ctx,
                    median_s=round(t["median"], 3),
                    load=t["load"],
                    compile_s=round(trainer.compile_seconds, 1) if compile_ else None,
                    **_ratios(ctx, "train", len(part) / t["best"]),
                )
            )
            inference_only = ClassifyTrainer(
                trainer.model,
                device=ctx.device,
                amp=ctx.perf.amp,
                channels_last=ctx.perf.channels_last,
                compile=compile_,
                optimizer=None,
            )
            inference_only.logits(test.subset(slice(0, 256)))  # compiles the frozen graph
            for suffix, infer in (("", trainer), (",inference_only", inference_only)):
                t = timed(lambda infer=infer: infer.logits(test, 256), repeats=3, warmup=0)
                rows.append(
                    _row(
                        f"compile_infer[{label}{suffix}]",
                        len(test),
                        t["best"],
                        fl["forward"],
                        ctx,
                        median_s=round(t["median"], 3),
                        load=t["load"],
                        compile_s=round(infer.compile_seconds, 1) if compile_ else None,
                        **_ratios(ctx, "infer", len(test) / t["best"]),
                    )
                )
    return rows
