"""What the studio serves: the models and runs named at start-up, each under an id it gave.

Nothing else on disk is reachable: a request names a model only by its id, and the id maps to
an entry built here once. Class names reach the page through :func:`display_names` only.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.preprocess import Preprocess
from ..errors import CnnkitError, UsageError
from ..inspect.features import conv_layer_names
from ..inspect.receptive import LayerWindow, layer_windows
from ..inspect.summary import Summary, summary
from ..runs.folder import CONFIG_FILE, SHIPPED, load_run, read_run, require_task
from ..viz.lang import translate

__all__ = ["Catalog", "Entry", "display_names", "load_catalog"]

CLASSIFY_TASKS = ("classify", "finetune")
TASKS = (*CLASSIFY_TASKS, "localize", "detect", "segment")  # every task cnnkit trains
# Inputs up to this many pixels run on one thread: on maps this small a second OpenMP thread
# costs more than it saves (on 2 busy cores, 40x: 96 ms instead of 2.6 ms for the shipped model).
ONE_THREAD_PIXELS = 64 * 64
FASHION_DATA = ("fashion-mnist", "fashion_mnist", "fashion")


def display_names(names: Sequence[str] | None, num_classes: int) -> list[str]:
    """The class names the page shows: the model's own, else ``class 0`` ... ``class N-1``.

    The one place class names pass on their way to the page, so that a language setting for
    labels applies here.
    """
    if names is not None and len(names) == num_classes:
        return translate(names)  # --lang / CNNKIT_LANG, as in figures and predictions
    return [f"class {i}" for i in range(num_classes)]


@dataclass
class Entry:
    """One model the studio serves.

    Attributes:
        id: the id the server gave it (the only way a request names it).
        name: what the page calls it (the shipped model's name, a run folder's name, a zoo name).
        kind: ``"shipped"``, ``"run"`` or ``"zoo"`` (a zoo model is freshly initialised: untrained).
        task: the run's task (``"classify"`` for zoo models).
        model: the module, in eval mode on the CPU.
        record: the run's ``config.json`` record (empty for zoo models).
        preprocess: how an upload becomes the model's input.
        classes: display names of the outputs.
        summary: layer table at the model's input size.
        windows: receptive fields of the layers with image-shaped outputs.
        run_dir: the run folder whose ``history.json`` holds its curves (None otherwise).
        lock: one forward pass at a time (hooks are registered on the shared module).
    """

    id: str
    name: str
    kind: str
    task: str
    model: nn.Module
    record: dict[str, Any]
    preprocess: Preprocess
    classes: list[str]
    summary: Summary
    windows: dict[str, LayerWindow]
    run_dir: Path | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.summary.input_shape

    @property
    def instance(self) -> bool:
        """A Mask R-CNN (instance segmentation) run."""
        return self.task == "segment" and self.record.get("kind") == "instance"

    @contextmanager
    def busy(self) -> Iterator[None]:
        """Hold the model for one computation; a small input runs on one intra-op thread."""
        _, height, width = self.input_shape
        with self.lock:
            if height * width > ONE_THREAD_PIXELS:
                yield
                return
            before = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                yield
            finally:
                torch.set_num_threads(before)

    def layer_name(self, index: int) -> str:
        """The summary name of layer ``index``.

        Raises:
            LookupError: no such layer.
        """
        rows = self.summary.rows
        if not 0 <= index < len(rows):
            raise LookupError(f"{self.name} has layers 0..{len(rows) - 1}, not {index}")
        return rows[index].name

    def describe(self) -> dict[str, Any]:
        """What the model list shows."""
        c, h, w = self.input_shape
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "task": self.task,
            "trained": self.kind != "zoo",
            "input": {"channels": c, "height": h, "width": w},
            "classes": self.classes,
            "has_history": self.run_dir is not None,
            "params": self.summary.total_params,
            "drawable": c == 1 and h <= 64 and w <= 64,
            "instance": self.instance,
        }

    def layers(self) -> list[dict[str, Any]]:
        """The layer table: shape, parameters and receptive field of every summary layer."""
        convs = set(conv_layer_names(self.model))
        out = []
        for i, row in enumerate(self.summary.rows):
            window = self.windows.get(row.name)
            out.append(
                {
                    "index": i,
                    "name": row.name,
                    "type": row.type,
                    "shape": list(row.output_shape),
                    "params": row.params,
                    "macs": row.macs,
                    "receptive_field": list(window.field) if window else None,
                    "jump": list(window.jump) if window else None,
                    "maps": len(row.output_shape) == 3,
                    "conv": row.name in convs,
                    "weights": _has_weight(self.model, row.name),
                    "kernel": list(window.window.kernel) if window and window.window else None,
                    "stride": list(window.window.stride) if window and window.window else None,
                }
            )
        return out


def _has_weight(model: nn.Module, name: str) -> bool:
    weight = getattr(dict(model.named_modules())[name], "weight", None)
    return isinstance(weight, torch.Tensor) and weight.dim() >= 2


class Catalog:
    """The entries by id, in the order they were named.

    Attributes:
        entries: id -> Entry.
        skipped: one line for each run under ``--runs`` that the studio cannot show.
    """

    def __init__(self, entries: Sequence[Entry], skipped: Sequence[str] = ()) -> None:
        self.entries = {e.id: e for e in entries}
        self.skipped = list(skipped)

    def get(self, entry_id: str) -> Entry:
        """Raises LookupError: an id the server did not give."""
        if entry_id not in self.entries:
            raise LookupError(f"no model with id {entry_id!r}; the ids are {', '.join(self.entries)}")
        return self.entries[entry_id]

    def __iter__(self):
        return iter(self.entries.values())

    def __len__(self) -> int:
        return len(self.entries)


def _preprocess_for(record: dict[str, Any], shape: Sequence[int], fashion: bool) -> Preprocess:
    if record.get("task") in ("localize", "detect", "segment"):  # stretched to the canvas, 0..1
        return Preprocess.preset("unit", size=tuple(shape[1:]), channels=shape[0], resize="resize")
    config = {k: record[k] for k in ("normalize",) if k in record}
    config.update(record.get("preprocess") or {})
    config["input_shape"] = list(shape)
    # Photos for a Fashion-MNIST model become light-on-dark 28 × 28 items, as `cnnkit predict`
    # does for the shipped model; a 28 × 28 grayscale file passes unchanged.
    return Preprocess.from_config(config, **({"fashion_mnist": True} if fashion else {}))


def _entry(index: int, name: str, kind: str, task: str, model: nn.Module, record: dict, **kw: Any) -> Entry:
    shape = tuple(int(v) for v in record["input_shape"])
    fashion = shape[0] == 1 and ((record.get("run") or {}).get("data") in FASHION_DATA or kind == "shipped")
    num = int(record.get("num_classes") or 0)
    names = getattr(model, "class_names", None) or record.get("class_names")
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "model"
    return Entry(
        id=f"{index}-{slug}",
        name=name,
        kind=kind,
        task=task,
        model=model,
        record=record,
        preprocess=_preprocess_for(record, shape, fashion),
        classes=display_names(names, num),
        summary=summary(model, shape, name=name),
        windows=layer_windows(model, shape),
        **kw,
    )


def _load_target(index: int, target: str) -> Entry:
    from ..models import create_model, list_models, model_entry

    if target == SHIPPED or Path(target).is_dir():
        run = read_run(target)
        require_task(run, "cnnkit studio", TASKS)
        model, record = load_run(run, device="cpu")
        record = dict(record)
        if run.task in ("localize", "detect"):
            size = int(record["image_size"])
            record.update(
                input_shape=[int(record["in_chans"]), size, size], num_classes=len(record["class_names"])
            )
        if "input_shape" not in record:
            raise UsageError(f"{target}: its config.json records no input_shape; the studio needs one")
        name = SHIPPED if run.shipped else Path(target).resolve().name
        kind = "shipped" if run.shipped else "run"
        record.setdefault("num_classes", getattr(model, "num_classes", 0))
        return _entry(
            index, name, kind, run.task, model.eval(), record, run_dir=None if run.shipped else run.path
        )
    if target not in list_models():
        try:
            model_entry(target)
        except ValueError as exc:
            raise UsageError(f"{target} is not a run folder nor {SHIPPED!r}; as a model: {exc}") from None
    torch.manual_seed(0)  # a zoo model is freshly initialised: the same weights every start
    model = create_model(target).eval()
    record = {
        "input_shape": list(model_entry(target).input_size),
        "num_classes": getattr(model, "num_classes", 0),
    }
    return _entry(index, target, "zoo", "classify", model, record)


def load_catalog(targets: Sequence[str], runs_dir: str | os.PathLike[str] | None = None) -> Catalog:
    """Entries for ``targets`` (``'fashion'``, run folders, zoo names) and the runs under ``runs_dir``.

    Raises:
        UsageError: nothing to serve, a ``runs_dir`` that is not a folder, a target that is
            neither a run folder nor a model name.
        ValueError: an unknown model name (with close matches).
    """
    named = list(dict.fromkeys(targets))
    found: list[str] = []
    if runs_dir is not None:
        root = Path(runs_dir)
        if not root.is_dir():
            raise UsageError(f"--runs {runs_dir}: no such folder")
        found = [str(p) for p in sorted(root.iterdir()) if (p / CONFIG_FILE).is_file()]
        found = [p for p in found if p not in named]
    if not named and not found:
        raise UsageError("name at least one model or run (e.g. `cnnkit studio fashion`), or --runs DIR")
    entries = [_load_target(i, t) for i, t in enumerate(named, start=1)]
    skipped = []
    for target in found:  # a folder of runs may hold some the studio cannot show: say so, go on
        try:
            entries.append(_load_target(len(entries) + 1, target))
        except CnnkitError as exc:
            skipped.append(str(exc))
    if not entries:
        raise UsageError(f"no run under --runs {runs_dir} can be shown: {'; '.join(skipped)}")
    return Catalog(entries, skipped)
