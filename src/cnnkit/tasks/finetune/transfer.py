"""Transfer learning the course's way (Géron ch. 14, "pretrained Xception on flowers").

Two phases on one model:

1. **Head**: every parameter but the new classifier is frozen (``requires_grad=False``) and the
   frozen base's batch-norm layers stay in eval mode, so their running statistics do not move
   either; only the new head learns, at ``lr``.
2. **Full**: all layers are unfrozen and training goes on with a fresh optimizer at a lower rate
   (``lr * lr_factor``, or per-group rates), so the pretrained features are adjusted, not erased.

Both phases use the callbacks of ``cnnkit train`` (early stopping with the best weights
restored, a best-weights checkpoint, progress), and :func:`finetune_run` writes the same run
folder, which :func:`~cnnkit.runs.train.load_run` reads back.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ...data.arrays import ArrayDataset
from ...data.folders import class_balance, format_balance, load_image_folder, split_three_ways
from ...data.images import IMAGENET_MEAN, IMAGENET_STD
from ...engine.callbacks import Callback, EarlyStopping, History, ModelCheckpoint, ProgressBar
from ...engine.device import pick_device
from ...engine.trainer import OPTIMIZERS, make_optimizer, seed_everything
from ...errors import UsageError
from ...io.atomic import atomic_write_text
from ...io.weights import WeightsError, load_state_dict_file, load_strict
from ...models import Backbone, create_model, model_entry
from ...runs.config import RunConfig
from ...runs.train import BEST_WEIGHTS, CONFIG_FILE, LAST_CHECKPOINT, machine_info, read_run_config, versions
from ...tasks.classify.task import ClassifyTrainer

__all__ = [
    "FinetuneConfig",
    "FinetuneResult",
    "finetune",
    "finetune_run",
    "finetune_test_data",
    "frozen_base",
    "head_parameter_names",
    "load_backbone_weights",
    "param_groups",
    "pretrained_model",
]

PHASES = ("head", "full")


# --------------------------------------------------------------------------- the model
def load_backbone_weights(backbone: nn.Module, source: str | os.PathLike[str]) -> list[str]:
    """Load a trained classifier's weights into a backbone built without its classifier.

    How the localize, detect and segment tasks start from a classifier (as FCN starts from
    ImageNet classifiers, Long et al.): every backbone tensor must be in the file with the same
    shape; the file's classifier tensors are left out.

    Args:
        backbone: the backbone (e.g. ``Segmenter.backbone``).
        source: a ``.safetensors`` / ``.pth`` state dict, or a classification run folder (its
            ``best.safetensors``).

    Returns:
        The names in the file that the backbone does not use (the classifier's).

    Raises:
        FileNotFoundError: no such file or run folder.
        WeightsError: missing backbone tensors, shape mismatches, or tensors that are neither
            the backbone's nor its classifier's, listed by name.
    """
    path = Path(source)
    if path.is_dir():
        path = path / "best.safetensors"
    state = load_state_dict_file(path)
    own = backbone.state_dict()
    missing = [k for k in own if k not in state]
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs backbone {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or mismatched:
        problems = [f"missing {missing[:6]}"] if missing else []
        problems += [f"shape mismatches {mismatched[:6]}"] if mismatched else []
        raise WeightsError(
            f"{source} does not fit the backbone {type(backbone).__name__}: "
            + "; ".join(problems)
            + " (was it trained with the same --model and options?)"
        )
    extra = sorted(k for k in state if k not in own)
    if extra and isinstance(backbone, Backbone):
        # Only the classifier may be left over: other extra tensors mean a larger model of the
        # same family (e.g. depth 2 into depth 1), whose tensors would load where they do not belong.
        probe = copy.deepcopy(backbone)
        probe.reset_classifier(1)
        foreign = [k for k in extra if k not in probe.state_dict()]
        if foreign:
            raise WeightsError(
                f"{source} holds tensors the backbone {type(backbone).__name__} does not have: "
                f"{foreign[:6]} (was it trained with the same --model and options?)"
            )
    backbone.load_state_dict({k: state[k] for k in own}, strict=True)
    return extra


def head_parameter_names(model: nn.Module) -> list[str]:
    """Names (as in ``state_dict()``) of the tensors that ``reset_classifier`` creates: the head.

    Found on a copy, so ``model`` and the global random state are left untouched.

    Raises:
        TypeError: ``model`` does not implement the backbone interface.
        ValueError: the model has no classifier (``num_classes == 0``).
    """
    if not hasattr(model, "reset_classifier") or not hasattr(model, "num_classes"):
        raise TypeError(
            f"{type(model).__name__} has no reset_classifier(); pass head=[module names] to say "
            "which modules form the new head"
        )
    probe = copy.deepcopy(model)
    before = {k: id(v) for k, v in probe.state_dict(keep_vars=True).items()}
    with torch.random.fork_rng(devices=[]):
        probe.reset_classifier(probe.num_classes)
    names = [k for k, v in probe.state_dict(keep_vars=True).items() if before.get(k) != id(v)]
    if not names:
        raise ValueError(
            f"{type(model).__name__} has no classifier (num_classes={model.num_classes}); "
            "call model.reset_classifier(number_of_classes) first"
        )
    return names


def _resolve_head(model: nn.Module, head: Sequence[str] | None) -> list[str]:
    """Parameter names trained in the head phase: ``head`` module prefixes, or the classifier."""
    params = [name for name, _ in model.named_parameters()]
    if head is None:
        own = set(head_parameter_names(model))
        return [n for n in params if n in own]
    chosen = [n for n in params if any(_under(n, prefix) for prefix in head)]
    unknown = [p for p in head if not any(_under(n, p) for n in params)]
    if unknown:
        raise ValueError(f"head modules {unknown} hold no parameters; top-level modules: {_top_level(model)}")
    return chosen


def _under(name: str, prefix: str) -> bool:
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


def _top_level(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_children()]


def _set_bn_eval(module: nn.Module, _args: object) -> None:
    # A forward pre-hook, because Trainer.fit calls model.train() at the start of every epoch.
    module.training = False


@contextlib.contextmanager
def frozen_base(model: nn.Module, trainable: Iterable[str], bn_eval: bool = True) -> Iterator[list[str]]:
    """Freeze every parameter of ``model`` except ``trainable`` (names from ``named_parameters``).

    While the context is open, batch-norm layers outside the trainable modules run in eval mode
    even when the model is in training mode (Keras' frozen BatchNormalization), so their
    running statistics stay as pretrained. ``requires_grad`` flags are restored on exit.

    Yields:
        The names of the frozen parameters.

    Raises:
        ValueError: a name in ``trainable`` that is not a parameter of ``model``.
    """
    keep = set(trainable)
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    unknown = sorted(keep - set(flags))
    if unknown:
        raise ValueError(f"{unknown} are not parameters of {type(model).__name__}")
    frozen = [name for name in flags if name not in keep]
    params = dict(model.named_parameters())
    for name in frozen:
        params[name].requires_grad_(False)
    try:
        with _base_bn_in_eval(model, keep) if bn_eval else contextlib.nullcontext():
            yield frozen
    finally:
        for name, flag in flags.items():
            params[name].requires_grad_(flag)


@contextlib.contextmanager
def _base_bn_in_eval(model: nn.Module, trainable: Iterable[str]) -> Iterator[None]:
    """Batch-norm layers outside the modules owning ``trainable`` parameters run in eval mode."""
    owners = {name.rpartition(".")[0] for name in trainable}
    held = [
        module
        for name, module in model.named_modules()
        if isinstance(module, _BatchNorm) and not any(_under(name, owner) for owner in owners if owner)
    ]
    handles = [module.register_forward_pre_hook(_set_bn_eval) for module in held]
    try:
        yield
    finally:
        for handle, module in zip(handles, held):
            handle.remove()
            module.training = model.training


def param_groups(
    model: nn.Module, lr: float, group_lrs: Mapping[str, float] | None = None
) -> list[dict[str, Any]]:
    """Parameters grouped by learning rate, for any torch optimizer.

    Args:
        model: the model whose trainable parameters are grouped.
        lr: rate of every parameter no prefix matches.
        group_lrs: module-name prefix (``"features"``, ``"head.classifier"``, ``"layer4"``) ->
            learning rate; the longest matching prefix wins.

    Returns:
        ``[{"name": prefix, "params": [...], "lr": rate}, ...]`` (the rest last, named ``"*"``).

    Raises:
        ValueError: a prefix that matches no parameter, or a negative rate.
    """
    group_lrs = dict(group_lrs or {})
    for prefix, rate in group_lrs.items():
        if not isinstance(rate, int | float) or rate < 0:
            raise ValueError(f"learning rate of group {prefix!r} must be a number >= 0, got {rate!r}")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    by_prefix: dict[str, list[nn.Parameter]] = {prefix: [] for prefix in group_lrs}
    rest: list[nn.Parameter] = []
    longest_first = sorted(group_lrs, key=len, reverse=True)
    for name, param in named:
        match = next((p for p in longest_first if _under(name, p)), None)
        (by_prefix[match] if match is not None else rest).append(param)
    empty = [prefix for prefix, params in by_prefix.items() if not params]
    if empty:
        raise ValueError(
            f"learning-rate groups {empty} match no trainable parameter; "
            f"top-level modules: {_top_level(model)}"
        )
    groups = [{"name": p, "params": by_prefix[p], "lr": float(group_lrs[p])} for p in group_lrs]
    if rest:
        groups.append({"name": "*", "params": rest, "lr": float(lr)})
    return groups


def _weights_source(
    name: str | None,
    weights: str | os.PathLike[str],
    in_chans: int | None,
    model_kwargs: Mapping[str, Any],
) -> tuple[str, int | None, dict[str, Any], dict[str, Any] | None]:
    """(model name, in_chans, model kwargs, run record or None), filled in from a run folder."""
    path = Path(weights)
    if not path.is_dir():
        if name is None:
            raise UsageError(f"--model is needed: {weights} is not a cnnkit run folder that names one")
        return name, in_chans, dict(model_kwargs), None
    record = read_run_config(path)
    run = record["run"]
    if name is not None and name != run["model"]:
        raise UsageError(f"{weights} holds {run['model']!r} weights, not {name!r}; drop --model or match it")
    kwargs = dict(run.get("model_kwargs") or {})
    for key, value in model_kwargs.items():
        if key in kwargs and kwargs[key] != value:
            raise UsageError(f"{weights} was trained with {key}={kwargs[key]!r}, not {value!r}")
        kwargs[key] = value
    run_chans = int(record["input_shape"][0])
    if in_chans is not None and in_chans != run_chans:
        raise UsageError(f"{weights} was trained on {run_chans}-channel images, not {in_chans}-channel ones")
    return run["model"], run_chans, kwargs, record


WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def _is_weights_name(weights: str | os.PathLike[str]) -> bool:
    """A torchvision weights name ("IMAGENET1K_V1"), as opposed to a file or run folder."""
    path = Path(weights)
    return not path.exists() and path.suffix not in WEIGHT_SUFFIXES and os.sep not in str(weights)


def pretrained_model(
    name: str | None,
    weights: str | os.PathLike[str],
    num_classes: int,
    *,
    in_chans: int | None = None,
    **model_kwargs: Any,
) -> nn.Module:
    """A registered model with pretrained weights everywhere but a new, freshly initialised head.

    Args:
        name: registered model name; None takes it from a run folder ``weights``.
        weights: what ``create_model(weights=...)`` accepts: a cnnkit run folder, a
            ``.safetensors`` / ``.pth`` state dict, or a torchvision weights name
            (``"IMAGENET1K_V1"``). The source's classifier (any number of classes, or none) is
            dropped; every other tensor must fit exactly.
        num_classes: outputs of the new head.
        in_chans: input channels (default: the run's, or the model's).
        **model_kwargs: builder options such as ``small_input=True`` (a run folder's own are
            applied too).

    Raises:
        UsageError: a run folder that contradicts ``name`` / ``in_chans`` / ``model_kwargs``.
        WeightsError: tensors that do not fit, listed by name.
    """
    name, in_chans, kwargs, _ = _weights_source(name, weights, in_chans, model_kwargs)
    model = create_model(name, num_classes=num_classes, in_chans=in_chans, **kwargs)
    head = set(head_parameter_names(model))
    path = Path(weights)
    if _is_weights_name(weights):  # torchvision's: let the registry fetch them into the original model
        state = create_model(name, in_chans=in_chans, weights=str(weights), **kwargs).state_dict()
    else:
        state = load_state_dict_file(path / BEST_WEIGHTS if path.is_dir() else path)
    own = model.state_dict()
    merged = {k: v for k, v in state.items() if k not in head}
    merged.update({k: own[k] for k in head})
    load_strict(model, merged, source=str(weights))
    return model


# --------------------------------------------------------------------------- the two phases
@dataclass
class FinetuneResult:
    """What :func:`finetune` did.

    Attributes:
        history: every epoch of both phases (``epoch`` counted on from phase 1, ``phase`` 1 or 2).
        head_epochs_run: epochs of phase 1 (early stopping may end it sooner).
        full_epochs_run: epochs of phase 2.
        best_epoch: epoch (from 1) whose weights the model holds at the end, or None.
        best: the monitored value at that epoch.
        stopped_early: whether early stopping ended a phase.
        trainer: the last phase's Trainer (``evaluate``, ``predict`` with the same normalisation).
        frozen: names of the parameters frozen in phase 1.
    """

    history: History
    head_epochs_run: int
    full_epochs_run: int
    best_epoch: int | None
    best: float | None
    stopped_early: bool
    trainer: ClassifyTrainer
    frozen: list[str] = field(default_factory=list)


def finetune(
    model: nn.Module,
    train: ArrayDataset,
    val: ArrayDataset,
    *,
    head_epochs: int = 5,
    full_epochs: int = 10,
    lr: float = 1e-3,
    lr_factor: float = 0.1,
    group_lrs: Mapping[str, float] | None = None,
    head: Sequence[str] | None = None,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    label_smoothing: float = 0.0,
    batch_size: int = 32,
    patience: int = 2,
    monitor: str = "val_loss",
    keep_bn_eval: bool = False,
    callbacks: Sequence[Callback] = (),
    best_path: str | os.PathLike[str] | None = None,
    checkpoint_path: str | os.PathLike[str] | None = None,
    progress: bool = False,
    device: str | torch.device | None = None,
    seed: int = 42,
    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> FinetuneResult:
    """Train a new head on a frozen base, then fine-tune all layers at a lower learning rate.

    Args:
        model: a model whose classifier is new (see :func:`pretrained_model`).
        train: training images uint8 Tensor[N, C, H, W] and labels.
        val: validation data for early stopping and the best-weights choice.
        head_epochs: maximum epochs of phase 1 (0 skips it).
        full_epochs: maximum epochs of phase 2 (0: the base stays frozen, "feature extraction").
        lr: phase-1 learning rate.
        lr_factor: phase-2 rate is ``lr * lr_factor`` (the course drops it 20×; default 10×).
        group_lrs: phase-2 rates by module-name prefix (see :func:`param_groups`); parameters
            no prefix matches use ``lr * lr_factor``.
        head: module-name prefixes trained in phase 1; default: what ``reset_classifier``
            creates.
        optimizer: a name from ``OPTIMIZERS``; each phase gets a fresh one (Keras recompiles).
        weight_decay: passed to the optimizer.
        label_smoothing: cross-entropy label smoothing.
        batch_size: batch size of both phases.
        patience: early-stopping patience of each phase; phase 2 has to beat phase 1's best.
        monitor: metric that picks the best epoch.
        keep_bn_eval: keep the base's batch-norm layers in eval mode in phase 2 too (Keras'
            advice for small data sets; the course lets them train).
        callbacks: extra callbacks, used in both phases.
        best_path: write the best weights (across both phases) to this ``.safetensors`` file.
        checkpoint_path: write the trainer's resumable checkpoint here after every epoch.
        progress: show a progress bar / per-epoch lines.
        device: device name, or None for the best available.
        seed: seeds the head's shuffling and dropout.
        normalize: (mean, std) per channel after scaling uint8 pixels to [0, 1].
        augment: function applied to each float training batch on the device.

    Returns:
        FinetuneResult; ``model`` holds the best weights, in eval mode.

    Raises:
        ValueError: epochs, rates or class counts that do not fit.
    """
    if head_epochs < 0 or full_epochs < 0 or head_epochs + full_epochs < 1:
        raise ValueError(
            f"head_epochs and full_epochs must be >= 0 and not both 0, got {head_epochs} and {full_epochs}"
        )
    if lr <= 0 or lr_factor <= 0:
        raise ValueError(f"lr and lr_factor must be > 0, got {lr} and {lr_factor}")
    if val is None or not len(val):
        raise ValueError("finetune needs validation data (split it off with train.split(...))")
    out_features = getattr(model, "num_classes", None)
    if out_features is not None and out_features != train.num_classes:
        raise ValueError(
            f"the model has {out_features} outputs but the data {train.num_classes} classes; "
            f"call model.reset_classifier({train.num_classes}) or build it with "
            "pretrained_model(..., num_classes=...)"
        )
    dev = device if isinstance(device, torch.device) else pick_device(device)
    model.to(dev)  # before the optimizers are built, so they hold the moved parameters
    trainable = _resolve_head(model, head)
    checkpoint = ModelCheckpoint(best_path, monitor=monitor) if best_path is not None else None
    bar = [ProgressBar()] if progress else []

    def trainer_for(opt: torch.optim.Optimizer, early: EarlyStopping) -> ClassifyTrainer:
        cbs = [early, *([checkpoint] if checkpoint else []), *callbacks, *bar]
        return ClassifyTrainer(
            model,
            optimizer=opt,
            label_smoothing=label_smoothing,
            callbacks=cbs,
            device=dev,
            seed=seed,
            normalize=normalize,
            augment=augment,
            checkpoint_path=checkpoint_path,
        )

    rows: list[dict[str, float]] = []
    frozen: list[str] = []
    early = EarlyStopping(monitor, patience=patience, restore_best_weights=True)
    stopped = False
    head_run = 0
    trainer: ClassifyTrainer | None = None
    if head_epochs:
        params = dict(model.named_parameters())
        opt = make_optimizer(optimizer, [params[n] for n in trainable], lr, weight_decay)
        with frozen_base(model, trainable) as frozen:
            trainer = trainer_for(opt, early)
            trainer.fit(train, val, epochs=head_epochs, batch_size=batch_size)
        head_run = trainer.epoch
        rows += [{**row, "phase": 1.0} for row in trainer.history.epochs]
        stopped = early.stopped_epoch is not None
    full_run = 0
    if full_epochs:
        for p in model.parameters():
            p.requires_grad_(True)
        opt = make_optimizer(
            optimizer, param_groups(model, lr * lr_factor, group_lrs), lr * lr_factor, weight_decay
        )
        second = EarlyStopping(monitor, patience=patience, restore_best_weights=True)
        if early.best is not None:  # the best so far is phase 1's: phase 2 must beat it
            second.load_state_dict({**early.state_dict(), "wait": 0, "stopped_epoch": None})
        early = second
        with _base_bn_in_eval(model, trainable) if keep_bn_eval else contextlib.nullcontext():
            trainer = trainer_for(opt, early)
            trainer.epoch = head_run  # epochs count on from phase 1 (history, checkpoints, progress)
            trainer.fit(train, val, epochs=head_run + full_epochs, batch_size=batch_size)
        full_run = trainer.epoch - head_run
        rows += [{**row, "phase": 2.0} for row in trainer.history.epochs]
        stopped = stopped or early.stopped_epoch is not None
    assert trainer is not None  # at least one phase ran (checked above)
    history = History()
    history.epochs = rows
    model.eval()
    best_epoch = None if early.best_epoch is None else early.best_epoch + 1
    return FinetuneResult(history, head_run, full_run, best_epoch, early.best, stopped, trainer, frozen)


# --------------------------------------------------------------------------- run folders
NORMALIZE_CHOICES = ("auto", "imagenet", "unit")


@dataclass
class FinetuneConfig:
    """Everything that defines a fine-tuning run (saved in config.json under ``"finetune"``).

    Attributes:
        weights: pretrained weights (run folder, state-dict file or torchvision weights name).
        data: an image folder (one sub-folder per class), ``fashion-mnist``, or an IDX folder.
        model: registered name; None takes the run folder's.
        model_kwargs: builder options (``small_input``...).
        head_epochs / full_epochs: maximum epochs of the two phases.
        lr / lr_factor / group_lrs: phase-1 rate; phase-2 rate factor; phase-2 per-prefix rates.
        head: module prefixes trained in phase 1 (default: the new classifier).
        keep_bn_eval: keep the base's batch-norm layers in eval mode in phase 2 as well.
        val_fraction / test_fraction: seeded stratified split of an image folder (the course:
            15 % validation, 10 % test); with Fashion-MNIST the official test set is used.
        image_size: side of the square model input for image folders (default: the model's).
        resize: ``resize`` (stretch, as the course), ``crop`` or ``pad``.
        on_error: bad image files: ``raise`` stops at the first, ``skip`` leaves them out and
            lists them.
        normalize: ``auto`` (ImageNet statistics for torchvision weights, else the source
            run's, else [0, 1]), ``imagenet`` or ``unit``.
        limit_train: keep only N training images (quick tries, tests); with Fashion-MNIST, as
            in ``cnnkit train``, the validation split is taken from these N.
        limit_test: evaluate on only N test images.
    """

    weights: str
    data: str
    model: str | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    head_epochs: int = 5
    full_epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    lr_factor: float = 0.1
    group_lrs: dict[str, float] = field(default_factory=dict)
    head: list[str] | None = None
    optimizer: str = "adam"
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    patience: int = 2
    monitor: str = "val_loss"
    keep_bn_eval: bool = False
    seed: int = 42
    val_fraction: float = 0.15
    test_fraction: float = 0.1
    image_size: int | None = None
    resize: str = "resize"
    on_error: str = "raise"
    normalize: str = "auto"
    limit_train: int | None = None
    limit_test: int | None = None
    device: str | None = None
    deterministic: bool = False

    def validate(self) -> FinetuneConfig:
        checks = [
            (self.head_epochs >= 0 and self.full_epochs >= 0, "epochs must be >= 0"),
            (
                self.head_epochs + self.full_epochs >= 1,
                "head and full epochs are both 0: nothing to train",
            ),
            (self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"learning rate must be > 0, got {self.lr}"),
            (self.lr_factor > 0, f"lr factor must be > 0, got {self.lr_factor}"),
            (self.patience >= 0, f"patience must be >= 0, got {self.patience}"),
            (
                0 < self.val_fraction < 1,
                f"validation fraction must be in (0, 1), got {self.val_fraction}",
            ),
            (
                0 <= self.test_fraction < 1 - self.val_fraction,
                f"test fraction must be in [0, 1 - val fraction), got {self.test_fraction}",
            ),
            (
                self.image_size is None or self.image_size >= 8,
                f"image size must be >= 8, got {self.image_size}",
            ),
            (
                self.resize in ("resize", "crop", "pad"),
                f"resize must be resize, crop or pad, got {self.resize!r}",
            ),
            (
                self.optimizer in OPTIMIZERS,
                f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}",
            ),
            (
                self.on_error in ("raise", "skip"),
                f"on_error must be raise or skip, got {self.on_error!r}",
            ),
            (
                self.normalize in NORMALIZE_CHOICES,
                f"normalize must be one of {', '.join(NORMALIZE_CHOICES)}, got {self.normalize!r}",
            ),
            (
                self.limit_train is None or self.limit_train >= 2,
                f"limit_train must be >= 2, got {self.limit_train}",
            ),
            (
                self.limit_test is None or self.limit_test >= 1,
                f"limit_test must be >= 1, got {self.limit_test}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)
        for prefix, rate in self.group_lrs.items():
            if not isinstance(rate, int | float) or rate < 0:
                raise UsageError(f"learning rate of group {prefix!r} must be >= 0, got {rate!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _normalization(
    config: FinetuneConfig, source: dict[str, Any] | None, channels: int
) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    choice = config.normalize
    if choice == "auto" and source is not None:  # whatever the source run was trained with
        norm = source.get("normalize")
        if isinstance(norm, dict) and "mean" in norm and "std" in norm:
            return tuple(norm["mean"]), tuple(norm["std"])
        choice = norm.get("preset", "unit") if isinstance(norm, dict) else "unit"
        if choice not in NORMALIZE_CHOICES:
            raise UsageError(
                f"{config.weights} was trained with the {choice!r} preprocessing, which the trainer "
                "cannot apply; pass --normalize imagenet or unit"
            )
    if choice == "auto":
        choice = "imagenet" if _is_weights_name(config.weights) else "unit"
    if choice == "unit":
        return None
    if channels == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    return (sum(IMAGENET_MEAN) / 3,) * channels, (sum(IMAGENET_STD) / 3,) * channels


def _load_splits(
    config: FinetuneConfig, input_size: tuple[int, int, int]
) -> tuple[ArrayDataset, ArrayDataset, ArrayDataset, dict[str, Any]]:
    """(train, val, test, data description) for ``config.data``."""
    from ...runs.train import load_dataset

    spec = config.data
    path = Path(spec)
    if spec in ("fashion-mnist", "fashion_mnist", "fashion") or (path.is_dir() and _is_idx_folder(path)):
        # As in `cnnkit train`: the limit applies before the validation split.
        train_all, test = load_dataset(spec, config.limit_train, config.limit_test, config.seed)
        train, val = train_all.split(config.val_fraction, seed=config.seed, stratify=True)
        return train, val, test, {"kind": "idx", "spec": spec}
    if not path.is_dir():
        raise UsageError(f"--data must be an image folder, 'fashion-mnist' or an IDX folder, got {spec!r}")
    train, val, test, info = _image_folder_splits(config, input_size)
    if config.limit_train:
        train = train.take(config.limit_train, seed=config.seed)
    if config.limit_test:
        test = test.take(config.limit_test, seed=0)  # fixed, as in `cnnkit train`
    return train, val, test, info


def _is_idx_folder(path: Path) -> bool:
    return any(p.name.startswith(("train-images", "t10k-images")) for p in path.iterdir())


def _image_folder_splits(
    config: FinetuneConfig, input_size: tuple[int, int, int]
) -> tuple[ArrayDataset, ArrayDataset, ArrayDataset, dict[str, Any]]:
    channels, height, width = input_size
    loaded = load_image_folder(
        config.data,
        (height, width),
        channels=channels,
        resize=config.resize,
        on_error=config.on_error,
    )
    train, val, test = split_three_ways(
        loaded.data, config.val_fraction, config.test_fraction, seed=config.seed
    )
    info = {
        "kind": "image-folder",
        "root": str(config.data),
        "image_size": [height, width],
        "resize": config.resize,
        "bad_files": [bad.reason for bad in loaded.bad_files],
        "ignored_files": len(loaded.ignored),
    }
    return train, val, test, info


def finetune_run(
    config: FinetuneConfig,
    out: str | os.PathLike[str],
    progress: bool = True,
    report: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Fine-tune as ``config`` says and fill the run folder ``out``; returns the test metrics.

    The folder has the layout of ``cnnkit train`` (config.json, best.safetensors, last.ckpt,
    history, curves.png, metrics.json); ``config.json`` holds a ``run`` section that
    :func:`~cnnkit.runs.train.load_run` rebuilds the model from, and a ``finetune`` section.
    ``report`` receives the class balance of the three splits (and any skipped files) before
    training starts.

    Raises:
        UsageError: a non-empty ``out``, or settings that cannot be used.
    """
    config.validate()
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"run folder {out} already exists and is not empty; choose another --out")
    name, in_chans, kwargs, source = _weights_source(config.model, config.weights, None, config.model_kwargs)
    entry = model_entry(name)
    seed_everything(config.seed, config.deterministic)
    input_size = entry.input_size
    if config.image_size:
        input_size = (input_size[0], config.image_size, config.image_size)
    if in_chans is not None:
        input_size = (in_chans, *input_size[1:])
    train, val, test, data_info = _load_splits(config, input_size)
    channels = train.input_shape[0]
    model = pretrained_model(name, config.weights, train.num_classes, in_chans=channels, **kwargs)
    normalize = _normalization(config, source, channels)
    device = pick_device(config.device)
    out.mkdir(parents=True, exist_ok=True)
    run_config = RunConfig(
        model=name,
        data=config.data,
        model_kwargs=kwargs,
        epochs=config.head_epochs + config.full_epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        optimizer=config.optimizer,
        weight_decay=config.weight_decay,
        label_smoothing=config.label_smoothing,
        patience=config.patience,
        monitor=config.monitor,
        seed=config.seed,
        val_fraction=config.val_fraction,
        stratify=True,
        limit_train=config.limit_train,
        limit_test=config.limit_test,
        device=config.device,
        deterministic=config.deterministic,
    ).validate()
    splits = {"train": train, "val": val, "test": test}
    if report is not None:
        report(f"{name} from {config.weights} on {config.data}:\n{format_balance(splits)}")
        for reason in data_info.get("bad_files", []):
            report(f"skipped: {reason}")
    record = {
        "run": run_config.to_dict(),
        "task": "classify",
        "finetune": config.to_dict(),
        "class_names": train.class_names,
        "input_shape": list(train.input_shape),
        "num_classes": train.num_classes,
        # explicit even for [0, 1] inputs, so image loaders never guess ImageNet statistics
        "normalize": {"mean": list(normalize[0]), "std": list(normalize[1])}
        if normalize
        else {"mean": [0.0] * channels, "std": [1.0] * channels},
        "data": data_info,
        "data_sizes": {"train": len(train), "val": len(val), "test": len(test)},
        "class_balance": class_balance(splits),
        "versions": versions(),
        "machine": machine_info(device),
    }
    if data_info["kind"] == "image-folder":  # so that `cnnkit predict` prepares images the same way
        record["preprocess"] = {"resize": config.resize}
    atomic_write_text(out / CONFIG_FILE, json.dumps(record, indent=2, ensure_ascii=False))
    start = time.perf_counter()
    result = finetune(
        model,
        train,
        val,
        head_epochs=config.head_epochs,
        full_epochs=config.full_epochs,
        lr=config.lr,
        lr_factor=config.lr_factor,
        group_lrs=config.group_lrs or None,
        head=config.head,
        optimizer=config.optimizer,
        weight_decay=config.weight_decay,
        label_smoothing=config.label_smoothing,
        batch_size=config.batch_size,
        patience=config.patience,
        monitor=config.monitor,
        keep_bn_eval=config.keep_bn_eval,
        best_path=out / BEST_WEIGHTS,
        checkpoint_path=out / LAST_CHECKPOINT,
        progress=progress,
        device=device,
        seed=config.seed,
        normalize=normalize,
    )
    wall = time.perf_counter() - start
    result.history.save(out)
    _plot(result, out / "curves.png", f"{name} fine-tuned on {config.data}")
    report = result.trainer.evaluate(test)
    metrics = {
        "test_accuracy": report["accuracy"],
        "test_loss": report["loss"],
        "macro_f1": report["macro_f1"],
        "epochs_run": result.head_epochs_run + result.full_epochs_run,
        "head_epochs_run": result.head_epochs_run,
        "full_epochs_run": result.full_epochs_run,
        "best_epoch": result.best_epoch,
        "best_phase": _phase_of(result, result.best_epoch),
        "best_val_loss": result.best if config.monitor == "val_loss" else None,
        "stopped_early": result.stopped_early,
        "frozen_parameters": len(result.frozen),
        "train_seconds": sum(row["seconds"] for row in result.history.epochs),
        "wall_seconds_this_session": wall,
        "per_class": report["per_class"],
        "confusion_matrix": report["confusion_matrix"],
        "num_test_samples": report["num_samples"],
    }
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2, ensure_ascii=False))
    return metrics


def finetune_test_data(run_dir: str | os.PathLike[str]) -> ArrayDataset:
    """The test split a :func:`finetune_run` folder was evaluated on, rebuilt from its config.json.

    Same data, seed, fractions, image size and resize mode, so ``Trainer.evaluate`` on it gives
    the run's ``metrics.json`` numbers again (what ``cnnkit evaluate`` needs for image folders).

    Raises:
        UsageError: not a run folder written by :func:`finetune_run`.
    """
    record = read_run_config(run_dir)
    if not isinstance(record.get("finetune"), dict):
        raise UsageError(f"{run_dir} was not written by `cnnkit finetune` (config.json has no 'finetune')")
    try:
        config = FinetuneConfig(**record["finetune"]).validate()
    except TypeError as exc:
        raise UsageError(f"{run_dir}/{CONFIG_FILE}: unusable 'finetune' section: {exc}") from None
    channels, height, width = (int(v) for v in record["input_shape"])
    return _load_splits(config, (channels, height, width))[2]


def _phase_of(result: FinetuneResult, epoch: int | None) -> str | None:
    if epoch is None:
        return None
    return PHASES[0] if epoch <= result.head_epochs_run else PHASES[1]


def _plot(result: FinetuneResult, path: Path, title: str) -> None:
    import matplotlib.pyplot as plt

    from ...viz.curves import plot_history

    fig = plot_history(result.history.epochs, result.best_epoch, None, title)
    if result.head_epochs_run and result.full_epochs_run:
        for ax in fig.axes:
            ax.axvline(
                result.head_epochs_run + 0.5,
                color="gray",
                linestyle=":",
                linewidth=1,
                label="unfrozen",
            )
            ax.legend()
    fig.savefig(path, dpi=110)
    plt.close(fig)
