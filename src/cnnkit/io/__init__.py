"""Safe file input/output: atomic writes and the one weights loader."""

from .atomic import atomic_write, atomic_write_bytes, atomic_write_text
from .weights import WeightsError, load_state_dict_file, load_strict, save_weights

__all__ = [
    "WeightsError",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "load_state_dict_file",
    "load_strict",
    "save_weights",
]
