"""An exported model in ONNX Runtime: preprocessing, inference and decisions from the file alone."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.image_io import load_image
from ..data.preprocess import NORMALIZATIONS, Preprocess
from ..errors import DataError, UsageError
from .boxes import select_detections
from .metadata import FORMAT, PREPROCESS_FIELDS, read_metadata

PRESETS = (*NORMALIZATIONS, "fashion")


@dataclass
class Prediction:
    """What an exported model decided for one image.

    Attributes:
        top: classify / localize: ``(index, class name, probability)``, most likely first.
        boxes: localize / detect: [D, 4] ``xyxy`` in the image's own pixels.
        scores: detect: [D]; localize: the class probability of the box.
        labels: localize / detect: [D] class indices.
        mask: segment: [H, W] class index per pixel, at the model's input size.
    """

    task: str
    top: list[tuple[int, str, float]] = field(default_factory=list)
    boxes: np.ndarray | None = None
    scores: np.ndarray | None = None
    labels: np.ndarray | None = None
    mask: np.ndarray | None = None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


class OnnxModel:
    """An ONNX file run by ONNX Runtime on the CPU.

    Args:
        path: a file written by ``cnnkit export`` (its metadata says everything), or any
            one-input image classifier given ``class_names`` and ``preprocess``.
        class_names: override (or, without cnnkit metadata, supply) the class names.
        preprocess: a preset name (``imagenet``, ``caffe``, ``tf``, ``unit``, ``fashion``) that
            overrides (or supplies) the normalisation; the input size comes from the file.
        threads: ONNX Runtime's intra-op threads (None: its default).
        spin_wait: let idle worker threads spin (ONNX Runtime's default: lower latency on an idle
            machine; on a busy one, False was 2-4x faster in a quick check).

    Raises:
        DataError: a file ONNX Runtime refuses (a broken node, a bad graph), or a graph whose
            input or outputs are not the ones its metadata names.
        UsageError: a file without cnnkit metadata and without ``class_names`` / ``preprocess``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        class_names: Sequence[str] | None = None,
        preprocess: str | None = None,
        threads: int | None = None,
        spin_wait: bool = True,
    ) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise UsageError(f"{path}: no such ONNX file")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        if not spin_wait:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only; refusals are reported as one line below
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types (Fail, InvalidGraph, ...)
            raise DataError(f"{path}: ONNX Runtime refuses the model ({_first_line(exc)})") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            names = [i.name for i in inputs]
            raise DataError(f"{path}: an image model has one input, this one has {len(inputs)} ({names})")
        self.input_name = inputs[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        meta = read_metadata(self.session.get_modelmeta().custom_metadata_map, str(path))
        self.meta = (
            meta if meta is not None else self._plain_metadata(inputs[0].shape, class_names, preprocess)
        )
        self._check_graph()
        if class_names is not None:
            self.meta["class_names"] = list(class_names)
        settings = {k: self.meta["preprocess"][k] for k in PREPROCESS_FIELDS if k in self.meta["preprocess"]}
        if preprocess is not None and meta is not None:
            settings = _preset(preprocess, settings["size"], settings["channels"], str(path))
        try:
            self.preprocess = Preprocess(**settings)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{path}: its preprocessing metadata cannot be used ({exc})") from None

    @property
    def task(self) -> str:
        return self.meta["task"]

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    def _plain_metadata(
        self, shape: list[Any], class_names: Sequence[str] | None, preprocess: str | None
    ) -> dict[str, Any]:
        """Metadata for an ONNX file from elsewhere: only a classifier, as the user describes it."""
        if class_names is None or preprocess is None:
            raise UsageError(
                f"{self.path} has no cnnkit metadata (it was not written by `cnnkit export`); give "
                f"--classes FILE (one class name per line) and --preprocess {{{','.join(PRESETS)}}}"
            )
        if len(shape) != 4 or not all(isinstance(d, int) for d in shape[1:]):
            raise DataError(
                f"{self.path}: input {self.input_name!r} is {shape}, not [N, C, H, W] with a fixed C, H, W"
            )
        channels, height, width = shape[1:]
        return {
            "format": FORMAT,
            "task": "classify",
            "class_names": list(class_names),
            "preprocess": _preset(preprocess, [height, width], channels, str(self.path)),
            "input": self.input_name,
            "outputs": self.output_names[:1],
        }

    def _check_graph(self) -> None:
        if self.input_name != self.meta["input"]:
            raise DataError(
                f"{self.path}: the graph's input is {self.input_name!r}, but its cnnkit metadata names "
                f"{self.meta['input']!r} (the file was changed after export); export it again"
            )
        wanted = self.meta["outputs"]
        missing = [name for name in wanted if name not in self.output_names]
        if missing:
            raise DataError(
                f"{self.path}: the graph has no output {missing[0]!r} that its cnnkit metadata names "
                f"(it has {self.output_names}); export it again"
            )

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """Raw outputs (in the metadata's order) for x float32 [N, C, H, W], prepared."""
        try:
            return self.session.run(
                self.meta["outputs"], {self.input_name: np.ascontiguousarray(x, np.float32)}
            )
        except Exception as exc:
            raise DataError(
                f"{self.path}: ONNX Runtime failed to run the model ({_first_line(exc)})"
            ) from None

    def prepare(self, source: str | os.PathLike[str] | np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """An image file (or uint8 [H, W, C] pixels) -> (float32 [C, H, W] input, (height, width) of
        the image before resizing).

        Raises:
            DataError: a file that cannot be used; the message starts with its name.
        """
        pp = self.preprocess
        pixels = (
            source
            if isinstance(source, np.ndarray)
            else load_image(
                source,
                channels=None,
                background=pp.background,
                max_bytes=pp.max_bytes,
                max_pixels=pp.max_pixels,
            )
        )
        return pp.normalize_array(pp.pixels(pixels)), (pixels.shape[0], pixels.shape[1])

    def decide(
        self,
        outputs: list[np.ndarray],
        sizes: Sequence[tuple[int, int]],
        *,
        top: int = 5,
        score_threshold: float | None = None,
        nms_iou: float | None = None,
    ) -> list[Prediction]:
        """Decisions per image from :meth:`run`'s outputs; ``sizes`` are the images' own (height, width).
        Detection thresholds default to the ones stored in the file (0.25 and 0.5 if none)."""
        names = self.class_names
        post = self.meta.get("postprocess") or {}  # detection: the thresholds stored at export
        height, width = self.preprocess.size
        results = []
        for b, (h, w) in enumerate(sizes):
            pred = Prediction(self.task)
            if self.task in ("classify", "localize"):
                probs = softmax(outputs[0][b].astype(np.float64))
                order = np.argsort(-probs, kind="stable")[:top]
                pred.top = [(int(k), names[k] if k < len(names) else str(k), float(probs[k])) for k in order]
            if self.task == "localize":
                pred.boxes = outputs[1][b][None] * np.array([w, h, w, h], np.float32)
                pred.labels, pred.scores = order[:1], probs[order[:1]]
            elif self.task == "detect":
                det = select_detections(
                    outputs[0][b],
                    outputs[1][b],
                    score_threshold=(
                        score_threshold if score_threshold is not None else post.get("score_threshold", 0.25)
                    ),
                    nms_iou=nms_iou if nms_iou is not None else post.get("nms_iou", 0.5),
                    class_agnostic=True,
                )
                pred.boxes = det["boxes"] * np.array([w / width, h / height] * 2, np.float32)
                pred.scores, pred.labels = det["scores"], det["labels"]
            elif self.task == "segment":
                pred.mask = outputs[0][b].argmax(0)
            results.append(pred)
        return results

    def predict(
        self, sources: Sequence[str | os.PathLike[str] | np.ndarray], **options: Any
    ) -> list[Prediction]:
        """:meth:`prepare`, :meth:`run` and :meth:`decide` for a few images (options: decide's)."""
        prepared = [self.prepare(s) for s in sources]
        outputs = self.run(np.stack([x for x, _ in prepared]))
        return self.decide(outputs, [size for _, size in prepared], **options)


def _preset(name: str, size: Sequence[int], channels: int, where: str) -> dict[str, Any]:
    """Preprocess fields of a named preset at the file's input size and channels."""
    if name not in PRESETS:
        raise UsageError(f"--preprocess must be one of {', '.join(PRESETS)}, got {name!r}")
    try:
        pp = Preprocess.preset(name, size=tuple(size), channels=channels)
    except ValueError as exc:
        raise UsageError(f"--preprocess {name} does not fit {where} ({exc})") from None
    return {k: getattr(pp, k) for k in PREPROCESS_FIELDS}


__all__ = ["OnnxModel", "Prediction", "softmax"]
