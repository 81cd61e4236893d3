"""`cnnkit evaluate RUN_DIR`: test-set accuracy, per-class precision/recall/F1, confusion matrix."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Any

from ..text import columns, ljust

if TYPE_CHECKING:
    import torch

    from ..data.arrays import ArrayDataset

CALIBRATION_IMAGES = 2_000


HELP = "evaluate a run folder on its test set"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "run_dir", help="a run folder written by `cnnkit train` or `cnnkit finetune` (any task), or 'fashion'"
    )
    p.add_argument("--data", help="evaluate on this data instead of the run's own")
    p.add_argument("--limit-test", type=int, help="evaluate on only N test images")
    p.add_argument("--device", help="cpu, cuda, cuda:N or mps")
    p.add_argument(
        "--int8",
        action="store_true",
        help="(deprecated: see `cnnkit export --int8`) run the model in int8 on the CPU: post-training "
        "quantization calibrated on "
        f"{CALIBRATION_IMAGES:,} training images (faster, predictions may differ slightly)",
    )
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run the model through torch.compile with its weights frozen into the graph (the same "
        "predictions, faster once compiled; the compile time is reported apart). Default on the "
        "CPU: compile only when the images times the measured saving per image exceed the expected "
        "compile time (cached in ~/.cache/cnnkit); --no-compile: always eager",
    )
    p.add_argument(
        "--cascade",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="score with an int8 copy of the model first and again in float where int8 could "
        "change the class: the float predictions, about twice as fast (CPU, sequential CNNs; the "
        "int8 copy is cached in ~/.cache/cnnkit). Default: on where the model has an int8 form "
        "and the test set repays the set-up (2,000 images with a cached copy, else 10,000)",
    )
    p.add_argument("--json", action="store_true", help="print the full report as JSON")


def run(args: argparse.Namespace) -> int:
    from ..engine.device import pick_device
    from ..errors import UsageError
    from ..runs.evaluate import classify_data, classify_scorer, default_cascade
    from ..runs.folder import load_run, read_run
    from ..runs.session import thread_controller

    if args.limit_test is not None and args.limit_test < 1:
        raise UsageError(f"--limit-test must be >= 1, got {args.limit_test}")
    if args.int8 and args.compile is True:
        raise UsageError("--int8 and --compile are two ways to a faster model; choose one")
    if args.int8 and args.cascade:
        raise UsageError("--int8 scores every image in int8, --cascade only the sure ones; choose one")
    device = pick_device(args.device)
    if args.int8 and device.type != "cpu":
        raise UsageError(f"--int8 runs on the CPU, not {device}; leave out --device or use --device cpu")
    run = read_run(args.run_dir)
    if run.task not in ("classify", "finetune"):
        return _evaluate_scored(args, run)
    model, record = load_run(run, device=args.device)
    finetuned = isinstance(record.get("finetune"), dict)
    if args.cascade and finetuned:
        raise UsageError(
            "--cascade is for sequential CNN runs; a fine-tuned run evaluates in float (leave it out)"
        )
    if args.int8 and finetuned:
        raise UsageError(
            "--int8 is for sequential CNN runs; a fine-tuned run evaluates in float32 (leave out --int8)"
        )
    # The run's own test set: the images (and --limit-test share) its metrics.json scored; an
    # image folder's splits depend on the run's seed, fractions, image size and resize mode.
    train, test = classify_data(run, args.data, args.limit_test)
    norm = record.get("normalize")
    normalize = (norm["mean"], norm["std"]) if norm else None
    config = record["run"]
    int8 = None
    if args.int8:
        print(
            "cnnkit: warning: --int8 runs eager torch.ao.quantization, which PyTorch deprecates; "
            f"`cnnkit export {args.run_dir} --int8` writes a static int8 ONNX file (ONNX Runtime)",
            file=sys.stderr,
        )
        model, int8 = _int8(model, train, normalize)
    # Scored as the run scored itself at the end of training (its flip TTA and precision).
    trainer = classify_scorer(
        record,
        model,
        device,
        int8=bool(int8),
        compile=_compile_mode(args),
        threads=thread_controller(device, pick_threads=False),  # follows the free cores between batches
    )
    tta, amp = trainer.task.tta, trainer.amp
    start = time.perf_counter()
    # --compile asked for the compiled float model: the cascade only if asked for too.
    mode = False if args.compile is True and args.cascade is None else args.cascade
    cascade = None if int8 else default_cascade(trainer, train, len(test), mode)
    report = trainer.evaluate(test)
    seconds = time.perf_counter() - start
    report["tta"], report["amp"], report["int8"] = tta, amp, int8
    report["seconds"] = round(seconds, 3)
    report["compiled"] = trainer.forward.compile
    report["cascade"] = cascade.summary() if cascade else None
    if trainer.forward.compile:
        report["compile_seconds"] = round(trainer.compile_seconds, 3)
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return 0
    calibrated = f"int8 calibrated on {CALIBRATION_IMAGES:,} training images" if int8 else ""
    views = {"shift": "flip and shift TTA (10 views)"}.get(tta, "flip TTA") if tta else ""
    how = ", ".join(x for x in (views, amp or "", calibrated) if x)
    print(
        f"{config['model']} on {test.name}: accuracy {report['accuracy']:.4f}, "
        f"loss {report['loss']:.4f}, {report['num_samples']:,} image{'' if len(test) == 1 else 's'}"
        + (f" ({how}{'' if int8 else ', as in training'})" if how else "")
    )
    from ..viz.lang import translate

    names = translate(list(report["per_class"]))  # CNNKIT_LANG / --lang
    width = max(columns(n) for n in ["class", *names])
    print(f"{ljust('class', width)}  {'precision':>9}  {'recall':>6}  {'f1':>6}  {'support':>7}")
    for name, row in zip(names, report["per_class"].values()):
        scores = f"{row['precision']:9.4f}  {row['recall']:6.4f}  {row['f1']:6.4f}"
        print(f"{ljust(name, width)}  {scores}  {row['support']:7d}")
    if cascade:
        done = cascade.summary()
        print(
            f"int8 first: {done['rescored']:,} of {done['images']:,} images scored again in "
            f"{amp or 'float32'}, so the predictions are {amp or 'float32'}'s; the loss is partly "
            f"from int8 logits (--no-cascade: all {amp or 'float32'}). The int8 copy "
            + ("came from the cache" if done["source"] == "cache" else "was calibrated now")
            + f" ({done['setup_seconds']:.2f} s)"
        )
    if trainer.forward.compile:
        print(
            f"torch.compile: {trainer.compile_seconds:.1f} s of the {seconds:.1f} s were the first "
            "compiled batches (compiling included)"
        )
    return 0


def _compile_mode(args: argparse.Namespace) -> bool | str:
    """--compile: on; --no-compile and --int8: off; neither: 'auto' (when the work amortizes it)."""
    if args.compile is None:
        return False if args.int8 else "auto"
    return args.compile


def _evaluate_scored(args: argparse.Namespace, run: Any) -> int:
    """Localization, detection and segmentation runs: their own scores on their own test set."""
    from ..errors import UsageError
    from ..runs.evaluate import evaluate_run

    given = [
        flag
        for flag, on in (
            ("--int8", args.int8),
            ("--compile", args.compile),
            ("--cascade", args.cascade),
            ("--data", args.data),
        )
        if on
    ]
    if given:
        raise UsageError(
            f"{run.describe()}; {', '.join(given)} {'is' if len(given) == 1 else 'are'} for classification "
            f"runs; drop {'it' if len(given) == 1 else 'them'} to score it on its own test set"
        )
    start = time.perf_counter()
    report = evaluate_run(run, args.device, args.limit_test)
    report["seconds"] = round(time.perf_counter() - start, 3)
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False, default=float))
    else:
        print(report["summary"])
    return 0


def _int8(
    model: torch.nn.Module, train: ArrayDataset, normalize: tuple[list[float], list[float]] | None
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The run's model quantized to int8, calibrated on training images (never the test set)."""

    from ..errors import UsageError
    from ..tasks.classify.quantize import quantize_int8
    from ..tasks.classify.task import ClassifyTrainer

    calibration = train.take(min(CALIBRATION_IMAGES, len(train)), seed=0)
    images = ClassifyTrainer(model, device="cpu", normalize=normalize, optimizer=None).prepare(
        calibration.images
    )
    try:
        quantized = quantize_int8(model, images)
    except (ValueError, RuntimeError) as exc:
        raise UsageError(str(exc)) from None
    return quantized, {"engine": quantized.engine, "calibration_images": len(calibration)}
