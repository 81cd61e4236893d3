"""Transfer learning: the frozen-base head phase, the full phase, per-group rates, run folders."""

from __future__ import annotations

import json
from collections import OrderedDict

import pytest
import torch
from torch import nn

from cnnkit.data import ArrayDataset, load_fashion_mnist, write_idx
from cnnkit.engine import Callback
from cnnkit.errors import UsageError
from cnnkit.io.weights import WeightsError, save_weights
from cnnkit.models import Backbone, FeatureInfo, create_model
from cnnkit.models.surgery import frozen_base, head_parameter_names, param_groups
from cnnkit.runs.config import RunConfig
from cnnkit.runs.evaluate import classify_data
from cnnkit.runs.finetune import FinetuneConfig, finetune_run
from cnnkit.runs.folder import load_run, read_run
from cnnkit.runs.pretrained import pretrained_model
from cnnkit.runs.train import train_run
from cnnkit.tasks.classify.task import ClassifyTrainer
from cnnkit.tasks.finetune import finetune

SANDAL, SHIRT = 5, 6


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny batches gain nothing from intra-op threads, and on a busy shared CPU the OpenMP
    threads mostly wait on each other (measured: 18× slower with 2 threads at load 15)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class TinyBNNet(Backbone):
    """conv-BN-ReLU ×2, global average pool, linear: a backbone with batch norm to freeze."""

    def __init__(self, num_classes: int = 3, in_chans: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(in_chans, 8, 3, padding=1, bias=False),
                bn1=nn.BatchNorm2d(8),
                act1=nn.ReLU(),
                conv2=nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False),
                bn2=nn.BatchNorm2d(16),
                act2=nn.ReLU(),
            )
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes) if num_classes else nn.Identity()
        self.feature_info = [FeatureInfo("features.act2", 16, 2)]
        self.num_classes = num_classes
        self.num_features = 16
        self.default_input = (in_chans, 28, 28)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pool(x).flatten(1)
        return x if pre_logits else self.fc(x)

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = nn.Linear(16, num_classes) if num_classes else nn.Identity()
        self.num_classes = num_classes


def _pretrained_bn_net(seed: int = 0) -> TinyBNNet:
    """A TinyBNNet whose BN running statistics are not the defaults (as after pretraining)."""
    torch.manual_seed(seed)
    model = TinyBNNet(num_classes=3)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.num_batches_tracked.fill_(100)
    return model


def _classes(data: ArrayDataset, keep: list[int], names: list[str]) -> ArrayDataset:
    """Only the samples of ``keep``, relabelled 0..len(keep)-1."""
    mask = torch.isin(data.labels, torch.tensor(keep))
    labels = data.labels[mask].clone()
    for new, old in enumerate(keep):
        labels[data.labels[mask] == old] = new
    return ArrayDataset(data.images[mask], labels, names, f"{data.name}{keep}")


@pytest.fixture(scope="module")
def three_class(fashion_small):
    """Real Fashion-MNIST, three classes: (train 96, val 48) from the 2,000-image subset."""
    train, _ = fashion_small
    data = _classes(train, [0, 1, 7], ["T-shirt/top", "Trouser", "Sneaker"])
    return data.take(96, seed=1), data.take(144, seed=2).subset(slice(96, 144))


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_head_parameter_names_are_what_reset_classifier_creates():
    model = _pretrained_bn_net()
    state = torch.random.get_rng_state()
    assert head_parameter_names(model) == ["fc.weight", "fc.bias"]
    assert torch.equal(state, torch.random.get_rng_state())  # found on a copy, RNG untouched
    assert head_parameter_names(create_model("hongong_cnn", num_classes=2)) == [
        "head.classifier.weight",
        "head.classifier.bias",
    ]
    with pytest.raises(ValueError, match="no classifier"):
        head_parameter_names(TinyBNNet(num_classes=0))


def test_head_phase_leaves_every_base_weight_and_bn_buffer_bit_identical(three_class):
    train, val = three_class
    model = _pretrained_bn_net()
    model.reset_classifier(3)
    before = _snapshot(model)
    result = finetune(model, train, val, head_epochs=2, full_epochs=0, lr=1e-2, patience=5, seed=0)
    after = model.state_dict()
    base = [k for k in before if not k.startswith("fc.")]
    assert len(base) == 12  # 2 convs + 2 × (weight, bias, mean, var, count)
    for key in base:
        assert torch.equal(before[key], after[key]), key
    assert not torch.equal(before["fc.weight"], after["fc.weight"])
    assert result.head_epochs_run == 2 and result.full_epochs_run == 0
    assert sorted(result.frozen) == sorted(n for n, _ in model.named_parameters() if n[:3] != "fc.")
    assert all(p.requires_grad for p in model.parameters())  # flags restored afterwards
    assert [row["phase"] for row in result.history.epochs] == [1.0, 1.0]


def test_frozen_base_holds_batch_norm_in_eval_even_in_train_mode():
    model = _pretrained_bn_net()
    x = torch.randn(8, 1, 28, 28)
    with frozen_base(model, ["fc.weight", "fc.bias"]):
        model.train()
        out = model(x)
        assert not model.features.bn1.training
        assert model.features.conv1.weight.requires_grad is False
        assert model.fc.weight.requires_grad is True
    model.eval()
    assert torch.allclose(out, model(x))  # the same as an eval-mode forward pass
    model.train()
    assert model.features.bn1.training  # hooks removed on exit


def test_full_phase_changes_base_weights_and_batch_norm_statistics(three_class):
    train, val = three_class
    model = _pretrained_bn_net()
    before = _snapshot(model)
    finetune(model, train, val, head_epochs=1, full_epochs=2, lr=1e-2, patience=5, monitor="loss")
    after = model.state_dict()
    assert not torch.equal(before["features.conv1.weight"], after["features.conv1.weight"])
    assert not torch.equal(before["features.bn1.running_mean"], after["features.bn1.running_mean"])


def test_keep_bn_eval_freezes_statistics_in_the_full_phase_too(three_class):
    train, val = three_class
    model = _pretrained_bn_net()
    before = _snapshot(model)
    finetune(
        model,
        train,
        val,
        head_epochs=1,
        full_epochs=2,
        lr=1e-2,
        patience=5,
        monitor="loss",
        keep_bn_eval=True,
    )
    after = model.state_dict()
    assert not torch.equal(before["features.conv1.weight"], after["features.conv1.weight"])
    for key in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(before[f"features.bn2.{key}"], after[f"features.bn2.{key}"])


class _RecordGroups(Callback):
    def __init__(self) -> None:
        self.phases: list[list[tuple[str, float, int]]] = []

    def on_train_begin(self, logs):
        groups = self.trainer.optimizer.param_groups
        self.phases.append([(g.get("name", ""), g["lr"], len(g["params"])) for g in groups])


def test_per_group_learning_rates_are_applied_as_given(three_class):
    train, val = three_class
    model = _pretrained_bn_net()
    model.reset_classifier(3)
    before = _snapshot(model)
    record = _RecordGroups()
    finetune(
        model,
        train,
        val,
        head_epochs=1,
        full_epochs=2,
        lr=4e-3,
        lr_factor=0.25,
        monitor="loss",
        group_lrs={"features": 1e-3, "features.conv1": 0.0},
        callbacks=[record],
    )
    head_phase, full_phase = record.phases
    assert head_phase == [("", 4e-3, 2)]  # only the new head, at lr
    assert full_phase == [("features", 1e-3, 5), ("features.conv1", 0.0, 1), ("*", 1e-3, 2)]
    after = model.state_dict()
    assert torch.equal(before["features.conv1.weight"], after["features.conv1.weight"])  # rate 0
    assert not torch.equal(before["features.conv2.weight"], after["features.conv2.weight"])


def test_param_groups_longest_prefix_wins_and_unknown_prefixes_fail():
    model = TinyBNNet()
    groups = param_groups(model, 0.1, {"features": 0.01, "features.bn1": 0.5})
    by_name = {g["name"]: (g["lr"], len(g["params"])) for g in groups}
    assert by_name == {"features": (0.01, 4), "features.bn1": (0.5, 2), "*": (0.1, 2)}
    with pytest.raises(ValueError, match=r"\['feature'\].*top-level modules: \['features', 'pool', 'fc'\]"):
        param_groups(model, 0.1, {"feature": 0.01})
    with pytest.raises(ValueError, match="must be a number >= 0"):
        param_groups(model, 0.1, {"fc": -1.0})


def test_pretrained_model_keeps_the_base_and_gives_a_fresh_head(tmp_path):
    source = create_model("hongong_cnn", num_classes=8)
    save_weights(source.state_dict(), tmp_path / "eight.safetensors")
    model = pretrained_model("hongong_cnn", tmp_path / "eight.safetensors", 2)
    state, src = model.state_dict(), source.state_dict()
    assert state["head.classifier.weight"].shape == (2, 100)
    for key in src:
        if not key.startswith("head.classifier"):
            assert torch.equal(state[key], src[key]), key
    with pytest.raises(WeightsError, match="features.conv1.weight"):
        pretrained_model("hongong_cnn", tmp_path / "eight.safetensors", 2, in_chans=3)


def _pretrain_eight_classes(fashion_small, out):
    """A real run folder: hongong_cnn trained briefly on 8 classes (no sandals, no shirts)."""
    train, _ = fashion_small
    keep = [c for c in range(10) if c not in (SANDAL, SHIRT)]
    data = _classes(train, keep, [train.class_names[c] for c in keep]).take(640, seed=0)
    model = create_model("hongong_cnn", num_classes=8)
    ClassifyTrainer(model, seed=0).fit(data, epochs=1, batch_size=32)
    out.mkdir()
    save_weights(model.state_dict(), out / "best.safetensors")
    return out


def test_tiny_real_data_finetune_beats_chance(fashion, fashion_small, tmp_path):
    weights = _pretrain_eight_classes(fashion_small, tmp_path / "pre") / "best.safetensors"
    train_all, test_all = fashion
    pair = _classes(train_all, [SANDAL, SHIRT], ["Sandal", "Shirt"]).take(100, seed=0)
    train, val = pair.split(0.2, seed=0, stratify=True)
    test = _classes(test_all, [SANDAL, SHIRT], ["Sandal", "Shirt"]).take(400, seed=0)
    model = pretrained_model("hongong_cnn", weights, 2)
    result = finetune(model, train, val, head_epochs=3, full_epochs=3, lr=3e-3, seed=0)
    accuracy = result.trainer.evaluate(test)["accuracy"]
    assert accuracy > 0.8, accuracy  # chance is 0.5


@pytest.fixture(scope="module")
def idx_folder(fashion_small, tmp_path_factory):
    """A small real MNIST-format folder: 400 training and 100 test images of Fashion-MNIST."""
    folder = tmp_path_factory.mktemp("idx")
    train, test = fashion_small
    for split, data in (("train", train.take(400, seed=0)), ("t10k", test.take(100, seed=0))):
        write_idx(folder / f"{split}-images-idx3-ubyte", data.images[:, 0].numpy())
        write_idx(folder / f"{split}-labels-idx1-ubyte", data.labels.to(torch.uint8).numpy())
    return folder


@pytest.fixture(scope="module")
def pretrained_run(idx_folder, tmp_path_factory):
    """A `cnnkit train` run folder: hongong_cnn, one epoch on the small IDX folder."""
    out = tmp_path_factory.mktemp("runs") / "pre"
    train_run(RunConfig(data=str(idx_folder), epochs=1, seed=0), out, progress=False)
    return out


@pytest.fixture(scope="module")
def image_folder(fashion, tmp_path_factory):
    """An image folder of real PNGs: 30 sandals and 30 shirts, one sub-folder per class."""
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    train, _ = fashion
    for cls, name in ((SANDAL, "sandal"), (SHIRT, "shirt")):
        (root / name).mkdir()
        index = torch.nonzero(train.labels == cls).flatten()[:30]
        for i in index.tolist():
            Image.fromarray(train.images[i, 0].numpy()).save(root / name / f"{i}.png")
    (root / "shirt" / "notes.txt").write_text("not an image")
    return root


def test_finetune_run_folder_loads_with_load_run_and_predicts(pretrained_run, idx_folder, tmp_path):
    out = tmp_path / "ft"
    config = FinetuneConfig(
        weights=str(pretrained_run),
        data=str(idx_folder),
        head_epochs=1,
        full_epochs=1,
        limit_train=200,
        seed=0,
    )
    metrics = finetune_run(config, out, progress=False)
    for name in ("config.json", "best.safetensors", "last.ckpt", "history.csv", "curves.png", "metrics.json"):
        assert (out / name).is_file(), name
    model, record = load_run(out)
    assert record["run"]["model"] == "hongong_cnn"
    assert record["finetune"]["weights"] == str(pretrained_run)
    assert sum(record["class_balance"]["test"].values()) == metrics["num_test_samples"] == 100
    assert metrics["head_epochs_run"] == 1 and metrics["full_epochs_run"] == 1
    _, test = load_fashion_mnist(idx_folder)
    report = ClassifyTrainer(model).evaluate(test)
    assert report["accuracy"] == pytest.approx(metrics["test_accuracy"])


def test_cli_finetune_on_an_image_folder(pretrained_run, image_folder, tmp_path, capsys, monkeypatch):
    from cnnkit.cli.__main__ import main

    out = tmp_path / "ft"
    argv = [
        "finetune",
        "--weights",
        str(pretrained_run),
        "--data",
        str(image_folder),
        "--out",
        str(out),
        "--head-epochs",
        "2",
        "--full-epochs",
        "1",
        "--val-fraction",
        "0.2",
        "--test-fraction",
        "0.2",
        "--group-lr",
        "features=1e-4",
        "--no-progress",
    ]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "test accuracy" in captured.out and str(out) in captured.out
    assert "sandal" in captured.err and "shirt" in captured.err  # the class balance table
    model, record = load_run(out)
    assert record["class_names"] == ["sandal", "shirt"] and record["input_shape"] == [1, 28, 28]
    assert record["class_balance"]["test"] == {"sandal": 6, "shirt": 6}
    assert record["preprocess"] == {"resize": "resize"}
    assert record["finetune"]["group_lrs"] == {"features": 1e-4}
    test = classify_data(read_run(out))[1]  # the same 12 test images, rebuilt from config.json
    metrics = json.loads((out / "metrics.json").read_text())
    assert ClassifyTrainer(model).evaluate(test)["accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert main(["evaluate", str(out), "--json"]) == 0  # the same split, through the CLI
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(metrics["test_accuracy"])
    # `cnnkit viz` and `cnnkit report` draw those same 12 images (the run's --test-fraction 0.2,
    # not the default 0.1's 6).
    from cnnkit.cli.viz import _Target

    assert torch.equal(_Target(str(out), None, None).test_set().images, test.images)
    drawn = []
    monkeypatch.setattr("cnnkit.viz.report.write_report", lambda run, model, test, **kw: drawn.append(test))
    assert main(["report", str(out)]) == 0
    assert torch.equal(drawn[0].images, test.images) and torch.equal(drawn[0].labels, test.labels)


def test_cli_finetune_reads_train_val_test_subfolders_and_evaluate_scores_test(
    pretrained_run, write_fashion_folders, tmp_path, capsys
):
    """train/ val/ test/ of class folders are the three splits, as `cnnkit train` reads them (not
    three classes named train, val and test); `cnnkit evaluate` scores that test/ folder."""
    from cnnkit.cli.__main__ import main

    folders = write_fashion_folders(tmp_path / "data", per_class=10)  # 7 train, 1 val, 2 test
    out = tmp_path / "ft"
    argv = ["finetune", "--weights", str(pretrained_run), "--data", str(folders["splits"])]
    argv += ["--out", str(out), "--head-epochs", "1", "--full-epochs", "0", "--no-progress"]
    assert main(argv) == 0
    capsys.readouterr()
    record = json.loads((out / "config.json").read_text())
    assert record["class_names"] == sorted(p.name for p in (folders["splits"] / "train").iterdir())
    assert record["num_classes"] == 10
    assert record["data_sizes"] == {"train": 70, "val": 10, "test": 20}
    assert (record["data"]["layout"], record["data"]["held_out"]) == ("splits", [])
    # The rebuilt test split is the test/ folder: its PNG files hold exactly the Fashion-MNIST
    # test items the IDX copy holds (JPEGs are lossy), with their labels.
    test = classify_data(read_run(out))[1]
    _, idx_test = load_fashion_mnist(folders["idx"])
    pngs = [k for k, (_, name) in enumerate(folders["items"]["test"]) if name.endswith(".png")]
    rows = {(bytes(image.numpy()), int(label)) for image, label in zip(test.images, test.labels)}
    assert len(test) == 20 and pngs
    for k in pngs:
        assert (bytes(idx_test.images[k].numpy()), int(idx_test.labels[k])) in rows
    metrics = json.loads((out / "metrics.json").read_text())
    assert main(["evaluate", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["num_samples"] == 20
    assert report["accuracy"] == pytest.approx(metrics["test_accuracy"])


def test_precision_bf16_trains_in_bf16_channels_last_and_stays_close_to_fp32(
    pretrained_run, image_folder, tmp_path
):
    runs = {}
    for precision in ("fp32", "bf16"):
        config = FinetuneConfig(
            weights=str(pretrained_run), data=str(image_folder), head_epochs=1, full_epochs=0,
            val_fraction=0.2, test_fraction=0.2, seed=0, precision=precision,
        )  # fmt: skip
        finetune_run(config, tmp_path / precision, progress=False)
        record = json.loads((tmp_path / precision / "config.json").read_text())
        history = json.loads((tmp_path / precision / "history.json").read_text())
        runs[precision] = (record["run"], [row["val_loss"] for row in history])
    assert (runs["fp32"][0]["amp"], runs["fp32"][0]["channels_last"]) == (None, False)
    assert (runs["bf16"][0]["amp"], runs["bf16"][0]["channels_last"]) == ("bf16", True)
    fp32, bf16 = runs["fp32"][1], runs["bf16"][1]
    assert fp32 != bf16  # the bf16 run really computed in bf16 ...
    assert bf16 == pytest.approx(fp32, rel=0.05)  # ... and learned the same thing
    with pytest.raises(UsageError, match="precision must be one of auto, bf16, fp32"):
        FinetuneConfig(weights="w", data="d", precision="fp16").validate()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--group-lr", "features:1e-4"], "PREFIX=LR"),
        (["--model", "lenet5"], "holds 'hongong_cnn' weights"),
        (["--head-epochs", "0", "--full-epochs", "0"], "nothing to train"),
    ],
)
def test_cli_finetune_usage_errors_exit_2(pretrained_run, image_folder, tmp_path, capsys, extra, message):
    from cnnkit.cli.__main__ import main

    argv = [
        "finetune",
        "--weights",
        str(pretrained_run),
        "--data",
        str(image_folder),
        "--out",
        str(tmp_path / "ft"),
        *extra,
    ]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "ft").exists()


def _interrupt_at(monkeypatch, k: int) -> None:
    """Ctrl-C as (0-based, counted across both phases) epoch k starts."""
    from cnnkit.engine.trainer import Trainer

    real = Trainer._train_epoch

    def train_epoch(self, data, batch_size, epoch):
        if epoch == k:
            raise KeyboardInterrupt
        return real(self, data, batch_size, epoch)

    monkeypatch.setattr(Trainer, "_train_epoch", train_epoch)


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.mark.parametrize("k", [1, 3], ids=["in the head phase", "in the full phase"])
def test_finetune_interrupted_and_resumed_ends_bit_identical(
    pretrained_run, idx_folder, tmp_path, monkeypatch, k
):
    from cnnkit.cli.__main__ import main
    from cnnkit.engine.checkpoint import load_checkpoint

    config = FinetuneConfig(
        weights=str(pretrained_run), data=str(idx_folder), head_epochs=2, full_epochs=2, limit_train=200,
        patience=5, seed=0,
    )  # fmt: skip
    reference = finetune_run(config, tmp_path / "reference", progress=False)
    _interrupt_at(monkeypatch, k)
    with pytest.raises(KeyboardInterrupt):
        finetune_run(config, tmp_path / "run", progress=False)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "run" / "last.ckpt")["epoch"] == k
    assert main(["finetune", "--resume", str(tmp_path / "run"), "--no-progress"]) == 0
    resumed = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for key in ("test_accuracy", "test_loss", "head_epochs_run", "full_epochs_run", "best_epoch"):
        assert resumed[key] == reference[key], key
    a, b = (
        _weights(tmp_path / "run" / "best.safetensors"),
        _weights(tmp_path / "reference" / "best.safetensors"),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [row["phase"] for row in history] == [1.0, 1.0, 2.0, 2.0]


def test_a_nan_loss_stops_fine_tuning_with_no_checkpoint_of_that_epoch(
    pretrained_run, idx_folder, tmp_path, monkeypatch
):
    import torch.nn.functional as F

    from cnnkit.engine.checkpoint import load_checkpoint
    from cnnkit.errors import TrainingError

    config = FinetuneConfig(
        weights=str(pretrained_run),
        data=str(idx_folder),
        head_epochs=1,
        full_epochs=2,
        limit_train=200,
        seed=0,
    )
    real, steps = F.cross_entropy, []

    def poisoned(logits, *args, **kwargs):  # NaN from the 8th training step on (epoch 2, phase 2)
        loss = real(logits, *args, **kwargs)
        if torch.is_grad_enabled():
            steps.append(1)
            if len(steps) >= 8:
                return loss * float("nan")
        return loss

    monkeypatch.setattr("cnnkit.tasks.classify.task.F.cross_entropy", poisoned)
    with pytest.raises(TrainingError, match="loss became nan"):
        finetune_run(config, tmp_path / "run", progress=False)
    body = load_checkpoint(tmp_path / "run" / "last.ckpt")
    assert body["epoch"] == 1 and all(
        torch.isfinite(t).all() for t in body["model"].values() if t.is_floating_point()
    )
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_cli_finetune_clips_gradients_with_max_grad_norm(pretrained_run, idx_folder, tmp_path, capsys):
    """--max-grad-norm reaches both phases: with SGD at lr 0.1, a norm clipped to 1e-9 moves the
    base's weights by at most steps × lr × (momentum's sum, < 20) × 1e-9; unclipped, far more."""
    from cnnkit.cli.__main__ import main
    from cnnkit.io.weights import load_state_dict_file as load_weights

    source = load_weights(pretrained_run / "best.safetensors")
    argv = ["finetune", "--weights", str(pretrained_run), "--data", str(idx_folder), "--optimizer", "sgd"]
    argv += ["--lr", "0.1", "--lr-factor", "1", "--head-epochs", "1", "--full-epochs", "1", "--no-progress"]
    moved = {}
    for name, extra in (("clipped", ["--max-grad-norm", "1e-9"]), ("free", [])):
        out = tmp_path / name
        assert main([*argv, *extra, "--out", str(out)]) == 0
        assert json.loads((out / "config.json").read_text())["finetune"]["max_grad_norm"] == (
            1e-9 if extra else None
        )
        tuned = load_weights(out / "best.safetensors")
        base = [k for k in source if k.startswith("features")]
        moved[name] = max((tuned[k] - source[k]).abs().max().item() for k in base)
    steps = 2 * -(-320 // 32)  # two epochs of the 320 training images (80 held out for validation)
    assert moved["clipped"] <= steps * 0.1 * 20 * 1e-9
    assert moved["free"] > 1000 * moved["clipped"] and moved["free"] > 1e-4
    capsys.readouterr()


def test_cli_finetune_ema_averages_the_weights_of_each_phase(pretrained_run, idx_folder, tmp_path, capsys):
    """--ema reaches the fine-tuning trainer: the last phase's checkpoint keeps the average of
    its steps beside the trained weights, and best.safetensors is that average."""
    from cnnkit.cli.__main__ import main
    from cnnkit.engine.checkpoint import load_checkpoint
    from cnnkit.io.weights import load_state_dict_file as load_weights

    out = tmp_path / "run"
    argv = ["finetune", "--weights", str(pretrained_run), "--data", str(idx_folder), "--ema", "0.5"]
    argv += ["--head-epochs", "1", "--full-epochs", "1", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    assert json.loads((out / "config.json").read_text())["finetune"]["ema"] == 0.5
    body = load_checkpoint(out / "last.ckpt")
    average, trained = body["weight_average"]["average"], body["model"]
    assert body["weight_average"]["steps"] == body["global_step"] > 0  # every step of the phase
    best = load_weights(out / "best.safetensors")
    name = next(k for k in trained if k.startswith("features") and k.endswith("weight"))
    assert not torch.equal(average[name], trained[name])
    assert torch.equal(best[name], average[name])  # the full phase's one epoch: its average
    capsys.readouterr()


def test_cli_finetune_adapts_threads_and_threads_flag_fixes_the_count(
    pretrained_run, idx_folder, tmp_path, monkeypatch, capsys
):
    """Fine-tuning follows the free cores as `cnnkit train` does; --threads N fixes the count."""
    import cnnkit.engine.perf as perf
    import cnnkit.engine.threads as threads_mod
    from cnnkit.cli.__main__ import main

    monkeypatch.delenv("CNNKIT_ADAPTIVE_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # so that the --threads run's setting is undone
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(threads_mod, "MIN_WINDOW_S", 0.0)  # every epoch's start looks, however short
    monkeypatch.setattr(perf, "busy_between", lambda first, second: 99.0)  # every core busy elsewhere
    monkeypatch.setattr(perf, "pick_num_threads", lambda: 2)  # the cores free when the run starts
    argv = ["finetune", "--weights", str(pretrained_run), "--data", str(idx_folder), "--limit-train", "128"]
    argv += ["--head-epochs", "1", "--full-epochs", "1", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "adaptive")]) == 0
    metrics = json.loads((tmp_path / "adaptive" / "metrics.json").read_text())
    assert metrics["threads"]["changes"][0]["from"] == 2 and metrics["threads"]["final"] == 1
    torch.set_num_threads(1)
    assert main([*argv, "--threads", "2", "--out", str(tmp_path / "fixed")]) == 0
    assert "threads" not in json.loads((tmp_path / "fixed" / "metrics.json").read_text())
    assert torch.get_num_threads() == 2
    capsys.readouterr()


def test_cli_finetune_takes_model_options_and_refuses_unknown_ones(idx_folder, tmp_path, capsys):
    """--model-option KEY=VALUE reaches the fine-tuned model's builder (as in `cnnkit train`);
    an option the builder does not take fails in one line, exit 2, before any folder exists."""
    from cnnkit.cli.__main__ import main

    source = tmp_path / "source"
    argv = ["train", "--model", "fashion_bn_cnn", "--data", str(idx_folder), "--epochs", "1"]
    assert main([*argv, "--limit-train", "200", "--out", str(source), "--no-progress"]) == 0
    tune = ["finetune", "--weights", str(source), "--data", str(idx_folder), "--head-epochs", "1"]
    tune += ["--full-epochs", "0", "--limit-train", "200", "--no-progress"]
    assert main([*tune, "--model-option", "dropout=0.25", "--out", str(tmp_path / "ft")]) == 0
    model, record = load_run(tmp_path / "ft")
    assert record["finetune"]["model_kwargs"] == {"dropout": 0.25}
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.25]
    capsys.readouterr()
    assert main([*tune, "--model-option", "depth_of_field=2", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "fashion_bn_cnn does not take 'depth_of_field'" in err and "Traceback" not in err
    assert not (tmp_path / "bad").exists()


def test_cli_finetune_config_file_repeats_a_run_and_flags_override_it(
    pretrained_run, idx_folder, tmp_path, capsys
):
    """--config takes a fine-tuning run's config.json: with no other flag the run is repeated bit
    for bit; a flag given overrides that one setting; a JSON object of settings also reaches
    keys no flag sets (label_smoothing, weight_decay)."""
    from cnnkit.cli.__main__ import main
    from cnnkit.io.weights import load_state_dict_file as load_weights

    argv = ["finetune", "--weights", str(pretrained_run), "--data", str(idx_folder), "--optimizer", "sgd"]
    argv += ["--lr", "0.05", "--head-epochs", "1", "--full-epochs", "1", "--limit-train", "160"]
    argv += ["--seed", "3", "--threads", "1", "--no-progress"]
    first, again, other = tmp_path / "first", tmp_path / "again", tmp_path / "other"
    assert main([*argv, "--out", str(first)]) == 0
    tail = ["--threads", "1", "--no-progress"]
    assert main(["finetune", "--config", str(first / "config.json"), *tail, "--out", str(again)]) == 0
    settings = json.loads((first / "config.json").read_text())["finetune"]
    assert settings["optimizer"] == "sgd" and settings["lr"] == 0.05 and settings["seed"] == 3
    assert json.loads((again / "config.json").read_text())["finetune"] == settings
    one, two = load_weights(first / "best.safetensors"), load_weights(again / "best.safetensors")
    assert all(torch.equal(one[k], two[k]) for k in one)

    file = tmp_path / "settings.json"
    file.write_text(json.dumps({**settings, "label_smoothing": 0.1, "weight_decay": 1e-4, "seed": 0}))
    assert main(["finetune", "--config", str(file), "--seed", "4", *tail, "--out", str(other)]) == 0
    changed = json.loads((other / "config.json").read_text())["finetune"]
    assert {k: v for k, v in changed.items() if v != settings[k]} == {
        "seed": 4,
        "label_smoothing": 0.1,
        "weight_decay": 1e-4,
    }
    capsys.readouterr()


@pytest.mark.parametrize(
    ("make", "extra", "message"),
    [
        (lambda d: {"lr_factr": 0.1}, [], "unknown config key 'lr_factr'; did you mean lr_factor"),
        (lambda d: {"head": "fc"}, [], "config key 'head' must be a list of strings"),
        (lambda d: {"data": d}, [], "cnnkit finetune needs --weights (or --config FILE"),
        ("classify run", [], "is the config.json of a 'classify' run, which has no 'finetune' section"),
        (lambda d: {}, ["--resume", "somewhere"], "drop --weights/--data/--config"),
    ],
)
def test_cli_finetune_config_file_errors_exit_2(
    pretrained_run, idx_folder, tmp_path, capsys, make, extra, message
):
    from cnnkit.cli.__main__ import main

    if make == "classify run":
        file = pretrained_run / "config.json"
    else:
        file = tmp_path / "settings.json"
        file.write_text(json.dumps(make(str(idx_folder))))
    assert main(["finetune", "--config", str(file), *extra, "--out", str(tmp_path / "ft")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "ft").exists()
