"""In-memory image datasets: uint8 tensors, seeded splits, and batches by indexing."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import DataError


@dataclass
class ArrayDataset:
    """Images and labels held in memory.

    Attributes:
        images: uint8 Tensor[N, C, H, W] (0..255); float tensors are accepted as they are.
        labels: int64 Tensor[N].
        class_names: one name per class index.
        name: where the data came from (shown in messages and run configs).
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str] = field(default_factory=list)
    name: str = "arrays"

    def __post_init__(self) -> None:
        if self.images.dim() == 3:  # [N, H, W] grayscale
            self.images = self.images.unsqueeze(1)
        if self.images.dim() != 4:
            raise DataError(
                f"{self.name}: images must be [N, C, H, W] or [N, H, W], got {tuple(self.images.shape)}"
            )
        if self.labels.dim() == 2 and self.labels.shape[1] == 1:  # Keras' CIFAR-10 labels are [N, 1]
            self.labels = self.labels[:, 0]
        if self.labels.dim() == 2 and len(self.labels) == len(self.images) and self.labels.shape[1] > 1:
            raise DataError(
                f"{self.name}: labels of shape {tuple(self.labels.shape)} look one-hot; give class "
                "indices [N] instead (y.argmax(1)), as Keras' sparse_categorical_crossentropy takes them"
            )
        if self.labels.dim() != 1 or len(self.labels) != len(self.images):
            raise DataError(
                f"{self.name}: {len(self.images)} images but labels of shape {tuple(self.labels.shape)}"
            )
        if self.labels.is_floating_point():
            whole = torch.isfinite(self.labels) & (self.labels == self.labels.round())
            if not bool(whole.all()):
                bad = self.labels[~whole][0].item()
                raise DataError(
                    f"{self.name}: label {bad} is not a class index; labels are whole numbers 0, 1, 2, ..."
                )
        self.labels = self.labels.long()
        if len(self.labels) and int(self.labels.min()) < 0:
            raise DataError(
                f"{self.name}: label {int(self.labels.min())}; labels are class indices 0, 1, 2, ..."
            )
        if self.class_names and len(self.labels) and int(self.labels.max()) >= len(self.class_names):
            raise DataError(
                f"{self.name}: label {int(self.labels.max())} but only {len(self.class_names)} class names"
            )

    @classmethod
    def from_arrays(
        cls, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, name: str = "arrays"
    ) -> ArrayDataset:
        """Images and labels from NumPy arrays or tensors, as Keras' ``fit(x, y)`` takes them.

        Args:
            x: images [N, H, W], [N, C, H, W] or Keras' channels-last [N, H, W, C] (read as such
                when the last axis is 1 or 3 and the second is not); uint8 (0..255, scaled to
                [0, 1] by the classify task) or floats (used as they are).
            y: integer class labels [N].
        """
        if isinstance(y, torch.Tensor):
            labels = y
        else:
            array = np.asarray(y)
            if array.dtype.kind not in "biuf":  # strings, objects: class names, not indices
                raise DataError(
                    f"{name}: labels of dtype {array.dtype}; give integer class indices 0, 1, 2, ... "
                    "(class names go in class_names)"
                )
            labels = torch.from_numpy(array.astype(np.float64 if array.dtype.kind == "f" else np.int64))
        return cls(image_tensor(x), labels, name=name)

    def split_last(self, fraction: float) -> tuple[ArrayDataset, ArrayDataset]:
        """(first part, last ``fraction``), unshuffled: Keras' ``validation_split``, which holds
        out the last ``floor``-rounded share of the samples as given.

        Raises:
            ValueError: ``fraction`` not in (0, 1), or a part left empty.
        """
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"validation_split must be between 0 and 1, got {fraction!r}")
        split_at = math.floor(len(self) * (1.0 - fraction))
        if split_at in (0, len(self)):
            raise ValueError(f"a validation_split of {fraction} leaves an empty part of {len(self)} samples")
        return self.subset(slice(0, split_at)), self.subset(slice(split_at, len(self)), f"{self.name}/val")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names) if self.class_names else int(self.labels.max()) + 1

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def to(self, device: torch.device | str) -> ArrayDataset:
        """The same samples with images and labels on ``device`` (``self`` if already there)."""
        device = torch.device(device)
        if self.images.device == device and self.labels.device == device:
            return self
        moved = copy.copy(self)  # already validated: no label scan on the device
        moved.images, moved.labels = self.images.to(device), self.labels.to(device)
        moved.class_names = list(self.class_names)
        return moved

    def subset(self, index: torch.Tensor | Sequence[int] | slice, name: str | None = None) -> ArrayDataset:
        """The samples at ``index`` (a view for slices, a copy for index tensors)."""
        if not isinstance(index, slice):
            index = torch.as_tensor(index, dtype=torch.long)
        return ArrayDataset(self.images[index], self.labels[index], list(self.class_names), name or self.name)

    def take(self, n: int, seed: int = 0, stratify: bool = True) -> ArrayDataset:
        """A seeded random subset of exactly ``n`` samples (class-balanced with ``stratify``: each
        class's share rounded, then one more from as many classes as the rounding left short)."""
        if n >= len(self):
            return self
        if stratify:
            rest, idx = _stratified_split(self.labels, n / len(self), seed)
            if len(idx) < n:
                idx = torch.cat([idx, _first_of_each_class(rest, self.labels, n - len(idx))])
            idx = idx[:n]
        else:
            idx = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n]
        return self.subset(idx, f"{self.name}[{n}]")

    def split(
        self, val_fraction: float = 0.2, seed: int = 42, stratify: bool = False
    ) -> tuple[ArrayDataset, ArrayDataset]:
        """Seeded train / validation split (the course keeps 20 % for validation).

        Without ``stratify`` the split is the one scikit-learn's
        ``train_test_split(x, test_size=val_fraction, random_state=seed)`` makes, so with the
        defaults the validation set is the course's own 12,000 Fashion-MNIST images
        (혼공머신 ch. 8 uses ``test_size=0.2, random_state=42``).

        Raises:
            ValueError: if ``val_fraction`` is not in (0, 1).
        """
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction!r}")
        if stratify:
            train_idx, val_idx = _stratified_split(self.labels, val_fraction, seed)
        else:
            train_idx, val_idx = _course_split(len(self), val_fraction, seed)
        return self.subset(train_idx, f"{self.name}/train"), self.subset(val_idx, f"{self.name}/val")


def _course_split(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    # scikit-learn's ShuffleSplit: one legacy RandomState permutation (its stream is frozen
    # across NumPy versions), the first ceil(fraction * n) indices held out.
    perm = torch.from_numpy(np.random.RandomState(seed).permutation(n))
    n_val = math.ceil(fraction * n)
    if not 0 < n_val < n:
        raise ValueError(f"a {fraction} split of {n} samples leaves an empty part")
    return perm[n_val:], perm[:n_val]


def _first_of_each_class(idx: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """The first sample of ``idx`` of each class, in ``idx``'s order, up to ``k`` of them (the
    rounding of per-class shares leaves fewer than one short per class, so this fills it)."""
    picked: list[int] = []
    seen: set[int] = set()
    for i, label in zip(idx.tolist(), labels[idx].tolist()):
        if len(picked) == k:
            break
        if label not in seen:
            seen.add(label)
            picked.append(i)
    return torch.tensor(picked, dtype=idx.dtype)


def _stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    keep, take = [], []
    for cls in torch.unique(labels):
        idx = torch.nonzero(labels == cls).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        n = round(len(idx) * fraction)
        take.append(idx[:n])
        keep.append(idx[n:])
    keep_t, take_t = torch.cat(keep), torch.cat(take)
    # Shuffle so that classes are interleaved (slicing the first k stays balanced-ish).
    return keep_t[torch.randperm(len(keep_t), generator=gen)], take_t[
        torch.randperm(len(take_t), generator=gen)
    ]


def iterate_batches(
    data: ArrayDataset,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (images, labels) batches by slicing or indexing the in-memory tensors.

    No per-sample Dataset/collate work: a batch is one index operation.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(data)
    order = torch.randperm(n, generator=generator) if shuffle else None
    if order is not None and order.device != data.images.device:
        order = order.to(data.images.device)  # one copy per epoch for data held on an accelerator
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        if order is None:
            yield data.images[start : start + batch_size], data.labels[start : start + batch_size]
        else:
            idx = order[start : start + batch_size]
            yield data.images[idx], data.labels[idx]


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    return n // batch_size if drop_last else -(-n // batch_size)


def image_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Images as Keras takes them, as a Tensor[N, C, H, W]: NumPy arrays or tensors of [N, H, W],
    [N, C, H, W] or channels-last [N, H, W, C] (read as such when the last axis is 1 or 3 and
    the second is not); uint8 (0..255) or floats, kept as they are."""
    images = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    if images.dim() == 3:  # [N, H, W] grayscale
        images = images.unsqueeze(1)
    if images.dim() == 4 and images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
        images = images.permute(0, 3, 1, 2).contiguous()
    return images
