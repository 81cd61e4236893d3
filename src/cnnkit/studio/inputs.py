"""Uploaded images, held in memory only: decoded by the safe loader, prepared for one model.

An upload is never written to disk. The store keeps the last ``capacity`` inputs; each is
addressed by a random id the server gives, and belongs to the model it was prepared for.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from ..data.image_io import decode_image
from .catalog import Entry

__all__ = ["MAX_UPLOAD_BYTES", "MAX_UPLOAD_PIXELS", "Input", "InputStore", "prepare_upload"]

# A phone photo fits easily; anything larger is refused before it is decoded.
MAX_UPLOAD_BYTES = 8 * 1024**2
MAX_UPLOAD_PIXELS = 25_000_000


@dataclass(frozen=True)
class Input:
    """One prepared upload.

    Attributes:
        id: the id the server gave it.
        model_id: the entry it was prepared for.
        pixels: uint8 [H, W, C], the image as the model sees it (resized, before normalisation).
        tensor (Tensor[1, C, H, W]): the model's input.
        size: (height, width) of the image as uploaded.
    """

    id: str
    model_id: str
    pixels: np.ndarray
    tensor: torch.Tensor
    size: tuple[int, int]


def prepare_upload(
    entry: Entry, data: bytes, name: str = "upload"
) -> tuple[np.ndarray, torch.Tensor, tuple[int, int]]:
    """(pixels uint8 [H, W, C], Tensor[1, C, H, W], the image's own (height, width)) of an
    encoded image for ``entry``'s model.

    Raises:
        DataError: not an allowed image, too many bytes or pixels, truncated or corrupt.
    """
    image = decode_image(data, name, max_bytes=MAX_UPLOAD_BYTES, max_pixels=MAX_UPLOAD_PIXELS)
    pixels = entry.preprocess.pixels(image)
    return pixels, entry.preprocess.normalize(pixels).unsqueeze(0), (image.height, image.width)


class InputStore:
    """The last ``capacity`` inputs by id (least recently used dropped first); thread-safe."""

    def __init__(self, capacity: int = 64) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, Input] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, model_id: str, pixels: np.ndarray, tensor: torch.Tensor, size: tuple[int, int]) -> Input:
        item = Input(secrets.token_hex(8), model_id, pixels, tensor, size)
        with self._lock:
            self._items[item.id] = item
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return item

    def get(self, input_id: str, model_id: str) -> Input:
        """Raises LookupError: an unknown (or dropped) id, or an input of another model."""
        with self._lock:
            item = self._items.get(input_id)
            if item is not None:
                self._items.move_to_end(input_id)
        if item is None or item.model_id != model_id:
            raise LookupError(f"no input with id {input_id!r} for this model; upload the image again")
        return item
