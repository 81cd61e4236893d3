"""What the benchmark cases share: the Context, the result row, FLOP counts, thread settings.

Every row carries: images, seconds (best of the timed repeats), img/s, s/epoch where it is a
training or validation epoch, GFLOP per image, achieved GFLOP/s, fraction of the measured FP32
peak, the load average while it ran, and the settings used.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch

from cnnkit import create_model
from cnnkit.data.arrays import ArrayDataset
from cnnkit.engine.perf import PerfSettings
from measure import forward_flops, train_step_flops

EPOCH_TRAIN = 48_000  # the course's split of the 60,000 training images
EPOCH_VAL = 12_000


@dataclass
class Context:
    """What every case shares: data, device, settings, the measured peak, reference rates."""

    train: ArrayDataset
    val: ArrayDataset
    test: ArrayDataset
    device: torch.device
    perf: PerfSettings
    quick: bool
    peak_fp32: float = 0.0
    peak_bf16: float = 0.0
    default_threads: int = 1
    refs: dict[str, float] = field(default_factory=dict)  # reference img/s by key
    t0: float = 0.0  # process start (time-to-accuracy counts from here)


def _flops(name: str, **kw: Any) -> dict[str, float]:
    shape = kw.pop("input_shape", (1, 28, 28))
    model = create_model(name, **kw)
    fwd = forward_flops(model, shape)
    return {
        "forward": fwd["summary"],
        "forward_counter": fwd["flop_counter"],
        "train": train_step_flops(copy.deepcopy(model), shape),
    }


def _row(case: str, images: int, seconds: float, flop_per_img: float, ctx: Context, **extra: Any) -> dict:
    gflops = images * flop_per_img / seconds / 1e9
    row = {
        "case": case,
        "images": images,
        "seconds": round(seconds, 3),
        "img_per_s": round(images / seconds, 1),
        "gflop_per_img": round(flop_per_img / 1e9, 5),
        "gflop_per_s": round(gflops, 2),
        "frac_fp32_peak": round(gflops / ctx.peak_fp32, 3) if ctx.peak_fp32 else None,
    }
    row.update(extra)
    return row


def _with_threads(n: int):
    class _Threads:
        def __enter__(self) -> None:
            self.before = torch.get_num_threads()
            torch.set_num_threads(n)

        def __exit__(self, *exc: object) -> None:
            torch.set_num_threads(self.before)

    return _Threads()


def _ratios(ctx: Context, kind: str, rate: float) -> dict[str, Any]:
    out: dict[str, Any] = {"ratio_of": kind}  # run.py recomputes the ratios from the final refs
    for label in ("default", "same_threads"):
        ref = ctx.refs.get(f"{kind}_{label}")
        out[f"x_ref_{label}"] = round(rate / ref, 2) if ref else None
    return out


def _concat(a: ArrayDataset, b: ArrayDataset) -> ArrayDataset:
    return ArrayDataset(
        torch.cat([a.images, b.images]),
        torch.cat([a.labels, b.labels]),
        list(a.class_names),
        f"{a.name}+{b.name}",
    )
