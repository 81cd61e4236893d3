"""The registry refuses what it cannot honour: unknown names and options, contradictions."""

from __future__ import annotations

import importlib
import inspect
import re

import pytest

from cnnkit.models import create_model, list_models, model_entry

NAMES = list_models()
SMALL_INPUT_NAMES = [name for name in NAMES if model_entry(name).small_input]
ZOO_MODULES = ("lenet", "alexnet", "googlenet", "vgg", "resnet", "xception")


def test_unknown_name_suggests_close_matches():
    with pytest.raises(ValueError, match="did you mean .*resnet34"):
        create_model("resnet35")
    with pytest.raises(ValueError, match="did you mean .*vgg16_bn"):
        create_model("vgg16bn")


@pytest.mark.parametrize("name", NAMES)
def test_builders_are_keyword_only_and_declare_every_option(name):
    params = inspect.signature(model_entry(name).builder).parameters.values()
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params), name
    assert {"num_classes", "in_chans"} <= {p.name for p in params}


@pytest.mark.parametrize("name", NAMES)
def test_each_builder_is_importable_under_its_registered_name(name):
    # Family variants (ResNet, VGG) are registered from a table and unpacked into module names:
    # a name in the wrong position would give e.g. `resnet50` the ResNet-34 builder.
    builder = model_entry(name).builder
    module = importlib.import_module(builder.__module__)
    assert getattr(module, name) is builder
    assert builder.__name__ == name


@pytest.mark.parametrize("name", NAMES)
def test_unknown_option_is_refused_not_dropped(name):
    with pytest.raises(ValueError, match="does not take 'dropout_rat'"):
        create_model(name, dropout_rat=0.5)


@pytest.mark.parametrize("name", SMALL_INPUT_NAMES)
def test_small_input_must_be_a_bool(name):
    # "no" is truthy: accepting it would silently build the variant the caller did not ask for.
    with pytest.raises(ValueError, match="small_input must be True or False, got 'no'"):
        create_model(name, small_input="no")


@pytest.mark.parametrize("name", SMALL_INPUT_NAMES)
def test_bad_num_classes_and_in_chans_are_refused(name):
    with pytest.raises(ValueError, match="num_classes must be an int >= 0, got -1"):
        create_model(name, num_classes=-1)
    with pytest.raises(ValueError, match="in_chans must be an int >= 1, got 0"):
        create_model(name, in_chans=0)


def test_googlenet_contradictions_are_refused():
    with pytest.raises(ValueError, match="aux_logits=True needs num_classes >= 1"):
        create_model("googlenet", aux_logits=True, num_classes=0)
    with pytest.raises(ValueError, match="transform_input=True expects RGB input"):
        create_model("googlenet", transform_input=True, in_chans=1)
    with pytest.raises(ValueError, match="aux_logits must be True or False"):
        create_model("googlenet", aux_logits=1)


@pytest.mark.parametrize("name", NAMES)
def test_description_is_one_line(name):
    description = model_entry(name).description
    assert description.strip() and "\n" not in description


@pytest.mark.parametrize(
    "name", [n for n in NAMES if model_entry(n).builder.__module__.rsplit(".", 1)[-1] in ZOO_MODULES]
)
def test_zoo_descriptions_cite_their_paper(name):
    # Authors, year and title, e.g. "(He et al. 2015, 'Deep Residual Learning ...')".
    assert re.search(r"\((?:[A-Z][\w &.]+) (?:19|20)\d\d, '[^']+'", model_entry(name).description)
