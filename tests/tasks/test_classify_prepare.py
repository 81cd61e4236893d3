"""The batch transfer of image classification: uint8 batches to normalised float, in one copy.

Reference: torchvision's ``to_tensor`` + ``normalize`` image by image on the same real photos.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from sklearn.datasets import load_sample_image

from cnnkit.data.preprocess import IMAGENET_MEAN, IMAGENET_STD
from cnnkit.tasks.classify.augment import random_flip
from cnnkit.tasks.classify.task import ClassifyTask


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    """Eight 48 × 40 crops of the two scikit-learn sample photos."""
    out = []
    for name in ("china.jpg", "flower.jpg"):
        photo = load_sample_image(name)
        crops = [photo[60 * i : 60 * i + 48, 90 * i : 90 * i + 40] for i in range(4)]
        out += [Image.fromarray(np.ascontiguousarray(crop)) for crop in crops]
    return out


@pytest.mark.parametrize("channels_last", [False, True])
def test_prepare_equals_torchvision_to_tensor_and_normalize(photos, channels_last):
    batch = torch.stack([TF.pil_to_tensor(p) for p in photos])  # uint8 [8, 3, 48, 40]
    trainer = SimpleNamespace(device=torch.device("cpu"), channels_last=channels_last)
    x = ClassifyTask(normalize=(IMAGENET_MEAN, IMAGENET_STD)).prepare(trainer, batch)
    expected = torch.stack([TF.normalize(TF.to_tensor(p), IMAGENET_MEAN, IMAGENET_STD) for p in photos])
    assert x.dtype == torch.float32 and torch.equal(x, expected)
    assert x.is_contiguous(memory_format=torch.channels_last) == channels_last
    unit = ClassifyTask().prepare(trainer, batch)
    assert torch.equal(unit, torch.stack([TF.to_tensor(p) for p in photos]))
    # Float input is used as given and never changed in place.
    given = unit.clone()
    again = ClassifyTask(normalize=(IMAGENET_MEAN, IMAGENET_STD)).prepare(trainer, given)
    assert torch.equal(given, unit) and torch.allclose(again, expected, atol=1e-6)


def test_batch_flip_rows_are_torchvision_hflips_of_the_channels_last_batch(photos):
    batch = torch.stack([TF.pil_to_tensor(p) for p in photos])
    trainer = SimpleNamespace(device=torch.device("cpu"), channels_last=True)
    x = ClassifyTask(normalize=(IMAGENET_MEAN, IMAGENET_STD)).prepare(trainer, batch)
    torch.manual_seed(3)
    flipped = random_flip(x)
    mirrored = [torch.equal(f, TF.hflip(row)) for f, row in zip(flipped, x)]
    kept = [torch.equal(f, row) for f, row in zip(flipped, x)]
    assert all(m or k for m, k in zip(mirrored, kept)) and any(mirrored) and any(kept)


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_lite0"])
def test_bf16_channels_last_training_step_of_the_finetune_backbones_follows_fp32(photos, name):
    """One training step of each backbone as ``finetune --precision bf16`` runs it (autocast,
    channels-last model and batch) against the same step in FP32 / NCHW from the same weights."""
    from cnnkit import create_model
    from cnnkit.tasks.classify.task import ClassifyTrainer

    batch = torch.stack([TF.pil_to_tensor(p.resize((32, 32))) for p in photos])
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    torch.manual_seed(0)
    model = create_model(name, num_classes=4)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    grads, losses = {}, {}
    for amp, channels_last in ((None, False), ("bf16", True)):
        model.load_state_dict(state)
        trainer = ClassifyTrainer(
            model, amp=amp, channels_last=channels_last, normalize=(IMAGENET_MEAN, IMAGENET_STD)
        )
        x = trainer.prepare(batch)
        assert x.is_contiguous(memory_format=torch.channels_last) == channels_last
        trainer.model.eval()  # no dropout draws, no batch statistics: only the arithmetic differs
        trainer.model.zero_grad()
        with trainer.autocast():
            logits = trainer.model(x)
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        loss.backward()
        assert logits.dtype == (torch.bfloat16 if amp else torch.float32)
        losses[amp] = float(loss.detach())
        grads[amp] = torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None])
    assert losses["bf16"] == pytest.approx(losses[None], rel=0.02)
    # bf16 keeps 8 bits of mantissa through ~20 layers: the gradient points the same way, where a
    # wrong layout or dtype would give noise (a cosine near 0).
    cosine = torch.nn.functional.cosine_similarity(grads["bf16"], grads[None], dim=0)
    assert float(cosine) > 0.9
