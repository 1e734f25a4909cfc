"""Per-image IoU rewards, vectorised over the batch on the logits' device.

All counts come from one pass over the whole batch: a scatter into the per-image
confusion matrices ``conf[n, gt, pred]``, or (``class_counts``) per-class reductions. Nothing here moves data to the host or branches on tensor
values, so the reward can sit inside a CUDA graph / sync-free training step.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor


def confusion_per_image(pred: Tensor, gt: Tensor, num_classes: int,
                        ignore_index: int = 255) -> Tensor:
    """Confusion matrices ``(N, C, C)`` indexed ``[image, gt class, predicted class]``.

    ``pred`` and ``gt`` are integer maps of shape ``(N, H, W)`` (any trailing shape).
    Pixels whose label is ``ignore_index`` (or outside ``[0, C)``) are not counted;
    predictions must lie in ``[0, C)``.
    """
    if pred.shape != gt.shape:
        raise ValueError(f"pred shape {tuple(pred.shape)} != gt shape {tuple(gt.shape)}")
    n = pred.shape[0]
    c = int(num_classes)
    dump = n * c * c  # invalid pixels land in one extra bin that is dropped
    # The bin code is built in place in a narrow integer type: on a CPU the element-wise
    # passes over the full-resolution maps, not the bincount, dominate the cost. The CUDA
    # scatter needs int64 indices.
    dtype = torch.int64 if (pred.is_cuda or dump >= 2 ** 31 - 1) else torch.int32
    valid = (gt != ignore_index) & (gt < c)
    if gt.dtype != torch.uint8:
        valid &= gt >= 0
    code = gt.to(dtype, copy=True)
    code.mul_(c).add_(pred.to(dtype))
    image = torch.arange(n, device=pred.device, dtype=dtype) * (c * c)
    code.add_(image.view((n,) + (1,) * (pred.dim() - 1)))
    code.masked_fill_(~valid, dump)
    code = code.reshape(-1)
    if code.is_cuda:
        # bincount on CUDA reads min/max back to the host; a scatter does not.
        counts = torch.zeros(dump + 1, dtype=torch.long, device=code.device)
        counts.scatter_add_(0, code, torch.ones_like(code))
    else:
        counts = torch.bincount(code, minlength=dump + 1)
    return counts[:dump].view(n, c, c)


def class_counts(pred: Tensor, gt: Tensor, num_classes: int,
                 ignore_index: int = 255) -> Tuple[Tensor, Tensor, Tensor]:
    """Per-image ``(intersect, area_pred, area_gt)``, each ``(N, C)``, by reductions
    instead of a scatter: for every class, the number of valid pixels whose label, whose
    prediction, or both, equal it. No atomics (a scatter of millions of pixels into a few
    hundred bins serialises on the GPU's atomic units), no host sync; the ``(N, C, H*W)``
    boolean temporaries are its cost in memory."""
    if pred.shape != gt.shape:
        raise ValueError(f"pred shape {tuple(pred.shape)} != gt shape {tuple(gt.shape)}")
    n, c = pred.shape[0], int(num_classes)
    valid = (gt != ignore_index) & (gt < c)
    if gt.dtype != torch.uint8:
        valid &= gt >= 0
    small = torch.uint8 if c < 255 else torch.int32  # class c stands for "not counted"
    g = torch.where(valid, gt, c).to(small).reshape(n, 1, -1)
    p = torch.where(valid, pred, c).to(small).reshape(n, 1, -1)
    classes = torch.arange(c, device=pred.device, dtype=small).view(1, c, 1)
    area_gt = (g == classes).sum(dim=2)
    area_pred = (p == classes).sum(dim=2)
    hit = torch.where(g == p, g, torch.full_like(g, c))
    intersect = (hit == classes).sum(dim=2)
    return intersect, area_pred, area_gt


# How the per-image counts are computed on a GPU: "reduce" (class_counts) or "scatter"
# (confusion_per_image); chosen by bench/bench_reward.py's measurement on a GPU. On the
# CPU the bincount of confusion_per_image is the faster.
CUDA_COUNTS = "scatter"


def intersect_union(pred: Tensor, gt: Tensor, num_classes: int, ignore_index: int = 255,
                    method: Optional[str] = None) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-image ``(intersect, union, area_pred, area_gt)``, each ``(N, C)``.

    Same definitions as mmseg's ``IoUMetric.intersect_and_union``, for a batch at once.
    ``method``: ``"scatter"`` (confusion matrices) or ``"reduce"`` (``class_counts``);
    default: ``CUDA_COUNTS`` on a GPU, ``"scatter"`` elsewhere. Both give the same counts.
    """
    if method is None:
        method = CUDA_COUNTS if pred.is_cuda else "scatter"
    if method == "reduce":
        intersect, area_pred, area_gt = class_counts(pred, gt, num_classes, ignore_index)
    elif method == "scatter":
        conf = confusion_per_image(pred, gt, num_classes, ignore_index)
        intersect = torch.diagonal(conf, dim1=1, dim2=2)
        area_gt = conf.sum(dim=2)
        area_pred = conf.sum(dim=1)
    else:
        raise ValueError(f"method {method!r} is not one of scatter, reduce")
    union = area_pred + area_gt - intersect
    return intersect, union, area_pred, area_gt


def per_image_iou(pred: Tensor, gt: Tensor, num_classes: int,
                  ignore_index: int = 255) -> Tensor:
    """Per-image, per-class IoU ``(N, C)``; NaN where a class is in neither map."""
    intersect, union, _, _ = intersect_union(pred, gt, num_classes, ignore_index)
    return intersect.double() / union.double()  # 0/0 -> NaN, like IoUMetric


def per_image_miou(pred: Tensor, gt: Tensor, num_classes: int, ignore_index: int = 255,
                   class_weight: Optional[Tensor] = None,
                   empty_value: float = float("nan"), method: Optional[str] = None) -> Tensor:
    """Per-image mIoU ``(N,)`` as float32 on the input device.

    The mean runs over the classes present in the prediction or the ground truth
    (IoUMetric's ``nanmean`` rule). With ``class_weight`` it is the weighted mean over
    those classes. An image with no valid pixel at all gets ``empty_value``. ``method``:
    see ``intersect_union``.
    """
    intersect, union, _, _ = intersect_union(pred, gt, num_classes, ignore_index, method)
    present = union > 0
    iou = intersect.double() / union.clamp(min=1).double()
    if class_weight is None:
        weight = present.double()
    else:
        weight = present.double() * class_weight.to(device=iou.device, dtype=torch.double)
    total = weight.sum(dim=1)
    miou = (iou * weight).sum(dim=1) / total.clamp(min=torch.finfo(torch.double).tiny)
    empty = torch.full_like(miou, float(empty_value))
    return torch.where(total > 0, miou, empty).float()
