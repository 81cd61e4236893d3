"""Named training recipes. ``course`` is the book's; the others are speed presets, tuned for the
time to a test accuracy on a CPU (``fast``: 92 %, ``fast94``: 94 %; docs/performance.md).

A preset sets RunConfig fields (saved in the run folder) plus Trainer options that RunConfig
has no field for (augmentation, LR schedule, test-time augmentation); those follow from the
preset's name, which the run folder also keeps. The speed settings (mixed precision, memory
format) are resolved for the device when the preset is applied, so config.json records what ran.
"""

from __future__ import annotations

from typing import Any

from ...engine.schedules import one_cycle
from ...errors import UsageError
from .augment import FlipTranslate

FAST_EPOCHS = 3
FAST94_EPOCHS = 12

PRESETS: dict[str, dict[str, Any]] = {
    "course": {},
    "fast": {
        "model": "fashion_bn_cnn",
        # Two conv stages (16 and 48 channels), each max-pooled before its BatchNorm and ReLU, and
        # a Dense-128 head; the first convolution is a frozen patch-whitening layer
        # (layers/whitening.py) and 95 % of the training images train: 92 % test accuracy in 3
        # epochs (docs/performance.md).
        "model_kwargs": {"widths": [16, 48], "hidden": 128, "pool_first": True},
        "whiten": True,
        "val_fraction": 0.05,
        "batch_size": 256,
        "optimizer": "sgd",
        "lr": 0.3,
        "weight_decay": 5e-4,
        "label_smoothing": 0.1,
        "epochs": FAST_EPOCHS,
        # One-cycle needs its whole schedule: early stopping only keeps the best weights.
        "patience": FAST_EPOCHS,
    },
    "fast94": {
        "model": "fashion_bn_cnn",
        # The fast preset's whitened first layer (its stage: that layer alone), then two 3×3
        # convolutions of 48 channels at 14×14 and one of 128 at 7×7, a Dense-256 head: 94 %
        # test accuracy in 12 epochs with 1-pixel shifts (docs/performance.md).
        "model_kwargs": {"widths": [24, 48, 128], "depth": [1, 2, 1], "hidden": 256, "pool_first": True},
        "whiten": True,
        "val_fraction": 0.05,
        "batch_size": 256,
        "optimizer": "sgd",
        "lr": 0.2,
        "weight_decay": 5e-4,
        "label_smoothing": 0.1,
        "epochs": FAST94_EPOCHS,
        "patience": FAST94_EPOCHS,
    },
}

# Trainer options beyond RunConfig, per preset. Translation is off in the fast preset: in 4-5 epoch
# runs it cost accuracy (docs/performance.md); fast94 shifts by up to 1 pixel, as the 12-epoch
# recipe of bench/cases/recipes.py (1 pixel gave 94.28 %, 2 pixels 94.06 %).
# tta: True, flip test-time augmentation; "shift", also one-pixel shifts (ten views,
# tasks/classify/augment.py): 0.06-0.21 points above flip alone in 6 of 7 runs of fast94's
# model and a wider one (bench/results/2026-12-07_fast94_recipe_sweep.json).
TRAINER_EXTRAS: dict[str, dict[str, Any]] = {
    "course": {},
    # fused_pool: compiled max-pool kernels on the CPU for long enough fits (bit-identical,
    # faster; Trainer docs).
    "fast": {"max_shift": 0, "flip_p": 0.5, "pct_start": 0.25, "tta": True, "fused_pool": "auto"},
    "fast94": {"max_shift": 1, "flip_p": 0.5, "pct_start": 0.25, "tta": "shift", "fused_pool": "auto"},
}


def apply_preset(
    name: str, config: dict[str, Any], explicit: set[str] = frozenset(), device: Any = None
) -> dict[str, Any]:
    """Fill ``config`` with the preset's values, leaving keys the user set explicitly.

    For the speed presets (all but ``course``), ``amp`` and ``channels_last`` come from
    ``perf.pick_perf_settings`` for ``device`` (default: the config's device, else the best
    available one).
    """
    if name not in PRESETS:
        raise UsageError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    out = dict(config)
    for key, value in PRESETS[name].items():
        if key == "model_kwargs":
            continue
        if key not in explicit:
            out[key] = value
    preset_kwargs = PRESETS[name].get("model_kwargs")
    if preset_kwargs and "model" not in explicit and out.get("model") == PRESETS[name].get("model"):
        # The preset's architecture settings belong to its own model: a user who names the
        # model (even the preset's) gets the registered defaults plus their own options.
        out["model_kwargs"] = {**preset_kwargs, **(out.get("model_kwargs") or {})}
    if name != "course":
        from ...engine.device import pick_device
        from ...engine.perf import pick_perf_settings

        perf = pick_perf_settings(pick_device(device or out.get("device")), num_threads=1)
        if "amp" not in explicit and out.get("amp") is None:
            out["amp"] = perf.amp
        if "channels_last" not in explicit and not out.get("channels_last"):
            out["channels_last"] = perf.channels_last
        if "patience" not in explicit:
            # The whole one-cycle schedule runs (early stopping only keeps the best weights),
            # however many epochs are asked for.
            out["patience"] = out["epochs"]
    out["preset"] = name
    return out


def trainer_extras(
    name: str, lr: float, max_shift: int | None = None, cutout: int | None = None
) -> dict[str, Any]:
    """Trainer keyword arguments a preset adds: ``augment``, ``scheduler``, ``tta``, ``fused_pool``.

    Args:
        name: the preset.
        lr: its peak learning rate (the one-cycle schedule's).
        max_shift: random translation by up to so many pixels on every training batch, in place
            of the preset's own (the fast preset: none, only flips; the course preset: none).
        cutout: the side of the square :func:`~.augment.random_cutout` blanks in each training
            image, in place of the preset's own (none in every preset).

    Raises:
        UsageError: an unknown preset name.
    """
    if name not in TRAINER_EXTRAS:
        raise UsageError(f"unknown preset {name!r}; choose one of {sorted(TRAINER_EXTRAS)}")
    extras = TRAINER_EXTRAS[name]
    if not extras:
        if not (max_shift or cutout):
            return {}
        return {"augment": FlipTranslate(max_shift or 0, flip_p=0.0, cutout=cutout or 0)}
    return {
        "augment": FlipTranslate(
            extras["max_shift"] if max_shift is None else max_shift,
            extras["flip_p"],
            extras.get("cutout", 0) if cutout is None else cutout,
        ),
        "scheduler": one_cycle(lr, pct_start=extras["pct_start"]),
        "tta": extras["tta"],
        "fused_pool": extras["fused_pool"],
    }


def fast_trainer_options(
    model: str, augment: bool = True, max_shift: int | None = None, lr: float | None = None
) -> dict[str, Any]:
    """All Trainer keyword arguments of the fast recipe for ``model`` (benchmarks, notebooks).

    ``fashion_bn_cnn`` gets the preset as it is (``lr``: another one-cycle peak); a model
    without BatchNorm (the course's ``hongong_cnn``) gets Adam with a one-cycle peak of 3e-3
    instead of the preset's SGD, which needs BatchNorm to be stable. ``max_shift`` turns on
    random translation by up to so many pixels (longer runs gain from it; the preset's 3 epochs
    do not). The preset's whitened first layer is the run's to set (``whiten_first_conv``).
    """
    preset = PRESETS["fast"]
    if model == preset["model"]:
        opts = {
            "optimizer": preset["optimizer"],
            "lr": lr or preset["lr"],
            "weight_decay": preset["weight_decay"],
        }
    else:
        opts = {"optimizer": "adam", "lr": 3e-3, "weight_decay": 0.0}
    opts["label_smoothing"] = preset["label_smoothing"]
    opts.update(trainer_extras("fast", opts["lr"]))
    if max_shift is not None:
        opts["augment"] = FlipTranslate(max_shift, TRAINER_EXTRAS["fast"]["flip_p"])
    if not augment:
        # A model that never saw mirrored images is worse on them: flip TTA would cost accuracy.
        opts["augment"] = None
        opts["tta"] = False
    return opts
