"""The real Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017), or any MNIST-format folder.

Where the files are looked for, in order:
1. ``$CNNKIT_DATA`` (a folder holding the four files, or a parent with ``fashion-mnist/``);
2. the cache folder ``~/.cache/cnnkit/fashion-mnist`` (where ``download`` puts them);
3. ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import urllib.request
from pathlib import Path

import torch

from ..errors import DataError, DataNotFoundError
from .arrays import ArrayDataset
from .idx import read_idx_pair

CLASS_NAMES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
CLASS_NAMES_KO = [
    "티셔츠",
    "바지",
    "스웨터",
    "드레스",
    "코트",
    "샌달",
    "셔츠",
    "스니커즈",
    "가방",
    "앵클 부츠",
]

FILES = {
    "train-images": "train-images-idx3-ubyte.gz",
    "train-labels": "train-labels-idx1-ubyte.gz",
    "test-images": "t10k-images-idx3-ubyte.gz",
    "test-labels": "t10k-labels-idx1-ubyte.gz",
}
# SHA-256 of the official release files (the upstream repository publishes MD5 only).
SHA256 = {
    "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}
BASE_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")

HOW_TO_GET = (
    "Fashion-MNIST was not found. Get it with one of: "
    "`sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), "
    "`python -m cnnkit.data.fashion_mnist --download` (needs internet), "
    "or put the four official .gz files in a folder and set CNNKIT_DATA to it."
)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cnnkit" / "fashion-mnist"


def _has_files(folder: Path) -> bool:
    return all(_find(folder, f) is not None for f in FILES.values())


def _names(gz_name: str) -> list[str]:
    """The names one IDX file goes by: the official .gz and unpacked, and the dotted spelling of
    some mirrors (``train-images.idx3-ubyte``, as on Kaggle), .gz or not."""
    plain = gz_name[: -len(".gz")]
    dotted = plain.replace("-idx", ".idx", 1)
    return [gz_name, plain, dotted, dotted + ".gz"]


def _find(folder: Path, gz_name: str) -> Path | None:
    """The file under any of its names (``_names``)."""
    for name in _names(gz_name):
        if (folder / name).is_file():
            return folder / name
    return None


def candidate_dirs() -> list[Path]:
    dirs = []
    env = os.environ.get("CNNKIT_DATA")
    if env:
        dirs += [Path(env), Path(env) / "fashion-mnist"]
    dirs += [cache_dir(), DEBIAN_DIR]
    return dirs


def find_data_dir() -> Path:
    """The first folder that holds all four files.

    Raises:
        DataNotFoundError: none does; the message says how to get them.
    """
    for d in candidate_dirs():
        if _has_files(d):
            return d
    looked = ", ".join(str(d) for d in candidate_dirs())
    raise DataNotFoundError(f"{HOW_TO_GET} (looked in: {looked})")


def load_split(
    folder: str | os.PathLike[str] | None, split: str, class_names: list[str] | None = None
) -> ArrayDataset:
    """Load the ``train`` or ``test`` split of an MNIST-format folder (Fashion-MNIST by default).

    Args:
        folder: a folder with the four IDX files (plain or .gz); None finds Fashion-MNIST.
        split: ``'train'`` (60,000 images) or ``'test'`` (10,000 images).
        class_names: names for the labels; Fashion-MNIST's by default.

    Returns:
        ArrayDataset with uint8 images [N, 1, 28, 28] and int64 labels [N].
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = find_data_dir() if folder is None else Path(folder)
    paths = []
    for kind in ("images", "labels"):
        gz_name = FILES[f"{split}-{kind}"]
        path = _find(folder, gz_name)
        if path is None:
            raise DataNotFoundError(
                f"{folder / gz_name} is missing (MNIST-format folder needs all four files; "
                f"looked for {', '.join(_names(gz_name))})"
            )
        paths.append(path)
    names = list(class_names or CLASS_NAMES)
    images, labels = read_idx_pair(paths[0], paths[1], num_classes=len(names))
    return ArrayDataset(
        torch.from_numpy(images.copy()).unsqueeze(1),
        torch.from_numpy(labels),
        names,
        f"fashion-mnist/{split}",
    )


def load_fashion_mnist(folder: str | os.PathLike[str] | None = None) -> tuple[ArrayDataset, ArrayDataset]:
    """The (train, test) splits: 60,000 and 10,000 real 28×28 grayscale images."""
    return load_split(folder, "train"), load_split(folder, "test")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(folder: str | os.PathLike[str] | None = None, base_url: str = BASE_URL) -> Path:
    """Download the four official files into ``folder`` (the cache by default), checking SHA-256.

    A file whose checksum does not match is deleted and reported; nothing half-written stays.

    Raises:
        DataNotFoundError: the download failed (offline?); the message says what else to do.
        DataError: a checksum mismatch.
    """
    from ..io.atomic import atomic_write_bytes

    target = Path(folder) if folder else cache_dir()
    target.mkdir(parents=True, exist_ok=True)
    for name, expected in SHA256.items():
        dest = target / name
        if dest.is_file() and sha256_file(dest) == expected:
            continue
        try:
            with urllib.request.urlopen(base_url + name, timeout=60) as response:
                data = response.read()
        except OSError as exc:
            raise DataNotFoundError(f"could not download {base_url + name} ({exc}). {HOW_TO_GET}") from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise DataError(f"{base_url + name}: SHA-256 {actual} does not match the expected {expected}")
        atomic_write_bytes(dest, data)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cnnkit.data.fashion_mnist", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 0 if the files are found")
    parser.add_argument("--download", action="store_true", help="download into the cache folder")
    args = parser.parse_args(argv)
    try:
        if args.download:
            print(download())
            return 0
        print(find_data_dir())
        return 0
    except (DataNotFoundError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
