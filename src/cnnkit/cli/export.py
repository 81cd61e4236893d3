"""`cnnkit export RUN_OR_MODEL --format onnx|pt2 [--int8] [--out FILE]`: a deployable file, parity-checked.

RUN_OR_MODEL is a run folder of any task (classification, fine-tuned, localization, detection,
FCN / U-Net segmentation), ``fashion`` (the shipped model), or a zoo model name with --weights.

ONNX files carry their metadata (task, class names, preprocessing, opset, versions, the run's
test score) and run with ONNX Runtime alone: ``cnnkit predict model.onnx IMAGE...``. ``pt2`` is a
``torch.export`` program (load it with ``torch.export.load``). Before the file replaces --out, it
is run on real test images next to PyTorch: the max abs difference of the outputs and the
agreement of decisions are printed; past the tolerances (float: 1e-4 and 99.9 %) nothing is
written and the exit code is 1.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .targets import add_target

HELP = "export a run or zoo model to ONNX or torch.export (.pt2), with a parity check"
SUFFIX = {"onnx": ".onnx", "pt2": ".pt2"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_target(p)
    p.add_argument("--format", choices=list(SUFFIX), default="onnx", help="onnx (default) or pt2")
    p.add_argument(
        "--int8",
        action="store_true",
        help="ONNX only, classification: static int8 (QDQ) by ONNX Runtime, calibrated on training images",
    )
    p.add_argument("--out", help="file to write (default: model.onnx / model.pt2 in the run folder)")
    p.add_argument("--weights", help="a zoo model's weights: torchvision name or .safetensors/.pth file")
    p.add_argument("--untrained", action="store_true", help="export a zoo model with random weights")
    p.add_argument(
        "--check-images",
        type=int,
        default=1000,
        help="test images the parity check runs (default 1000, fewer if the test set is smaller)",
    )
    p.add_argument("--threads", type=int, help="ONNX Runtime threads for the check (default: its own)")
    p.add_argument("--json", action="store_true", help="print the parity report as JSON")


def default_out(target: str, fmt: str, int8: bool) -> Path:
    from ..runs.folder import SHIPPED

    name = f"model{'-int8' if int8 else ''}{SUFFIX[fmt]}"
    if target == SHIPPED and not Path(target).exists():
        return Path("runs") / SHIPPED / name
    if Path(target).is_dir():
        return Path(target) / name
    return Path(f"{target}{'-int8' if int8 else ''}{SUFFIX[fmt]}")


def run(args: argparse.Namespace) -> int:
    from ..errors import UsageError
    from ..export import resolve_source

    if args.check_images < 1:
        raise UsageError(f"--check-images must be >= 1, got {args.check_images}")
    if args.int8 and args.format != "onnx":
        raise UsageError("--int8 writes an ONNX file (ONNX Runtime's quantization); use --format onnx")
    out = Path(args.out) if args.out else default_out(args.target, args.format, args.int8)
    if out.suffix != SUFFIX[args.format]:
        raise UsageError(f"--out {out}: a {args.format} file ends in {SUFFIX[args.format]}")
    source = resolve_source(
        args.target, weights=args.weights, untrained=args.untrained, limit=args.check_images
    )
    # The default folder (runs/fashion/ for the shipped model) is made only once the target is
    # known to exist, and removed again if the export fails: a failing command leaves nothing.
    made = _missing_folders(out.parent) if not args.out else []
    for folder in made:
        folder.mkdir()
    try:
        return _export(args, source, out)
    except BaseException:
        for folder in reversed(made):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, outermost first."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    return missing[::-1]


def _export(args: argparse.Namespace, source, out: Path) -> int:
    from ..export import ParityError, export_onnx, export_pt2

    try:
        if args.int8:
            from ..export.int8 import export_onnx_int8

            report = export_onnx_int8(source, out, threads=args.threads)
        elif args.format == "onnx":
            report = export_onnx(source, out, threads=args.threads)
        else:
            report = export_pt2(source, out)
    except ParityError as exc:
        if args.json:
            print(json.dumps({"file": None, "parity": exc.report.to_dict()}, indent=2))
        raise
    if args.json:
        print(json.dumps({"file": str(out), "parity": report.to_dict()}, indent=2))
    else:
        kind = f"{args.format}{' int8' if args.int8 else ''}"
        print(f"{source.meta.get('model') or args.target} ({source.task}) -> {out} ({kind})")
        print(report.line())
    return 0
