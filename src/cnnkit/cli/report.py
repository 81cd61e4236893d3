"""`cnnkit report RUN_DIR`: one self-contained HTML page about a run.

Config, test metrics, learning curves, confusion matrix, most confident mistakes, first-layer
filters, feature maps of one test image, the layer summary and the architecture diagram,
with every image embedded (no external files or URLs). `cnnkit train` writes the same page
as RUN_DIR/report.html when it finishes.
"""

from __future__ import annotations

import argparse

HELP = "write a run's self-contained HTML report"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder of any task, or 'fashion'")
    p.add_argument("--out", help="output file (default RUN_DIR/report.html)")
    p.add_argument("--index", type=int, default=0, help="test image whose feature maps are drawn (default 0)")
    p.add_argument("--device", help="cpu, cuda, cuda:N or mps")


def run(args: argparse.Namespace) -> int:
    from ..errors import UsageError
    from ..runs.evaluate import classify_data, classify_scorer
    from ..runs.folder import load_run, read_run
    from ..viz.report import REPORT_FILE, write_report

    run = read_run(args.run_dir)
    model, record = load_run(run, device=args.device)
    test = probs = None
    if run.task in ("classify", "finetune"):
        _, test = classify_data(run)
        if not 0 <= args.index < len(test):
            raise UsageError(
                f"--index must be in 0..{len(test) - 1} (the run's test images), got {args.index}"
            )
        # The run's own predictions (its precision and test-time augmentation), as metrics.json's.
        probs = classify_scorer(record, model, args.device).logits(test).softmax(1)
    out = args.out or run.output_dir / REPORT_FILE
    record = record if run.shipped else None
    path = write_report(run.path, model, test, out=out, sample_index=args.index, record=record, probs=probs)
    print(f"wrote {path}")
    return 0
