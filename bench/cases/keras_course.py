"""The course's own Keras code, in a fresh process: ``bench/keras_course.py``.

The interpreter is ``CNNKIT_BENCH_KERAS_PYTHON`` (default: this one). The course runs Keras on
TensorFlow; an environment with it is made with ``python -m venv ENV && ENV/bin/pip install
tensorflow-cpu`` (docs/performance.md). Without TensorFlow the script uses Keras on torch, and
the row says which backend ran.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from measure import load

from ._common import EPOCH_TRAIN, EPOCH_VAL, Context, _flops, _ratios, _row

SCRIPT = Path(__file__).resolve().parents[1] / "keras_course.py"


def keras_course(ctx: Context) -> list[dict]:
    """Training epoch and ``model.predict`` of the course's Keras model on the same split."""
    python = os.environ.get("CNNKIT_BENCH_KERAS_PYTHON", sys.executable)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "fashion.npz"
        np.savez(
            data,
            train_x=ctx.train.images.squeeze(1).numpy(),
            train_y=ctx.train.labels.numpy(),
            val_x=ctx.val.images.squeeze(1).numpy(),
            val_y=ctx.val.labels.numpy(),
            test_x=ctx.test.images.squeeze(1).numpy(),
            test_y=ctx.test.labels.numpy(),
        )
        before = load()
        argv = [python, str(SCRIPT), str(data), *(["--quick"] if ctx.quick else [])]
        done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return [{"case": "keras_course", "skipped": f"{python} failed: {tail[0]}"}]
    m = json.loads(done.stdout.strip().splitlines()[-1])
    fl = _flops("hongong_cnn")
    # The timed epoch (the last) is train_images + val_images; scale it to the course's epoch.
    epoch_s = m["epoch_s"][-1] * EPOCH_TRAIN / m["train_images"]
    backend = m["backend"]
    common = {"backend": backend, "keras": m["keras"], "load": [before, load()], "python": python}
    train = _row(
        f"keras_train[{backend}]",
        EPOCH_TRAIN,
        epoch_s,
        (EPOCH_TRAIN * fl["train"] + EPOCH_VAL * fl["forward"]) / EPOCH_TRAIN,
        ctx,
        s_per_epoch=round(epoch_s, 2),
        epoch_s_measured=m["epoch_s"],
        val_accuracy=m["val_accuracy"],
        **common,
    )
    infer = _row(
        f"keras_infer[{backend}]",
        m["infer_images"],
        m["infer_s"],
        fl["forward"],
        ctx,
        test_accuracy_after_fit=m["test_accuracy"],
        **common,
    )
    train.update(_ratios(ctx, "train", train["img_per_s"]))
    infer.update(_ratios(ctx, "infer", infer["img_per_s"]))
    return [train, infer]
