"""Pack a `cnnkit train` run folder into the Fashion-MNIST model shipped for `cnnkit predict fashion`.

    cnnkit train --model hongong_cnn --data fashion-mnist --out runs/fashion-asset
    python docs/figures/pretrained/make_fashion_asset.py runs/fashion-asset "cnnkit train ..."

Writes src/cnnkit/assets/fashion_hongong_cnn.safetensors (the run's best weights, with class
names, input shape, normalisation and the photo conversion in the safetensors metadata) and
fashion_hongong_cnn.json next to it (the command, the run's config and its test metrics).
The weights are re-checked: the packed model must give the run's test accuracy again.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from cnnkit import create_model
from cnnkit.data.fashion_mnist import load_split
from cnnkit.io.weights import metadata_json, read_weights, save_weights

ASSETS = Path(__file__).resolve().parents[3] / "src" / "cnnkit" / "assets"
NAME = "fashion_hongong_cnn"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("command", help="the exact `cnnkit train` command that made the run")
    args = parser.parse_args()
    record = json.loads((args.run_dir / "config.json").read_text())
    metrics = json.loads((args.run_dir / "metrics.json").read_text())
    run = record["run"]
    if run["model"] != "hongong_cnn" or run["data"] != "fashion-mnist" or run["model_kwargs"]:
        raise SystemExit(f"{args.run_dir} is not a plain hongong_cnn run on fashion-mnist: {run}")
    if record["normalize"] is not None:
        raise SystemExit(f"expected pixels / 255 without mean/std, got normalize={record['normalize']}")
    state, _ = read_weights(args.run_dir / "best.safetensors")
    meta = metadata_json(
        model="hongong_cnn",
        class_names=record["class_names"],
        input_shape=record["input_shape"],
        normalize=record["normalize"],
        preprocess={"fashion_mnist": True, "resize": "pad"},
        test_accuracy=metrics["test_accuracy"],
        command=args.command,
    )
    ASSETS.mkdir(parents=True, exist_ok=True)
    weights = ASSETS / f"{NAME}.safetensors"
    save_weights(state, weights, metadata=meta)

    model = create_model("hongong_cnn", weights=str(weights)).eval()
    test = load_split(None, "test")
    with torch.no_grad():
        correct = sum(
            int((model(test.images[i : i + 1000].float() / 255).argmax(1) == test.labels[i : i + 1000]).sum())
            for i in range(0, len(test), 1000)
        )
    accuracy = correct / len(test)
    if abs(accuracy - metrics["test_accuracy"]) > 2e-4:  # batch-size rounding may flip one image
        raise SystemExit(f"packed weights give {accuracy}, the run reported {metrics['test_accuracy']}")
    card = {
        "model": "hongong_cnn",
        "data": "Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017): 60,000 training, 10,000 test images",
        "command": args.command,
        "test_accuracy": accuracy,
        "test_loss": metrics["test_loss"],
        "macro_f1": metrics["macro_f1"],
        "epochs_run": metrics["epochs_run"],
        "best_epoch": metrics["best_epoch"],
        "train_seconds": metrics["train_seconds"],
        "run": run,
        "versions": record.get("versions"),
        "machine": record.get("machine"),
        "file_bytes": weights.stat().st_size,
    }
    (ASSETS / f"{NAME}.json").write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    print(f"{weights} ({weights.stat().st_size:,} bytes): test accuracy {accuracy:.4f}")


if __name__ == "__main__":
    main()
