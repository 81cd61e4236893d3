"""Deployed inference of the course CNN: ONNX Runtime float and int8 against cnnkit's eager paths."""

from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnkit.tasks.classify.task import ClassifyTrainer
from measure import timed

from ._common import Context, _flops, _ratios, _row, _with_threads

BATCH = 256


def export_infer(ctx: Context) -> list[dict]:
    """The shipped course model (hongong_cnn) over the 10,000 test images, batch 256, one thread
    setting for all: exported by ``cnnkit export`` and run by ONNX Runtime in float32 and in
    static int8 (QDQ, calibrated on 2,000 training images), against cnnkit eager float32, bf16
    (where the CPU has it natively) and the old eager int8 (``torch.ao.quantization``), and a
    plain ``model(x)`` loop. Each row has its test accuracy and its agreement with float32
    PyTorch; export and quantization times are reported apart."""
    from cnnkit.export import export_onnx, resolve_source
    from cnnkit.export.int8 import export_onnx_int8
    from cnnkit.runtime import OnnxModel
    from cnnkit.tasks.classify.quantize import quantize_int8

    fl = _flops("hongong_cnn")
    test = ctx.test if not ctx.quick else ctx.test.subset(slice(0, 2_000))
    threads = ctx.perf.num_threads or torch.get_num_threads()
    source = resolve_source("fashion", limit=200)  # parity on 200 images; the rows score all
    model = source.model
    images = test.images.numpy()
    labels = test.labels.numpy()
    rows: list[dict] = []
    reference: np.ndarray | None = None

    def add(label: str, run: Any, **extra: Any) -> None:
        nonlocal reference
        pred = run().argmax(1)
        t = timed(run, repeats=3, warmup=0)
        if reference is None:
            reference = pred
        rows.append(
            _row(
                f"export_infer[{label}]",
                len(images),
                t["best"],
                fl["forward"],
                ctx,
                median_s=round(t["median"], 3),
                batch_size=BATCH,
                threads=threads,
                load=t["load"],
                same_predictions_as_fp32=float((pred == reference).mean()),
                test_accuracy=round(float((pred == labels).mean()), 4),
                **extra,
                **_ratios(ctx, "infer", len(images) / t["best"]),
            )
        )

    with _with_threads(threads), tempfile.TemporaryDirectory(prefix="cnnkit-bench-") as work:

        def plain() -> np.ndarray:
            out = []
            with torch.inference_mode():
                for i in range(0, len(images), BATCH):
                    out.append(model(torch.from_numpy(images[i : i + BATCH]).float().div_(255)))
            return torch.cat(out).numpy()

        add("plain_pytorch_fp32", plain)
        for label, amp in (("cnnkit_fp32", None), ("cnnkit_bf16", "bf16")):
            if amp == "bf16" and ctx.device.type == "cpu" and ctx.perf.amp is None:
                rows.append({"case": f"export_infer[{label}]", "skipped": "no native bf16 on this CPU"})
                continue
            trainer = ClassifyTrainer(
                copy.deepcopy(model), device=ctx.device, amp=amp, channels_last=True, optimizer=None
            )
            add(label, lambda trainer=trainer: trainer.logits(test, BATCH).float().numpy(), amp=amp)
        if ctx.device.type == "cpu":
            start = time.perf_counter()
            net = quantize_int8(model, ctx.train.subset(slice(0, 2_000)).images.float().div(255))
            old = ClassifyTrainer(net, device=ctx.device, optimizer=None)
            add(
                "eager_int8_deprecated",
                lambda: old.logits(test, BATCH).float().numpy(),
                quantize_s=round(time.perf_counter() - start, 2),
                engine=net.engine,
            )
        for label, write in (("ort_fp32", export_onnx), ("ort_int8", export_onnx_int8)):
            path = Path(work) / f"{label}.onnx"
            start = time.perf_counter()
            write(source, path, threads=threads)
            export_s = round(time.perf_counter() - start, 2)
            for spin in (True, False):  # ONNX Runtime's spinning workers suffer most on a busy machine
                session = OnnxModel(path, threads=threads, spin_wait=spin)

                def run(session: OnnxModel = session) -> np.ndarray:
                    out = []
                    for i in range(0, len(images), BATCH):
                        batch = images[i : i + BATCH].astype(np.float32) * np.float32(1 / 255)
                        out.append(session.run(batch)[0])
                    return np.concatenate(out)

                kb = round(path.stat().st_size / 1024, 1)
                name = label if spin else f"{label}_no_spin"
                add(name, run, export_s=export_s, file_kb=kb, spin_wait=spin)
    return rows
