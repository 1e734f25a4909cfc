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


def _label_histogram(gt: Tensor, index: Tensor, c: int, hw: int, ignore_index: int,
                     device: torch.device) -> Tensor:
    """``m[b, k, j]`` ``(B, C, hw)``, float64: the valid label pixels of class ``k`` that
    are copied from pred pixel ``j`` (``index``: the pred pixel of each label pixel)."""
    bsz = gt.shape[0]
    gt_flat = gt.reshape(bsz, -1).long()
    valid = (gt_flat != ignore_index) & (gt_flat >= 0) & (gt_flat < c)
    image = torch.arange(bsz, device=device)[:, None]
    code = (image * c + gt_flat.clamp(0, c - 1)) * hw + index[None]
    size = bsz * c * hw
    code = torch.where(valid, code, torch.full_like(code, size)).reshape(-1)
    m = torch.zeros(size + 1, dtype=torch.float64, device=device)
    m.scatter_add_(0, code, torch.ones((1,), dtype=torch.float64,
                                       device=device).expand_as(code))
    return m[:size].view(bsz, c, hw)


def local_reward_changes(pred: Tensor, gt: Tensor, num_classes: int,
                         ignore_index: int = 255, index: Optional[Tensor] = None,
                         class_weight: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """How the per-image mIoU changes when one pixel of a label map changes class.

    ``pred``: a sampled map ``(B, h, w)`` at its own resolution; ``gt``: the labels
    ``(B, H, W)``; ``index``: for each label pixel (flattened ``H*W``), the ``pred`` pixel
    whose class it takes (nearest upsampling; None: the same size). Returns
    ``(delta, reward)``: ``delta[b, c, j] = R(y with y_j := c) - R(y)`` as ``(B, C, h, w)``
    and ``reward = R(y)`` ``(B,)``, both float64 (NaN reward: no valid pixel; its deltas
    are 0). ``R`` is ``per_image_miou`` (class-weighted with ``class_weight``).

    mIoU depends on a map only through its confusion counts, and changing pixel ``j``
    from ``a = y_j`` to ``c`` moves the counts of the label pixels copied from it, by
    their ground truth, from column ``a`` to column ``c``: only classes ``a`` and ``c``
    change their intersection and union. So every ``R_j(c)`` comes from the image's
    counts and the per-pixel label histogram ``m[b, k, j]`` (how many valid label pixels
    of class ``k`` pixel ``j`` is copied to) in a few element-wise passes over
    ``(B, C, h*w)``: no loop over pixels, no host sync. Float64: a change is about one
    pixel's share of an image, which float32 cancellation would lose.
    """
    bsz, c = pred.shape[0], int(num_classes)
    hw = pred.shape[-2] * pred.shape[-1]
    flat = pred.reshape(bsz, hw).long()
    if index is None:
        if pred.shape[-2:] != gt.shape[-2:]:
            raise ValueError(f"pred {tuple(pred.shape)} and gt {tuple(gt.shape)} differ in "
                             "size and no index maps one onto the other")
        index = torch.arange(hw, device=pred.device)

    m = _label_histogram(gt, index, c, hw, ignore_index, pred.device)
    moved = m.sum(dim=1)  # (B, hw): label pixels that change with pixel j
    # the image's confusion counts [b, gt class, predicted class] follow from m and y
    conf = torch.zeros((bsz, c, c), dtype=torch.float64, device=pred.device)
    conf.scatter_add_(2, flat[:, None, :].expand(bsz, c, hw), m)
    inter = torch.diagonal(conf, dim1=1, dim2=2)
    area_pred = conf.sum(dim=1)
    area_gt = conf.sum(dim=2)

    weight = (torch.ones(c, dtype=torch.float64, device=pred.device) if class_weight is None
              else class_weight.to(device=pred.device, dtype=torch.float64))

    def iou(i, u):  # a present class's IoU, 0 for an absent one
        return torch.where(u > 0, i / u.clamp(min=1), torch.zeros_like(i))

    union = area_pred + area_gt - inter
    num = (weight * iou(inter, union)).sum(dim=1)  # (B,)
    den = (weight * (union > 0).double()).sum(dim=1)

    # class a = y_j loses the pixel's copies: gathered per pixel, (B, hw)
    i_a, p_a, g_a = (t.gather(1, flat) for t in (inter, area_pred, area_gt))
    w_a = weight[flat]
    m_a = m.gather(1, flat[:, None]).squeeze(1)
    u_a = p_a + g_a - i_a
    u_a2 = u_a - moved + m_a  # P - M + G - (I - m_a)
    d_num = (w_a * (iou(i_a - m_a, u_a2) - iou(i_a, u_a)))[:, None]
    d_den = (w_a * ((u_a2 > 0).double() - (u_a > 0).double()))[:, None]
    # class c gains them: (B, C, hw)
    i_c, u_c = inter[:, :, None], union[:, :, None]
    u_c2 = u_c + moved[:, None] - m
    w_c = weight[None, :, None]
    d_num = d_num + w_c * (iou(i_c + m, u_c2) - iou(i_c, u_c))
    d_den = d_den + w_c * ((u_c2 > 0).double() - (u_c > 0).double())

    n0, d0 = num[:, None, None], den[:, None, None]
    new_den = d0 + d_den
    ok = (d0 > 0) & (new_den > 0)
    delta = (d_num * d0 - n0 * d_den) / torch.where(ok, d0 * new_den, torch.ones_like(d0))
    same = torch.arange(c, device=pred.device)[None, :, None] == flat[:, None]
    delta = torch.where(ok & ~same, delta, torch.zeros_like(delta))
    reward = torch.where(den > 0, num / den.clamp(min=torch.finfo(torch.float64).tiny),
                         torch.full_like(num, float("nan")))
    return delta.view(bsz, c, *pred.shape[-2:]), reward
