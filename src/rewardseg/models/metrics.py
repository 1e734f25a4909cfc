"""The evaluation metric of the studies (``val_evaluator = dict(type='PerClassIoUMetric',
iou_metrics=['mIoU'])`` in the mmseg configs)."""
from __future__ import annotations

from typing import Dict

import numpy as np
from mmseg.evaluation.metrics import IoUMetric
from mmseg.registry import METRICS


@METRICS.register_module()
class PerClassIoUMetric(IoUMetric):
    """IoUMetric that also returns every class's IoU (``IoU.<class>``, in %), and the mIoU
    unrounded: the mean over classes present in prediction or ground truth of
    ``100 · intersection / union`` from the summed confusion counts (mmseg rounds it to
    0.01, which turns differences between runs into rounding steps)."""

    def compute_metrics(self, results: list) -> Dict[str, float]:
        metrics = super().compute_metrics(results)
        results = tuple(zip(*results))
        intersect = sum(results[0]).double()
        union = sum(results[1]).double()
        iou = (intersect / union).numpy() * 100.0
        for name, value in zip(self.dataset_meta["classes"], iou):
            metrics[f"IoU.{name}"] = float(value) if np.isfinite(value) else float("nan")
        metrics["mIoU"] = float(np.nanmean(iou))
        return metrics
