"""Trainer and callbacks on small real Fashion-MNIST subsets."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file

from cnnkit import create_model
from cnnkit.engine import (
    EarlyStopping,
    History,
    ModelCheckpoint,
    ProgressBar,
    make_optimizer,
    seed_everything,
)
from cnnkit.engine.callbacks import Callback
from cnnkit.engine.schedules import one_cycle
from cnnkit.tasks.classify.metrics import classification_report, confusion_matrix
from cnnkit.tasks.classify.task import ClassifyTrainer


@pytest.fixture(scope="module")
def small(fashion_small):
    train, test = fashion_small
    tr, val = train.split(0.2, seed=0)
    return tr, val, test


def make(seed=0, **kw):
    seed_everything(seed)
    return ClassifyTrainer(create_model("hongong_cnn"), seed=seed, device="cpu", **kw)


def test_learns_real_data_and_history_has_keras_keys(small):
    tr, val, test = small
    trainer = make()
    history = trainer.fit(tr, val, epochs=2, batch_size=32)
    assert [row["epoch"] for row in history.epochs] == [1, 2]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"} <= set(history.epochs[0])
    assert history.epochs[1]["loss"] < history.epochs[0]["loss"]
    report = trainer.evaluate(test)
    assert report["accuracy"] > 0.6  # chance is 0.1; 1,600 images for 2 epochs
    probs = trainer.predict(test.images[:10])
    torch.testing.assert_close(probs.sum(1), torch.ones(10))


def test_history_lr_is_the_rate_of_each_epochs_last_step(small):
    tr, _, _ = small
    trainer = make(optimizer="sgd", lr=0.1, scheduler=one_cycle(0.1, pct_start=0.3))
    history = trainer.fit(tr.take(320), epochs=2, batch_size=32)  # 10 steps an epoch
    # Reference: torch's OneCycleLR on its own, the rate each of the 20 steps uses.
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=0.1, total_steps=20, pct_start=0.3, div_factor=10, final_div_factor=100,
        anneal_strategy="linear",
    )  # fmt: skip
    rates = []
    for _ in range(20):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    assert [row["lr"] for row in history.epochs] == pytest.approx([rates[9], rates[19]])
    # The last step ran at the schedule's end, max_lr / 10 / 100; one step on it extrapolates below 0.
    assert rates[19] == pytest.approx(1e-4) and opt.param_groups[0]["lr"] < 0


def test_seeded_runs_repeat_exactly(small):
    tr, val, _ = small
    a = make(seed=3)
    ha = a.fit(tr.take(400), val, epochs=1).epochs[0]
    b = make(seed=3)
    hb = b.fit(tr.take(400), val, epochs=1).epochs[0]
    assert ha["loss"] == hb["loss"] and ha["val_loss"] == hb["val_loss"]
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)


class Scripted(Callback):
    """Feeds EarlyStopping a scripted val_loss so the test knows when it must stop."""

    def __init__(self, values):
        self.values = values

    def on_epoch_end(self, epoch, logs):
        logs["val_loss"] = self.values[epoch]


def test_early_stopping_patience_and_restore_best(small):
    tr, _, _ = small
    early = EarlyStopping(patience=2, restore_best_weights=True)
    snapshots = []

    class Snapshot(Callback):
        def on_epoch_end(self, epoch, logs):
            snapshots.append({k: v.clone() for k, v in self.trainer.model.state_dict().items()})

    trainer = make(callbacks=[Scripted([1.0, 0.5, 0.7, 0.6, 0.4]), early, Snapshot()])
    history = trainer.fit(tr.take(200), None, epochs=5, batch_size=50)
    assert len(history.epochs) == 4  # best at epoch 2, no improvement in 3 and 4 -> stop
    assert early.best_epoch == 1 and early.stopped_epoch == 3
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, snapshots[1][key])


def test_model_checkpoint_saves_only_improvements(tmp_path, small):
    tr, _, _ = small
    path = tmp_path / "best.safetensors"
    ckpt = ModelCheckpoint(path, monitor="val_loss")
    trainer = make(callbacks=[Scripted([0.9, 1.2, 0.3]), ckpt])
    trainer.fit(tr.take(100), None, epochs=3, batch_size=50)
    assert ckpt.best_epoch == 2 and ckpt.best == pytest.approx(0.3)
    state = load_file(str(path))
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(state[key], value)
    assert not list(tmp_path.glob(".cnnkit-tmp-*"))
    with pytest.raises(ValueError, match=".safetensors"):
        ModelCheckpoint(tmp_path / "best.h5")


def test_history_csv_json_round_trip(tmp_path):
    history = History()
    history.on_epoch_end(0, {"loss": 1.5, "accuracy": 0.5})
    history.on_epoch_end(1, {"loss": 1.0, "accuracy": 0.7, "val_loss": 1.1})
    history.save(tmp_path)
    lines = (tmp_path / "history.csv").read_text().splitlines()
    assert lines[0] == "epoch,loss,accuracy,val_loss" and lines[2] == "2,1.0,0.7,1.1"
    assert History.load(tmp_path / "history.json").epochs == history.epochs


def test_progress_plain_lines_when_not_a_tty(small, capsys):
    import io

    tr, val, _ = small
    stream = io.StringIO()
    make(callbacks=[ProgressBar(stream=stream)]).fit(tr.take(64), val.take(64), epochs=2, batch_size=32)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("epoch 1/2  loss ") and "val_accuracy" in lines[1]
    assert "\r" not in stream.getvalue()


def test_progress_bar_in_terminal_mode(small):
    import io

    tr, _, _ = small
    stream = io.StringIO()
    make(callbacks=[ProgressBar(stream=stream, bar=True)]).fit(tr.take(64), None, epochs=1, batch_size=16)
    text = stream.getvalue()
    assert "epoch 1/1" in text and "4/4" in text and "loss" in text


def test_metrics_match_a_hand_computation():
    preds = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    target = torch.tensor([0, 1, 1, 1, 2, 0, 2])
    cm = confusion_matrix(preds, target, 3)
    assert cm.tolist() == [[1, 0, 1], [1, 2, 0], [0, 0, 2]]
    report = classification_report(cm, ["a", "b", "c"])
    assert report["accuracy"] == pytest.approx(5 / 7)
    assert report["per_class"]["a"]["precision"] == pytest.approx(0.5)
    assert report["per_class"]["b"]["recall"] == pytest.approx(2 / 3)
    assert report["per_class"]["c"]["f1"] == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    from sklearn.metrics import f1_score

    assert report["macro_f1"] == pytest.approx(f1_score(target, preds, average="macro"))


def test_confusion_matrix_refuses_labels_it_cannot_count():
    # A label of K would land in the next row of the flat count; a negative one, in the one before.
    with pytest.raises(ValueError, match=r"predicted labels must be 0\.\.2, got 0\.\.3"):
        confusion_matrix(torch.tensor([0, 3]), torch.tensor([0, 1]), 3)
    with pytest.raises(ValueError, match=r"true labels must be 0\.\.2, got -1\.\.1"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([-1, 1]), 3)
    with pytest.raises(ValueError, match="3 predictions for 2 labels"):
        confusion_matrix(torch.tensor([0, 1, 2]), torch.tensor([0, 1]), 3)


def test_non_finite_loss_stops_with_the_step(small):
    from cnnkit.errors import TrainingError

    tr, _, _ = small
    trainer = make(lr=1e6, optimizer="sgd")
    with pytest.raises(TrainingError, match=r"at epoch 1, step \d+"):
        trainer.fit(tr.take(640), None, epochs=1, batch_size=32)


def test_optimizers_take_keras_defaults():
    # keras.optimizers.Adam/AdamW/RMSprop document epsilon=1e-7 and RMSprop rho=0.9.
    params = [torch.nn.Parameter(torch.zeros(3))]
    for name in ("adam", "adamw"):
        group = make_optimizer(name, params, lr=1e-3).param_groups[0]
        assert group["eps"] == 1e-7 and group["betas"] == (0.9, 0.999)
    group = make_optimizer("rmsprop", params, lr=1e-3).param_groups[0]
    assert group["eps"] == 1e-7 and group["alpha"] == 0.9
    with pytest.raises(ValueError, match="optimizer must be one of"):
        make_optimizer("adamax", params, lr=1e-3)


def test_a_small_training_set_goes_to_an_accelerator_once(small, monkeypatch):
    import cnnkit.tasks.classify.task as task_module

    train = small[0]
    trainer = ClassifyTrainer(create_model("hongong_cnn"), device="cpu")
    assert trainer.task.prepare_fit(trainer, train) is train  # the CPU indexes the data where it is
    assert train.to("cpu") is train
    # "meta" stands in for an accelerator here: the tensors move, shapes and names stay.
    trainer.device = torch.device("meta")
    moved = trainer.task.prepare_fit(trainer, train)
    assert moved.images.device.type == "meta" and moved.labels.device.type == "meta"
    assert moved.images.shape == train.images.shape and moved.class_names == train.class_names
    assert train.images.device.type == "cpu"  # the caller's dataset is left alone
    monkeypatch.setattr(task_module, "DEVICE_RESIDENT_BYTES", train.images.numel() - 1)
    # too large: batches go one by one (pinned on CUDA)
    assert trainer.task.prepare_fit(trainer, train) is train


def test_compile_option_trains_like_eager_and_times_compiling_apart(small):
    train, val, _ = small
    train = train.subset(slice(0, 256))

    # A net without dropout: compiled dropout draws its masks from another generator.
    def build(**kw):
        seed_everything(3)
        return ClassifyTrainer(create_model("fashion_bn_cnn", widths=[8, 16]), seed=3, device="cpu", **kw)

    eager, compiled = build(), build(compile=True)
    eager.fit(train, epochs=1, batch_size=64)
    compiled.fit(train, epochs=1, batch_size=64)
    # The same model, state_dict keys and all; compiled kernels round a little differently.
    assert list(compiled.model.state_dict()) == list(eager.model.state_dict())
    assert compiled.history.epochs[0]["loss"] == pytest.approx(eager.history.epochs[0]["loss"], rel=1e-3)
    train_compile = compiled.compile_seconds
    assert train_compile > 0 and eager.compile_seconds == 0
    logits_c, logits_e = compiled.logits(val), eager.logits(val)
    torch.testing.assert_close(logits_c, logits_e, rtol=1e-3, atol=1e-3)
    assert compiled.compile_seconds > train_compile  # the eval graph compiled once, apart
    before = compiled.compile_seconds
    compiled.logits(val)
    assert compiled.compile_seconds == before


def test_inference_only_compile_freezes_the_weights_and_recompiles_when_they_change(small):
    train, val, _ = small
    seed_everything(5)
    model = create_model("fashion_bn_cnn", widths=[8, 16])
    ClassifyTrainer(model, seed=5, device="cpu").fit(train.subset(slice(0, 256)), epochs=1, batch_size=64)
    eager = ClassifyTrainer(copy.deepcopy(model), device="cpu", optimizer=None)
    frozen = ClassifyTrainer(copy.deepcopy(model), device="cpu", optimizer=None, compile=True)
    data = val.subset(slice(0, 150))  # batches of 64, 64 and 22: the last one is padded
    # Frozen, BatchNorm folds into the convolutions: the same logits up to rounding.
    torch.testing.assert_close(frozen.logits(data, 64), eager.logits(data, 64), rtol=1e-4, atol=1e-4)
    assert frozen.compile_seconds > 0
    first = frozen.compile_seconds
    torch.testing.assert_close(frozen.logits(data, 64), eager.logits(data, 64), rtol=1e-4, atol=1e-4)
    assert frozen.compile_seconds == first  # compiled once
    # New weights in place (what load_state_dict does): the frozen graph must not answer.
    halved = {k: v * 0.5 if k.endswith("weight") else v for k, v in model.state_dict().items()}
    frozen.model.load_state_dict(halved)
    eager.model.load_state_dict(halved)
    torch.testing.assert_close(frozen.logits(data, 64), eager.logits(data, 64), rtol=1e-4, atol=1e-4)
    assert frozen.compile_seconds > first  # compiled again, for the new weights


def test_a_failed_compile_is_one_clear_error(small):
    import torch._inductor.config as inductor_config

    from cnnkit.errors import TrainingError

    # No C++ compiler: what a machine without one gives (and no cached kernels to fall back on).
    # The config's own patch (monkeypatch's undo would delete the cache flag from it).
    no_compiler = inductor_config.patch({"fx_graph_cache": False, "cpp.cxx": ("no-such-compiler-here",)})
    seed_everything(0)
    trainer = ClassifyTrainer(create_model("fashion_bn_cnn", widths=[5, 7]), device="cpu", compile=True)
    with (
        no_compiler,
        pytest.raises(TrainingError, match=r"could not compile SequentialCNN .*without --compile"),
    ):
        trainer.fit(small[0].subset(slice(0, 64)), epochs=1, batch_size=32)


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_fused_cpu_updates_equal_torchs_foreach_ones(name):
    # The fused kernel is one pass over each tensor; torch's foreach Adam / AdamW / SGD (Nesterov)
    # with the same settings is the reference: the same weights up to float rounding.
    torch.manual_seed(0)
    # Over FUSED_MIN_PARAMS weights in all: a model that size gets the fused kernel.
    weights = [torch.randn(1024, 1000), torch.randn(32), torch.randn(8, 3, 3, 3)]
    fused = [torch.nn.Parameter(w.clone()) for w in weights]
    ref = [torch.nn.Parameter(w.clone()) for w in weights]
    opt = make_optimizer(name, fused, lr=1e-2, weight_decay=1e-3)
    assert opt.param_groups[0]["fused"] is True
    settings = {k: v for k, v in opt.param_groups[0].items() if k not in ("params", "fused", "foreach")}
    settings.pop("decoupled_weight_decay", None)
    reference = type(opt)(ref, **settings, foreach=True)
    for _ in range(5):
        grads = [torch.randn_like(w) for w in weights]
        for params in (fused, ref):
            for p, g in zip(params, grads):
                p.grad = g.clone()
        opt.step()
        reference.step()
    for a, b in zip(fused, ref):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-6)
    assert not torch.equal(fused[0].detach(), weights[0])  # the steps did move the weights


def test_rmsprop_has_no_fused_kernel_and_keeps_foreach():
    group = make_optimizer("rmsprop", [torch.nn.Parameter(torch.zeros(3))], lr=1e-3).param_groups[0]
    assert group["foreach"] is True and not group.get("fused")


def test_the_course_cnn_keeps_foreach_and_resnet18_gets_fused():
    # Below FUSED_MIN_PARAMS the update is a sliver of a step: the course CNN (333,526 weights,
    # the course's count) trains as before; ResNet-18 (11.7 M) gets the fused kernel.
    from cnnkit import create_model

    small = create_model("hongong_cnn")
    small(torch.zeros(1, 1, 28, 28))  # lazy layers take their shapes
    assert sum(p.numel() for p in small.parameters()) == 333_526
    assert make_optimizer("adam", small.parameters(), lr=1e-3).param_groups[0]["foreach"] is True
    assert not make_optimizer("adam", small.parameters(), lr=1e-3).param_groups[0]["fused"]
    big = create_model("resnet18").parameters()
    assert make_optimizer("adam", big, lr=1e-3).param_groups[0]["fused"] is True


def test_param_groups_get_the_fused_kernel_too():
    # finetune's phase 2 passes groups with their own rates (models.surgery.param_groups).
    groups = [
        {"params": [torch.nn.Parameter(torch.zeros(1000, 1000))], "lr": 1e-4},
        {"params": [torch.nn.Parameter(torch.zeros(4))], "lr": 1e-3},
    ]
    opt = make_optimizer("adam", groups, lr=1e-3)
    assert [g["fused"] for g in opt.param_groups] == [True, True]
    # A group of one tensor or of an iterator keeps all its weights, as torch.optim would.
    weight = torch.nn.Parameter(torch.zeros(1000, 1000))
    for params in (weight, iter([weight])):
        group = make_optimizer("adam", [{"params": params}], lr=1e-3).param_groups[0]
        assert len(group["params"]) == 1 and group["params"][0] is weight and group["fused"] is True
    assert [g["lr"] for g in opt.param_groups] == [1e-4, 1e-3]


def test_validation_freq_validates_as_keras_counts_and_after_the_last_epoch(small):
    """Keras' own rule (``Trainer._should_eval``) picks the validated epochs; cnnkit adds the last
    one, so that early stopping and the best weights see where training ended."""
    import os

    os.environ.setdefault("KERAS_BACKEND", "torch")
    from keras.src.trainers.trainer import Trainer as KerasTrainer

    tr, val, _ = small
    trainer = make()
    history = trainer.fit(tr.take(100), val.take(60), epochs=5, batch_size=50, verbose=0, validation_freq=2)
    keras_epochs = [e + 1 for e in range(5) if KerasTrainer._should_eval(None, e, 2)]
    assert keras_epochs == [2, 4]
    assert [row["epoch"] for row in history.epochs if "val_loss" in row] == [*keras_epochs, 5]
    assert len(history.history["val_loss"]) == 3 and len(history.history["loss"]) == 5
    assert history.epochs[-1]["val_loss"] == pytest.approx(trainer.evaluate(val.take(60))["loss"], rel=1e-6)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="validation_freq must be an int >= 1"):
            trainer.fit(tr.take(100), val, epochs=1, validation_freq=bad)


def test_early_stopping_and_checkpoints_wait_for_the_epochs_that_validate(small, tmp_path):
    tr, _, _ = small
    early = EarlyStopping(patience=2, restore_best_weights=False)
    ckpt = ModelCheckpoint(tmp_path / "best.safetensors", monitor="val_loss")
    # Validations after epochs 2, 4, 6 and 8: 0.5, then 0.7 and 0.6 (two without improvement).
    values = {1: 0.5, 3: 0.7, 5: 0.6, 7: 0.4}

    class ScriptedEvery2(Callback):
        def on_epoch_end(self, epoch, logs):
            if self.trainer.validated:
                logs["val_loss"] = values[epoch]

    trainer = make(callbacks=[ScriptedEvery2(), early, ckpt])
    history = trainer.fit(tr.take(100), None, epochs=8, batch_size=50, verbose=0, validation_freq=2)
    assert len(history.epochs) == 6  # patience 2 counts validations: stopped after epoch 6, not 4
    assert early.best_epoch == 1 and early.stopped_epoch == 5 and ckpt.best_epoch == 1
    # A monitor that an epoch which validated does not have is still an error.
    wrong = EarlyStopping(monitor="val_acc")
    with pytest.raises(KeyError, match="EarlyStopping monitors 'val_acc'"):
        make(callbacks=[ScriptedEvery2(), wrong]).fit(
            tr.take(100), None, epochs=2, verbose=0, validation_freq=2
        )
