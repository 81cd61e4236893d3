"""Trains the equivalence cases in one process or as one rank of a torchrun group (see
test_equivalence.py); rank 0 saves every case's final state dict and history to ``argv[1]``,
and the validation reports of the weights in ``argv[2]`` (``_task_cases``).

Each case: one epoch of SGD (momentum 0.9, lr 0.01) with a global batch of 32 on the first real
Fashion-MNIST training images, whose last batch two ranks share unevenly, with validation on
41 test images (shares of 21 and 20): the course CNN for 4 steps (101 images: the last 5 split
3 / 2), ResNet-18 for 1 (21 images: 11 / 10).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from cnnkit.data import load_fashion_mnist
from cnnkit.engine import distributed, seed_everything
from cnnkit.models import create_model
from cnnkit.tasks.classify.task import ClassifyTrainer

try:  # run as a script by the launcher: this folder is on the path
    import _task_cases
except ImportError:  # imported as a test module
    from . import _task_cases

GLOBAL_BATCH = 32
CASES = {  # name: (model, sync_bn, training images, ema: the weight average's decay)
    "hongong_cnn": ("hongong_cnn", False, 101, None),
    "hongong_cnn_ema": ("hongong_cnn", False, 101, 0.5),
    "resnet18_sync_bn": ("resnet18", True, 21, None),
    "resnet18_local_bn": ("resnet18", False, 21, None),
}


def main(out: str, models: str) -> None:
    torch.set_num_threads(1)
    world = distributed.init_from_env(torch.device("cpu"))
    try:
        results = _run(world, models)
        if world.main:
            torch.save(results, out)
    except BaseException:
        distributed.shutdown(wait=False)
        raise
    distributed.shutdown()  # every rank: a barrier, then the group is destroyed
    with open(f"{out}.threads-{world.rank}", "w") as f:  # what is left running after it
        f.write("\n".join(_thread_names()))


def _thread_names() -> list[str]:
    """This process's threads, by name (Linux's /proc)."""
    tasks = Path("/proc/self/task")
    return sorted((task / "comm").read_text().strip() for task in tasks.iterdir())


def _run(world: distributed.World, models: str) -> dict:
    train, test = load_fashion_mnist()
    val = test.subset(slice(0, 41))
    results = {}
    for name, (model_name, sync_bn, samples, ema) in CASES.items():
        seed_everything(0)
        model = create_model(model_name, num_classes=10, in_chans=1)
        for module in model.modules():
            if isinstance(module, nn.Dropout):
                module.p = 0.0  # dropout masks are drawn per rank: not the one-process masks
        trainer = ClassifyTrainer(
            model, device="cpu", seed=0, optimizer="sgd", lr=0.01, sync_bn=sync_bn, ema=ema
        )
        data = train.subset(slice(0, samples))
        history = trainer.fit(data, val, epochs=1, batch_size=GLOBAL_BATCH // world.size)
        rows = [{k: v for k, v in row.items() if k != "seconds"} for row in history.epochs]
        state = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        results[name] = {"state": state, "history": rows, "steps": trainer.global_step}
        if ema is not None:  # the model holds the average; the trained weights are kept apart
            results[name]["trained"] = {k: v.clone() for k, v in trainer.state()["model"].items()}
    # map_shared, as an image folder's files are decoded: each rank computes its share only.
    computed: list[int] = []
    values = distributed.map_shared(list(range(7)), lambda v: computed.append(v) or v * v)
    results["map_shared"] = {"values": values, "computed": distributed.gather_objects(computed)}
    for name, sync_bn in (("detect_sync_bn", True), ("detect_local_bn", False)):
        trainer = _task_cases.train_detector(world.size, sync_bn)
        rows = [{k: v for k, v in row.items() if k != "seconds"} for row in trainer.history.epochs]
        state = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        results[name] = {"state": state, "history": rows, "steps": trainer.global_step}
        if ema is not None:  # the model holds the average; the trained weights are kept apart
            results[name]["trained"] = {k: v.clone() for k, v in trainer.state()["model"].items()}
    for name, by_units in (("segment_by_pixels", True), ("segment_by_images", False)):
        trainer = _task_cases.train_segmenter(world.size, by_units)
        rows = [{k: v for k, v in row.items() if k != "seconds"} for row in trainer.history.epochs]
        state = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        results[name] = {"state": state, "history": rows, "steps": trainer.global_step}
        if ema is not None:  # the model holds the average; the trained weights are kept apart
            results[name]["trained"] = {k: v.clone() for k, v in trainer.state()["model"].items()}
    results["validation"] = _task_cases.validation_reports(models)
    return results


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
