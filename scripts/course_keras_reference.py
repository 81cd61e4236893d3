"""The course's own ch. 8-2 Keras code, run on the same Fashion-MNIST files, as a reference.

`cnnkit train --model hongong_cnn --data fashion-mnist` is meant to reproduce 혼공머신 ch. 8-2.
This script runs the book's Keras code itself (same layers, `optimizer='adam'`, batch 32,
`EarlyStopping(patience=2, restore_best_weights=True)`, `train_test_split(test_size=0.2,
random_state=42)`) on the IDX files cnnkit reads, and prints its validation and test accuracy,
so the two can be compared on one machine. It needs Keras 3, which cnnkit does not depend on:

    pip install keras scikit-learn
    KERAS_BACKEND=torch python scripts/course_keras_reference.py --seed 42

Results are in docs/results.md.

With ``--save DIR`` it also writes the trained model as ``DIR/course_cnn.keras`` and
``DIR/course_cnn.weights.h5`` (Keras 3 formats, which ``create_model("hongong_cnn",
weights=...)`` reads) and Keras' class probabilities for the first ``--predict`` test images as
``DIR/keras_probs.npy``; ``--epochs`` and ``--limit-train`` make a quick model (docs/pretrained.md):

    KERAS_BACKEND=torch python scripts/course_keras_reference.py --epochs 1 --limit-train 2000 --save out/
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras
import numpy as np


def course_cnn() -> keras.Sequential:
    """혼공머신 ch. 8-2's CNN, as the book builds it (cnnkit's ``hongong_cnn``)."""
    return keras.Sequential(
        [
            keras.layers.Input((28, 28, 1)),
            keras.layers.Conv2D(32, kernel_size=3, activation="relu", padding="same"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(64, kernel_size=3, activation="relu", padding="same"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(100, activation="relu"),
            keras.layers.Dropout(0.4),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=42, help="keras.utils.set_random_seed")
    parser.add_argument("--out", help="write the history and results as JSON here")
    parser.add_argument("--epochs", type=int, default=20, help="maximum epochs (the book: 20)")
    parser.add_argument("--limit-train", type=int, help="train on the first N training images only")
    parser.add_argument(
        "--save", metavar="DIR", help="save the model (.keras, .weights.h5) and probabilities"
    )
    parser.add_argument("--predict", type=int, default=1000, help="with --save: test images predicted")
    args = parser.parse_args()
    # Imported here: bench/keras_course.py takes course_cnn() from this file in an environment
    # that has Keras but neither cnnkit nor scikit-learn.
    from sklearn.model_selection import train_test_split

    from cnnkit.data import load_fashion_mnist

    keras.utils.set_random_seed(args.seed)
    train, test = load_fashion_mnist()
    if args.limit_train:
        train = train.subset(slice(0, args.limit_train))
    train_scaled = train.images.numpy().reshape(-1, 28, 28, 1) / 255.0
    test_scaled = test.images.numpy().reshape(-1, 28, 28, 1) / 255.0
    train_scaled, val_scaled, train_target, val_target = train_test_split(
        train_scaled, train.labels.numpy(), test_size=0.2, random_state=42
    )

    model = course_cnn()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    early_stopping = keras.callbacks.EarlyStopping(patience=2, restore_best_weights=True)
    start = time.perf_counter()
    history = model.fit(
        train_scaled,
        train_target,
        epochs=args.epochs,
        validation_data=(val_scaled, val_target),
        callbacks=[early_stopping],
        verbose=2,
    )
    seconds = time.perf_counter() - start
    val_loss, val_accuracy = model.evaluate(val_scaled, val_target, verbose=0)
    test_loss, test_accuracy = model.evaluate(test_scaled, test.labels.numpy(), verbose=0)
    result = {
        "seed": args.seed,
        "epochs_run": len(history.history["loss"]),
        "val_accuracy": val_accuracy,
        "val_loss": val_loss,
        "test_accuracy": test_accuracy,
        "test_loss": test_loss,
        "seconds": round(seconds, 1),
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
    }
    if args.save:
        folder = Path(args.save)
        folder.mkdir(parents=True, exist_ok=True)
        model.save(folder / "course_cnn.keras")
        model.save_weights(folder / "course_cnn.weights.h5")
        probs = model.predict(test_scaled[: args.predict], verbose=0)
        np.save(folder / "keras_probs.npy", np.asarray(probs, dtype=np.float32))
    print(json.dumps(result))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump({**result, "history": history.history}, f, indent=1)


if __name__ == "__main__":
    main()
