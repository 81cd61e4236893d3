"""Published weights load without conversion: torchvision's state dicts go into our models as is.

No download: torchvision's model is built with random weights (``weights=None``), its batch-norm
statistics are randomised too (so a swapped or misnamed buffer would change the outputs), its
state dict is loaded into ours with ``strict=True``, and both must give the same logits.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torchvision
from torch import nn

from cnnkit.models import create_model

# (our name, our options) -> torchvision builder and its options.
CASES: dict[str, tuple[str, dict[str, object], Callable[..., nn.Module], dict[str, object]]] = {
    "alexnet_tv": ("alexnet_tv", {}, torchvision.models.alexnet, {}),
    # torchvision's GoogLeNet class defaults to aux_logits=True; its builder drops the heads only
    # when it loads published weights.
    "googlenet": (
        "googlenet",
        {},
        torchvision.models.googlenet,
        {"init_weights": True, "aux_logits": False},
    ),
    "googlenet-aux-transform": (
        "googlenet",
        {"aux_logits": True, "transform_input": True},
        torchvision.models.googlenet,
        {"init_weights": True, "aux_logits": True, "transform_input": True},
    ),
    **{
        name: (name, {}, getattr(torchvision.models, name), {})
        for name in (
            *("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"),
            *("vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"),
        )
    },
}


def randomise_batch_norm_(model: nn.Module) -> None:
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.2)


def load_into_meta_model(reference: nn.Module, name: str, **kwargs: object) -> nn.Module:
    """Our model, built on the meta device and handed torchvision's tensors (``assign=True``).

    This skips allocating and initialising a second copy of (for VGG) 500 MB of weights; the
    strict load still checks every key and shape, and any tensor the state dict does not cover
    would stay on the meta device and make the forward pass fail.
    """
    with torch.device("meta"):
        ours = create_model(name, **kwargs)
    ours.load_state_dict(reference.state_dict(), strict=True, assign=True)
    return ours


@pytest.fixture(scope="module", params=list(CASES))
def pair(request: pytest.FixtureRequest) -> tuple[nn.Module, nn.Module]:
    ours_name, ours_kwargs, tv_builder, tv_kwargs = CASES[request.param]
    torch.manual_seed(0)
    reference = tv_builder(weights=None, **tv_kwargs)
    randomise_batch_norm_(reference)
    ours = load_into_meta_model(reference, ours_name, **ours_kwargs)
    return ours.eval(), reference.eval()


def test_same_logits_after_strict_load(pair):
    ours, reference = pair
    # 64 pixels: the smallest power of two every one of these architectures accepts.
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = reference(x)
        torch.testing.assert_close(ours(x), expected)
    assert expected.shape == (2, 1000)


def test_same_auxiliary_logits():
    ours_name, ours_kwargs, tv_builder, tv_kwargs = CASES["googlenet-aux-transform"]
    torch.manual_seed(0)
    reference = tv_builder(weights=None, **tv_kwargs)
    randomise_batch_norm_(reference)
    ours = load_into_meta_model(reference, ours_name, **ours_kwargs).eval()
    reference.eval()
    # torchvision only runs its auxiliary heads in training mode (with dropout): feed them the
    # inception4a / inception4d outputs by hand, in eval mode, to compare deterministically.
    taps: list[torch.Tensor] = []
    hooks = [
        module.register_forward_hook(lambda _m, _i, out: taps.append(out))
        for module in (reference.inception4a, reference.inception4d)
    ]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        main = reference(x)
        for hook in hooks:
            hook.remove()
        expected_aux = (reference.aux1(taps[0]), reference.aux2(taps[1]))
        outputs = ours.forward_aux(x)
    torch.testing.assert_close(outputs.logits, main)
    torch.testing.assert_close(outputs.aux_logits[0], expected_aux[0])
    torch.testing.assert_close(outputs.aux_logits[1], expected_aux[1])


def test_small_input_vgg_still_loads_published_weights():
    # small_input only turns the first max-pool into an identity: no parameter changes.
    with torch.device("meta"):  # keys and shapes are all a strict load looks at
        reference = torchvision.models.vgg11_bn(weights=None)
        ours = create_model("vgg11_bn", small_input=True)
    ours.load_state_dict(reference.state_dict(), strict=True, assign=True)


def test_create_model_loads_a_torchvision_state_dict_file(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None)
    randomise_batch_norm_(reference)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    ours = create_model("resnet18", weights=str(path)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference.eval()(x))
