"""The image-folder cache: decoded by worker processes, exactly as one file at a time.

Real images only: Fashion-MNIST test items written as PNG and JPEG, and the scikit-learn sample
photos (china.jpg, flower.jpg) resized and saved as JPEG and PNG. The reference is Pillow's
decoder plus ``torchvision.transforms.functional`` on the same files, not cnnkit's code.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from sklearn.datasets import load_sample_image
from torchvision.transforms import InterpolationMode

from cnnkit.data.decode_pool import cache_bytes, check_cache_fits, parallel_map
from cnnkit.data.folders import load_image_folder, scan_image_folder
from cnnkit.errors import DataError

SIZE = (36, 44)  # (height, width): neither the items' 28 × 28 nor the photos' shape


def _pool(items, fn):
    """Two worker processes whatever the folder's size (the default waits for 512 files)."""
    return parallel_map(items, fn, workers=2, min_items=1)


@pytest.fixture(scope="module")
def folder(tmp_path_factory, write_fashion_folders):
    """Ten Fashion-MNIST classes (6 items each, PNG and JPEG) and a class of sample photos."""
    root = write_fashion_folders(tmp_path_factory.mktemp("pool"), per_class=6)["flat"]
    photos = root / "9z_photos"
    photos.mkdir()
    for name in ("china.jpg", "flower.jpg"):
        image = Image.fromarray(load_sample_image(name)).resize((160, 107), Image.BILINEAR)
        image.save(photos / f"{name[:-4]}.jpg", quality=90)
        image.save(photos / f"{name[:-4]}.png")
    return root


def _reference(path) -> torch.Tensor:
    """Pillow's decode of the file, stretched to SIZE by torchvision: uint8 [3, H, W]."""
    with Image.open(path) as image:
        image = image.convert("RGB")
    return TF.pil_to_tensor(TF.resize(image, list(SIZE), InterpolationMode.BILINEAR))


def test_worker_processes_give_the_tensors_of_an_independent_decode(folder):
    pooled = load_image_folder(folder, SIZE, resize="resize", map_files=_pool).data
    samples = scan_image_folder(folder).samples
    assert pooled.images.dtype == torch.uint8 and tuple(pooled.images.shape) == (64, 3, *SIZE)
    assert pooled.labels.tolist() == [label for _, label in samples]
    assert pooled.class_names[-1] == "9z_photos" and pooled.labels[-1] == 10
    for image, (path, _) in zip(pooled.images, samples):
        assert torch.equal(image, _reference(path)), path
    # The same files one at a time in this process (the default below 512 files): same bytes.
    single = load_image_folder(folder, SIZE, resize="resize").data
    assert torch.equal(single.images, pooled.images) and torch.equal(single.labels, pooled.labels)


def test_a_corrupt_file_decoded_by_a_worker_is_named(folder, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(folder, root)
    good = io.BytesIO()
    Image.fromarray(load_sample_image("flower.jpg")).save(good, "JPEG")
    bad = root / "9z_photos" / "broken.jpg"
    bad.write_bytes(good.getvalue()[:400])
    with pytest.raises(DataError, match="broken.jpg: truncated or corrupt JPEG") as info:
        load_image_folder(root, SIZE, map_files=_pool)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)
    skipped = load_image_folder(root, SIZE, on_error="skip", map_files=_pool)
    assert [b.path for b in skipped.bad_files] == [bad] and len(skipped.data) == 64


def test_a_cache_too_large_is_refused_before_any_file_is_decoded(folder, tmp_path):
    n = len(scan_image_folder(folder).samples)
    assert cache_bytes(n, 3, *SIZE) == load_image_folder(folder, SIZE).data.images.numel()
    fits = r"64 images at 36x44x3 take 297\.0 KB decoded, more than 50% of the 390\.6 KB"
    with pytest.raises(DataError, match=fits) as info:
        check_cache_fits(folder, n, (3, *SIZE), fraction=0.5, available=400_000)
    assert "--image-size" in str(info.value)
    assert check_cache_fits(folder, n, (3, *SIZE), fraction=0.5, available=700_000) == 64 * 3 * 36 * 44
    # A folder whose every file is garbage still fails on memory first: nothing was decoded.
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="of memory available"):
        load_image_folder(tmp_path, 4096, memory_fraction=1e-9)


def test_parallel_map_keeps_order_and_stops_cleanly():
    items = list(range(300))
    assert list(parallel_map(items, np.square, workers=2, min_items=1)) == [i * i for i in items]
    results = parallel_map(items, np.square, workers=2, min_items=1)
    assert next(results) == 0
    results.close()  # a caller that stops at the first bad file: the pool shuts down
    with pytest.raises(ValueError, match="fraction must be in"):
        check_cache_fits(".", 1, (1, 1, 1), fraction=0.0)


def test_cli_train_names_a_corrupt_file_of_a_large_folder_in_one_line(fashion, tmp_path, capsys):
    """520 files: the CLI's default decode (worker processes from 512 files up, on free cores)."""
    from cnnkit.cli.__main__ import main

    _, test = fashion
    root = tmp_path / "large"
    for i in range(520):
        folder = root / str(int(test.labels[i]))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(test.images[i, 0].numpy()).save(folder / f"{i:04d}.png")
    bad = sorted((root / "3").iterdir())[-1]
    bad.write_bytes(bad.read_bytes()[:60])
    argv = ["train", "--data", str(root), "--epochs", "1", "--out", str(tmp_path / "out"), "--no-progress"]
    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    errors = [line for line in lines if str(bad) in line]
    assert len(errors) == 1 and "truncated or corrupt PNG" in errors[0], lines
    assert not any(line.startswith(("Traceback", "  File")) for line in lines)
