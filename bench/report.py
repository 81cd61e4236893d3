"""Render a bench/results/*.json file as Markdown: `python bench/report.py [--summary] RESULT.json`.

``--summary`` prints the one table docs/performance.md shows: each headline case beside the
plain PyTorch loop and the course's Keras code of the same run, with the ratio and the fraction
of the measured FP32 peak. Without it, every row of the run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _fmt(value: object, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.{digits}g}"
    if isinstance(value, list):
        return " → ".join(_fmt(v) for v in value)
    return str(value)


def render(result: dict) -> str:
    m = result["machine"]
    peak = result["peak_gflop_s"]
    cpu = m.get("cpu_id") or {}
    cpu_text = ""
    if cpu.get("family"):
        cpu_text = f"{cpu.get('name', 'CPU')} (family {cpu['family']}, model {cpu['model']}), "
    probes = ""
    if "probes" in peak:  # since the 1×1-conv probe: what each probe gave, best thread count
        by_threads = list(peak["by_threads"].values())
        best = {k: max(p[k] for p in by_threads) for k in by_threads[0]}
        probes = f" (matmul {best['fp32_matmul']:.0f} / 1×1 conv {best['fp32_conv1x1']:.0f} FP32"
        if "bf16_matmul" in best:
            probes += f", {best['bf16_matmul']:.0f} / {best['bf16_conv1x1']:.0f} BF16"
        probes += ")"
    lines = [
        f"Run {result['date']}: `{result['command']}`; torch {m['torch']}, {m['device']}, "
        f"{cpu_text}{m['cores']} cores, "
        f"load {m['load_at_start']} at start, {m['load_at_end']} at end. Measured peak: FP32 "
        f"{peak['fp32']} GFLOP/s, "
        + (f"BF16 {peak['bf16']} GFLOP/s" if peak.get("bf16") else "BF16 not native (not probed)")
        + f"{probes}. "
        f"Fast-path settings: {result['perf_settings']}.",
        "",
        "| case | img/s | s/epoch | GFLOP/img | GFLOP/s | of FP32 peak | × plain (default threads) "
        "| × plain (same threads) | threads | load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    extra = []
    for row in result["rows"]:
        case = row["case"]
        if "skipped" in row:
            extra.append(f"- {case}: skipped ({row['skipped']})")
        elif case.startswith("time_to_accuracy"):
            curve = ", ".join(
                f"{p['epoch']}: {p['test_accuracy']:.4f} @ {p['wall_s']} s" for p in row["curve"]
            )
            extra.append(
                f"- {case} ({row['model']}, {row['epochs']} epochs): 92 % at {_fmt(row['wall_to_92'])} s, "
                f"94 % at {_fmt(row['wall_to_94'])} s, final {row['final_test_accuracy']:.4f}. "
                f"Per epoch (test accuracy with flip TTA @ wall s): {curve}"
            )
        elif case.startswith(("best_recipe", "recipe_5min")):
            curve = ", ".join(
                f"{p['epoch']}: {p['test_accuracy']:.4f} @ {p['wall_s']} s" for p in row["curve"]
            )
            extra.append(
                f"- {case} ({row['model']} {row['model_kwargs']}, {row['train_images']} training images, "
                f"{row['epochs']} epochs fitted to {row['budget_s']:.0f} s): final "
                f"{row['final_test_accuracy']:.4f}, best {row['best_test_accuracy']:.4f} at "
                f"{row['wall_s']} s; 94 % at {_fmt(row.get('wall_to_94'))} s, 95 % at "
                f"{_fmt(row.get('wall_to_95'))} s. Per epoch: {curve}"
            )
        elif case.startswith("profile"):
            ops = ", ".join(f"`{op['op']}` {op['share']:.0%}" for op in row["top_ops"][:8])
            extra.append(f"- {case}: {row['total_cpu_ms']:.0f} ms CPU; {ops}")
        else:
            lines.append(
                f"| {case} | {_fmt(row.get('img_per_s'))} | {_fmt(row.get('s_per_epoch'))} "
                f"| {_fmt(row.get('gflop_per_img'), 4)} | {_fmt(row.get('gflop_per_s'))} "
                f"| {_fmt(row.get('frac_fp32_peak'))} | {_fmt(row.get('x_ref_default'))} "
                f"| {_fmt(row.get('x_ref_same_threads'))} | {_fmt(row.get('threads'))} "
                f"| {_fmt(row.get('load'))} |"
            )
    return "\n".join(lines + [""] + extra) + "\n"


# (what the row measures, the case in the run, the plain loop it is compared with)
SUMMARY = [
    ("course CNN training, `cnnkit train` defaults (batch 32)", "course_train[course_bs32]", "train"),
    ("course CNN training, `--precision fp32`", "course_train[course_bs32_fp32_nchw]", "train"),
    ("course CNN training, the fast path (batch 256)", "course_train[fast_bs256]", "train"),
    ("course CNN inference, `cnnkit evaluate` default, one pass", "course_infer[default]", "infer"),
    ("course CNN inference, default in a long job", "course_infer[default_long]", "infer"),
    ("course CNN inference, eager bf16", "course_infer[bf16_cl_b256]", "infer"),
    ("course CNN inference, `--int8` (opt-in)", "course_infer[int8_b256]", "infer"),
]


def _best(rows: list[dict], prefix: str) -> dict | None:
    found = [r for r in rows if r["case"].startswith(prefix) and r.get("img_per_s")]
    return max(found, key=lambda r: r["img_per_s"]) if found else None


def summary(result: dict) -> str:
    """The headline table: cnnkit, plain PyTorch and Keras side by side, from one run."""
    rows = result["rows"]
    by_case = {r["case"]: r for r in rows}
    lines = [
        "| case | cnnkit img/s | plain PyTorch img/s | course Keras img/s | × plain | of FP32 peak |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, case, kind in SUMMARY:
        row = by_case.get(case)
        if row is None or not row.get("img_per_s"):
            continue
        plain = _best(rows, f"ref_{kind}[default")
        keras = _best(rows, f"keras_{kind}[") if case.endswith(("[course_bs32]", "[default]")) else None
        lines.append(
            f"| {label} | {_fmt(row['img_per_s'])} | {_fmt(plain and plain['img_per_s'])} "
            f"| {_fmt(keras and keras['img_per_s'])} | {_fmt(row.get('x_ref_default'))} "
            f"| {_fmt(row.get('frac_fp32_peak'))} |"
        )
    folder, plain_folder = by_case.get("imagefolder_train[cnnkit]"), by_case.get("imagefolder_train[plain]")
    if folder and plain_folder:
        lines.append(
            f"| ResNet-18 on a folder of 96-px PNGs (vs `ImageFolder` + `DataLoader`) "
            f"| {_fmt(folder['img_per_s'])} | {_fmt(plain_folder['img_per_s'])} | – "
            f"| {_fmt(folder.get('x_plain'))} | {_fmt(folder.get('frac_fp32_peak'))} |"
        )
    extra = []
    contention = [r for r in rows if r["case"].startswith("contention[")]
    if contention:
        extra += ["", "| under contention (epoch time ÷ idle epoch) | one competitor, worst | "
                  "after it left | three competitors, worst |", "|---|---:|---:|---:|"]  # fmt: skip
        for r in contention:
            extra.append(
                f"| {r['case']} (idle {r['idle_s']} s/epoch) | {r['worst_x_one']} "
                f"| {r['x_after_one_left']} | {r['worst_x_three']} |"
            )
    for r in rows:
        if r["case"].startswith("time_to_accuracy"):
            extra.append(
                f"\nTime to accuracy ({r['case']}, `{r.get('command', '')}`): 92 % at "
                f"{_fmt(r['wall_to_92'])} s, 94 % at {_fmt(r['wall_to_94'])} s from the process start, "
                f"final {r['final_test_accuracy']:.4f} after {r['epochs']} epochs."
            )
            cli = r.get("cli") or {}
            if cli.get("exit_s") is not None:
                extra.append(
                    f"The command itself in a new process: last epoch ended at "
                    f"{_fmt(cli.get('last_epoch_end_s'))} s, test accuracy {cli.get('test_accuracy')} "
                    f"printed at {_fmt(cli.get('test_accuracy_printed_s'))} s (after its curves, test "
                    f"scores and report.html), exit at {cli['exit_s']} s."
                )
        if r["case"] == "imagefolder_train[cnnkit]" and plain_folder:
            extra.append(
                f"\nImage folder, held-out accuracy {r['target_accuracy']:.0%} reached at "
                f"{_fmt(r['wall_to_target'])} s (cnnkit) and {_fmt(plain_folder['wall_to_target'])} s "
                "(plain), pipeline start to the end of that epoch's evaluation."
            )
    return "\n".join(lines + extra) + "\n"


def main(argv: list[str]) -> int:
    flags = [a for a in argv if a.startswith("--")]
    files = [a for a in argv if not a.startswith("--")]
    if len(files) != 1 or set(flags) - {"--summary"}:
        print(__doc__, file=sys.stderr)
        return 2
    result = json.loads(Path(files[0]).read_text(encoding="utf-8"))
    print(summary(result) if "--summary" in flags else render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
