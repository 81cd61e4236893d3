"""The course's own ch. 8-2 Keras code, run on the same Fashion-MNIST files, as a reference.

`cnnkit train --model hongong_cnn --data fashion-mnist` is meant to reproduce 혼공머신 ch. 8-2.
This script runs the book's Keras code itself (same layers, `optimizer='adam'`, batch 32,
`EarlyStopping(patience=2, restore_best_weights=True)`, `train_test_split(test_size=0.2,
random_state=42)`) on the IDX files cnnkit reads, and prints its validation and test accuracy,
so the two can be compared on one machine. It needs Keras 3, which cnnkit does not depend on:

    pip install keras scikit-learn
    KERAS_BACKEND=torch python scripts/course_keras_reference.py --seed 42

Results are in docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras
from sklearn.model_selection import train_test_split

from cnnkit.data import load_fashion_mnist


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=42, help="keras.utils.set_random_seed")
    parser.add_argument("--out", help="write the history and results as JSON here")
    args = parser.parse_args()

    keras.utils.set_random_seed(args.seed)
    train, test = load_fashion_mnist()
    train_scaled = train.images.numpy().reshape(-1, 28, 28, 1) / 255.0
    test_scaled = test.images.numpy().reshape(-1, 28, 28, 1) / 255.0
    train_scaled, val_scaled, train_target, val_target = train_test_split(
        train_scaled, train.labels.numpy(), test_size=0.2, random_state=42
    )

    model = keras.Sequential(
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
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    early_stopping = keras.callbacks.EarlyStopping(patience=2, restore_best_weights=True)
    start = time.perf_counter()
    history = model.fit(
        train_scaled,
        train_target,
        epochs=20,
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
    print(json.dumps(result))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump({**result, "history": history.history}, f, indent=1)


if __name__ == "__main__":
    main()
