"""``cnnkit.Trainer.fit`` as Keras users write it, checked against Keras' own behaviour."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from cnnkit import Trainer, create_model
from cnnkit.data import ArrayDataset
from cnnkit.engine import EarlyStopping, ProgressBar, seed_everything
from cnnkit.errors import DataError
from cnnkit.tasks.classify import ClassifyTrainer


@pytest.fixture(scope="module")
def arrays(fashion):
    """480 real training images as Keras' course code holds them: float NHWC in [0, 1], int labels."""
    train, _ = fashion
    part = train.take(480, seed=1)
    x = part.images.permute(0, 2, 3, 1).numpy() / 255.0  # train_input.reshape(-1, 28, 28, 1) / 255.0
    return x, part.labels.numpy()


def make() -> ClassifyTrainer:
    seed_everything(0)
    return make_with(create_model("hongong_cnn"))


def make_with(model: torch.nn.Module) -> ClassifyTrainer:
    return Trainer(model, device="cpu", seed=0)


def keras_split(x, y, fraction):
    os.environ.setdefault("KERAS_BACKEND", "torch")
    from keras.src.trainers.data_adapters.array_slicing import train_validation_split

    return train_validation_split((x, y), validation_split=fraction)


def test_top_level_trainer_is_the_classifier_trainer():
    assert Trainer is ClassifyTrainer


def test_validation_split_holds_out_the_last_samples_as_keras_does(arrays, capsys):
    x, y = arrays[0][:203], arrays[1][:203]  # 203 * 0.75 is not whole: Keras floors it
    trainer = make()
    history = trainer.fit(x, y, epochs=1, batch_size=64, validation_split=0.25, verbose=0)
    (x_tr, y_tr), (x_val, y_val) = keras_split(x, y, 0.25)
    assert len(x_val) == 203 - 152 and np.array_equal(np.asarray(y_val), y[152:])
    # The logged validation loss is the loss on exactly Keras' validation samples.
    expected = trainer.evaluate_loss(ArrayDataset.from_arrays(np.asarray(x_val), np.asarray(y_val)))
    assert history.history["val_loss"] == pytest.approx([expected["loss"]], rel=1e-5)
    assert capsys.readouterr().err == ""  # verbose=0: silent


def test_history_is_the_keras_dict_of_lists(arrays):
    x, y = arrays
    history = make().fit(x[:400], y[:400], validation_data=(x[400:], y[400:]), epochs=2, verbose=0)
    keras_keys = {"loss", "accuracy", "val_loss", "val_accuracy"}  # Keras with metrics=["accuracy"]
    assert keras_keys <= set(history.history)
    for key in keras_keys:
        assert history.history[key] == history.series(key) and len(history.history[key]) == 2
    assert history.epoch == [0, 1]  # Keras counts epochs from 0 in History.epoch
    assert [row["epoch"] for row in history.epochs] == [1, 2]


def test_arrays_tensors_and_datasets_train_the_same(arrays):
    x, y = arrays
    from_numpy = make().fit(x[:320], y[:320], validation_data=(x[320:], y[320:]), epochs=1, verbose=0)
    nchw = torch.from_numpy(x).permute(0, 3, 1, 2).float()
    labels = torch.from_numpy(y)
    train = ArrayDataset(nchw[:320], labels[:320])
    val = ArrayDataset(nchw[320:], labels[320:])
    from_tensors = make().fit(nchw[:320], labels[:320], validation_data=(nchw[320:], labels[320:]), epochs=1)
    from_datasets = make().fit(train, val, epochs=1, verbose=0)
    for key in ("loss", "val_loss", "val_accuracy"):
        assert from_numpy.history[key] == pytest.approx(from_tensors.history[key], rel=1e-5)
        assert from_numpy.history[key] == pytest.approx(from_datasets.history[key], rel=1e-5)


def test_verbose_levels_and_no_double_progress(arrays, capsys):
    # ipykernel imported (as after running the notebooks) is not a notebook: still a log here.
    import ipykernel  # noqa: F401

    x, y = arrays[0][:128], arrays[1][:128]
    make().fit(x, y, epochs=2, batch_size=64, verbose=2)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split()[1] for line in lines] == ["1/2", "2/2"] and "loss" in lines[0]
    make().fit(x, y, epochs=1, batch_size=64)  # default verbose=1; a log, not a terminal: one line
    assert len(capsys.readouterr().err.splitlines()) == 1
    make().fit(x, y, epochs=1, batch_size=64, verbose=1, callbacks=[ProgressBar(bar=False)])
    assert len(capsys.readouterr().err.splitlines()) == 1  # the given bar, not a second one
    with pytest.raises(ValueError, match="verbose must be 0, 1 or 2"):
        make().fit(x, y, verbose=3)


def test_callbacks_given_to_fit_act_for_that_call_only(arrays):
    x, y = arrays
    trainer = make()
    before = list(trainer.callbacks)
    # patience 0 and a validation loss that cannot improve by 10: stops after the second epoch.
    stop = EarlyStopping(patience=0, min_delta=10.0)
    history = trainer.fit(x[:300], y[:300], validation_split=0.2, epochs=5, callbacks=[stop], verbose=0)
    assert len(history.epochs) == 2 and stop.stopped_epoch is not None
    assert trainer.callbacks == before


def test_contradictions_are_refused(arrays):
    x, y = arrays
    with pytest.raises(ValueError, match="labels y"):
        make().fit(x)
    with pytest.raises(ValueError, match="val must be an ArrayDataset"):
        make().fit(ArrayDataset.from_arrays(x, y), y)
    with pytest.raises(ValueError, match="one of"):
        make().fit(x, y, validation_data=(x, y), validation_split=0.2)
    with pytest.raises(ValueError, match="validation_split must be between 0 and 1"):
        make().fit(x, y, validation_split=1.5)


def test_predict_and_evaluate_take_arrays_as_the_course_writes_them(arrays):
    """혼공머신 8-2/8-3: ``model.evaluate(val_scaled, val_target)`` and
    ``model.predict(val_scaled[0:1])`` on the float NHWC arrays that ``fit`` took; the accuracy
    is the share of argmax predictions equal to the labels (NumPy), the probabilities sum to 1."""
    x, y = arrays
    trainer = make()
    trainer.fit(x[:320], y[:320], epochs=1, verbose=0)
    probs = trainer.predict(x[320:])
    assert probs.shape == (160, 10) and torch.allclose(probs.sum(1), torch.ones(160), atol=1e-5)
    one = trainer.predict(x[320:321])  # val_scaled[0:1]
    assert one.shape == (1, 10) and torch.allclose(one[0], probs[0], atol=1e-6)
    report = trainer.evaluate(x[320:], y[320:])
    assert report["accuracy"] == pytest.approx(float(np.mean(probs.argmax(1).numpy() == y[320:])))
    dataset = ArrayDataset.from_arrays(x[320:], y[320:])
    assert report["accuracy"] == trainer.evaluate(dataset)["accuracy"]
    assert torch.equal(trainer.predict(dataset), probs)
    gray = (x[320:325, :, :, 0] * 255).round().astype(np.uint8)  # [N, 28, 28] as keras.datasets gives
    assert trainer.predict(gray).shape == (5, 10)
    with pytest.raises(ValueError, match=r"evaluate\(x, y\): give the labels"):
        trainer.evaluate(x[320:])


def test_labels_keras_users_have_are_read_or_refused_by_name(arrays):
    """Keras' CIFAR-10 labels [N, 1] and float class indices train as the [N] integers they hold;
    labels the model has no output for, one-hot rows, fractions and strings are refused before
    the first step, each naming the problem (cross-entropy would stop mid-epoch with
    'Target 19 is out of bounds')."""
    x, y = arrays[0][:128], arrays[1][:128]
    reference = make().fit(x, y, epochs=1, batch_size=64, verbose=0).history["loss"]
    for same in (y[:, None], y.astype(np.float32)):
        assert make().fit(x, same, epochs=1, batch_size=64, verbose=0).history["loss"] == reference
    refused = [
        (
            y + 10,
            r"label 19, but the model has 10 outputs \(classes 0..9\); give labels 0..9 or build "
            r"the model with num_classes=20",
        ),
        (y - 1, r"label -1; labels are class indices"),
        (y + 0.5, r"label \d\.5 is not a class index"),
        (
            np.eye(10)[y],
            r"labels of shape \(128, 10\) look one-hot; give class indices \[N\] instead \(y.argmax\(1\)\)",
        ),
        (y.astype(str), r"labels of dtype <U\d+; give integer class indices"),
    ]
    for labels, message in refused:
        with pytest.raises(DataError, match=message):
            make().fit(x, labels, epochs=1, verbose=0)
    with pytest.raises(DataError, match=r"validation_data: label 19, but the model has 10 outputs"):
        make().fit(x, y, validation_data=(x, y + 10), epochs=1, verbose=0)
    # A headless model (num_classes=0) may get a head of its own, as torchvision users write it.
    headless = create_model("hongong_cnn", num_classes=0)
    headless.head.classifier = torch.nn.Linear(100, 10)
    assert len(make_with(headless).fit(x, y, epochs=1, batch_size=64, verbose=0).history["loss"]) == 1


def test_a_second_fit_counts_epochs_on_and_says_so_when_it_has_nothing_to_do(arrays):
    """``epochs`` is the last epoch to reach, as Keras' ``epochs`` with ``initial_epoch``: a second
    ``fit(epochs=2)`` after two epochs trains nothing, and warns rather than doing so silently."""
    x, y = arrays[0][:128], arrays[1][:128]
    trainer = make()
    trainer.fit(x, y, epochs=2, batch_size=64, verbose=0)
    weights = [p.detach().clone() for p in trainer.model.parameters()]
    with pytest.warns(UserWarning, match=r"fit\(epochs=2\) trained nothing: .* give epochs=2 \+ N") as record:
        trainer.fit(x, y, epochs=2, batch_size=64, verbose=0)
    assert record[0].filename == __file__  # the warning points at the caller's line
    assert all(torch.equal(a, b) for a, b in zip(weights, trainer.model.parameters()))
    history = trainer.fit(x, y, epochs=3, batch_size=64, verbose=0)
    assert [row["epoch"] for row in history.epochs] == [1, 2, 3] and trainer.epoch == 3
