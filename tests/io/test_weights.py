"""Weights: torchvision names, local state dicts, run folders, and every file that must be refused.

Nothing is downloaded: TORCH_HOME points at a temp folder, CNNKIT_OFFLINE is set, and
torch.hub's downloader is replaced by one that fails the test if it is called.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import struct
from pathlib import Path

import pytest
import torch
import torchvision
from torchvision.models import ResNet18_Weights, ResNet50_Weights

from cnnkit import create_model
from cnnkit.io import weights as weights_io
from cnnkit.io.weights import (
    WeightsError,
    check_sha256_prefix,
    fetch_torchvision_weights,
    load_state_dict_file,
    metadata_json,
    read_weights,
    save_weights,
    torchvision_checkpoint_path,
    torchvision_weights,
    torchvision_weights_info,
)
from cnnkit.models import _weights as model_weights
from cnnkit.models._weights import decode_predictions, load_pretrained


@pytest.fixture(autouse=True)
def no_network(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("CNNKIT_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise AssertionError(f"a download was attempted: {args}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


@pytest.fixture(scope="module")
def tv_resnet18() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


# ---------------------------------------------------------------------------- torchvision names
def test_names_resolve_to_the_enum_and_metadata_without_downloading(tmp_path):
    assert torchvision_weights("resnet50", "IMAGENET1K_V2") is ResNet50_Weights.IMAGENET1K_V2
    assert torchvision_weights("resnet50", "DEFAULT") is ResNet50_Weights.DEFAULT
    assert torchvision_weights("resnet50", "ResNet50_Weights.IMAGENET1K_V1") is ResNet50_Weights.IMAGENET1K_V1
    info = torchvision_weights_info(ResNet50_Weights.IMAGENET1K_V2)
    assert info["name"] == "ResNet50_Weights.IMAGENET1K_V2"
    assert info["url"] == "https://download.pytorch.org/models/resnet50-11ad3fa6.pth"
    assert info["sha256_prefix"] == "11ad3fa6"
    assert info["file"] == str(tmp_path / "torch-home" / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth")
    assert len(info["class_names"]) == 1000 and info["class_names"][0] == "tench"
    assert info["input_size"] == [3, 224, 224] and info["crop_fraction"] == pytest.approx(224 / 232)
    assert info["normalize"] == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    assert info["num_params"] == 25_557_032 and info["metrics"]["ImageNet-1K"]["acc@1"] == 80.858
    assert not Path(info["file"]).exists()


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(
        WeightsError, match=r"unknown weights 'IMAGENET1K_V3' for resnet50; valid: \['IMAGENET1K_V1'"
    ):
        torchvision_weights("resnet50", "IMAGENET1K_V3")
    with pytest.raises(WeightsError, match="are ResNet18_Weights weights, not ResNet50_Weights"):
        torchvision_weights("resnet50", "ResNet18_Weights.IMAGENET1K_V1")
    with pytest.raises(WeightsError, match="torchvision publishes no weights for 'hongong_cnn'"):
        create_model("hongong_cnn", weights="DEFAULT")


def test_offline_and_not_cached_names_the_file_and_folder(tmp_path):
    folder = tmp_path / "torch-home" / "hub" / "checkpoints"
    with pytest.raises(WeightsError) as info:
        create_model("resnet50", weights="IMAGENET1K_V2")
    message = str(info.value)
    assert str(folder / "resnet50-11ad3fa6.pth") in message
    assert "https://download.pytorch.org/models/resnet50-11ad3fa6.pth" in message
    assert f"folder {folder}" in message and "TORCH_HOME" in message


def test_cached_file_with_the_wrong_hash_is_refused(tmp_path, tv_resnet18):
    target = torchvision_checkpoint_path(ResNet18_Weights.IMAGENET1K_V1)
    target.parent.mkdir(parents=True)
    torch.save(tv_resnet18.state_dict(), target)  # right shapes, not the published bytes
    with pytest.raises(WeightsError, match="is not the published file: its SHA-256 starts with"):
        create_model("resnet18", weights="IMAGENET1K_V1")


class _FakeWeights:
    """Stands in for a torchvision enum member whose URL names a file we can make."""

    def __init__(self, url: str):
        self.url, self.name = url, "IMAGENET1K_V1"
        self.meta = dict(ResNet18_Weights.IMAGENET1K_V1.meta)

    def transforms(self):
        return ResNet18_Weights.IMAGENET1K_V1.transforms()


def test_cached_file_with_the_right_hash_loads_with_its_metadata(tmp_path, monkeypatch, tv_resnet18, images):
    scratch = tmp_path / "r18.pth"
    torch.save(tv_resnet18.state_dict(), scratch)
    prefix = hashlib.sha256(scratch.read_bytes()).hexdigest()[:8]
    fake = _FakeWeights(f"https://example.invalid/models/resnet18-{prefix}.pth")
    target = torchvision_checkpoint_path(fake)
    target.parent.mkdir(parents=True)
    scratch.rename(target)
    monkeypatch.setattr(model_weights, "torchvision_weights", lambda model, name: fake)
    model = create_model("resnet18", weights="IMAGENET1K_V1").eval()
    with torch.no_grad():
        assert torch.equal(model(images), tv_resnet18(images))
    assert model.class_names[:2] == ["tench", "goldfish"]
    assert model.pretrained_info.crop_fraction == pytest.approx(224 / 256)
    assert model.pretrained_info.details["sha256_prefix"] == prefix


def test_download_goes_through_torch_hub_with_the_hash_prefix(tmp_path, monkeypatch, tv_resnet18):
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, Path(dst).name, hash_prefix))
        torch.save(tv_resnet18.state_dict(), dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    monkeypatch.delenv("CNNKIT_OFFLINE")
    with pytest.raises(WeightsError, match="is not the published file"):  # our bytes, not theirs
        fetch_torchvision_weights(ResNet18_Weights.IMAGENET1K_V1)
    assert calls == [
        ("https://download.pytorch.org/models/resnet18-f37072fd.pth", "resnet18-f37072fd.pth", "f37072fd")
    ]

    def failing_download(url, dst, hash_prefix=None, progress=True):
        raise OSError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", failing_download)
    with pytest.raises(WeightsError, match="could not be downloaded .*resnet50-11ad3fa6.pth"):
        fetch_torchvision_weights(ResNet50_Weights.IMAGENET1K_V2)


def test_check_sha256_prefix(tmp_path):
    path = tmp_path / "blob.bin"
    path.write_bytes(b"cnnkit")
    check_sha256_prefix(path, hashlib.sha256(b"cnnkit").hexdigest()[:10])
    with pytest.raises(WeightsError, match="expected 00000000"):
        check_sha256_prefix(path, "00000000")


# ---------------------------------------------------------------------------- local files
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_torchvision_state_dict_gives_identical_logits(tmp_path, tv_resnet18, images, suffix):
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".pth":
        torch.save(tv_resnet18.state_dict(), path)
    else:
        save_weights(tv_resnet18.state_dict(), path)
    model = create_model("resnet18", weights=str(path)).eval()
    with torch.no_grad():
        assert torch.equal(model(images), tv_resnet18(images))
    assert model.class_names is None and model.pretrained_info.source == str(path)


def test_checkpoint_wrappers_and_data_parallel_prefix(tmp_path, tv_resnet18):
    state = tv_resnet18.state_dict()
    path = tmp_path / "ckpt.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    loaded = load_state_dict_file(path)
    assert loaded.keys() == state.keys() and torch.equal(loaded["fc.bias"], state["fc.bias"])


def test_safetensors_metadata_travels_with_the_weights(tmp_path):
    model = create_model("hongong_cnn")
    names = [f"kind {i}" for i in range(10)]
    path = tmp_path / "fashion.safetensors"
    meta = metadata_json(
        model="hongong_cnn", class_names=names, input_shape=[1, 28, 28], normalize={"preset": "unit"}
    )
    save_weights(model.state_dict(), path, metadata=meta)
    loaded = create_model("hongong_cnn", weights=path)
    assert loaded.class_names == names
    assert loaded.pretrained_info.preprocess_config() == {
        "normalize": {"preset": "unit"},
        "input_shape": [1, 28, 28],
    }
    with pytest.raises(WeightsError, match="holds weights of 'hongong_cnn', not 'geron_fashion_cnn'"):
        create_model("geron_fashion_cnn", weights=path)


def test_save_weights_copies_shared_tensors(tmp_path):
    shared = torch.arange(6.0)
    path = tmp_path / "tied.safetensors"
    save_weights({"a": shared, "b": shared, "view": shared[:3]}, path)
    state, _ = read_weights(path)
    assert torch.equal(state["view"], torch.arange(3.0))


def test_run_folder(tmp_path):
    model = create_model("hongong_cnn")
    run = tmp_path / "run"
    run.mkdir()
    save_weights(model.state_dict(), run / "best.safetensors")
    names = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]
    record = {
        "run": {"model": "hongong_cnn", "model_kwargs": {}},
        "class_names": names,
        "input_shape": [1, 28, 28],
        "normalize": None,
    }
    (run / "config.json").write_text(json.dumps(record))
    (run / "metrics.json").write_text(json.dumps({"test_accuracy": 0.91}))
    loaded = create_model("hongong_cnn", weights=run)
    assert loaded.class_names == names
    info = loaded.pretrained_info
    assert info.normalize == {"preset": "unit"} and info.details["test_accuracy"] == 0.91
    with pytest.raises(WeightsError, match="holds weights of 'hongong_cnn', not 'lenet5'"):
        create_model("lenet5", weights=run)
    with pytest.raises(
        WeightsError, match=r"The run built it as create_model\('hongong_cnn', num_classes=10"
    ):
        create_model("hongong_cnn", weights=run, num_classes=3)
    (run / "best.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="best.safetensors is missing"):
        create_model("hongong_cnn", weights=run)


# ---------------------------------------------------------------------------- refused files
class _WritesMarker:
    """Unpickling this runs os.system(...), which would create the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _malicious_files(folder: Path, marker: Path) -> list[Path]:
    bare = folder / "bare.pth"
    bare.write_bytes(pickle.dumps(_WritesMarker(marker), protocol=2))
    inside = folder / "inside.pt"
    torch.save({"fc.weight": torch.zeros(1), "payload": _WritesMarker(marker)}, inside)
    disguised = folder / "disguised.safetensors"
    disguised.write_bytes(pickle.dumps({"w": _WritesMarker(marker)}, protocol=4))
    legacy = folder / "legacy.pth"
    torch.save({"payload": _WritesMarker(marker)}, legacy, _use_new_zipfile_serialization=False)
    return [bare, inside, disguised, legacy]


def test_pickles_that_would_run_code_are_refused(tmp_path):
    marker = tmp_path / "MARKER"
    for path in _malicious_files(tmp_path, marker):
        with pytest.raises(WeightsError, match="refused|not a valid safetensors"):
            create_model("resnet18", weights=str(path))
        assert not marker.exists(), f"{path.name} ran code"
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated, still readable
def test_modules_and_torchscript_are_refused(tmp_path):
    module_file = tmp_path / "module.pth"
    torch.save(torch.nn.Linear(2, 2), module_file)
    with pytest.raises(WeightsError, match="module.pth was refused: it is not a plain state dict"):
        load_state_dict_file(module_file)
    script = tmp_path / "script.pt"
    torch.jit.save(torch.jit.trace(torch.nn.Linear(2, 2), torch.zeros(1, 2)), script)
    with pytest.raises(WeightsError, match="script.pt was refused"):
        load_state_dict_file(script)
    not_tensors = tmp_path / "numbers.pth"
    torch.save({"a": 1, "b": "two"}, not_tensors)
    with pytest.raises(WeightsError, match="entries 'a', 'b' are not name -> tensor"):
        load_state_dict_file(not_tensors)


def _safetensors_bytes(tensors: dict[str, torch.Tensor]) -> tuple[dict, bytes]:
    from safetensors.torch import save

    blob = save(tensors)
    (length,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8 : 8 + length]), blob[8 + length :]


def _with_header(header: dict, data: bytes, length: int | None = None) -> bytes:
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def test_malformed_safetensors(tmp_path):
    header, data = _safetensors_bytes({"a": torch.zeros(4), "b": torch.ones(4)})
    overlapping = dict(header, b=dict(header["b"], data_offsets=[0, 16]))
    past_end = dict(header, b=dict(header["b"], data_offsets=[16, 64]))
    cases = {
        "long-header": _with_header(header, data, length=10_000),
        "huge-header": _with_header(header, data, length=2**63),
        "overlap": _with_header(overlapping, data),
        "past-end": _with_header(past_end, data),
        "tiny": b"abc",
        "not-json": struct.pack("<Q", 8) + b"{nope!!}" + data,
    }
    for name, blob in cases.items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(blob)
        with pytest.raises(WeightsError, match=f"{name}.safetensors is not a valid safetensors file"):
            create_model("resnet18", weights=str(path))
    text = tmp_path / "readme.pth"
    text.write_text("these are not weights")
    with pytest.raises(WeightsError, match="neither a safetensors file nor a torch.save archive"):
        load_state_dict_file(text)


def test_shape_and_key_mismatches_are_listed_by_name(tmp_path, tv_resnet18):
    state = dict(tv_resnet18.state_dict())
    path = tmp_path / "ten.pth"
    ten = torchvision.models.resnet18(weights=None, num_classes=10).state_dict()
    torch.save(ten, path)
    with pytest.raises(
        WeightsError, match=r"fc.weight: file \(10, 512\) vs model \(1000, 512\).*num_classes=10"
    ):
        create_model("resnet18", weights=str(path))
    assert create_model("resnet18", num_classes=10, weights=str(path)).num_classes == 10
    del state["layer1.0.conv1.weight"]
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, path)
    with pytest.raises(
        WeightsError, match="missing keys layer1.0.conv1.weight; unexpected keys extra.weight"
    ):
        create_model("resnet18", weights=str(path))


def test_missing_files_and_odd_names(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights file .*nothing.pth does not exist"):
        create_model("resnet18", weights=str(tmp_path / "nothing.pth"))
    with pytest.raises(FileNotFoundError, match="nor a torchvision weights name"):
        create_model("resnet18", weights="imagenett")  # a typo; "imagenet" itself is Keras' name
    model = create_model("resnet18")
    with pytest.raises(FileNotFoundError):
        load_pretrained(model, "resnet18", tmp_path)  # a folder without best.safetensors


def test_decode_predictions():
    probs = torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]])
    out = decode_predictions(probs, top=2, class_names=["cat", "dog", "owl"])
    assert [(p.rank, p.index, p.name) for p in out[0]] == [(1, 1, "dog"), (2, 2, "owl")]
    assert out[1][0].name == "cat" and out[1][0].probability == pytest.approx(0.5)
    assert len(decode_predictions(probs, top=10)[0]) == 3
    assert decode_predictions(probs, top=1)[0][0].name == "class 1"
    with pytest.raises(ValueError, match="2 class names for 3 outputs"):
        decode_predictions(probs, class_names=["a", "b"])
    with pytest.raises(ValueError, match=r"Tensor\[N, K\]"):
        decode_predictions(probs[0])
    with pytest.raises(ValueError, match="top must be an int >= 1"):
        decode_predictions(probs, top=0)


def test_offline_switch(monkeypatch):
    monkeypatch.setenv("CNNKIT_OFFLINE", "yes")
    assert not weights_io.downloads_allowed()
    monkeypatch.setenv("CNNKIT_OFFLINE", "0")
    assert weights_io.downloads_allowed()


def test_keras_imagenet_name_is_the_default_imagenet_weights(tmp_path):
    """Keras' ``weights="imagenet"`` resolves to torchvision's DEFAULT (ResNet-50: IMAGENET1K_V2)."""
    with pytest.raises(WeightsError) as info:
        create_model("resnet50", weights="imagenet")
    assert "ResNet50_Weights.IMAGENET1K_V2" in str(info.value)
    assert str(tmp_path / "torch-home" / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth") in str(info.value)
