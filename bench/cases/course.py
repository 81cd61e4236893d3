"""The course CNN (hongong_cnn): training at course and fast-path settings, and inference."""

from __future__ import annotations

import copy
import time
from typing import Any

import torch

from cnnkit import create_model
from cnnkit.engine.perf import PerfSettings
from cnnkit.engine.precision import precision_settings
from cnnkit.tasks.classify.task import ClassifyTrainer
from measure import load, timed

from ._common import EPOCH_TRAIN, EPOCH_VAL, Context, _flops, _ratios, _row, _with_threads


# ------------------------------------------------------------------ course CNN training
def _trainer_epochs(
    ctx: Context,
    model_name: str,
    batch_size: int,
    epochs: int,
    recipe: dict,
    train_n: int,
    val_n: int,
    perf: PerfSettings,
) -> tuple[list[float], ClassifyTrainer]:
    torch.manual_seed(0)
    model = create_model(model_name)
    trainer = ClassifyTrainer(
        model, device=ctx.device, amp=perf.amp, channels_last=perf.channels_last, **recipe
    )
    train = ctx.train.subset(slice(0, train_n))
    val = ctx.val.subset(slice(0, val_n))
    trainer.fit(train, val, epochs=epochs, batch_size=batch_size)
    return [row["seconds"] for row in trainer.history.epochs], trainer


def course_train(ctx: Context) -> list[dict]:
    """hongong_cnn: course settings (Adam 1e-3, batch 32) and the fast path (batch 256), each with
    the device's speed settings; an epoch is 48,000 training + 12,000 validation images."""
    from cnnkit.tasks.classify.presets import fast_trainer_options

    train_n, val_n = (9_600, 2_400) if ctx.quick else (EPOCH_TRAIN, EPOCH_VAL)
    epochs = 2 if ctx.quick else 3  # the first epoch is warm-up (oneDNN primitive creation)
    fl = _flops("hongong_cnn")
    flop_epoch = EPOCH_TRAIN * fl["train"] + EPOCH_VAL * fl["forward"]
    # `cnnkit train`'s default precision ('auto'): bf16 + channels-last on a CPU with native bf16,
    # else the course's FP32 NCHW (the same as the row after it).
    amp, channels_last = precision_settings("auto", ctx.device)
    default = PerfSettings(amp, channels_last, ctx.perf.num_threads, ctx.perf.inference_batch)
    variants = {
        "course_bs32": (32, {"optimizer": "adam", "lr": 1e-3}, default),
        # The default with the compiled max-pool kernels (bit for bit the same numbers): whether
        # they would pay at the course's batch size too.
        "course_bs32_fused_pool": (32, {"optimizer": "adam", "lr": 1e-3, "fused_pool": True}, default),
        "course_bs32_fp32_nchw": (
            32,
            {"optimizer": "adam", "lr": 1e-3},
            PerfSettings(None, False, ctx.perf.num_threads, 256),
        ),
        # Throughput once compiled: the kernels on whatever the fit's length (the preset's
        # 'auto' would skip them for these 3 epochs); their compiling is in the warm-up epoch.
        "fast_bs256": (
            256,
            {**fast_trainer_options("hongong_cnn", augment=False), "fused_pool": True},
            ctx.perf,
        ),
        # The same without the compiled max-pool kernels: what they alone are worth.
        "fast_bs256_pytorch_pool": (
            256,
            {**fast_trainer_options("hongong_cnn", augment=False), "fused_pool": False},
            ctx.perf,
        ),
    }
    rows = []
    with _with_threads(ctx.perf.num_threads or torch.get_num_threads()):
        for label, (bs, recipe, perf) in variants.items():
            before = load()
            seconds, trainer = _trainer_epochs(ctx, "hongong_cnn", bs, epochs, recipe, train_n, val_n, perf)
            timed_s = seconds[1:]
            scale = EPOCH_TRAIN / train_n
            best = min(timed_s) * scale
            rate = EPOCH_TRAIN / best
            rows.append(
                _row(
                    f"course_train[{label}]",
                    EPOCH_TRAIN,
                    best,
                    flop_epoch / EPOCH_TRAIN,
                    ctx,
                    s_per_epoch=round(best, 2),
                    epoch_seconds=[round(s * scale, 2) for s in seconds],
                    batch_size=bs,
                    amp=perf.amp,
                    channels_last=perf.channels_last,
                    threads=torch.get_num_threads(),
                    load=[before, load()],
                    val_accuracy=round(trainer.history.epochs[-1]["val_accuracy"], 4),
                    fused_pool=trainer.forward.fused_pool,
                    compile_s=round(trainer.compile_seconds, 2),
                    **_ratios(ctx, "train", rate),
                )
            )
    return rows


# ------------------------------------------------------------------ course CNN inference
def course_infer(ctx: Context) -> list[dict]:
    """hongong_cnn over the 10,000 test images: batch size, memory format, dtype and int8 variants.

    The weights are the shipped trained course model (``cnnkit predict fashion``), so that each
    row's agreement with the float32 predictions and its test accuracy mean something; the int8
    row is calibrated on 2,000 training images and its quantization time is reported apart."""
    from cnnkit.cli.predict import fashion_asset
    from cnnkit.io.weights import load_state_dict_file, load_strict
    from cnnkit.runs.evaluate import default_cascade
    from cnnkit.tasks.classify.quantize import quantize_int8

    fl = _flops("hongong_cnn")
    model = create_model("hongong_cnn")
    load_strict(model, load_state_dict_file(fashion_asset()), "the shipped course model")
    model.eval()
    test = ctx.test if not ctx.quick else ctx.test.subset(slice(0, 5_000))
    variants = [
        ("fp32_nchw_b256", None, False, 256),
        ("fp32_cl_b256", None, True, 256),
        ("fp32_cl_b1000", None, True, 1000),
        ("bf16_cl_b256", "bf16", True, 256),
        ("auto", ctx.perf.amp, ctx.perf.channels_last, ctx.perf.inference_batch),
        ("int8_b256", "int8", False, 256),
        ("compiled_b256", "compile", ctx.perf.channels_last, 256),
        ("fused_pool_b256", "fused_pool", ctx.perf.channels_last, 256),
        # `cnnkit evaluate`'s default: compile='auto' decides from the work; '_long' is told to
        # expect 10 million images (a long job), so it compiles in its first pass.
        ("default", "default", ctx.perf.channels_last, ctx.perf.inference_batch),
        ("default_long", "default_long", ctx.perf.channels_last, ctx.perf.inference_batch),
    ]
    rows = []
    reference_pred = None
    with _with_threads(ctx.perf.num_threads or torch.get_num_threads()):
        for label, amp, cl, bs in variants:
            if amp == "bf16" and ctx.device.type == "cpu" and label != "auto" and ctx.perf.amp is None:
                continue  # no native bf16 here: emulated bf16 is slower
            extra: dict[str, Any] = {}
            if amp == "int8":
                if ctx.device.type != "cpu":
                    rows.append({"case": f"course_infer[{label}]", "skipped": "int8 runs on the CPU"})
                    continue
                start = time.perf_counter()
                calib = ctx.train.subset(slice(0, 2_000)).images.float().div(255)
                net = quantize_int8(model, calib)
                extra = {"quantize_s": round(time.perf_counter() - start, 2), "engine": net.engine}
                trainer = ClassifyTrainer(net, device=ctx.device, optimizer=None)
            elif amp in ("default", "default_long"):
                trainer = ClassifyTrainer(
                    copy.deepcopy(model),
                    device=ctx.device,
                    amp=ctx.perf.amp,
                    channels_last=cl,
                    optimizer=None,
                    compile="auto",
                )
                trainer.forward.expected_images = 10_000_000 if amp == "default_long" else 0
                amp = ctx.perf.amp
                # `cnnkit evaluate`'s int8 cascade where the images repay it (its set-up apart)
                cascade = default_cascade(trainer, ctx.train, len(test))
                trainer.logits(test, bs)  # the first pass: eager, or eager then compiled
                extra = {"compiled": trainer.forward.compile, "compile_s": round(trainer.compile_seconds, 2)}
                if cascade is not None:
                    extra["cascade"] = cascade.summary()
            elif amp in ("compile", "fused_pool"):
                # The device's precision, and either torch.compile with the weights frozen in
                # (an inference-only Trainer) or the compiled max-pool kernels (the fast
                # preset's); compiling happens in the first call, reported apart.
                option, amp = amp, ctx.perf.amp
                trainer = ClassifyTrainer(
                    copy.deepcopy(model),
                    device=ctx.device,
                    amp=amp,
                    channels_last=cl,
                    optimizer=None,
                    **{option: True},
                )
                trainer.logits(test, bs)
                flag = "compiled" if option == "compile" else option
                extra = {"compile_s": round(trainer.compile_seconds, 2), flag: True}
            else:
                trainer = ClassifyTrainer(
                    copy.deepcopy(model), device=ctx.device, amp=amp, channels_last=cl, optimizer=None
                )
            pred = trainer.logits(test, bs).argmax(1)
            t = timed(lambda trainer=trainer, bs=bs: trainer.logits(test, bs), repeats=3, warmup=0)
            if reference_pred is None:
                reference_pred = pred
            rate = len(test) / t["best"]
            rows.append(
                _row(
                    f"course_infer[{label}]",
                    len(test),
                    t["best"],
                    fl["forward"],
                    ctx,
                    median_s=round(t["median"], 3),
                    batch_size=bs,
                    amp=amp,
                    channels_last=cl,
                    threads=torch.get_num_threads(),
                    load=t["load"],
                    same_predictions_as_fp32=float((pred == reference_pred).float().mean()),
                    test_accuracy=round(float((pred == test.labels).float().mean()), 4),
                    **extra,
                    **_ratios(ctx, "infer", rate),
                )
            )
    return rows
