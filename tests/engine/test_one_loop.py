"""One training loop: every task is an engine Task, and only the engine steps an optimizer.

The per-task tests train each task through ``cnnkit.engine.Trainer`` and resume it exactly
(tests/tasks, tests/runs); this module checks the structure that keeps it so.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import cnnkit
from cnnkit.engine import Task, Trainer

SRC = Path(cnnkit.__file__).parent
TASKS = [
    ("cnnkit.tasks.classify.task", "ClassifyTask"),
    ("cnnkit.tasks.localization.task", "LocalizeTask"),
    ("cnnkit.tasks.detection.task", "DetectTask"),
    ("cnnkit.tasks.segmentation.task", "SegmentTask"),
    ("cnnkit.tasks.segmentation.instance_task", "MaskRCNNTask"),
]
TRAINERS = [
    ("cnnkit.tasks.classify.task", "ClassifyTrainer"),
    ("cnnkit.tasks.segmentation.train", "SegmentationTrainer"),
    ("cnnkit.tasks.segmentation.instance_task", "MaskRCNNTrainer"),
]


@pytest.mark.parametrize(("module", "name"), TASKS)
def test_every_task_is_an_engine_task_with_a_monitor(module, name):
    task = getattr(importlib.import_module(module), name)
    assert issubclass(task, Task)
    assert task.name in ("classify", "localize", "detect", "segment") and task.monitor.startswith("val_")


@pytest.mark.parametrize(("module", "name"), TRAINERS)
def test_task_trainers_are_the_engine_without_a_loop_of_their_own(module, name):
    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, Trainer)
    assert not {"_train_epoch", "load_state", "state"} & set(vars(cls))  # fit may set up, never loop


def _calls(tree: ast.AST, attribute: str) -> int:
    return sum(
        isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == attribute
        for node in ast.walk(tree)
    )


def test_only_the_engine_runs_backward_and_steps_the_optimizer():
    where = {}
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if found := _calls(tree, "backward"):
            where[str(path.relative_to(SRC))] = found
    assert where == {"engine/trainer.py": 1}


def test_library_code_never_imports_the_command_line():
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.relative_to(SRC).parts[0] in ("cli", "__main__.py"):  # `python -m cnnkit` is the CLI
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                target = "." * node.level + (node.module or "")
                if target.lstrip(".").split(".")[0] == "cli" or (node.module or "").startswith("cnnkit.cli"):
                    offenders.append(f"{path.relative_to(SRC)}: from {target} import ...")
    assert offenders == []


def test_no_module_is_past_500_lines():
    long = {
        str(p.relative_to(SRC)): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > 500
    }
    assert long == {}
