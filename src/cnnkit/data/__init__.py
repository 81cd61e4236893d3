"""Data: the validating IDX reader, Fashion-MNIST, and in-memory datasets."""

from .._lazy import lazy_exports

# Public name -> the module that defines it, imported on first use (PEP 562): image_io and
# preprocess must stay importable without PyTorch (cnnkit.runtime uses them).
_EXPORTS = {
    "ArrayDataset": ".arrays",
    "iterate_batches": ".arrays",
    "num_batches": ".arrays",
    "CLASS_NAMES": ".fashion_mnist",
    "CLASS_NAMES_KO": ".fashion_mnist",
    "find_data_dir": ".fashion_mnist",
    "load_fashion_mnist": ".fashion_mnist",
    "load_split": ".fashion_mnist",
    "read_idx": ".idx",
    "read_idx_pair": ".idx",
    "write_idx": ".idx",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
