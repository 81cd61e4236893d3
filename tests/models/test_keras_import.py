"""The course CNN trained in Keras 3, read into cnnkit's hongong_cnn: same predictions.

The Keras model is built by scripts/course_keras_reference.py (the book's code), trained for one
epochs on 1,024 real Fashion-MNIST images, saved as ``.keras`` and ``.weights.h5``, and asked for
its probabilities on 1,000 real test images; cnnkit must give the same ones.
"""

from __future__ import annotations

import importlib.util
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import cnnkit.cli.__main__ as cli
from cnnkit import create_model
from cnnkit.io.weights import WeightsError

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras", reason="Keras 3 is not installed (pip install 'cnnkit[test]')")

SCRIPT = Path(__file__).parents[2] / "scripts" / "course_keras_reference.py"


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory, fashion) -> dict:
    if keras.backend.backend() != "torch":
        pytest.skip(f"KERAS_BACKEND is {keras.backend.backend()!r}; this test builds with 'torch'")
    spec = importlib.util.spec_from_file_location("course_keras_reference", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    train, test = fashion
    keras.utils.set_random_seed(0)
    model = script.course_cnn()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x_train = train.images[:1024].numpy().reshape(-1, 28, 28, 1) / 255.0
    model.fit(x_train, train.labels[:1024].numpy(), epochs=2, batch_size=32, verbose=0)
    x_test = test.images[:1000].numpy().reshape(-1, 28, 28, 1) / 255.0
    folder = tmp_path_factory.mktemp("keras")
    model.save(folder / "course_cnn.keras")
    model.save_weights(folder / "course_cnn.weights.h5")
    return {
        "keras": folder / "course_cnn.keras",
        "h5": folder / "course_cnn.weights.h5",
        "probs": np.asarray(model.predict(x_test, verbose=0)),
        "images": test.images[:1000],
        "labels": test.labels[:1000].numpy(),
    }


@pytest.mark.parametrize("kind", ["keras", "h5"])
def test_same_predictions_as_keras_on_1000_test_images(keras_files, kind):
    model = create_model("hongong_cnn", weights=str(keras_files[kind])).eval()
    with torch.inference_mode():
        probs = model(keras_files["images"].float() / 255).softmax(1).numpy()
    reference = keras_files["probs"]
    assert reference.shape == (1000, 10)
    assert np.abs(probs - reference).max() <= 1e-5
    assert (probs.argmax(1) == reference.argmax(1)).all()
    assert (reference.argmax(1) == keras_files["labels"]).mean() > 0.6  # trained, not guessing


def _edited_archive(source: Path, target: Path, edit) -> Path:
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                edit(config["config"]["layers"])
                data = json.dumps(config).encode()
            zout.writestr(item, data)
    return target


def test_a_conv_that_computes_differently_is_refused(keras_files, tmp_path):
    def valid_padding(layers):
        next(layer for layer in layers if layer["class_name"] == "Conv2D")["config"]["padding"] = "valid"

    bad = _edited_archive(keras_files["keras"], tmp_path / "valid.keras", valid_padding)
    with pytest.raises(WeightsError, match="conv2d.*does not compute like features.conv1"):
        create_model("hongong_cnn", weights=str(bad))


def test_another_architecture_is_refused_by_layer(keras_files):
    with pytest.raises(WeightsError, match="has 2 Conv2D layers with weights .* has 5"):
        create_model("geron_fashion_cnn", weights=str(keras_files["keras"]))


def test_cli_names_a_broken_file_in_one_line(tmp_path, capsys):
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    image = tmp_path / "item.png"
    from PIL import Image

    Image.new("L", (28, 28)).save(image)
    code = cli.main(["predict", "hongong_cnn", "--weights", str(broken), str(image)])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1 and "broken.keras" in err
