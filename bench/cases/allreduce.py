"""All-reduce time with gloo on this machine's loopback: what data-parallel training adds per step.

Two processes (torch.multiprocessing, rendezvous on 127.0.0.1) all-reduce float32 buffers of the
gradient sizes of the course CNN, ResNet-18 and ResNet-50 as DDP does (buckets of 25 MB); the
compute a step does is timed apart (one process, one thread, batch 32), for docs/distributed.md.
"""

from __future__ import annotations

import os
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cnnkit import create_model
from cnnkit.engine.distributed import free_port
from measure import load

from ._common import Context

MODELS = {"hongong_cnn": (1, 28), "resnet18": (3, 224), "resnet50": (3, 224)}
BUCKET = 25 * 2**20  # DDP's default bucket_cap_mb


def _params(name: str) -> int:
    chans, _ = MODELS[name]
    return sum(p.numel() for p in create_model(name, in_chans=chans, num_classes=10).parameters())


def _worker(rank: int, world: int, port: int, sizes: dict[str, int], repeats: int, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    for name, numel in sizes.items():
        buckets = [torch.ones(n) for n in _bucket_sizes(numel)]
        for b in buckets:  # warm-up: the connections and buffers are set up
            dist.all_reduce(b)
        times = []
        for _ in range(repeats):
            dist.barrier()
            start = time.perf_counter()
            for b in buckets:
                dist.all_reduce(b)
            times.append(time.perf_counter() - start)
        if rank == 0:
            out[name] = times
    dist.destroy_process_group()


def _bucket_sizes(numel: int) -> list[int]:
    per = BUCKET // 4
    return [per] * (numel // per) + ([numel % per] if numel % per else [])


def _step_seconds(name: str, repeats: int) -> float:
    chans, side = MODELS[name]
    model = create_model(name, in_chans=chans, num_classes=10)
    x, y = torch.randn(32, chans, side, side), torch.randint(0, 10, (32,))
    opt = torch.optim.Adam(model.parameters())
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - start)
    return min(times)


def allreduce(ctx: Context) -> list[dict]:
    """All-reduce seconds per step (2 gloo processes, loopback) next to one step's compute."""
    sizes = {name: _params(name) for name in MODELS}
    repeats = 3 if ctx.quick else 10
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_worker, args=(2, free_port(), sizes, repeats, out), nprocs=2, join=True)
        times = dict(out)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = []
        for name, numel in sizes.items():
            step = _step_seconds(name, 1 if name != "hongong_cnn" else 5)
            rows.append(
                {
                    "case": f"allreduce[{name}]",
                    "params": numel,
                    "megabytes": round(numel * 4 / 1e6, 2),
                    "allreduce_s_best": round(min(times[name]), 4),
                    "allreduce_s_median": round(statistics.median(times[name]), 4),
                    "gbit_per_s": round(numel * 4 * 8 / min(times[name]) / 1e9, 2),
                    "step_s_batch32_1thread": round(step, 4),
                    "load": load(),
                }
            )
        return rows
    finally:
        torch.set_num_threads(before)
