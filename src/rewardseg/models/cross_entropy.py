"""Cross-entropy with class weights that survives ignored pixels
(:class:`MaskedCrossEntropyLoss`, what ``loss: ce`` with ``class_weight`` uses) and the
class-weight reader it shares with ``RewardLoss`` (:func:`load_class_weight`)."""
from __future__ import annotations

import json
import os
from typing import Optional

import numpy as np
import torch.nn.functional as F
from mmseg.models.losses import CrossEntropyLoss
from mmseg.models.losses.utils import weight_reduce_loss
from mmseg.registry import MODELS
from torch import Tensor


def load_class_weight(class_weight) -> Optional[list]:
    """A list of floats from a list, a ``.npy`` file, or a JSON file.

    The JSON may be a plain list or the object written by ``rewardseg class-weights``
    (its ``weights`` key).
    """
    if class_weight is None:
        return None
    if isinstance(class_weight, (str, os.PathLike)):
        path = os.fspath(class_weight)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"class_weight file {path!r} does not exist")
        if path.endswith(".npy"):
            values = np.load(path).tolist()
        else:
            with open(path) as fh:
                values = json.load(fh)
            if isinstance(values, dict):
                if "weights" not in values:
                    raise ValueError(f"class_weight file {path!r}: expected a list or an "
                                     "object with a 'weights' key")
                values = values["weights"]
    else:
        values = list(class_weight)
    try:
        values = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(f"class_weight: expected a list of numbers, got {class_weight!r}")
    return values


def masked_cross_entropy(pred: Tensor, label: Tensor, weight: Optional[Tensor] = None,
                         class_weight: Optional[Tensor] = None, reduction: str = "mean",
                         avg_factor=None, ignore_index: int = -100,
                         avg_non_ignore: bool = False) -> Tensor:
    """mmseg 1.2.2's ``cross_entropy`` (same signature, same value), except that with
    ``class_weight`` the pixels labelled ``ignore_index`` are masked out *before* the
    per-pixel weights are looked up.

    mmseg averages a class-weighted CE over ``sum_pixels class_weight[label]``, and looks
    that weight up with the raw label, ignore value included: a batch with a 255 pixel
    fails with ``IndexError: index 255 is out of bounds`` (a device assert on CUDA). Here
    an ignored pixel weighs 0 in that sum (it has no class), with or without
    ``avg_non_ignore``: on labels without ignored pixels the value is mmseg's, and with
    them it is PyTorch's ``F.cross_entropy(weight=..., ignore_index=...)`` (the weighted
    mean over the valid pixels). Without ``class_weight`` it is mmseg's function."""
    loss = F.cross_entropy(pred, label, weight=class_weight, reduction="none",
                           ignore_index=ignore_index)
    if avg_factor is None and reduction == "mean":
        if class_weight is None:
            if avg_non_ignore:
                avg_factor = label.numel() - (label == ignore_index).sum().item()
            else:
                avg_factor = label.numel()
        else:
            ignored = label == ignore_index
            label_weights = class_weight[label.masked_fill(ignored, 0)]
            avg_factor = label_weights.masked_fill(ignored, 0).sum()
    if weight is not None:
        weight = weight.float()
    return weight_reduce_loss(loss, weight=weight, reduction=reduction, avg_factor=avg_factor)


@MODELS.register_module()
class MaskedCrossEntropyLoss(CrossEntropyLoss):
    """mmseg's ``CrossEntropyLoss`` (same arguments, same ``loss_ce`` name) whose softmax
    CE masks ignored pixels before weighting them by class (:func:`masked_cross_entropy`):
    what ``loss: ce`` with class weights uses, since mmseg 1.2.2's own fails on the first
    batch that has an ignored pixel. ``class_weight`` also takes what
    :func:`load_class_weight` reads (a ``rewardseg class-weights`` JSON)."""

    def __init__(self, class_weight=None, **kwargs):
        if isinstance(class_weight, (str, os.PathLike)) and \
                not os.fspath(class_weight).endswith(".npy"):
            class_weight = load_class_weight(class_weight)
        super().__init__(class_weight=class_weight, **kwargs)
        if not (self.use_sigmoid or self.use_mask):
            self.cls_criterion = masked_cross_entropy
