"""Detection metrics: COCO mean average precision through torchmetrics (pycocotools backend)."""

from __future__ import annotations

import torch
from torchmetrics.detection import MeanAveragePrecision

# torchmetrics key -> our name in metrics.json
_KEYS = {
    "map": "map",  # mAP@[.5:.95], COCO's primary number
    "map_50": "map_50",
    "map_75": "map_75",
    "mar_100": "mar_100",
}


def mean_average_precision(
    predictions: list[dict[str, torch.Tensor]],
    targets: list[dict[str, torch.Tensor]],
    class_metrics: bool = False,
) -> dict[str, float]:
    """COCO mAP of ``predictions`` against ``targets``.

    Args:
        predictions: per image ``{"boxes": Tensor[D, 4] xyxy, "scores": Tensor[D], "labels": Tensor[D]}``.
        targets: per image ``{"boxes": Tensor[K, 4] xyxy, "labels": Tensor[K]}``.
        class_metrics: also return ``ap_per_class`` (mAP@[.5:.95] of each class index).

    Returns:
        ``map`` (mAP@[.5:.95]), ``map_50``, ``map_75`` and ``mar_100`` (recall with 100 boxes).
    """
    # sync_on_compute=False: the lists given are the whole set. torchmetrics would otherwise
    # gather them again from every rank of a process group (each image counted once per rank).
    metric = MeanAveragePrecision(
        box_format="xyxy",
        iou_type="bbox",
        backend="pycocotools",
        class_metrics=class_metrics,
        sync_on_compute=False,
    )
    metric.update(
        [{k: v.detach().cpu() for k, v in p.items()} for p in predictions],
        [{k: v.detach().cpu() for k, v in t.items()} for t in targets],
    )
    result = metric.compute()
    out = {ours: float(result[key]) for key, ours in _KEYS.items()}
    if class_metrics:
        classes = result["classes"].reshape(-1).tolist()
        values = result["map_per_class"].reshape(-1).tolist()
        out["ap_per_class"] = {int(c): float(v) for c, v in zip(classes, values)}
    return out
