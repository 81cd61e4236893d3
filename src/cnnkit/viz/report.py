"""One self-contained HTML page per run: config, metrics, curves, errors, filters, feature maps,
summary table and architecture diagram.

Images are embedded as base64 PNGs and the page links nothing outside itself, so it can be
mailed or archived as one file. ``cnnkit train`` writes it as ``report.html`` in the run folder;
``cnnkit report RUN_DIR`` (re)writes it.
"""

from __future__ import annotations

import base64
import html
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from matplotlib.figure import Figure
from torch import nn

from ..inspect import summary as model_summary
from ..inspect.features import conv_layer_names
from ._common import class_label, close, figure_png_base64, predict_proba, to_model_input
from .confusion import confusion_counts, most_confident_errors, plot_confusion_matrix, plot_mistakes
from .curves import plot_history
from .diagram import diagram_dpi, plot_model_diagram
from .feature_maps import plot_layer_maps
from .filters import plot_filters
from .lang import translate

if TYPE_CHECKING:
    from ..data.arrays import ArrayDataset

__all__ = ["REPORT_FILE", "SECTIONS", "build_report", "write_report"]

REPORT_FILE = "report.html"
# Section ids, in page order.
SECTIONS = (
    "config",
    "metrics",
    "curves",
    "confusion",
    "mistakes",
    "filters",
    "feature-maps",
    "summary",
    "diagram",
)

# Localization, detection and segmentation runs: their scores, curves and drawn test samples.
SCORED_SECTIONS = ("config", "metrics", "curves", "samples", "summary")

_STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; font-size: .85em; margin: .5em 0; }
td, th { border: 1px solid #ddd; padding: .2em .6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; }
nav a { margin-right: 1em; }
.note { color: #666; font-size: .9em; }
.failed { color: #a00; }
"""


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _img(fig: Figure, alt: str, dpi: float = 80) -> str:
    data = figure_png_base64(fig, dpi=dpi)
    close(fig)
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(rows: list[tuple[Any, ...]], header: tuple[str, ...] | None = None) -> str:
    def cell(v: Any, tag: str = "td") -> str:
        if isinstance(v, float):
            return f'<{tag} class="num">{v:.4f}</{tag}>'
        if isinstance(v, int) and not isinstance(v, bool):
            return f'<{tag} class="num">{v:,}</{tag}>'
        return f"<{tag}>{html.escape(str(v))}</{tag}>"

    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(cell(h, "th") for h in header) + "</tr>")
    out += ["<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows]
    out.append("</table>")
    return "\n".join(out)


class _Report:
    def __init__(
        self,
        run_dir: Path,
        model: nn.Module,
        test: ArrayDataset | None,
        sample_index: int,
        record: dict | None,
        probs: torch.Tensor | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.model = model.eval()
        self.test = test
        self.sample_index = sample_index
        self.record = record if record is not None else _read_json(run_dir / "config.json") or {}
        # The shipped model keeps its scores in its own record.
        self.metrics = _read_json(run_dir / "metrics.json") or (self.record if record is not None else {})
        self.history = _read_json(run_dir / "history.json") or self.metrics.get("history") or []
        self.task = "finetune" if "finetune" in self.record else self.record.get("task", "classify")
        self.sections = (
            SECTIONS
            if self.task in ("classify", "finetune") or "finetune" in self.record
            else SCORED_SECTIONS
        )
        if self.record.get("kind") == "instance":  # a Mask R-CNN takes lists of images, not a batch
            self.sections = SCORED_SECTIONS[:-1]
        self.class_names = self.record.get("class_names") or (test.class_names if test is not None else None)
        shape = self.record.get("input_shape") or getattr(model, "default_input", None)
        if shape is None and "image_size" in self.record:  # localize / detect runs
            shape = [self.record["in_chans"], self.record["image_size"], self.record["image_size"]]
        if shape is None and test is not None:
            shape = list(test.input_shape)
        self.input_shape = tuple(shape) if shape else None
        self.normalize = self.record.get("normalize")
        self.model_name = (
            (self.record.get("run") or {}).get("model") or self.record.get("model") or type(model).__name__
        )
        self._probs = probs

    # ------------------------------------------------------------------ sections
    def config(self) -> str:
        run = self.record.get("run") or {}
        parts = [
            _table(
                [(k, v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)) for k, v in run.items()],
                ("setting", "value"),
            )
        ]
        for key, label in (("data_sizes", "data"), ("versions", "versions"), ("machine", "machine")):
            if self.record.get(key):
                parts.append(f"<h3>{label}</h3>" + _table([(k, str(v)) for k, v in self.record[key].items()]))
        return "\n".join(parts)

    def metrics_section(self) -> str:
        if not self.metrics:
            return '<p class="note">metrics.json is missing: the run has not finished.</p>'
        keys = (
            "test_accuracy",
            "test_loss",
            "macro_f1",
            "epochs_run",
            "best_epoch",
            "best_val_loss",
            "stopped_early",
            "train_seconds",
            "num_test_samples",
        )
        rows = [(k, self.metrics[k]) for k in keys if k in self.metrics and self.metrics[k] is not None]
        if self.sections is SCORED_SECTIONS:  # every scalar score, nested ones as "test.map_50"
            rows = [
                (f"{k}.{sub}" if sub else k, v)
                for k, value in self.metrics.items()
                for sub, v in (value.items() if isinstance(value, dict) else [("", value)])
                if isinstance(v, int | float) and not isinstance(v, bool)
            ]
        out = _table(rows, ("metric", "value"))
        per_class = self.metrics.get("per_class") or {}
        if per_class:
            out += "<h3>per class</h3>" + _table(
                [
                    (shown, r.get("precision"), r.get("recall"), r.get("f1"), r.get("support"))
                    for shown, r in zip(translate(list(per_class)), per_class.values())
                ],
                ("class", "precision", "recall", "f1", "support"),
            )
        return out

    def curves(self) -> str:
        if not self.history:
            return '<p class="note">history.json is missing.</p>'
        best = self.metrics.get("best_epoch")
        return _img(
            plot_history(self.history, best, title=f"{self.model_name} learning curves"), "learning curves"
        )

    def samples(self) -> str:
        pictures = sorted(self.run_dir.glob("samples*.png"))
        if not pictures:
            return '<p class="note">the run folder has no samples.png.</p>'
        return "\n".join(
            f'<img alt="{html.escape(p.name)}" src="data:image/png;base64,'
            f'{base64.b64encode(p.read_bytes()).decode("ascii")}">'
            for p in pictures
        )

    def probs(self):
        if self._probs is None and self.test is not None:
            self._probs = predict_proba(self.model, self.test.images, self.normalize)
        return self._probs

    def confusion(self) -> str:
        matrix = self.metrics.get("confusion_matrix")
        if matrix is None:
            if self.test is None:
                return '<p class="note">no confusion matrix in metrics.json and no test set given.</p>'
            probs = self.probs()
            matrix = confusion_counts(self.test.labels, probs.argmax(1), probs.shape[1])
        return _img(plot_confusion_matrix(matrix, self.class_names), "confusion matrix")

    def mistakes(self) -> str:
        if self.test is None:
            return '<p class="note">no test set given.</p>'
        mistakes = most_confident_errors(self.probs(), self.test.labels, k=16)
        return _img(plot_mistakes(self.test.images, mistakes, self.class_names), "most confident mistakes")

    def filters(self) -> str:
        return _img(plot_filters(self.model, conv_layer_names(self.model)[0]), "first-layer filters")

    def feature_maps(self) -> str:
        if self.test is None:
            return '<p class="note">no test set given.</p>'
        convs = conv_layer_names(self.model)
        layers = list(dict.fromkeys([convs[0], convs[-1]]))
        image = self.test.images[self.sample_index]
        label = int(self.test.labels[self.sample_index])
        name = class_label(label, self.class_names)
        x = to_model_input(image, self.normalize, next(self.model.parameters()).device)
        fig = plot_layer_maps(
            self.model, x, layers, image=image, max_maps=32, title=f"test image {self.sample_index} ({name})"
        )
        return _img(fig, f"feature maps of test image {self.sample_index} ({name})")

    def summary(self) -> str:
        s = model_summary(self.model, self.input_shape, name=self.model_name)
        rows = [
            (
                r.name,
                r.type,
                str(r.output_shape),
                r.params,
                r.macs,
                "" if r.receptive_field is None else r.receptive_field,
            )
            for r in s.rows
        ]
        totals = (
            f"Total params: {s.total_params:,} · trainable: {s.trainable_params:,} · "
            f"MACs per image: {s.total_macs:,}"
        )
        return (
            _table(rows, ("layer", "type", "output shape", "params", "MACs", "receptive field"))
            + f"<p>{html.escape(totals)}</p>"
        )

    def diagram(self) -> str:
        fig, _ = plot_model_diagram(self.model, self.input_shape, self.model_name)
        return _img(fig, "architecture diagram", dpi=min(80, diagram_dpi(fig, 16_000)))

    # ------------------------------------------------------------------ page
    def build(self) -> str:
        builders: dict[str, tuple[str, Callable[[], str]]] = {
            "config": ("Configuration", self.config),
            "metrics": ("Test metrics", self.metrics_section),
            "curves": ("Learning curves", self.curves),
            "confusion": ("Confusion matrix", self.confusion),
            "mistakes": ("Most confident mistakes", self.mistakes),
            "filters": ("First-layer filters", self.filters),
            "feature-maps": ("Feature maps of one test image", self.feature_maps),
            "summary": ("Layer summary", self.summary),
            "diagram": ("Architecture", self.diagram),
            "samples": ("Test samples", self.samples),
        }
        body = []
        for key in self.sections:
            heading, build = builders[key]
            try:
                content = build()
            except Exception as exc:  # one broken figure must not cost the rest of the report
                warnings.warn(
                    f"report section {key!r} failed: {type(exc).__name__}: {exc}",
                    RuntimeWarning,
                    stacklevel=2,
                )
                content = f'<p class="failed">could not draw this section: {html.escape(str(exc))}</p>'
            body.append(f'<section id="{key}">\n<h2>{heading}</h2>\n{content}\n</section>')
        nav = " ".join(f'<a href="#{key}">{builders[key][0]}</a>' for key in self.sections)
        accuracy = self.metrics.get("test_accuracy")
        headline = f" · test accuracy {accuracy:.4f}" if isinstance(accuracy, float) else ""
        data = (self.record.get("run") or {}).get("data") or (self.record.get("data") or {}).get("name", "?")
        title = f"{self.model_name} ({self.task}) on {data}"
        return (
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
            f"<h1>{html.escape(title)}{html.escape(headline)}</h1>\n"
            f'<p class="note">run folder: {html.escape(str(self.run_dir))}</p>\n<nav>{nav}</nav>\n'
            + "\n".join(body)
            + "\n</body>\n</html>\n"
        )


def build_report(
    run_dir: str | os.PathLike[str],
    model: nn.Module,
    test: ArrayDataset | None = None,
    sample_index: int = 0,
    record: dict | None = None,
    probs: torch.Tensor | None = None,
) -> str:
    """The HTML page of a run folder.

    Args:
        run_dir: the run folder (its config.json, metrics.json and history.json are read).
        model: the run's model with its trained weights.
        test: the test set (for mistakes and feature maps; without it those sections say so).
        sample_index: test image whose feature maps are drawn (0: for Fashion-MNIST, the
            ankle boot the course draws).
        record: the run's record when it is not in ``RUN_DIR/config.json`` (the shipped model).
        probs: class probabilities Tensor[N, K] of ``test`` as the run scores it (its precision
            and test-time augmentation: ``runs.evaluate.classify_scorer``); without them the
            model predicts in float32.

    Returns:
        The page: one section per entry of ``SECTIONS``, images as data: URLs.
    """
    return _Report(Path(run_dir), model, test, sample_index, record, probs).build()


def write_report(
    run_dir: str | os.PathLike[str],
    model: nn.Module,
    test: ArrayDataset | None = None,
    out: str | os.PathLike[str] | None = None,
    sample_index: int = 0,
    record: dict | None = None,
    probs: torch.Tensor | None = None,
) -> Path:
    """Write :func:`build_report` to ``out`` (default ``RUN_DIR/report.html``) and return the path."""
    from ..io.atomic import atomic_write_text

    path = Path(out) if out is not None else Path(run_dir) / REPORT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, build_report(run_dir, model, test, sample_index, record, probs))
    return path
