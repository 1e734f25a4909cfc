"""Decode heads that hand the reward losses their raw logits.

mmseg's ``BaseDecodeHead.loss_by_feat`` upsamples the logits to label size before any
loss sees them. :class:`RewardHeadMixin` keeps that path for ordinary losses (CE,
Lovasz, ...) and gives every :class:`~rewardseg.models.losses.RewardLoss` the head's
output as is, so it can sample at the head's resolution or at the label's. The
reward statistics (mean reward, advantage mean/std, E[A^2]) are returned next to the
loss and end up in mmengine's log as ``decode.<name>``.
"""
from __future__ import annotations

import torch.nn as nn
from mmseg.models.decode_heads import ASPPHead, DepthwiseSeparableASPPHead, FCNHead
from mmseg.models.losses import accuracy
from mmseg.models.utils import resize
from mmseg.registry import MODELS

from .losses import RewardLoss


class RewardHeadMixin:
    """Mix into any mmseg decode head (before the head class) to support RewardLoss."""

    def _loss_modules(self):
        if isinstance(self.loss_decode, nn.ModuleList):
            return list(self.loss_decode)
        return [self.loss_decode]

    def loss_by_feat(self, seg_logits, batch_data_samples) -> dict:
        modules = self._loss_modules()
        if not any(isinstance(m, RewardLoss) for m in modules):
            return super().loss_by_feat(seg_logits, batch_data_samples)
        seg_label = self._stack_batch_gt(batch_data_samples).squeeze(1)
        resized = resize(input=seg_logits, size=seg_label.shape[-2:], mode="bilinear",
                         align_corners=self.align_corners)
        seg_weight = None
        if self.sampler is not None:
            seg_weight = self.sampler.sample(resized, seg_label[:, None])
        losses = {}
        for module in modules:
            if isinstance(module, RewardLoss):
                value, stats = module(seg_logits, seg_label, ignore_index=self.ignore_index,
                                      align_corners=self.align_corners)
                for key, stat in stats.items():
                    losses[f"{module.loss_name.replace('loss_', '', 1)}_{key}"] = stat
            else:
                value = module(resized, seg_label, weight=seg_weight,
                               ignore_index=self.ignore_index)
            name = module.loss_name
            losses[name] = losses[name] + value if name in losses else value
        losses["acc_seg"] = accuracy(resized, seg_label, ignore_index=self.ignore_index)
        return losses


@MODELS.register_module()
class RewardASPPHead(RewardHeadMixin, ASPPHead):
    """DeepLabV3's ASPP head with reward-loss support."""


@MODELS.register_module()
class RewardFCNHead(RewardHeadMixin, FCNHead):
    """FCN head (DeepLabV3's auxiliary head) with reward-loss support."""


@MODELS.register_module()
class RewardDepthwiseSeparableASPPHead(RewardHeadMixin, DepthwiseSeparableASPPHead):
    """DeepLabV3+ head with reward-loss support."""
