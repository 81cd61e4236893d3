"""Data-parallel training on torch.distributed: one place for ranks, collectives and launching.

A worker started by ``torchrun`` (or ``cnnkit train --nproc N``, which goes through the same
elastic launcher) finds ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address in its
environment; ``init_from_env`` joins the group (gloo on the CPU, NCCL on CUDA). Everything else
asks ``current()`` and works unchanged in a single process (rank 0 of a world of 1).

How a global batch is split (``shard_range``): the engine draws the epoch's permutation and
batches of ``nproc × batch_size`` exactly as one process with that batch would, and every rank
keeps its contiguous slice, so N ranks see step by step the samples of the one-process run.
"""

from __future__ import annotations

import gc
import importlib
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..errors import UsageError

# torchrun's variables: a worker is distributed when WORLD_SIZE is set (even to 1).
ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class World:
    """This process's place in the group.

    Attributes:
        rank: global rank (0 writes the run folder).
        size: number of processes in the group.
        local_rank: rank on this machine (picks the CUDA device).
        local_size: processes on this machine (they share its cores).
        restart: how many times the elastic launcher has restarted the group.
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    restart: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        """More than one process: collectives are needed."""
        return self.size > 1


def env_world() -> World | None:
    """The world torchrun describes in the environment, or None outside a launcher."""
    if "WORLD_SIZE" not in os.environ:
        return None
    try:
        size = int(os.environ["WORLD_SIZE"])
        return World(
            rank=int(os.environ.get("RANK", 0)),
            size=size,
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
            local_size=int(os.environ.get("LOCAL_WORLD_SIZE", size)),
            restart=int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0)),
        )
    except ValueError:
        raise UsageError(
            f"WORLD_SIZE, RANK and LOCAL_RANK must be integers, got {os.environ['WORLD_SIZE']!r}; "
            "start workers with torchrun or `cnnkit train --nproc N`"
        ) from None


def current() -> World:
    """This process's World: the initialised group's, else a world of one."""
    if dist.is_available() and dist.is_initialized():
        env = env_world() or World()
        return World(
            rank=dist.get_rank(),
            size=dist.get_world_size(),
            local_rank=env.local_rank,
            local_size=env.local_size,
            restart=env.restart,
        )
    return World()


def backend_for(device: torch.device) -> str:
    """NCCL for CUDA devices, gloo for the CPU (and anything else gloo can move)."""
    return "nccl" if device.type == "cuda" else "gloo"


def init_from_env(device: torch.device) -> World:
    """Join the process group torchrun set up (a no-op outside a launcher or when joined).

    Raises:
        UsageError: torchrun's variables without a usable rendezvous address.
    """
    env = env_world()
    if env is None or not dist.is_available() or dist.is_initialized():
        return current()
    if device.type == "cuda":
        torch.cuda.set_device(env.local_rank)
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise UsageError(
            f"WORLD_SIZE is set but {', '.join(missing)} is not; start workers with torchrun or "
            "`cnnkit train --nproc N`"
        )
    # The elastic agent keeps one store across restarts of the group: keys of an earlier attempt
    # (a dead worker's address) must not be read by the next, so each attempt has its own prefix.
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        world_size=env.size,
        is_master=env.rank == 0 and not agent_store,
        multi_tenant=True,
    )
    store = dist.PrefixStore(f"cnnkit/attempt_{env.restart}", store)
    # Imported before the group exists: DistributedDataParallel imports this module, whose
    # functions take ``group=group.WORLD`` as a default, so importing it later pins the group in
    # those defaults. destroy_process_group could then not free it, and gloo's threads would live
    # on until the interpreter tears the module down at exit, a teardown that can abort the
    # process ("terminate called without an active exception").
    importlib.import_module("torch.distributed.nn")

    dist.init_process_group(backend=backend_for(device), store=store, rank=env.rank, world_size=env.size)
    return current()


def shutdown(wait: bool = True) -> None:
    """Leave the group, on every way out of a run (a no-op outside one).

    With ``wait`` (a run that ended normally) the ranks first meet at a barrier, so none closes its
    connections while another is still inside a collective. Then the group is destroyed and the
    objects that still hold it (a Trainer's DDP model in a reference cycle) are collected, so that
    gloo's threads are joined now, while the interpreter is fully alive, not during its teardown
    at exit (see ``init_from_env``). Without ``wait`` (a failing rank) it leaves at once: the
    others see the closed connections and fail too.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    try:
        if wait and dist.get_world_size() > 1:
            dist.barrier()
    finally:
        dist.destroy_process_group()
        gc.collect()


# ---------------------------------------------------------------------- splitting the data
def shard_range(n: int, rank: int, size: int) -> tuple[int, int]:
    """[start, stop) of rank's contiguous share of ``n`` items: as even as possible, the first
    ``n % size`` ranks one item more (numpy.array_split's rule)."""
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def _batch_len(batch: Any) -> int | None:
    if isinstance(batch, torch.Tensor):
        return len(batch) if batch.dim() else None
    if isinstance(batch, list):
        return len(batch)
    if isinstance(batch, tuple | dict):
        for item in batch.values() if isinstance(batch, dict) else batch:
            n = _batch_len(item)
            if n is not None:
                return n
    return None


def _slice(batch: Any, start: int, stop: int) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch[start:stop] if batch.dim() else batch
    if isinstance(batch, list):
        return batch[start:stop]
    if isinstance(batch, tuple):
        return type(batch)(_slice(item, start, stop) for item in batch)
    if isinstance(batch, dict):
        return {k: _slice(v, start, stop) for k, v in batch.items()}
    return batch  # a setting shared by the batch (an ignore index, a flag)


def shard_batch(batch: Any, world: World) -> tuple[Any, int, int]:
    """Rank's slice of a global batch whose tensors and lists all hold one entry per sample.

    Returns:
        (the local batch, its samples, the global batch's samples).
    """
    n = _batch_len(batch)
    if n is None:
        raise TypeError(f"cannot split a batch of {type(batch).__name__} across ranks")
    start, stop = shard_range(n, world.rank, world.size)
    return _slice(batch, start, stop), stop - start, n


# ---------------------------------------------------------------------- collectives
def sum_across(values: Sequence[float]) -> list[float]:
    """Element-wise sums over all ranks (float64 on the CPU; identical on every rank)."""
    if not current().active:
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return t.tolist()


def sum_dict(sums: dict[str, list[float]]) -> dict[str, list[float]]:
    """``{key: [numerator, denominator]}`` summed over ranks (every rank must have the same keys)."""
    keys = sorted(sums)
    flat = sum_across([v for k in keys for v in sums[k]])
    return {k: flat[2 * i : 2 * i + 2] for i, k in enumerate(keys)}


def gather_rows(local: torch.Tensor, total: int) -> torch.Tensor:
    """The ranks' ``shard_range`` pieces of a Tensor[total, ...], concatenated in rank order."""
    world = current()
    if not world.active:
        return local
    rows = -(-total // world.size)  # all_gather needs equal shapes: pad to the largest share
    padded = local.new_zeros((rows, *local.shape[1:]))
    padded[: len(local)] = local
    device = _comm_device()
    parts = [torch.empty_like(padded, device=device) for _ in range(world.size)]
    dist.all_gather(parts, padded.to(device))
    pieces = []
    for rank, part in enumerate(parts):
        start, stop = shard_range(total, rank, world.size)
        pieces.append(part[: stop - start].to(local.device))
    return torch.cat(pieces)


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    world = current()
    if not world.active:
        return [obj]
    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def gather_lists(local: list[Any]) -> list[Any]:
    """The ranks' lists (picklable items) concatenated in rank order, on every rank: with each
    rank holding its ``local_share`` of a sequence, the whole sequence in order."""
    if not current().active:
        return list(local)
    return [item for part in gather_objects(local) for item in part]


def local_share(n: int, world: World | None = None) -> slice:
    """This rank's ``shard_range`` of ``n`` items as a slice (all of them in a world of one)."""
    world = current() if world is None else world
    return slice(*shard_range(n, world.rank, world.size))


def map_shared(items: Sequence[Any], fn: Callable[[Any], Any]) -> list[Any]:
    """``[fn(item) for item in items]`` with each rank computing its ``shard_range`` (decoding
    its share of an image folder's files); every rank receives all results, in order."""
    return gather_lists([fn(item) for item in items[local_share(len(items))]])


def broadcast_buffers(model: nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank, so that validation and the
    saved model agree everywhere; with SyncBatchNorm they are equal already."""
    if not current().active:
        return
    for buffer in model.buffers():
        if buffer.numel():
            dist.broadcast(buffer.data, src=0)


def barrier() -> None:
    if current().active:
        dist.barrier()


def _comm_device() -> torch.device:
    backend = dist.get_backend() if dist.is_initialized() else "gloo"
    return torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")


# ---------------------------------------------------------------------- the model
def wrap_model(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in DistributedDataParallel (gradients averaged over ranks in backward), or
    itself in a world of one. Buffers are not broadcast before every forward pass (inference
    on ranks' shares of different lengths would deadlock); ``broadcast_buffers`` does it once an epoch."""
    if not current().active:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = None
    if device.type == "cuda":
        ids = [device.index if device.index is not None else torch.cuda.current_device()]
    # Some tasks' models hold parameters their loss does not use (a localizer's spare head, a
    # frozen base): a static graph lets DDP find them in the first step and skip them after,
    # where find_unused_parameters would walk the autograd graph every step (and warn on every
    # rank when nothing is unused). A trainer keeps one set of trainable parameters for its life.
    return DistributedDataParallel(model, device_ids=ids, forward_sync_buffers=False, static_graph=True)


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """BatchNorm layers that normalise with the statistics of the global batch.

    On CUDA, torch's ``nn.SyncBatchNorm``; elsewhere (torch's needs a GPU) ``SyncBatchNormCPU``,
    which keeps the same parameters and buffers, so state dicts load into the plain model.
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    from .sync_batchnorm import convert_sync_batchnorm_cpu

    return convert_sync_batchnorm_cpu(model)


# ---------------------------------------------------------------------- launching
def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (for a rendezvous endpoint)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def launch(
    module_args: Sequence[str],
    nproc: int,
    *,
    max_restarts: int = 0,
    threads: int | None = None,
    log_dir: str | None = None,
) -> None:
    """Run ``python -m cnnkit MODULE_ARGS`` in ``nproc`` local workers through torch's elastic
    launcher (``torch.distributed.run``, the code behind ``torchrun``); the group is restarted up
    to ``max_restarts`` times when a worker fails.

    Args:
        threads: intra-op threads per worker (``OMP_NUM_THREADS``), None to keep the environment's.
            A count given here is marked as chosen automatically (``CNNKIT_AUTO_THREADS=1``):
            each worker then adapts it to the free cores, up to its share (``runs/session.py``).
        log_dir: where the launcher keeps each attempt's worker output (None: a temporary folder).

    Raises:
        TrainingError: a worker failed and no restarts were left.
    """
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    from ..errors import TrainingError

    if threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        os.environ["CNNKIT_AUTO_THREADS"] = "1"  # chosen here, not by the user: workers may adapt it
    args = [
        "--standalone",
        f"--nproc-per-node={nproc}",
        f"--max-restarts={max_restarts}",
        *([f"--log-dir={log_dir}"] if log_dir else []),
        "--module",
        "cnnkit",
        *module_args,
    ]
    try:
        torchrun.run(torchrun.get_args_parser().parse_args(args))
    except ChildFailedError as exc:
        first = next(iter(exc.failures.values()), None)
        why = f"exit code {first.exitcode}" if first is not None else "a failure"
        raise TrainingError(
            f"a worker of the {nproc}-process group ended with {why} after {max_restarts} restart(s) "
            "(its error is above); fix it and continue with --resume"
        ) from None


def rank_log(path: str | os.PathLike[str], world: World) -> Any:
    """A line-buffered text file for a non-zero rank's progress and warnings, opened for append
    with a first line naming the rank, host, pid and restart."""
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    stream = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115  (kept for the run)
    print(
        f"rank {world.rank}/{world.size} host {socket.gethostname()} pid {os.getpid()} "
        f"restart {world.restart}",
        file=stream,
    )
    return stream


__all__ = [
    "World",
    "backend_for",
    "barrier",
    "broadcast_buffers",
    "convert_sync_batchnorm",
    "current",
    "env_world",
    "free_port",
    "gather_lists",
    "gather_objects",
    "gather_rows",
    "init_from_env",
    "launch",
    "local_share",
    "map_shared",
    "rank_log",
    "shard_batch",
    "shard_range",
    "shutdown",
    "sum_across",
    "sum_dict",
    "wrap_model",
]
