"""summary(): the course's parameter and memory figures, checked by hand arithmetic."""

from __future__ import annotations

import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from cnnkit import create_model
from cnnkit.errors import UsageError
from cnnkit.inspect import parse_input_shape, summary


@pytest.fixture(scope="module")
def exercise():
    return summary(create_model("exercise_cnn"), "200x300x3", batch_size=50)


def test_exercise_params_and_memory(exercise):
    assert exercise.total_params == 903_400
    # Géron's worked answer: 150*100*100 + 75*50*200 + 38*25*400 floats = 2.63 M floats = 10.5 MB
    floats = 150 * 100 * 100 + 75 * 50 * 200 + 38 * 25 * 400
    assert exercise.activation_bytes == floats * 4
    assert exercise.activation_bytes / 1e6 == pytest.approx(10.5, abs=0.05)
    assert exercise.batch_activation_bytes / 1e6 == pytest.approx(526, abs=0.5)
    text = str(exercise)
    assert "903,400" in text and "10.5 MB" in text and "526.0 MB" in text


def test_training_memory_adds_up(exercise):
    p = 903_400 * 4
    expected = exercise.batch_activation_bytes + 50 * 200 * 300 * 3 * 4 + p + p + 2 * p  # adam: 2 states
    assert exercise.training_bytes == expected
    sgd = summary(create_model("exercise_cnn"), (3, 200, 300), batch_size=50, optimizer="sgd")
    assert sgd.training_bytes == expected - 2 * p


def test_inference_peak_is_largest_consecutive_pair(exercise):
    conv1 = 150 * 100 * 100 * 4
    conv2 = 75 * 50 * 200 * 4
    assert exercise.inference_peak_bytes == conv1 + conv2 + 903_400 * 4


def test_hongong_rows_macs_and_receptive_fields():
    s = summary(create_model("hongong_cnn"), (1, 28, 28))
    names = s.layer_names()
    assert names[:4] == ["features.conv1", "features.pool1", "features.conv2", "features.pool2"]
    rows = {r.name: r for r in s.rows}
    assert rows["features.conv1"].output_shape == (32, 28, 28)
    assert rows["features.conv1"].macs == 28 * 28 * 32 * 9
    assert rows["features.conv2"].macs == 14 * 14 * 64 * 9 * 32
    assert rows["head.dense1"].macs == 3136 * 100
    # receptive fields: 3, 4 (pool 2), 3 + 2*2 + ... computed by the standard recurrence
    assert [rows[n].receptive_field for n in names[:4]] == [3, 4, 8, 10]
    assert 2 * s.total_macs / 1e6 == pytest.approx(8.31, abs=0.01)  # MFLOP forward


def test_macs_match_torch_flop_counter():
    from torch.utils.flop_counter import FlopCounterMode

    model = create_model("geron_fashion_cnn").eval()
    s = summary(model, (1, 28, 28))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 1, 28, 28))
    assert counter.get_total_flops() == 2 * s.total_macs


def test_batchnorm_buffers_counted_apart():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4))
    s = summary(model, (1, 8, 8))
    assert s.total_params == 40 + 8 and s.buffer_elements == 4 + 4 + 1


def test_bad_shapes():
    assert parse_input_shape("28x28x1") == (1, 28, 28)
    assert parse_input_shape("224×224×3") == (3, 224, 224)
    for bad in ("28", "28x28x1x1", "axbxc", "0x28x1"):
        with pytest.raises(UsageError, match="HxWxC"):
            parse_input_shape(bad)
    with pytest.raises(UsageError, match="cannot take input"):
        summary(create_model("hongong_cnn"), (1, 32, 32))


# The real peak over the estimate (activations + inputs + parameters + gradients + Adam's two
# states): the estimate leaves out the activation gradients that live during backward, so the
# real peak is higher (measured on CPU for this model: 1.09 with a batch of 16, 1.15 with 64).
# Any window narrower than a factor of 2 fails an estimate that is off by 2x (e.g. 2-byte floats,
# or gradients counted twice).
CPU_WINDOW = (0.9, 1.5)
CUDA_WINDOW = (0.9, 1.75)  # the caching allocator's 512-byte blocks and cuDNN's workspaces on top


class LiveBytes(TorchDispatchMode):
    """Bytes of the tensors alive during a piece of code, and their peak: every tensor an op
    returns is counted until its storage is freed (as the CUDA allocator's statistics do)."""

    def __init__(self, start: int) -> None:
        super().__init__()
        self.live = self.peak = start
        self.seen: set[int] = set()

    def _free(self, key: int, nbytes: int) -> None:
        self.live -= nbytes
        self.seen.discard(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if key and key not in self.seen:  # views and in-place results are not new memory
                    self.seen.add(key)
                    self.live += storage.nbytes()
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(t, self._free, key, storage.nbytes())
        return out


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def test_live_bytes_counts_allocations_and_frees():
    with LiveBytes(0) as meter:
        a = torch.ones(1000)
        b = a * 2
        del a
        c = b.view(10, 100) + 1
        assert meter.live == 8000  # b and c; a was freed and b's view is no new memory
        del b, c
    assert meter.live == 0 and meter.peak == 8000  # never more than two of the three at once


def test_training_estimate_against_the_measured_cpu_peak():
    assert CPU_WINDOW[1] / CPU_WINDOW[0] < 2 and CUDA_WINDOW[1] / CUDA_WINDOW[0] < 2
    torch.manual_seed(0)
    model = create_model("geron_fashion_cnn")
    s = summary(model, (1, 28, 28), batch_size=16)
    opt = torch.optim.Adam(model.parameters())
    x = torch.zeros(16, 1, 28, 28)
    model(x).sum().backward()  # a first step creates Adam's states
    opt.step()
    opt.zero_grad(set_to_none=True)
    states = [v for state in opt.state.values() for v in state.values() if v.dim()]
    before = _bytes(model.parameters()) + _bytes(model.buffers()) + _bytes(states) + _bytes([x])
    with LiveBytes(before) as meter:
        model(x).sum().backward()
        opt.step()
    assert CPU_WINDOW[0] < meter.peak / s.training_bytes < CPU_WINDOW[1], (meter.peak, s.training_bytes)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device to measure real memory")
def test_training_estimate_against_cuda_allocator():
    model = create_model("geron_fashion_cnn").cuda()
    s = summary(model, (1, 28, 28), batch_size=64)
    opt = torch.optim.Adam(model.parameters())
    torch.cuda.reset_peak_memory_stats()
    x = torch.zeros(64, 1, 28, 28, device="cuda")
    for _ in range(2):
        opt.zero_grad()
        model(x).sum().backward()
        opt.step()
    peak = torch.cuda.max_memory_allocated()
    assert CUDA_WINDOW[0] < peak / s.training_bytes < CUDA_WINDOW[1], (peak, s.training_bytes)


def test_receptive_field_through_residual_sums():
    # ResNet-18's last unit sees 435 input pixels (worked by hand in tests/inspect/test_receptive.py);
    # the RF column must follow the residual sum's widest branch, as the studio's windows do.
    from cnnkit.inspect.receptive import layer_windows

    model = create_model("resnet18", num_classes=10)
    rows = summary(model, (3, 64, 64)).rows
    last = {r.name: r.receptive_field for r in rows if r.receptive_field is not None}
    assert last["layer4.1.conv2"] == 435
    windows = layer_windows(model, (3, 64, 64))
    assert last == {name: w.field[0] for name, w in windows.items()}
