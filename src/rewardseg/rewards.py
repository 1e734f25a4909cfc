"""Per-image IoU rewards, vectorised over the batch on the logits' device.

All counts come from one scatter over the whole batch: the per-image confusion matrix
``conf[n, gt, pred]``. Nothing here moves data to the host or branches on tensor
values, so the reward can sit inside a CUDA graph / sync-free training step.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor


# Pixels are spread over this many copies of the bins when counting on a GPU: with one
# copy, millions of atomic adds pile onto the few hundred (image, class, class) bins and
# serialise; with 32, pixel i adds to copy i % 32, neighbouring threads hit different
# addresses, and the copies are summed at the end (measured: bench/README.md).
CUDA_SLOTS = 32


def confusion_per_image(pred: Tensor, gt: Tensor, num_classes: int,
                        ignore_index: int = 255, slots: Optional[int] = None) -> Tensor:
    """Confusion matrices ``(N, C, C)`` indexed ``[image, gt class, predicted class]``.

    ``pred`` and ``gt`` are integer maps of shape ``(N, H, W)`` (any trailing shape).
    Pixels whose label is ``ignore_index`` (or outside ``[0, C)``) are not counted;
    predictions must lie in ``[0, C)``. ``slots``: copies of the bins the pixels are
    spread over (default ``CUDA_SLOTS`` on a GPU, 1 elsewhere); the result is the same.
    """
    if pred.shape != gt.shape:
        raise ValueError(f"pred shape {tuple(pred.shape)} != gt shape {tuple(gt.shape)}")
    n = pred.shape[0]
    c = int(num_classes)
    dump = n * c * c  # invalid pixels land in one extra bin that is dropped
    if slots is None:
        slots = CUDA_SLOTS if pred.is_cuda else 1
    slots = max(1, int(slots))
    # The bin code is built in place in a narrow integer type: on a CPU the element-wise
    # passes over the full-resolution maps, not the bincount, dominate the cost. The CUDA
    # scatter needs int64 indices.
    dtype = (torch.int64 if (pred.is_cuda or slots * (dump + 1) >= 2 ** 31 - 1)
             else torch.int32)
    valid = (gt != ignore_index) & (gt < c)
    if gt.dtype != torch.uint8:
        valid &= gt >= 0
    code = gt.to(dtype, copy=True)
    code.mul_(c).add_(pred.to(dtype))
    image = torch.arange(n, device=pred.device, dtype=dtype) * (c * c)
    code.add_(image.view((n,) + (1,) * (pred.dim() - 1)))
    code.masked_fill_(~valid, dump)
    code = code.reshape(n, -1)
    if slots > 1:
        pixel = torch.arange(code.shape[1], device=code.device, dtype=dtype)
        code.add_((pixel % slots).mul_(dump + 1))
    code = code.reshape(-1)
    size = slots * (dump + 1)
    if code.is_cuda:
        # bincount on CUDA reads min/max back to the host; a scatter does not.
        counts = torch.zeros(size, dtype=torch.long, device=code.device)
        counts.scatter_add_(0, code, torch.ones((1,), dtype=torch.long,
                                                device=code.device).expand_as(code))
    else:
        counts = torch.bincount(code, minlength=size)
    return counts.view(slots, dump + 1).sum(0)[:dump].view(n, c, c)


def intersect_union(pred: Tensor, gt: Tensor, num_classes: int, ignore_index: int = 255,
                    slots: Optional[int] = None) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-image ``(intersect, union, area_pred, area_gt)``, each ``(N, C)``.

    Same definitions as mmseg's ``IoUMetric.intersect_and_union``, for a batch at once.
    ``slots``: see ``confusion_per_image``.
    """
    conf = confusion_per_image(pred, gt, num_classes, ignore_index, slots)
    intersect = torch.diagonal(conf, dim1=1, dim2=2)
    area_gt = conf.sum(dim=2)
    area_pred = conf.sum(dim=1)
    union = area_pred + area_gt - intersect
    return intersect, union, area_pred, area_gt


def per_image_iou(pred: Tensor, gt: Tensor, num_classes: int,
                  ignore_index: int = 255) -> Tensor:
    """Per-image, per-class IoU ``(N, C)``; NaN where a class is in neither map."""
    intersect, union, _, _ = intersect_union(pred, gt, num_classes, ignore_index)
    return intersect.double() / union.double()  # 0/0 -> NaN, like IoUMetric


def per_image_miou(pred: Tensor, gt: Tensor, num_classes: int, ignore_index: int = 255,
                   class_weight: Optional[Tensor] = None,
                   empty_value: float = float("nan"), slots: Optional[int] = None) -> Tensor:
    """Per-image mIoU ``(N,)`` as float32 on the input device.

    The mean runs over the classes present in the prediction or the ground truth
    (IoUMetric's ``nanmean`` rule). With ``class_weight`` it is the weighted mean over
    those classes. An image with no valid pixel at all gets ``empty_value``. ``slots``:
    see ``confusion_per_image``.
    """
    intersect, union, _, _ = intersect_union(pred, gt, num_classes, ignore_index, slots)
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
