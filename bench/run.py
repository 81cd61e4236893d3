"""cnnkit benchmark suite: `python bench/run.py [--cases ...] [--quick]`.

Prints a table and writes bench/results/<date-time>.json. Never part of the tests. The cases
run in this one process; the plain PyTorch reference loop runs in a fresh process at the start
and again at the end of the same invocation (a plain script's conditions, glibc's default
malloc included), and every ratio is to the faster of the two. The load average is recorded
with every figure.
"""

from __future__ import annotations

import time

T0 = time.perf_counter()  # time to accuracy counts from here, imports included

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cases import CASES, DEFAULT_CASES, Context, _ratios  # noqa: E402
from cnnkit.data import load_fashion_mnist  # noqa: E402
from cnnkit.engine.device import pick_device  # noqa: E402
from cnnkit.engine.perf import pick_num_threads, pick_perf_settings  # noqa: E402
from measure import cpu_identity, load, peak_probe  # noqa: E402

COLUMNS = [
    ("case", 34),
    ("img_per_s", 10),
    ("s_per_epoch", 11),
    ("gflop_per_s", 11),
    ("frac_fp32_peak", 9),
    ("x_ref_default", 9),
    ("x_ref_same_threads", 9),
    ("load", 14),
]


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return "/".join(f"{v:.1f}" for v in value[:1] + value[-1:])
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 10 else f"{value:,.0f}"
    return str(value)


def print_table(rows: list[dict]) -> None:
    print(" ".join(name.rjust(width) if i else name.ljust(width) for i, (name, width) in enumerate(COLUMNS)))
    for row in rows:
        if "skipped" in row:
            print(f"{row['case']:<34} skipped: {row['skipped']}")
            continue
        if row["case"].startswith("profile"):
            ops = ", ".join(f"{op['op']} {op['share']:.0%}" for op in row["top_ops"][:6])
            print(f"{row['case']:<34} {row['total_cpu_ms']:.0f} ms CPU: {ops}")
            continue
        if row["case"].startswith("allreduce"):
            print(
                f"{row['case']:<34} {row['megabytes']} MB: all-reduce {row['allreduce_s_best']} s best, "
                f"{row['allreduce_s_median']} s median ({row['gbit_per_s']} Gbit/s); one step of "
                f"batch 32 on 1 thread {row['step_s_batch32_1thread']} s"
            )
            continue
        if row["case"].startswith(("best_recipe", "recipe_5min")):
            print(
                f"{row['case']:<34} {row['epochs']} epochs in {row['wall_s']} s: final "
                f"{row['final_test_accuracy']:.4f}, best {row['best_test_accuracy']:.4f}; "
                f"94 %: {row['wall_to_94']} s, 95 %: {row['wall_to_95']} s"
            )
            continue
        if row["case"].startswith("studio"):
            print(
                f"{row['case']:<34} {row['ms_best']} ms best, {row['ms_median']} ms median, "
                f"{row['ms_p90']} ms p90 of {row['repeats']}; page {row['page_bytes']:,} bytes; "
                f"load {row['load'][0]}"
            )
            continue
        if row["case"].startswith("imagefolder_train"):
            print(
                f"{row['case']:<34} {row['img_per_s']:,.1f} img/s training ({row['frac_fp32_peak']} of "
                f"FP32 peak), held-out {row['heldout_accuracy']}, {row['target_accuracy']:.0%}: "
                f"{row['wall_to_target']} s; x plain {row.get('x_plain', '-')}"
            )
            continue
        if row["case"].startswith("contention"):
            print(
                f"{row['case']:<34} idle {row['idle_s']} s/epoch; x idle: one {row['worst_x_one']}, "
                f"after it left {row['x_after_one_left']}, three {row['worst_x_three']}; "
                + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in row["bounds"].items())
            )
            continue
        if row["case"].startswith("time_to_accuracy"):
            print(
                f"{row['case']:<34} 92 %: {row['wall_to_92']} s, 94 %: {row['wall_to_94']} s, "
                f"final {row['final_test_accuracy']:.4f} after {row['epochs']} epochs"
            )
            continue
        cells = [_cell(row.get(name)) for name, _ in COLUMNS]
        print(" ".join(c.rjust(w) if i else c.ljust(w) for i, (c, (_, w)) in enumerate(zip(cells, COLUMNS))))


def _set_peak(ctx: Context, peaks: dict[int, dict[str, float]]) -> None:
    ctx.peak_fp32 = max(p["fp32"] for p in peaks.values())
    ctx.peak_bf16 = max(p.get("bf16", 0.0) for p in peaks.values())  # 0: no native bf16, not probed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cases", nargs="+", choices=sorted(CASES), help=f"default: {' '.join(DEFAULT_CASES)}"
    )
    parser.add_argument("--quick", action="store_true", help="smaller parts of each case (a smoke run)")
    parser.add_argument("--device", help="cpu, cuda, mps (default: best available)")
    parser.add_argument("--threads", type=int, help="fast-path CPU threads (default: the free cores)")
    parser.add_argument("--out", help="JSON file (default bench/results/<date-time>.json)")
    args = parser.parse_args(argv)
    cases = args.cases or DEFAULT_CASES
    if "reference" not in cases and any(
        c in cases for c in ("course_train", "course_infer", "compile", "export_infer", "keras_course")
    ):
        cases = ["reference", *cases]  # ratios need the reference loop of the same run

    start_load = load()
    threads = args.threads or pick_num_threads()
    device = pick_device(args.device)
    perf = pick_perf_settings(device, num_threads=threads)
    train_all, test = load_fashion_mnist()
    train, val = train_all.split(0.2, seed=42)
    startup_s = time.perf_counter() - T0  # imports + data loading, counted in time to accuracy
    ctx = Context(
        train=train,
        val=val,
        test=test,
        device=device,
        perf=perf,
        quick=args.quick,
        default_threads=torch.get_num_threads(),
        t0=T0,
    )
    # Measured peak: the best of all thread counts and both probes, so the fraction is of what
    # the machine can do.
    peaks = {}
    for n in sorted({1, torch.get_num_threads()}):
        torch.set_num_threads(n)
        peaks[n] = peak_probe()
    torch.set_num_threads(ctx.default_threads)
    _set_peak(ctx, peaks)
    print(
        f"device {device}, fast-path threads {threads} of {ctx.default_threads}, perf {perf.to_dict()}, "
        f"load {start_load}"
    )
    print(
        f"measured peak (best of matmul and 1x1 conv): FP32 {ctx.peak_fp32:.0f} GFLOP/s, "
        + (f"BF16 {ctx.peak_bf16:.0f} GFLOP/s " if ctx.peak_bf16 else "BF16 not native (not probed) ")
        + f"(by threads: {json.dumps({k: {d: round(v) for d, v in p.items()} for k, p in peaks.items()})})"
    )

    rows: list[dict] = []
    for name in cases:
        if name in ("time_to_accuracy", "recipe_5min", "best_recipe"):
            continue  # last: it needs the most quiet time; its clock still starts at process start
        started = time.perf_counter()
        new = CASES[name](ctx)
        print_table(new)
        print(f"  ({name}: {time.perf_counter() - started:.0f} s)", flush=True)
        rows += new
    for name in ("time_to_accuracy", "recipe_5min", "best_recipe"):
        if name in cases:
            # As if it had run first: its clock starts at the process start (imports and data
            # loading included), but the other cases' time is not counted.
            ctx.t0 = time.perf_counter() - startup_s
            new = CASES[name](ctx)
            print_table(new)
            rows += new

    if "reference" in cases:
        # The plain loop again, and the faster of its two measurements for every ratio.
        new = CASES["reference"](ctx, when="end")
        print_table(new)
        rows += new
        for row in rows:
            if "ratio_of" in row:
                row.update(_ratios(ctx, row["ratio_of"], row["img_per_s"]))
    # Probe again at the end: on a shared machine the start may have been a busy moment, and the
    # fraction of peak should be of the best the machine showed during this run.
    for n in sorted(peaks):
        torch.set_num_threads(n)
        for key, value in peak_probe().items():
            peaks[n][key] = max(peaks[n][key], value)
    torch.set_num_threads(ctx.default_threads)
    old_peak = ctx.peak_fp32
    _set_peak(ctx, peaks)
    if ctx.peak_fp32 > old_peak:
        for row in rows:
            if row.get("gflop_per_s") is not None:
                row["frac_fp32_peak"] = round(row["gflop_per_s"] / ctx.peak_fp32, 3)
        print(f"peak re-measured at the end: FP32 {ctx.peak_fp32:.0f} GFLOP/s; fractions updated")
    if ctx.peak_fp32 > old_peak or "reference" in cases:
        print("all rows (ratios to the faster of the two plain-loop measurements):")
        print_table(rows)

    result = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": "python bench/run.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "quick": args.quick,
        "machine": {
            "platform": platform.platform(),
            "cpu": torch.cpu.get_capabilities().get("cpu_name")
            if hasattr(torch.cpu, "get_capabilities")
            else None,
            "cpu_id": cpu_identity(),
            "cores": os.cpu_count(),
            "torch": torch.__version__,
            "device": str(device),
            "load_at_start": start_load,
            "load_at_end": load(),
        },
        "peak_gflop_s": {
            "fp32": round(ctx.peak_fp32, 1),
            "bf16": round(ctx.peak_bf16, 1) if ctx.peak_bf16 else None,
            "by_threads": peaks,
            "probes": "best of torch.mm (2048^3) and a channels-last 1x1 conv (4096 x 1024 x 1024, oneDNN)",
        },
        "startup_seconds": round(startup_s, 2),
        "perf_settings": perf.to_dict(),
        "rows": rows,
    }
    out = (
        Path(args.out)
        if args.out
        else Path(__file__).resolve().parent
        / "results"
        / (time.strftime("%Y-%m-%d_%H%M%S") + (".quick" if args.quick else "") + ".json")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
