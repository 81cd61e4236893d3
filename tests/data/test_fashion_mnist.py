"""Fashion-MNIST location, class names, splits and batching."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from cnnkit.data import CLASS_NAMES, CLASS_NAMES_KO, ArrayDataset, iterate_batches, load_split
from cnnkit.data import fashion_mnist as fm
from cnnkit.errors import DataNotFoundError


def test_real_files_match_the_published_checksums():
    folder = fm.find_data_dir()
    for name, expected in fm.SHA256.items():
        path = fm._find(folder, name)
        if path.suffix == ".gz":
            assert hashlib.sha256(path.read_bytes()).hexdigest() == expected


def test_loaded_splits(fashion):
    train, test = fashion
    assert train.images.shape == (60000, 1, 28, 28) and train.images.dtype == torch.uint8
    assert test.images.shape == (10000, 1, 28, 28)
    assert train.class_names[9] == "Ankle boot" and CLASS_NAMES_KO[9] == "앵클 부츠"
    assert len(CLASS_NAMES) == len(CLASS_NAMES_KO) == 10
    assert int(test.labels[0]) == 9  # the course's first test image is an ankle boot
    assert torch.bincount(train.labels).tolist() == [6000] * 10


def test_split_default_20_percent_seeded_and_disjoint(fashion):
    train, _ = fashion
    a1, b1 = train.split()
    a2, b2 = train.split()
    assert (len(a1), len(b1)) == (48000, 12000)
    assert torch.equal(b1.labels, b2.labels) and torch.equal(a1.images[:5], a2.images[:5])
    strat_train, strat_val = train.split(0.2, seed=1, stratify=True)
    assert torch.bincount(strat_val.labels).tolist() == [1200] * 10
    assert torch.bincount(strat_train.labels).tolist() == [4800] * 10


def test_default_split_is_the_courses_train_test_split(fashion):
    # 혼공머신 ch. 8: train_test_split(train_scaled, train_target, test_size=0.2, random_state=42).
    from sklearn.model_selection import train_test_split

    train, _ = fashion
    tr, val = train.split()
    ref_train, ref_val, ref_train_y, ref_val_y = train_test_split(
        train.images.numpy(), train.labels.numpy(), test_size=0.2, random_state=42
    )
    assert np.array_equal(val.images.numpy(), ref_val) and np.array_equal(val.labels.numpy(), ref_val_y)
    assert np.array_equal(tr.labels.numpy(), ref_train_y)
    # Other fractions and seeds too, on a small dataset of indices.
    small = ArrayDataset(torch.zeros(37, 1, 2, 2, dtype=torch.uint8), torch.arange(37))
    for fraction, seed in [(0.1, 0), (0.3, 7), (0.5, 123)]:
        a, b = small.split(fraction, seed=seed)
        ref_a, ref_b = train_test_split(np.arange(37), test_size=fraction, random_state=seed)
        assert np.array_equal(a.labels.numpy(), ref_a) and np.array_equal(b.labels.numpy(), ref_b)


def test_batches_cover_every_sample_once(fashion_small):
    train, _ = fashion_small
    seen = torch.cat(
        [y for _, y in iterate_batches(train, 64, shuffle=True, generator=torch.Generator().manual_seed(0))]
    )
    assert torch.equal(seen.sort().values, train.labels.sort().values)
    sizes = [len(x) for x, _ in iterate_batches(train, 300)]
    assert sizes == [300] * 6 + [200]


def test_cnnkit_data_env_and_missing_data_message(tmp_path, monkeypatch):
    import gzip

    real = fm.find_data_dir()
    monkeypatch.setenv("CNNKIT_DATA", str(tmp_path))
    monkeypatch.setattr(fm, "DEBIAN_DIR", tmp_path / "nowhere")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(DataNotFoundError, match="apt-get install dataset-fashion-mnist"):
        fm.find_data_dir()
    # CNNKIT_DATA pointing at an MNIST-format folder with unpacked files is used as it is.
    for name in fm.FILES.values():
        (tmp_path / name[: -len(".gz")]).write_bytes(gzip.decompress(fm._find(real, name).read_bytes()))
    assert fm.find_data_dir() == tmp_path
    test = load_split(None, "test")
    assert len(test) == 10000 and int(test.labels[0]) == 9


def test_download_rejects_checksum_mismatch(tmp_path, monkeypatch):
    import io

    from cnnkit.errors import DataError

    class FakeResponse(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(fm.urllib.request, "urlopen", lambda url, timeout: FakeResponse(b"not the file"))
    with pytest.raises(DataError, match="SHA-256"):
        fm.download(tmp_path)
    assert not any(tmp_path.iterdir())  # nothing half-written stays


def test_download_offline_says_how_to_get_the_files(tmp_path, monkeypatch):
    def offline(url, timeout):
        raise OSError("network unreachable")

    monkeypatch.setattr(fm.urllib.request, "urlopen", offline)
    with pytest.raises(DataNotFoundError, match="CNNKIT_DATA"):
        fm.download(tmp_path)


def test_the_dotted_file_names_of_some_mirrors_load_the_same_test_split(tmp_path):
    """Kaggle's MNIST-format folders spell the files ``t10k-images.idx3-ubyte``: read as the
    official ``t10k-images-idx3-ubyte.gz`` (the real test files, unpacked and renamed)."""
    import gzip

    source = fm.find_data_dir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        dotted = name[: -len(".gz")].replace("-idx", ".idx")
        (tmp_path / dotted).write_bytes(gzip.decompress(fm._find(source, name).read_bytes()))
    official, renamed = load_split(None, "test"), load_split(tmp_path, "test")
    assert torch.equal(renamed.images, official.images) and torch.equal(renamed.labels, official.labels)
    with pytest.raises(DataNotFoundError, match=r"train-images-idx3-ubyte.gz is missing .*looked for .*"
                       r"train-images.idx3-ubyte, train-images.idx3-ubyte.gz\)"):  # fmt: skip
        load_split(tmp_path, "train")
