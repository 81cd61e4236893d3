"""Data: the validating IDX reader, Fashion-MNIST, and in-memory datasets."""

from .arrays import ArrayDataset, iterate_batches, num_batches
from .fashion_mnist import (
    CLASS_NAMES,
    CLASS_NAMES_KO,
    find_data_dir,
    load_fashion_mnist,
    load_split,
)
from .idx import read_idx, read_idx_pair, write_idx

__all__ = [
    "CLASS_NAMES",
    "CLASS_NAMES_KO",
    "ArrayDataset",
    "find_data_dir",
    "iterate_batches",
    "load_fashion_mnist",
    "load_split",
    "num_batches",
    "read_idx",
    "read_idx_pair",
    "write_idx",
]
