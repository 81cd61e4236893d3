"""`cnnkit predict MODEL.onnx PATH...`: an exported model run by ONNX Runtime (no PyTorch needed).

Everything (task, class names, preprocessing) comes from the metadata ``cnnkit export`` stored
in the file; an ONNX file from elsewhere needs ``--classes FILE`` and ``--preprocess NAME``.
Classification prints the top classes (as for a run); localization and detection print boxes in
the image's own pixels; segmentation prints the share of pixels of each class.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


def run_onnx(args: argparse.Namespace) -> int:
    """``cnnkit predict`` for an ``.onnx`` RUN_OR_MODEL."""
    from ..data.image_io import find_images
    from ..errors import DataError, UsageError
    from ..ranked import Prediction as Ranked
    from ..runtime import OnnxModel
    from .predict import _exit_code, _read_names, _report, _report_failure

    for flag, value in (
        ("--weights", args.weights),
        ("--num-classes", args.num_classes),
        ("--resize", args.resize),
    ):
        if value is not None:
            raise UsageError(f"{args.model} is an exported model; {flag} does not apply to it")
    names = _read_names(args.class_names) if args.class_names else None
    model = OnnxModel(args.model, class_names=names, preprocess=args.preprocess)
    outputs = model.session.get_outputs()[0].shape
    if (
        names is not None
        and model.task == "classify"
        and isinstance(outputs[-1], int)
        and len(names) != outputs[-1]
    ):
        raise UsageError(f"--classes has {len(names)} names for {outputs[-1]} outputs")
    failed = done = 0
    for path, problem in find_images(args.paths):
        if problem is None:
            try:
                x, size = model.prepare(path)
            except DataError as exc:
                problem = str(exc)
        if problem is not None:
            _report_failure(path, problem, args.json)
            failed += 1
            continue
        pred = model.decide(model.run(x[None]), [size], top=args.top)[0]
        done += 1
        if model.task == "classify":
            ranked = [Ranked(r + 1, k, name, p) for r, (k, name, p) in enumerate(pred.top)]
            _report(path, ranked, args.json)
        else:
            _report_scene(path, model, pred, args.json)
        sys.stdout.flush()
    return _exit_code(failed, done)


def _report_scene(path: Path, model: Any, pred: Any, as_json: bool) -> None:
    names = model.class_names
    if pred.mask is not None:
        counts = np.bincount(pred.mask.ravel(), minlength=len(names))
        shares = {names[k]: round(float(c) / pred.mask.size, 4) for k, c in enumerate(counts) if c}
        if as_json:
            print(json.dumps({"file": str(path), "pixel_shares": shares}, ensure_ascii=False))
        else:
            print(f"{path}: " + ", ".join(f"{n} {100 * s:.1f} %" for n, s in shares.items()))
        return
    found = [
        {"class": names[int(c)], "score": round(float(s), 4), "box": [round(float(v), 1) for v in b]}
        for b, s, c in zip(pred.boxes, pred.scores, pred.labels)
    ]
    if as_json:
        print(json.dumps({"file": str(path), "detections": found}, ensure_ascii=False))
        return
    print(f"{path}: {len(found)} object(s)")
    for item in found:
        print(f"  {item['class']}  {100 * item['score']:6.2f} %  box {item['box']}")
