"""Does a pretrained base help with 200 labelled images? An offline transfer experiment.

The setting of Géron's transfer-learning exercise, with real Fashion-MNIST:

- task A: the 8 classes other than Sandal (5) and Shirt (6); ``hongong_cnn`` is trained on
  all their training images (10 % held out for early stopping);
- task B: sandal vs shirt from only 200 labelled images (160 train / 40 validation, drawn
  with each seed), tested on all 2,000 sandal and shirt test images, learned
  (a) from the task-A base with ``cnnkit.tasks.finetune.finetune`` (new head on the frozen
  base, then everything at a tenth of the rate), (a0) the same with the base kept frozen, and
  (b) from scratch with the same epoch budget and early stopping.

Run (about 10 minutes on 2 busy CPU cores; see docs/transfer.md for measured numbers)::

    python scripts/transfer_experiment.py --threads 1

It prints a Markdown table and writes ``results.json`` (every seed, timings, machine) to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from cnnkit.data import ArrayDataset, load_fashion_mnist
from cnnkit.engine import EarlyStopping, ModelCheckpoint, pick_device, seed_everything
from cnnkit.engine.perf import pick_num_threads, set_threads
from cnnkit.models import create_model
from cnnkit.runs.folder import machine_info, versions
from cnnkit.runs.pretrained import pretrained_model
from cnnkit.tasks.classify.task import ClassifyTrainer
from cnnkit.tasks.finetune import finetune

SANDAL, SHIRT = 5, 6
MODEL = "hongong_cnn"


def relabel(data: ArrayDataset, keep: list[int]) -> ArrayDataset:
    """The samples of classes ``keep``, relabelled 0..len(keep)-1 in that order."""
    mask = torch.isin(data.labels, torch.tensor(keep))
    old = data.labels[mask]
    new = torch.empty_like(old)
    for index, cls in enumerate(keep):
        new[old == cls] = index
    names = [data.class_names[c] for c in keep]
    return ArrayDataset(data.images[mask], new, names, f"{data.name}{names}")


def pretrain(task_a: ArrayDataset, out: Path, args: argparse.Namespace) -> tuple[Path, dict]:
    """Train the task-A model; returns its best weights file and a summary."""
    seed_everything(args.pretrain_seed)
    train, val = task_a.split(0.1, seed=args.pretrain_seed, stratify=True)
    model = create_model(MODEL, num_classes=task_a.num_classes)
    weights = out / "task_a_best.safetensors"
    early = EarlyStopping("val_loss", patience=2, restore_best_weights=True)
    trainer = ClassifyTrainer(
        model,
        callbacks=[early, ModelCheckpoint(weights)],
        device=args.device,
        seed=args.pretrain_seed,
    )
    start = time.perf_counter()
    trainer.fit(train, val, epochs=args.pretrain_epochs, batch_size=32)
    seconds = time.perf_counter() - start
    return weights, {
        "train_images": len(train),
        "val_images": len(val),
        "epochs_run": trainer.epoch,
        "best_epoch": None if early.best_epoch is None else early.best_epoch + 1,
        "best_val_loss": early.best,
        "seconds": seconds,
        "trainer": trainer,
    }


def one_seed(seed: int, weights: Path, pool: ArrayDataset, test: ArrayDataset, args) -> dict:
    """Task B for one seed: (a) fine-tuned, (a0) frozen base, (b) from scratch."""
    labelled = pool.take(args.labelled, seed=seed, stratify=True)
    train, val = labelled.split(0.2, seed=seed, stratify=True)
    budget = args.head_epochs + args.full_epochs
    row: dict = {"seed": seed, "train": len(train), "val": len(val)}

    torch.manual_seed(seed)  # the new head's initial weights
    model = pretrained_model(MODEL, weights, 2)
    start = time.perf_counter()
    result = finetune(
        model,
        train,
        val,
        head_epochs=args.head_epochs,
        full_epochs=args.full_epochs,
        lr=args.lr,
        lr_factor=args.lr_factor,
        patience=args.patience,
        seed=seed,
        device=args.device,
    )
    row["pretrained"] = result.trainer.evaluate(test)["accuracy"]
    row["pretrained_epochs"] = [result.head_epochs_run, result.full_epochs_run]
    row["pretrained_seconds"] = time.perf_counter() - start

    torch.manual_seed(seed)
    model = pretrained_model(MODEL, weights, 2)
    frozen = finetune(
        model,
        train,
        val,
        head_epochs=budget,
        full_epochs=0,
        lr=args.lr,
        patience=args.patience,
        seed=seed,
        device=args.device,
    )
    row["frozen_base"] = frozen.trainer.evaluate(test)["accuracy"]

    torch.manual_seed(seed)
    model = create_model(MODEL, num_classes=2)
    early = EarlyStopping("val_loss", patience=args.patience, restore_best_weights=True)
    trainer = ClassifyTrainer(model, lr=args.lr, callbacks=[early], device=args.device, seed=seed)
    start = time.perf_counter()
    trainer.fit(train, val, epochs=budget, batch_size=32)
    row["scratch"] = trainer.evaluate(test)["accuracy"]
    row["scratch_epochs"] = trainer.epoch
    row["scratch_seconds"] = time.perf_counter() - start
    return row


def summary(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.2f} ± {100 * spread:.2f} %"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=5, help="task-B repetitions (default 5)")
    p.add_argument("--labelled", type=int, default=200, help="labelled task-B images (default 200)")
    p.add_argument("--pretrain-epochs", type=int, default=10, help="task-A maximum epochs (10)")
    p.add_argument("--pretrain-seed", type=int, default=0)
    p.add_argument("--head-epochs", type=int, default=10, help="phase 1 maximum (default 10)")
    p.add_argument("--full-epochs", type=int, default=20, help="phase 2 maximum (default 20)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam rate; phase 2 uses lr × lr-factor")
    p.add_argument("--lr-factor", type=float, default=0.1)
    p.add_argument("--patience", type=int, default=5, help="early-stopping patience (default 5)")
    p.add_argument("--task-a-weights", help="reuse this task-A model (task_a_best.safetensors)")
    p.add_argument("--threads", type=int, help="CPU threads (default: the cores others leave free)")
    p.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: best available)")
    p.add_argument("--out", default="runs/transfer-experiment", help="where results.json goes")
    args = p.parse_args(argv)
    args.device = pick_device(args.device)
    if args.device.type == "cpu":  # busy shared cores stall OpenMP threads (docs/performance.md)
        set_threads(args.threads or pick_num_threads())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    wall = time.perf_counter()

    train_all, test_all = load_fashion_mnist()
    task_a = [c for c in range(10) if c not in (SANDAL, SHIRT)]
    a_train, a_test = relabel(train_all, task_a), relabel(test_all, task_a)
    b_pool, b_test = relabel(train_all, [SANDAL, SHIRT]), relabel(test_all, [SANDAL, SHIRT])
    print(
        f"task A: {len(a_train)} training images, 8 classes; task B test: {len(b_test)} images",
        file=sys.stderr,
    )
    if args.task_a_weights:  # reuse an earlier run's task-A model (for variants of task B)
        weights = Path(args.task_a_weights)
        model = create_model(MODEL, num_classes=len(task_a), weights=str(weights))
        pre = {"reused": str(weights), "epochs_run": None, "seconds": 0.0}
        pre["trainer"] = ClassifyTrainer(model, device=args.device)
    else:
        weights, pre = pretrain(a_train, out, args)
    pre["test_accuracy"] = pre.pop("trainer").evaluate(a_test)["accuracy"]
    print(
        f"task A: test accuracy {pre['test_accuracy']:.4f} after {pre['epochs_run']} epochs "
        f"({pre['seconds']:.0f} s)",
        file=sys.stderr,
    )

    rows = []
    for seed in range(args.seeds):
        row = one_seed(seed, weights, b_pool, b_test, args)
        rows.append(row)
        print(
            f"seed {seed}: fine-tuned {row['pretrained']:.4f}  frozen base {row['frozen_base']:.4f}  "
            f"scratch {row['scratch']:.4f}",
            file=sys.stderr,
        )
    wall = time.perf_counter() - wall
    load_after = os.getloadavg()

    print(f"\n| task B, {args.labelled} labelled images, {args.seeds} seeds | test accuracy (mean ± std) |")
    print("|---|---|")
    print(f"| (a) pretrained base, fine-tuned | {summary([r['pretrained'] for r in rows])} |")
    print(f"| (a0) pretrained base, kept frozen | {summary([r['frozen_base'] for r in rows])} |")
    print(f"| (b) from scratch | {summary([r['scratch'] for r in rows])} |")
    per_seed = [
        f"{r['seed']}: " + " / ".join(f"{100 * r[k]:.2f}" for k in ("pretrained", "frozen_base", "scratch"))
        for r in rows
    ]
    print("\nper seed (a / a0 / b): " + "; ".join(per_seed))
    print(
        f"task A test accuracy {100 * pre['test_accuracy']:.2f} % ({pre['epochs_run']} epochs); "
        f"wall time {wall:.0f} s; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after; "
        f"torch threads {torch.get_num_threads()}"
    )
    results = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "settings": {k: (str(v) if k == "device" else v) for k, v in vars(args).items()},
        "task_a": pre,
        "seeds": rows,
        "mean": {k: statistics.mean(r[k] for r in rows) for k in ("pretrained", "frozen_base", "scratch")},
        "std": {
            k: statistics.stdev(r[k] for r in rows) if len(rows) > 1 else 0.0
            for k in ("pretrained", "frozen_base", "scratch")
        },
        "wall_seconds": wall,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "versions": versions(),
        "machine": machine_info(args.device),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
