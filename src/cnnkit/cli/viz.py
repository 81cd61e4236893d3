"""`cnnkit viz FIGURE RUN_OR_MODEL`: draw one look inside a model.

FIGURE is one of:

  curves        loss and accuracy per epoch, train vs validation, best epoch marked (run folder)
  filters       one tile per output channel of a conv layer (default: the first), shared scale
  histogram     a layer's weights, trained vs freshly initialised, with mean and std
  feature-maps  activations of --layer (repeatable; default: up to 8 conv layers spread through
                the model, --max-layers) for one image
  confusion     confusion matrix, counts and row-normalised (run folder)
  errors        the test images misclassified with the highest confidence (run folder)
  gradcam       Grad-CAM (default layer: the model's last stage) and gradient saliency
  diagram       the architecture as boxes and arrows with shapes and parameters (PNG and SVG)

Layer names are those of `cnnkit summary`. The image is test image --index N of the run's data
(default 0, an ankle boot in Fashion-MNIST) or an image file given with --image. A registered
model name instead of a run folder draws the freshly initialised model, or the model with its
ImageNet weights when an installed package ships them (efficientnet_lite0: cnnkit[imagenet]).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from .targets import add_target

if TYPE_CHECKING:
    import torch

FIGURES = ("curves", "filters", "histogram", "feature-maps", "confusion", "errors", "gradcam", "diagram")
RUN_ONLY = ("curves", "confusion", "errors")
# What a localization, detection or segmentation run can draw (its backbone's filters, its curves).
SCORED_RUN_FIGURES = ("curves", "filters")


HELP = "draw curves, filters, feature maps, errors, Grad-CAM or a diagram"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("figure", choices=FIGURES, metavar="FIGURE", help=" | ".join(FIGURES))
    add_target(p)
    p.add_argument(
        "--layer", action="append", help="layer name as in `cnnkit summary` (feature-maps: repeatable)"
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument("--image", help="an image file (JPEG, PNG, ...) to feed the model")
    source.add_argument("--index", type=int, help="test image N of the run's data (default 0)")
    p.add_argument("--out", help="output file, .png or .svg (default: RUN_DIR/figures/<figure>.png)")
    p.add_argument("--class", dest="target_class", help="gradcam: class index or name (default: predicted)")
    p.add_argument("--channel", type=int, default=0, help="filters: input channel of grayscale tiles")
    p.add_argument("--vmax", type=float, help="filters: colour scale ±VMAX (the course uses 0.5)")
    p.add_argument("--max-maps", type=int, default=64, help="feature-maps: channels drawn per layer")
    p.add_argument(
        "--max-layers",
        type=int,
        default=8,
        help="feature-maps without --layer: at most N conv layers, spread from the first to the last "
        "(0: every one)",
    )
    p.add_argument("--top", type=int, default=16, help="errors: how many mistakes to show")
    p.add_argument(
        "--untrained",
        action="store_true",
        help="draw the run's model as training found it: same architecture and seed, no training",
    )
    p.add_argument("--input", help="input as HxWxC for a model name (default: the model's own)")
    p.add_argument("--dpi", type=float, default=100, help="PNG resolution")
    p.add_argument("--device", help="cpu, cuda, cuda:N or mps")


class _Target:
    """A run folder (trained model + record) or a registered model name (fresh model)."""

    def __init__(self, spec: str, device: str | None, input_shape: str | None) -> None:
        import torch

        from ..runs.folder import SHIPPED, read_run

        self.spec = spec
        self.run = read_run(spec) if Path(spec).is_dir() or spec == SHIPPED else None
        self.run_dir = None if self.run is None else self.run.path
        self.record: dict[str, Any] = {}
        self.normalize: Any = None
        self.preprocess: dict[str, Any] = {}  # a model name's weights' own resize settings
        self._test = None
        if self.run is not None:
            from ..runs.folder import load_run

            self.model, self.record = load_run(self.run, device=device)
            self.name = self.run.model_name
            shape = self.record.get("input_shape") or [
                self.record.get("in_chans", 1),
                *[self.record.get("image_size")] * 2,
            ]
            self.input_shape = tuple(shape)
        else:
            from ..engine.device import pick_device
            from .summary import resolve_model

            torch.manual_seed(0)  # a model name is drawn freshly initialised: the same picture every time
            model, shape, self.name = resolve_model(spec, input_shape=input_shape)
            self._packaged_weights(model)
            self.model = model.to(pick_device(device)).eval()
            self.input_shape = tuple(shape)
        self.class_names = self.record.get("class_names") or getattr(self.model, "class_names", None)
        self.normalize = self.record.get("normalize", self.normalize)

    def _packaged_weights(self, model: torch.nn.Module) -> None:
        """A model whose weights an installed package ships (efficientnet_lite0) is drawn with them."""
        from ..models._packaged import default_packaged_weights
        from ..models._weights import load_pretrained

        spec = default_packaged_weights(self.spec)
        if spec is None or getattr(model, "num_classes", None) != 1000:
            return
        info = load_pretrained(model, self.spec, spec.name)
        self.normalize = info.normalize
        self.preprocess = {"crop_fraction": info.crop_fraction, "interpolation": info.interpolation}

    def require_classifier(self, figure: str) -> None:
        """Figures of class scores (and of the classifier's own architecture) need a classifier."""
        from ..runs.folder import require_task

        if self.run is not None and figure not in SCORED_RUN_FIGURES:
            require_task(
                self.run,
                f"cnnkit viz {figure}",
                ("classify", "finetune"),
                f"draws classification runs and models (for this run: viz {' or '.join(SCORED_RUN_FIGURES)})",
            )

    def require_run(self, figure: str) -> Path:
        if self.run_dir is None:
            raise UsageError(
                f"`cnnkit viz {figure}` needs a run folder written by `cnnkit train`, got {self.spec!r}"
            )
        return self.run_dir

    @property
    def scored_run(self) -> bool:
        """A run (or the shipped model) with a recorded test set and scoring settings."""
        return self.run is not None and bool(self.record.get("run"))

    def test_set(self):
        """The run's test set (the images ``metrics.json`` was computed on)."""
        if self._test is None:
            if self.scored_run:
                from ..runs.evaluate import classify_data

                _, self._test = classify_data(self.run)
            elif self.input_shape == (1, 28, 28):
                from ..runs.classify import load_dataset

                _, self._test = load_dataset("fashion-mnist")
            else:
                raise UsageError(f"{self.spec} has no test set of its own; give --image PATH")
        return self._test

    def test_probabilities(self, test) -> torch.Tensor:
        """Class probabilities of ``test``: a run's as it scores them (its precision and flip TTA,
        as in its metrics.json), a model name's in float32."""
        if self.scored_run:
            from ..runs.evaluate import classify_scorer
            from ..viz._common import model_device

            return classify_scorer(self.record, self.model, model_device(self.model)).logits(test).softmax(1)
        from ..viz import predict_proba

        return predict_proba(self.model, test.images, self.normalize)

    def full_test_image(self, index: int) -> tuple[torch.Tensor, int | None]:
        """Test image ``index`` of the run's whole test set (before any --limit-test sample)."""
        from ..runs.classify import load_dataset, run_data_options

        data = (self.record.get("run") or {}).get("data", "fashion-mnist")
        if not self.record and self.input_shape != (1, 28, 28):
            raise UsageError(
                f"{self.name} takes {self.input_shape[1]}x{self.input_shape[2]}x{self.input_shape[0]} "
                "images, not Fashion-MNIST's; give --image PATH"
            )
        _, test = load_dataset(data, **run_data_options(self.record))
        if not 0 <= index < len(test):
            raise UsageError(f"--index must be in 0..{len(test) - 1}, got {index}")
        return test.images[index], int(test.labels[index])

    def image(self, args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, int | None, str]:
        """(stored uint8 image [C, H, W], model input [1, C, H, W], true label or None, description)."""
        import torch

        from ..viz._common import model_device, to_model_input

        device = model_device(self.model)
        if args.image:
            from ..data.preprocess import Preprocess

            config: dict[str, Any] = {"input_shape": list(self.input_shape)}
            config.update(self.record.get("preprocess") or self.preprocess)
            if self.input_shape == (1, 28, 28):
                config.setdefault("fashion_mnist", True)
            prep = Preprocess.from_config(config)
            pixels = torch.from_numpy(prep.pixels(args.image).copy()).permute(2, 0, 1).contiguous()
            if isinstance(self.normalize, dict) and "preset" in self.normalize:
                x = (
                    Preprocess.from_config({**config, "normalize": self.normalize})
                    .normalize(pixels.permute(1, 2, 0).numpy())
                    .unsqueeze(0)
                    .to(device)
                )
            else:
                x = to_model_input(pixels, self.normalize, device)
            return pixels, x, None, Path(args.image).name
        index = args.index or 0
        image, label = self.full_test_image(index)
        return image, to_model_input(image, self.normalize, device), label, f"test image {index}"


def _out_path(args: argparse.Namespace, target: _Target, stem: str) -> Path:
    if args.out:
        return Path(args.out)
    if target.run is not None:
        return target.run.output_dir / "figures" / f"{stem}.png"
    return Path(f"{target.name}-{stem}.png")


def _slug(name: str) -> str:
    return name.replace(".", "-").replace("/", "-")


def run(args: argparse.Namespace) -> int:
    import matplotlib.pyplot as plt
    import torch

    from .. import viz
    from ..inspect.features import conv_layer_names, default_cam_layer, get_layer
    from ..viz.lang import figure_text

    if args.max_maps < 1 or args.top < 1 or args.dpi <= 0 or args.max_layers < 0:
        raise UsageError("--max-maps and --top must be >= 1, --max-layers >= 0 and --dpi > 0")
    target = _Target(args.target, args.device, args.input)
    target.require_classifier(args.figure)
    figure_text(target.name)  # titles name the run: a Korean folder name gets its font
    if args.untrained:
        if args.figure in (*RUN_ONLY, "histogram"):
            raise UsageError(f"--untrained does not apply to `cnnkit viz {args.figure}`")
        target.require_run("--untrained")
        device = next(target.model.parameters()).device
        target.model = _fresh_model(target).to(device).eval()
    if args.figure in RUN_ONLY:
        target.require_run(args.figure)
    layers = args.layer or []
    for name in layers:
        get_layer(target.model, name)  # unknown names fail here, listing the valid ones
    if len(layers) > 1 and args.figure != "feature-maps":
        raise UsageError(f"`cnnkit viz {args.figure}` takes one --layer, got {len(layers)}")
    layer = layers[0] if layers else None
    written: list[Path] = []

    if args.figure == "curves":
        import json

        run_dir = target.run_dir
        history_file = run_dir / "history.json"
        metrics_file = run_dir / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        if history_file.is_file():
            history = json.loads(history_file.read_text())
        elif metrics.get("history"):  # runs written before every task kept history.json
            history = metrics["history"]
        else:
            raise UsageError(f"{run_dir} has no history.json (did training finish an epoch?)")
        fig = viz.plot_history(history, metrics.get("best_epoch"), title=f"{target.name} learning curves")
        stem = "curves"
    elif args.figure == "filters":
        layer = layer or _first_conv(target.model, conv_layer_names)
        fig = viz.plot_filters(target.model, layer, in_channel=args.channel, vmax=args.vmax)
        stem = f"filters-{_slug(layer)}"
    elif args.figure == "histogram":
        layer = layer or _first_conv(target.model, conv_layer_names)
        if target.run_dir is not None:
            weights = {
                "trained": viz.layer_weight(target.model, layer),
                "freshly initialised": viz.layer_weight(_fresh_model(target), layer),
            }
        else:  # a model name: freshly initialised, or with a package's weights
            info = getattr(target.model, "pretrained_info", None)
            label = "freshly initialised" if info is None else info.source
            weights = {label: viz.layer_weight(target.model, layer)}
        fig = viz.plot_weight_histograms(weights, layer)
        stem = f"histogram-{_slug(layer)}"
    elif args.figure == "feature-maps":
        image, x, label, what = target.image(args)
        title = what if label is None else f"{what} ({_label(label, target.class_names)})"
        shown = layers
        if not layers:  # the conv layers, picked once here so that the note names what is drawn
            from ..viz.feature_maps import default_map_layers

            every = conv_layer_names(target.model)
            shown = default_map_layers(target.model, args.max_layers or None)
            if len(shown) < len(every):
                print(
                    f"{len(shown)} of {target.name}'s {len(every)} conv layers, spread through the model "
                    f"({shown[0]} ... {shown[-1]}); --layer NAME picks others, --max-layers 0 draws all"
                )
        fig = viz.plot_layer_maps(
            target.model, x, shown or None, image=image, max_maps=args.max_maps, title=title
        )
        stem = "feature-maps" + (f"-{_slug(layers[0])}" if len(layers) == 1 else "")
    elif args.figure == "confusion":
        fig = _confusion(target, viz)
        stem = "confusion"
    elif args.figure == "errors":
        test = target.test_set()
        probs = target.test_probabilities(test)
        mistakes = viz.most_confident_errors(probs, test.labels, k=args.top)
        fig = viz.plot_mistakes(test.images, mistakes, target.class_names)
        stem = "errors"
    elif args.figure == "gradcam":
        from ..viz.gradcam import resolve_class

        image, x, label, _ = target.image(args)
        num_classes = getattr(target.model, "num_classes", None) or len(target.class_names or []) or 0
        with torch.no_grad():
            num_classes = num_classes or int(target.model(x).shape[1])
        cls = resolve_class(args.target_class, target.class_names, num_classes)
        result = viz.saliency(target.model, x, cls, layer or default_cam_layer(target.model))
        fig = viz.plot_saliency(image, result, target.class_names, label)
        stem = f"gradcam-{_slug(result.layer)}"
    else:  # diagram
        fig, _ = viz.plot_model_diagram(target.model, target.input_shape, target.name)
        out = _out_path(args, target, "diagram")
        written.append(viz.save_diagram(fig, out, dpi=args.dpi))
        if not args.out:
            written.append(viz.save_diagram(fig, out.with_suffix(".svg")))
        plt.close(fig)
        for path in written:
            print(f"wrote {path}")
        return 0
    written.append(viz.save_figure(fig, _out_path(args, target, stem), dpi=args.dpi))
    plt.close(fig)
    for path in written:
        print(f"wrote {path}")
    return 0


def _first_conv(model: torch.nn.Module, conv_layer_names) -> str:
    convs = conv_layer_names(model)
    if not convs:
        raise UsageError(f"{type(model).__name__} has no conv layer; pass --layer")
    return convs[0]


def _label(index: int, names: list[str] | None) -> str:
    from ..viz._common import class_label

    return class_label(index, names)


def _fresh_model(target: _Target) -> torch.nn.Module:
    """The same architecture freshly initialised with the run's seed (what training started from)."""
    import torch

    from ..models import create_model

    run = target.record["run"]
    torch.manual_seed(int(run.get("seed", 0)))
    return create_model(
        run["model"],
        num_classes=target.record["num_classes"],
        in_chans=target.record["input_shape"][0],
        **run.get("model_kwargs", {}),
    )


def _confusion(target: _Target, viz):
    import json

    metrics_file = target.run_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    matrix = metrics.get("confusion_matrix")
    if matrix is None:
        test = target.test_set()
        probs = target.test_probabilities(test)
        matrix = viz.confusion_counts(test.labels, probs.argmax(1), probs.shape[1])
    return viz.plot_confusion_matrix(matrix, target.class_names, title=f"{target.name}: confusion matrix")
