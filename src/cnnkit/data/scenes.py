"""FashionScenes: real Fashion-MNIST items placed on a larger canvas, with boxes and masks.

The course's localization and detection chapters need images with several objects and their
boxes; Fashion-MNIST has one centred item per image. FashionScenes scales real items (train
items for the ``train`` split, held-out train items for ``val``, test items for ``test``), places
them at random positions with bounded overlap, and records for every object:

- its box, ``xyxy`` in pixel edges (``x2`` is one past the last column), the tight box of its mask;
- its class (Fashion-MNIST label);
- its mask: the item's pixels above ``mask_threshold`` (amodal: a mask is not cut where a later
  item covers it; ``SceneDataset.instance_masks(i, visible=True)`` gives the visible part).

Items are drawn in order; each item's mask pixels replace what is under them (painter's order), so
the semantic mask (0 background, class + 1 for objects) shows the top-most object at a pixel.
Unlabelled clutter (fragments of other items) and Gaussian noise are optional.

Generation is deterministic: seeded NumPy generators per split, image and purpose, so that the
first k images do not depend on how many are made and clutter and noise leave the objects as
they are. Scenes are cached as compressed ``.npz`` under ``$CNNKIT_CACHE/scenes`` (default
``~/.cache/cnnkit/scenes``), keyed by every parameter, the generator version and a fingerprint
of the source items.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .arrays import ArrayDataset
from .scene_render import GENERATOR_VERSION, render_scene

SPLITS = ("train", "val", "test")
# Fashion-MNIST train items 0..49,999 feed the train split, 50,000..59,999 the val split.
VAL_START = 50_000


@dataclass(frozen=True)
class FashionScenes:
    """Parameters of one FashionScenes split; ``load()`` generates (or reads the cached) data.

    Attributes:
        split: ``'train'``, ``'val'`` (held-out train items) or ``'test'`` (test items).
        num_images: images to generate.
        canvas: side of the square canvas in pixels.
        min_objects: fewest labelled items per image.
        max_objects: most labelled items per image (1 and 1: single-object localization).
        min_size: smallest side of a scaled 28×28 item frame, in pixels.
        max_size: largest side of a scaled item frame (at most ``canvas``).
        max_overlap: largest fraction of a labelled box that another labelled box may cover
            (intersection over the smaller box's area; it also bounds the IoU, and keeps a small
            item from vanishing under a large one).
        clutter: unlabelled item fragments per image (distractors).
        noise: standard deviation of additive Gaussian noise, in 0..255 grey levels.
        mask_threshold: grey level (0..255, after scaling) above which an item pixel is the object.
        seed: base seed; the split is mixed in, so train and test never share a random stream.
    """

    split: str = "train"
    num_images: int = 1000
    canvas: int = 64
    min_objects: int = 1
    max_objects: int = 1
    min_size: int = 24
    max_size: int = 48
    max_overlap: float = 0.2
    clutter: int = 0
    noise: float = 0.0
    mask_threshold: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        for name, low in (("num_images", 0), ("canvas", 8), ("min_objects", 1), ("min_size", 4)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if self.max_objects < self.min_objects:
            raise ValueError(f"max_objects ({self.max_objects}) must be >= min_objects ({self.min_objects})")
        if not self.min_size <= self.max_size <= self.canvas:
            raise ValueError(
                f"need min_size <= max_size <= canvas, got {self.min_size}, {self.max_size}, "
                f"{self.canvas}; lower max_size or enlarge the canvas"
            )
        if not 0.0 <= self.max_overlap <= 1.0:
            raise ValueError(f"max_overlap is a fraction between 0 and 1, got {self.max_overlap!r}")
        if self.clutter < 0 or self.noise < 0:
            raise ValueError(f"clutter and noise must be >= 0, got {self.clutter!r} and {self.noise!r}")
        if not 0 <= self.mask_threshold < 255:
            raise ValueError(f"mask_threshold must be in 0..254, got {self.mask_threshold!r}")

    def replace(self, **changes: object) -> FashionScenes:
        """A copy with some parameters changed (e.g. ``split='test'``)."""
        return dataclasses.replace(self, **changes)

    def generate(self, source: ArrayDataset | None = None) -> SceneDataset:
        """Generate the scenes (no cache).

        Args:
            source: the item pool: an ArrayDataset of uint8 [N, 1, h, w] images. None loads the
                split's Fashion-MNIST items (train 0..49,999, val 50,000..59,999, or test).
        """
        return _generate(self, source if source is not None else _default_source(self.split))

    def load(self, source: ArrayDataset | None = None, cache: bool = True) -> SceneDataset:
        """The scenes from the cache, generating and caching them on a miss.

        Args:
            source: as in ``generate``.
            cache: read and write the cache folder (see ``scenes_cache_dir``).
        """
        source = source if source is not None else _default_source(self.split)
        if not cache:
            return _generate(self, source)
        path = scenes_cache_dir() / self.cache_name(source)
        if path.is_file():
            try:
                return SceneDataset.load(path)
            except DataError:
                pass  # an unreadable cache entry is regenerated and overwritten below
        data = _generate(self, source)
        data.save(path)
        return data

    def cache_name(self, source: ArrayDataset) -> str:
        """File name in the cache: a readable prefix + a hash of everything the data depends on."""
        key = json.dumps(
            {
                "version": GENERATOR_VERSION,
                "params": dataclasses.asdict(self),
                "source": fingerprint(source),
            },
            sort_keys=True,
        )
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        return f"fashion-scenes-{self.split}-{self.canvas}px-{self.num_images}-{digest}.npz"


class ClassImages:
    """What the scene and mask datasets share: uint8 ``images`` Tensor[N, C, H, W], one entry
    per sample, and ``class_names``, one per class index. Subclasses are dataclasses with these
    fields and a ``name`` for messages."""

    images: torch.Tensor
    class_names: list[str]
    name: str

    def _check_images(self) -> None:
        if self.images.dim() != 4 or self.images.dtype != torch.uint8:
            raise DataError(
                f"{self.name}: images must be uint8 [N, C, H, W], got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass
class SceneDataset(ClassImages):
    """Images with a variable number of labelled boxes (and masks) each, held in memory.

    Objects of all images are stored back to back; image ``i`` owns objects
    ``offsets[i]:offsets[i + 1]``.

    Attributes:
        images: uint8 Tensor[N, C, H, W].
        boxes: float32 Tensor[M, 4], ``xyxy`` pixel edges.
        labels: int64 Tensor[M], class indices.
        offsets: int64 Tensor[N + 1], start of each image's objects (``offsets[-1] == M``).
        class_names: one name per class index.
        masks: packed bits, uint8 Tensor[M, ceil(H * W / 8)] (``np.packbits`` of each
            flattened mask), or None when the data has no masks (boxes from annotation files).
        name: where the data came from.
        params: the generator parameters (JSON-able), or ``{}``.
    """

    images: torch.Tensor
    boxes: torch.Tensor
    labels: torch.Tensor
    offsets: torch.Tensor
    class_names: list[str]
    masks: torch.Tensor | None = None
    name: str = "scenes"
    params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n, m = len(self.images), len(self.boxes)
        self._check_images()
        if self.boxes.shape != (m, 4) or self.labels.shape != (m,):
            raise DataError(
                f"{self.name}: boxes {tuple(self.boxes.shape)} and labels "
                f"{tuple(self.labels.shape)} do not describe the same objects"
            )
        if self.offsets.shape != (n + 1,) or int(self.offsets[0]) != 0 or int(self.offsets[-1]) != m:
            raise DataError(f"{self.name}: offsets must have N + 1 = {n + 1} entries from 0 to {m}")
        if m and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.class_names)):
            raise DataError(
                f"{self.name}: labels must be in 0..{len(self.class_names) - 1}, got "
                f"{int(self.labels.min())}..{int(self.labels.max())}"
            )
        if self.masks is not None and len(self.masks) != m:
            raise DataError(f"{self.name}: {len(self.masks)} masks for {m} objects")

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of every image."""
        return int(self.images.shape[-2]), int(self.images.shape[-1])

    @property
    def num_objects(self) -> torch.Tensor:
        """int64 Tensor[N]: objects per image."""
        return self.offsets[1:] - self.offsets[:-1]

    def target(self, i: int) -> dict[str, torch.Tensor]:
        """Image ``i``'s ``{"boxes": Tensor[K, 4], "labels": Tensor[K]}`` (torchvision style)."""
        lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
        return {"boxes": self.boxes[lo:hi], "labels": self.labels[lo:hi]}

    def batch_targets(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All objects of the images ``index``, flattened for a vectorised loss.

        Returns:
            boxes (Tensor[M, 4]), labels (Tensor[M]) and batch position (Tensor[M]) of each object.
        """
        counts = self.num_objects[index]
        starts = self.offsets[index]
        batch_pos = torch.repeat_interleave(torch.arange(len(index)), counts)
        within = torch.arange(int(counts.sum())) - torch.repeat_interleave(counts.cumsum(0) - counts, counts)
        rows = starts[batch_pos] + within
        return self.boxes[rows], self.labels[rows], batch_pos

    def single_object(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(boxes Tensor[N, 4], labels Tensor[N]) when every image has exactly one object.

        Raises:
            DataError: naming the first image with another count.
        """
        bad = torch.nonzero(self.num_objects != 1).flatten()
        if len(bad):
            i = int(bad[0])
            raise DataError(
                f"{self.name}: localization needs exactly one object per image; image {i} has "
                f"{int(self.num_objects[i])} ({len(bad)} images in all); use detection for these"
            )
        return self.boxes, self.labels

    def instance_masks(self, i: int, visible: bool = False) -> torch.Tensor:
        """bool Tensor[K, H, W]: the masks of image ``i``'s objects, in drawing order.

        Args:
            i: image index.
            visible: remove from each mask the pixels that later objects cover.

        Raises:
            DataError: the data has no masks.
        """
        if self.masks is None:
            raise DataError(f"{self.name} has boxes but no masks (it was not generated by FashionScenes)")
        lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
        h, w = self.image_size
        bits = np.unpackbits(self.masks[lo:hi].numpy(), axis=1, count=h * w)
        masks = torch.from_numpy(bits.reshape(hi - lo, h, w).astype(bool))
        if visible and len(masks) > 1:
            covered = torch.zeros(h, w, dtype=torch.bool)
            for k in range(len(masks) - 1, -1, -1):
                masks[k] &= ~covered
                covered |= masks[k]
        return masks

    def semantic_mask(self, i: int) -> torch.Tensor:
        """int64 Tensor[H, W]: 0 for background, class + 1 for the top-most object at a pixel."""
        out = torch.zeros(self.image_size, dtype=torch.long)
        lo = int(self.offsets[i])
        for k, mask in enumerate(self.instance_masks(i)):
            out[mask] = int(self.labels[lo + k]) + 1
        return out

    def semantic_masks(self, index: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """int64 Tensor[B, H, W]: ``semantic_mask`` of each image in ``index``."""
        return torch.stack([self.semantic_mask(int(i)) for i in index])

    def subset(self, index: Sequence[int] | torch.Tensor, name: str | None = None) -> SceneDataset:
        """The images at ``index`` with their objects."""
        index = torch.as_tensor(index, dtype=torch.long)
        counts = self.num_objects[index]
        rows = torch.cat(
            [torch.arange(int(self.offsets[i]), int(self.offsets[i + 1])) for i in index.tolist()]
            or [torch.zeros(0, dtype=torch.long)]
        )
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
        return SceneDataset(
            self.images[index],
            self.boxes[rows],
            self.labels[rows],
            offsets,
            list(self.class_names),
            None if self.masks is None else self.masks[rows],
            name or f"{self.name}[{len(index)}]",
            dict(self.params),
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write everything to one compressed ``.npz`` (atomically)."""
        from ..io.atomic import atomic_save

        arrays = {
            "images": self.images.numpy(),
            "boxes": self.boxes.numpy(),
            "labels": self.labels.numpy(),
            "offsets": self.offsets.numpy(),
            "class_names": np.array(self.class_names, dtype=str),
            "meta": np.array(json.dumps({"name": self.name, "params": self.params})),
        }
        if self.masks is not None:
            arrays["masks"] = self.masks.numpy()
        atomic_save(path, lambda tmp: _write_npz(tmp, arrays))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SceneDataset:
        """Read a file written by ``save``.

        Raises:
            DataError: unreadable or incomplete file, naming it.
        """
        try:
            with np.load(path, allow_pickle=False) as f:
                meta = json.loads(str(f["meta"]))
                return cls(
                    torch.from_numpy(f["images"]),
                    torch.from_numpy(f["boxes"]),
                    torch.from_numpy(f["labels"]),
                    torch.from_numpy(f["offsets"]),
                    [str(c) for c in f["class_names"]],
                    torch.from_numpy(f["masks"]) if "masks" in f.files else None,
                    meta["name"],
                    meta["params"],
                )
        except (OSError, KeyError, ValueError, json.JSONDecodeError) as exc:
            raise DataError(f"{path} is not a readable scene file: {exc}") from None


def _write_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as handle:  # a handle, because np.savez appends ".npz" to bare names
        np.savez_compressed(handle, **arrays)


def scenes_cache_dir() -> Path:
    """``$CNNKIT_CACHE/scenes`` if set, else ``~/.cache/cnnkit/scenes``."""
    base = os.environ.get("CNNKIT_CACHE")
    root = Path(base) if base else Path(os.path.expanduser("~")) / ".cache" / "cnnkit"
    return root / "scenes"


def fingerprint(source: ArrayDataset) -> str:
    """SHA-256 of an item pool (images, labels, names): another pool never hits the cache."""
    digest = hashlib.sha256()
    digest.update(source.images.contiguous().numpy().tobytes())
    digest.update(source.labels.contiguous().numpy().tobytes())
    digest.update(json.dumps(list(source.class_names)).encode())
    return digest.hexdigest()


def _default_source(split: str) -> ArrayDataset:
    from .fashion_mnist import load_split

    if split == "test":
        return load_split(None, "test")
    train = load_split(None, "train")
    part = slice(0, VAL_START) if split == "train" else slice(VAL_START, len(train))
    return train.subset(part, f"fashion-mnist/train[{part.start}:{part.stop}]")


def _generate(cfg: FashionScenes, source: ArrayDataset) -> SceneDataset:
    if source.images.dim() != 4 or source.images.shape[1] != 1 or source.images.dtype != torch.uint8:
        raise DataError(
            f"{source.name}: FashionScenes needs grayscale uint8 items [N, 1, h, w], got "
            f"{source.images.dtype} {tuple(source.images.shape)}"
        )
    if len(source) == 0:
        raise DataError(f"{source.name}: the item pool is empty")
    items = source.images[:, 0].numpy()
    item_labels = source.labels.numpy()
    side = cfg.canvas
    images = np.zeros((cfg.num_images, 1, side, side), dtype=np.uint8)
    all_boxes: list[torch.Tensor] = []
    all_labels: list[int] = []
    all_masks: list[np.ndarray] = []
    counts = np.zeros(cfg.num_images, dtype=np.int64)
    for i in range(cfg.num_images):
        canvas, boxes, labels, masks = render_scene(cfg, i, items, item_labels)
        images[i, 0] = canvas
        all_boxes += boxes
        all_labels += labels
        all_masks += masks
        counts[i] = len(boxes)
    boxes_t = torch.stack(all_boxes) if all_boxes else torch.zeros(0, 4)
    packed = (
        np.packbits(np.stack(all_masks).reshape(len(all_masks), -1), axis=1)
        if all_masks
        else np.zeros((0, (side * side + 7) // 8), dtype=np.uint8)
    )
    offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))
    return SceneDataset(
        torch.from_numpy(images),
        boxes_t.float(),
        torch.tensor(all_labels, dtype=torch.long),
        offsets,
        list(source.class_names) or [str(c) for c in range(int(item_labels.max()) + 1)],
        torch.from_numpy(packed),
        f"fashion-scenes/{cfg.split}",
        dataclasses.asdict(cfg),
    )
