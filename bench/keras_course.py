"""The course's own Keras code for the CNN of 혼공머신 8-2 / Géron 14, timed.

`python bench/keras_course.py DATA.npz [--quick]` trains the course model with ``model.fit`` as
the book writes it (Adam, sparse categorical cross-entropy, batch 32, validation data each
epoch) and runs ``model.predict`` on the test images, then prints one JSON line. It imports
neither torch nor cnnkit, so it runs in any environment with Keras: TensorFlow's, as the course
uses, or Keras on another backend (``KERAS_BACKEND``). ``bench/cases/keras_course.py`` writes
DATA.npz (the same split as the other cases) and starts this script in a fresh process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path

if "KERAS_BACKEND" not in os.environ:
    os.environ["KERAS_BACKEND"] = "tensorflow" if importlib.util.find_spec("tensorflow") else "torch"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from course_keras_reference import course_cnn


class _EpochTimes(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.times = [*getattr(self, "times", []), time.perf_counter() - self.start]


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    data = np.load(argv[0])
    scale = lambda a: a.reshape(-1, 28, 28, 1).astype("float32") / 255.0  # noqa: E731
    n = 9_600 if quick else len(data["train_x"])
    train_x, train_y = scale(data["train_x"][:n]), data["train_y"][:n]
    val_n = n // 4
    val_x, val_y = scale(data["val_x"][:val_n]), data["val_y"][:val_n]
    test_x = scale(data["test_x"])
    keras.utils.set_random_seed(42)
    model = course_cnn()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    times = _EpochTimes()
    epochs = 1 if quick else 2  # the first epoch also builds the graph: the second is the figure
    history = model.fit(
        train_x,
        train_y,
        epochs=epochs,
        validation_data=(val_x, val_y),
        callbacks=[times],
        verbose=0,
    )
    model.predict(test_x[:1000], batch_size=32, verbose=0)  # warm-up
    start = time.perf_counter()
    probs = model.predict(test_x, batch_size=32, verbose=0)
    infer_s = time.perf_counter() - start
    accuracy = float((probs.argmax(1) == data["test_y"]).mean())
    result = {
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "train_images": int(n),
        "val_images": int(val_n),
        "epoch_s": [round(t, 3) for t in times.times],
        "val_accuracy": [round(v, 4) for v in history.history["val_accuracy"]],
        "infer_images": len(test_x),
        "infer_s": round(infer_s, 3),
        "test_accuracy": round(accuracy, 4),
        "cpu_threads": os.cpu_count(),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
