"""`cnnkit evaluate RUN_DIR`: test-set accuracy, per-class precision/recall/F1, confusion matrix."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate a run folder on its test set", description=__doc__)
    p.add_argument("run_dir", help="a run folder written by `cnnkit train`")
    p.add_argument("--data", help="evaluate on this data instead of the run's own")
    p.add_argument("--limit-test", type=int, help="evaluate on only N test images")
    p.add_argument("--device", help="cpu, cuda, cuda:N or mps")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import UsageError
    from ..train.device import pick_device
    from ..train.presets import trainer_extras
    from ..train.run import load_dataset, load_run
    from ..train.trainer import Trainer

    if args.limit_test is not None and args.limit_test < 1:
        raise UsageError(f"--limit-test must be >= 1, got {args.limit_test}")
    model, record = load_run(args.run_dir, device=args.device)
    if isinstance(record.get("finetune"), dict) and not args.data:
        from ..train.transfer import finetune_test_data

        # A fine-tuned run may come from an image folder: rebuild its own seeded test split.
        test = finetune_test_data(args.run_dir)
        if args.limit_test:
            test = test.take(args.limit_test, seed=0)
    else:
        _, test = load_dataset(args.data or record["run"]["data"], limit_test=args.limit_test)
    norm = record.get("normalize")
    normalize = (norm["mean"], norm["std"]) if norm else None
    config = record["run"]
    # Evaluate as the run evaluated itself at the end of training: the preset's flip TTA and the
    # run's mixed precision (where autocast exists), so the numbers match its metrics.json.
    tta = bool(trainer_extras(config.get("preset") or "course", config.get("lr", 1e-3)).get("tta"))
    device = pick_device(args.device)
    amp = config.get("amp") if device.type in ("cpu", "cuda") else None
    cl = bool(config.get("channels_last"))
    trainer = Trainer(model, device=device, normalize=normalize, amp=amp, channels_last=cl, tta=tta)
    report = trainer.evaluate(test)
    report["tta"], report["amp"] = tta, amp
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return 0
    how = ", ".join(x for x in ("flip TTA" if tta else "", amp or "") if x)
    print(
        f"{config['model']} on {test.name}: accuracy {report['accuracy']:.4f}, "
        f"loss {report['loss']:.4f}, {report['num_samples']:,} images"
        + (f" ({how}, as in training)" if how else "")
    )
    width = max(len(n) for n in report["per_class"])
    print(f"{'class':<{width}}  precision  recall     f1  support")
    for name, row in report["per_class"].items():
        scores = f"{row['precision']:9.4f}  {row['recall']:6.4f}  {row['f1']:5.4f}"
        print(f"{name:<{width}}  {scores}  {row['support']:7d}")
    return 0
