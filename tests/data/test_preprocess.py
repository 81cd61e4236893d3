"""Preprocessing (resize modes, normalisations, Fashion-MNIST styling) against numpy references.

The photo is scikit-learn's china.jpg, shrunk so that the tests stay fast.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_image

from cnnkit.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess, fashion_mnist_style, resize_image

H, W = 48, 72  # small but real: the photo resized, aspect ratio 2:3 like china.jpg


@pytest.fixture(scope="module")
def china() -> np.ndarray:
    """uint8 [48, 72, 3] of scikit-learn's china.jpg."""
    return np.asarray(Image.fromarray(load_sample_image("china.jpg")).resize((W, H), Image.BILINEAR))


def _luma_ref(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma, rounded half up (float reference)."""
    y = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    return np.floor(y + 0.5 + 1e-9).astype(np.uint8)


def test_imagenet_normalisation_matches_numpy(tmp_path, china):
    path = tmp_path / "c.png"
    Image.fromarray(china).save(path)
    pre = Preprocess(size=(H, W), resize="resize")
    ref = (china / 255.0 - np.asarray(IMAGENET_MEAN)) / np.asarray(IMAGENET_STD)
    out = pre(path)
    assert out.dtype == torch.float32 and out.shape == (3, H, W)
    np.testing.assert_allclose(out.numpy(), ref.transpose(2, 0, 1), atol=1e-5)


def test_caffe_style_is_keras_preprocess_input(tmp_path, china):
    path = tmp_path / "c.png"
    Image.fromarray(china).save(path)
    out = Preprocess.preset("caffe", size=(H, W), resize="resize")(path)
    # keras.applications.resnet50.preprocess_input: RGB->BGR, subtract the BGR mean
    ref = china[..., ::-1].astype(np.float64) - np.array([103.939, 116.779, 123.68])
    np.testing.assert_allclose(out.numpy(), ref.transpose(2, 0, 1), atol=1e-4)


def test_one_channel_model_gets_luma(tmp_path, china):
    path = tmp_path / "c.png"
    Image.fromarray(china).save(path)
    out = Preprocess.preset("unit", size=(H, W), resize="resize", channels=1)(path)
    np.testing.assert_allclose(out.numpy()[0], _luma_ref(china) / 255.0, atol=1e-6)


def test_resize_modes(china):
    wide = china  # 48 × 72
    stretched = resize_image(wide, 32, "resize")
    assert stretched.shape == (32, 32, 3)
    cropped = resize_image(wide, (48, 48), "crop")
    np.testing.assert_array_equal(cropped, wide[:, 12:60])  # same size: the exact centre
    padded = resize_image(wide, (72, 72), "pad", fill=(1, 2, 3))
    assert padded.shape == (72, 72, 3)
    np.testing.assert_array_equal(padded[:12], np.broadcast_to([1, 2, 3], (12, 72, 3)))
    np.testing.assert_array_equal(padded[60:], np.broadcast_to([1, 2, 3], (12, 72, 3)))
    np.testing.assert_array_equal(padded[12:60], wide)
    half = resize_image(wide, (24, 24), "crop", crop_fraction=0.5)
    np.testing.assert_array_equal(half, wide[12:36, 24:48])
    gray = resize_image(wide[..., :1], (10, 20), "pad", fill=7)
    assert gray.shape == (10, 20, 1)
    with pytest.raises(ValueError, match="resize mode must be one of"):
        resize_image(wide, 8, "squash")
    with pytest.raises(ValueError, match="size must be"):
        resize_image(wide, (0, 8))


@pytest.mark.parametrize("mode", ["resize", "crop", "pad"])
def test_an_image_already_at_the_size_is_what_pillows_resize_gives(china, mode):
    # Reference: Pillow's own resize to the same size (which copies the image unchanged).
    gray = china[..., :1]
    for pixels in (china, gray):
        out = resize_image(pixels, (H, W), mode)
        image = Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)
        expected = np.asarray(image.resize((W, H)))
        np.testing.assert_array_equal(out, expected.reshape(pixels.shape))
        assert out.flags.c_contiguous
    with pytest.raises(ValueError, match="expected uint8 pixels"):
        resize_image(china.astype(np.float32), (H, W), mode)
    if mode == "pad":
        with pytest.raises(ValueError, match="fill must be"):
            resize_image(china, (H, W), mode, fill=300)


def test_preprocess_from_configs():
    tv = Preprocess.from_config(
        {
            "input_shape": [3, 224, 224],
            "normalize": {"mean": [0.5] * 3, "std": [0.25] * 3},
            "crop_fraction": 0.875,
        }
    )
    assert tv.mean == (0.5,) * 3 and tv.crop_fraction == 0.875 and tv.resize == "crop"
    run = Preprocess.from_config({"input_shape": [1, 28, 28], "normalize": None})
    assert run.size == (28, 28) and run.channels == 1 and run.mean == (0.0,) and run.scale == 1 / 255
    default = Preprocess.from_config({})
    assert default.mean == IMAGENET_MEAN and default.size == (224, 224)
    assert Preprocess.from_config({"normalize": {"preset": "caffe"}}).channel_order == "BGR"
    with pytest.raises(ValueError, match="normalize must be"):
        Preprocess.from_config({"normalize": "imagenet"})
    with pytest.raises(ValueError, match="unknown preprocessing 'cafe'"):
        Preprocess.preset("cafe")
    with pytest.raises(ValueError, match="mean must have 1 or 3"):
        Preprocess(mean=(0.1, 0.2))


def test_fashion_mnist_style_of_a_product_photo():
    # A dark "trouser" on a light, slightly grey studio background, off-centre with margins.
    photo = np.full((300, 200, 3), 235, np.uint8)
    photo[60:260, 40:80] = 30
    photo[60:260, 100:140] = 30
    photo[60:90, 40:140] = 30
    out = fashion_mnist_style(photo)
    assert out.shape == (28, 28, 1) and out.dtype == np.uint8
    assert out[0, 0, 0] == 0 and out[:, 0].max() == 0  # black background after inversion
    assert out[14, 10:13].max() > 200  # the (now light) leg
    sample = np.random.default_rng(0).integers(0, 256, (28, 28, 1), dtype=np.uint8)
    assert fashion_mnist_style(sample) is sample  # already Fashion-MNIST: untouched


def test_preprocess_accepts_images_and_arrays(china):
    pre = Preprocess(size=(16, 16))
    from_array = pre(china)
    from_image = pre(Image.fromarray(china))
    assert torch.equal(from_array, from_image)
    with pytest.raises(ValueError, match="expected uint8 pixels"):
        pre(china.astype(np.float32))
