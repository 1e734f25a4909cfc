"""Reward losses: the original ``weighted_ce``, the paper's ``reinforce`` and the
``local_expectation`` gradient.

All take the *raw* decode-head logits ``(B, C, h, w)`` and the label map ``(B, H, W)``
(see :class:`rewardseg.models.heads.RewardHeadMixin`), so that the sampling estimators can
sample either at the head's resolution or at the label's.

``loss: ce`` with class weights uses :class:`~rewardseg.models.cross_entropy.MaskedCrossEntropyLoss`
(``cross_entropy.py``, with the class-weight reader both use).
"""
from __future__ import annotations

from typing import Dict, NamedTuple, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmseg.registry import MODELS
from torch import Tensor

from ..rewards import local_reward_changes, per_image_miou
from .cross_entropy import MaskedCrossEntropyLoss, load_class_weight  # noqa: F401
from ..vocabulary import (BASELINES, DEFAULT_BASELINE, ESTIMATORS, NORMALIZE, SAMPLE_AT,  # noqa: F401
                          SAMPLING, estimator_error)


def process_world() -> tuple:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_batch(values: Tensor) -> tuple:
    """``values`` of every process's batch, concatenated along dim 0 in rank order, and
    the offset of this process's images in it. Every process must have the same local
    batch size (mmseg's iteration-based samplers always deliver full batches)."""
    rank, world = process_world()
    if world == 1:
        return values, 0
    import torch.distributed as dist

    parts = [torch.empty_like(values) for _ in range(world)]
    dist.all_gather(parts, values.contiguous())
    return torch.cat(parts), rank * values.shape[0]


def nearest_index(size, out_size, device) -> Tensor:
    """Flat index ``(H*W,)`` of the ``size = (h, w)`` pixel that nearest-neighbour
    upsampling (``F.interpolate(mode='nearest')``) copies to each ``out_size = (H, W)``
    pixel."""
    (h, w), (oh, ow) = tuple(size), tuple(out_size)
    rows = F.interpolate(torch.arange(h, device=device, dtype=torch.float32).view(1, 1, h, 1),
                         size=(oh, 1), mode="nearest").view(oh).long()
    cols = F.interpolate(torch.arange(w, device=device, dtype=torch.float32).view(1, 1, 1, w),
                         size=(1, ow), mode="nearest").view(ow).long()
    return (rows[:, None] * w + cols[None, :]).reshape(-1)


class RewardLossOutput(NamedTuple):
    loss: Tensor
    stats: Dict[str, Tensor]


def _choice_error(key: str, value, valid: Sequence[str]) -> ValueError:
    return ValueError(f"RewardLoss: unknown {key} {value!r}; valid: {', '.join(valid)}")


@MODELS.register_module()
class RewardLoss(nn.Module):
    """Reward-optimisation loss for a segmentation decode head.

    Args:
        loss: the reward estimator (a study's ``loss``, by the same name):
            ``'weighted_ce'`` (the original internship code: per-image CE on the
            ground truth, weighted by ``r_i - alpha * mean_{j!=i} r_j`` with
            ``r = 1 - mIoU(argmax, gt)``; nothing is sampled) or ``'reinforce'``
            (score-function gradient: ``-(R - b) * log p(y'|x)`` with ``y'`` sampled
            from the per-pixel softmax and ``R = mIoU(y', gt)``) or
            ``'local_expectation'`` (Titsias & Lazaro-Gredilla's local expectation
            gradient: ``-sum_j sum_c p_j(c) * (R(y'_-j, c) - R(y'))``, every pixel's
            classes summed exactly with the rest of the map sampled; each
            ``R(y'_-j, c)`` comes from the image's confusion counts,
            ``rewards.local_reward_changes``). ``num_samples``, ``sample_at``,
            ``normalize`` and ``ce_weight`` apply to both sampling estimators.
        baseline: variance reduction. ``reinforce``: ``'none'``, ``'second_sample'``
            (the reward of an extra, independent sample of the same image),
            ``'rloo'`` (mean reward of the other ``num_samples - 1`` samples of the
            same image), ``'batch_loo'`` (``alpha`` x mean reward of the other images of
            the global batch, gathered over every process), ``'ema'`` (moving average of
            past rewards), ``'greedy'`` (self-critical: the reward of the argmax map of
            the same image). ``weighted_ce``: ``'batch_loo'`` (the original) or
            ``'none'``. ``local_expectation``: ``'none'`` (it needs none). Default:
            ``'batch_loo'`` for ``weighted_ce``, ``'rloo'`` for ``reinforce``.
        alpha: scale of the ``batch_loo`` baseline (0.1 in the original code).
        num_samples: label maps sampled per image (``reinforce``).
        sample_at: ``'logits'`` samples at the head's output resolution and upsamples
            the sampled map (nearest) for the reward; a head pixel counts as valid when
            any label pixel it is copied to is valid. ``'label'`` upsamples the logits
            (bilinear, like mmseg's CE) and samples at label resolution.
        normalize: ``reinforce`` only. ``'image'`` (default): per image and sample
            ``-(R - b) * sum_valid log p(y'_j)``, averaged over images and samples; the
            loss's expected gradient is ``grad E[R]`` of the per-image reward, whatever
            the image size or sampling resolution, on the scale of a per-pixel-mean CE
            (use learning rates of CE's order). ``'pixel'``: the sum divided by the
            number of valid pixels (at the sampling resolution): the expected gradient
            is ``grad E[R] / n_valid``, ``n_valid`` times smaller than CE's, so SGD
            needs a learning rate about ``n_valid`` times larger to move as much
            (scale-free optimizers such as AdamW do not care).
        ema_momentum: ``b <- m * b + (1 - m) * mean reward`` after every step.
        ce_weight: ``lambda`` of an added ``lambda * CE(logits, gt)`` term (reinforce).
        class_weight: per-class weights (list, ``.npy`` or JSON from
            ``rewardseg class-weights``). ``weighted_ce``: weights the CE, as in the
            original. ``reinforce``: the reward becomes the class-weighted mIoU, and the
            ``ce_weight`` term is weighted.
        empty_reward: reward of an image with no valid pixel (0.5 in the original).
        loss_weight: multiplies the whole loss.
        loss_name: key in the loss dict; must contain ``'loss'``.

    Statistics, returned next to the loss (``decode.reward_<name>`` in the training
    log; per-process means of this process's images): ``reward`` (the estimator's mean
    reward: ``1 - mIoU(argmax)`` for ``weighted_ce``), ``miou_train``, ``adv_mean``,
    ``adv_std``, ``adv_sq`` (``E[A^2]``), and, computed without gradient from what the
    loss has computed anyway (no extra forward pass; the loss, its gradient and the RNG
    stream do not change): ``reward_argmax``, the mean per-image reward of the argmax
    map (argmax of the logits bilinearly upsampled to the labels' size, the map
    evaluation uses) with the reward of the sampled maps (class-weighted mIoU,
    ``empty_reward`` for an image with no valid pixel; ``weighted_ce``: its own
    ``mIoU(argmax)``, i.e. ``1 - reward``), and ``entropy``, the mean per-pixel entropy
    (nats) of the policy's softmax over the valid pixels (as ``sample_at`` counts them)
    at the resolution the samples are drawn at (``sample_at``; ``weighted_ce``, which
    draws none, is measured the same way, so that the estimators are comparable).
    """

    def __init__(self,
                 loss: str = "reinforce",
                 baseline: Optional[str] = None,
                 alpha: float = 0.1,
                 num_samples: int = 2,
                 sample_at: str = "logits",
                 normalize: str = "image",
                 ema_momentum: float = 0.9,
                 ce_weight: float = 0.0,
                 class_weight: Union[None, str, Sequence[float]] = None,
                 empty_reward: float = 0.5,
                 loss_weight: float = 1.0,
                 loss_name: str = "loss_reward"):
        super().__init__()
        if loss not in ESTIMATORS:
            raise _choice_error("loss", loss, ESTIMATORS)
        if baseline is None:
            baseline = DEFAULT_BASELINE[loss]
        if int(num_samples) < 1:
            raise ValueError(f"RewardLoss: num_samples must be >= 1, got {num_samples}")
        error = estimator_error(loss, baseline, num_samples)
        if error:  # the check a study's variant runs too (rewardseg.study)
            raise ValueError(f"RewardLoss: {error}")
        if sample_at not in SAMPLE_AT:
            raise _choice_error("sample_at", sample_at, SAMPLE_AT)
        if normalize not in NORMALIZE:
            raise _choice_error("normalize", normalize, NORMALIZE)
        if not 0.0 <= float(ema_momentum) < 1.0:
            raise ValueError(f"RewardLoss: ema_momentum must be in [0, 1), got {ema_momentum}")
        if "loss" not in loss_name:
            raise ValueError(f"RewardLoss: loss_name must contain 'loss', got {loss_name!r}")
        self.loss = loss
        self.baseline = baseline
        self.alpha = float(alpha)
        self.num_samples = int(num_samples)
        self.sample_at = sample_at
        self.normalize = normalize
        self.ema_momentum = float(ema_momentum)
        self.ce_weight = float(ce_weight)
        self.empty_reward = float(empty_reward)
        self.loss_weight = float(loss_weight)
        self._loss_name = loss_name
        weights = load_class_weight(class_weight)
        self.register_buffer(
            "class_weight",
            None if weights is None else torch.tensor(weights, dtype=torch.float32),
            persistent=False)
        # Moving-average baseline; saved with the checkpoint so that resume continues
        # with the same baseline.
        self.register_buffer("ema_value", torch.zeros(()))
        self.register_buffer("ema_initialized", torch.zeros((), dtype=torch.bool))

    @property
    def loss_name(self) -> str:
        return self._loss_name

    # ------------------------------------------------------------------ helpers
    def _check_classes(self, num_classes: int) -> None:
        if self.class_weight is not None and self.class_weight.numel() != num_classes:
            raise ValueError(f"RewardLoss: class_weight has {self.class_weight.numel()} "
                             f"values but the head predicts {num_classes} classes")

    def _per_image_ce(self, logits: Tensor, label: Tensor, ignore_index: int) -> Tensor:
        """Per-image cross-entropy on the labels, averaged over valid pixels ``(B,)``."""
        ce = F.cross_entropy(logits, label, weight=self.class_weight,
                             ignore_index=ignore_index, reduction="none")
        valid = (label != ignore_index).flatten(1).sum(1).clamp(min=1)
        return ce.flatten(1).sum(1) / valid

    @staticmethod
    def _leave_one_out_mean(values: Tensor, dim: int) -> Tensor:
        n = values.shape[dim]
        if n < 2:
            return torch.zeros_like(values)
        return (values.sum(dim=dim, keepdim=True) - values) / (n - 1)

    def _batch_loo(self, values: Tensor) -> Tensor:
        """``alpha`` x the mean of ``values`` (``(B, ...)``) over the *other* images of
        the global batch (every process's images, gathered)."""
        everything, offset = gather_batch(values)
        if everything.shape[0] < 2:
            raise ValueError("RewardLoss: baseline 'batch_loo' needs at least 2 images in "
                             "the global batch (batch size x processes); got 1")
        loo = self._leave_one_out_mean(everything, dim=0)
        return self.alpha * loo[offset:offset + values.shape[0]]

    # ------------------------------------------------------------------ forward
    def forward(self, seg_logits: Tensor, seg_label: Tensor, ignore_index: int = 255,
                align_corners: bool = False) -> RewardLossOutput:
        """``seg_logits``: raw head output ``(B, C, h, w)``; ``seg_label``: ``(B, H, W)``.

        Under mixed precision (autocast, bf16/fp16 logits) everything here - softmax,
        sampling, reward, loss - runs in float32 on the float32 copy of the logits; the
        gradient flows back through the cast."""
        if seg_label.dim() == 4:
            seg_label = seg_label.squeeze(1)
        seg_label = seg_label.long()
        self._check_classes(seg_logits.shape[1])
        with torch.autocast(device_type=seg_logits.device.type, enabled=False):
            seg_logits = seg_logits.float()
            if self.loss == "weighted_ce":
                return self._weighted_ce(seg_logits, seg_label, ignore_index, align_corners)
            if self.loss == "local_expectation":
                return self._local_expectation(seg_logits, seg_label, ignore_index,
                                               align_corners)
            return self._reinforce(seg_logits, seg_label, ignore_index, align_corners)

    def _upsample(self, logits: Tensor, size, align_corners: bool) -> Tensor:
        if tuple(logits.shape[-2:]) == tuple(size):
            return logits
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=align_corners)

    def _weighted_ce(self, logits, label, ignore_index, align_corners) -> RewardLossOutput:
        raw = logits
        logits = self._upsample(logits, label.shape[-2:], align_corners)
        num_classes = logits.shape[1]
        with torch.no_grad():
            miou = per_image_miou(logits.argmax(dim=1), label, num_classes, ignore_index)
            cost = torch.where(torch.isnan(miou), torch.full_like(miou, self.empty_reward),
                               1.0 - miou)
            if self.baseline == "batch_loo":
                advantage = cost - self._batch_loo(cost)
            else:
                advantage = cost
        ce = self._per_image_ce(logits, label, ignore_index)
        loss = (advantage * ce).mean() * self.loss_weight
        stats = self._stats(cost, advantage, miou=1.0 - cost)
        with torch.no_grad():
            # its reward is 1 - mIoU(argmax) itself: the argmax map's mIoU is 1 - cost
            stats["reward_argmax"] = (1.0 - cost).float().mean()
            # the policy's entropy where the sampling estimators measure it (sample_at),
            # so that the three are comparable
            if self.sample_at == "label" or tuple(raw.shape[-2:]) == tuple(label.shape[-2:]):
                valid = (label != ignore_index) & (label >= 0) & (label < num_classes)
                at_sample = logits
            else:
                at_sample, _, valid = self._sampling_setup(raw.detach(), label, ignore_index,
                                                           align_corners)
            stats["entropy"] = self._entropy(F.log_softmax(at_sample.detach(), dim=1), valid)
        return RewardLossOutput(loss, stats)

    def _sample(self, log_probs: Tensor, num: int) -> Tensor:
        """``num`` label maps per image from the per-pixel softmax: ``(B, num, h, w)``.

        Inverse-CDF sampling with one uniform per pixel and sample (``searchsorted`` on
        the per-pixel CDF), so no ``(B, num, C, h, w)`` noise tensor is materialised.
        """
        b, c, h, w = log_probs.shape
        cdf = log_probs.detach().float().exp().permute(0, 2, 3, 1).cumsum(dim=-1)
        u = torch.rand((b, h, w, num), device=cdf.device, dtype=cdf.dtype)
        u = u * cdf[..., -1:]  # the CDF's top is 1 up to rounding
        idx = torch.searchsorted(cdf.contiguous(), u.contiguous(), right=True)
        return idx.clamp_(max=c - 1).permute(0, 3, 1, 2)

    def _sampling_setup(self, logits, label, ignore_index, align_corners):
        """(logits to sample from, label-to-sample pixel index or None, valid sample
        pixels) of a sampling estimator."""
        bsz, num_classes = logits.shape[:2]
        out_size = tuple(label.shape[-2:])
        label_valid = (label != ignore_index) & (label >= 0) & (label < num_classes)
        if self.sample_at == "label" or tuple(logits.shape[-2:]) == out_size:
            logits_s = self._upsample(logits, out_size, align_corners)
            index = None  # samples are at label resolution
            valid = label_valid
        else:
            logits_s = logits
            h, w = logits.shape[-2:]
            # which head pixel each label pixel's prediction is copied from; a head pixel
            # is valid when any of the label pixels it reaches is (its sample changes the
            # reward exactly then), whatever the ratio of the two sizes
            index = nearest_index((h, w), out_size, logits.device)
            hits = torch.zeros((bsz, h * w), device=logits.device, dtype=torch.float32)
            hits.index_add_(1, index, label_valid.flatten(1).float())
            valid = (hits > 0).view(bsz, h, w)
        return logits_s, index, valid

    def _ce_term(self, logits, label, ignore_index, align_corners) -> Tensor:
        ce_logits = self._upsample(logits, tuple(label.shape[-2:]), align_corners)
        return self.ce_weight * self._per_image_ce(ce_logits, label, ignore_index).mean()

    def _local_expectation(self, logits, label, ignore_index,
                           align_corners) -> RewardLossOutput:
        """``-sum_j sum_c p_j(c) * stopgrad(R(y_-j, c) - R(y))`` per image and sample
        ``y``, averaged: its gradient is exactly unbiased for ``grad E[R]`` (the policy
        factorises over pixels), with no noise from pixel ``j``'s own draw."""
        bsz, num_classes = logits.shape[:2]
        logits_s, index, valid = self._sampling_setup(logits, label, ignore_index,
                                                      align_corners)
        log_probs = F.log_softmax(logits_s.float(), dim=1)
        k = self.num_samples
        with torch.no_grad():
            samples = self._sample(log_probs, k)  # (B, k, h, w)
            delta, reward = local_reward_changes(
                samples.flatten(0, 1), label.repeat_interleave(k, dim=0), num_classes,
                ignore_index, index, self.class_weight)
            delta = delta.float().view(bsz, k, *delta.shape[1:])  # (B, k, C, h, w)
            reward = torch.nan_to_num(reward.float(), nan=self.empty_reward).view(bsz, k)
        # (B, k): sum over pixels and classes of p_j(c) * (R_j(c) - R(y))
        gain = torch.einsum("bchw,bkchw->bk", log_probs.exp(), delta)
        if self.normalize == "pixel":
            gain = gain / valid.flatten(1).sum(1).clamp(min=1)[:, None]
        loss = -gain.mean()
        if self.ce_weight:
            loss = loss + self._ce_term(logits, label, ignore_index, align_corners)
        stats = self._stats(reward, gain.detach(), miou=reward)
        stats.update(self._policy_stats(logits, logits_s, index, log_probs, valid, label,
                                        ignore_index, align_corners))
        return RewardLossOutput(loss * self.loss_weight, stats)

    def _reinforce(self, logits, label, ignore_index, align_corners) -> RewardLossOutput:
        bsz, num_classes = logits.shape[:2]
        out_size = tuple(label.shape[-2:])
        logits_s, index, valid = self._sampling_setup(logits, label, ignore_index,
                                                      align_corners)
        log_probs = F.log_softmax(logits_s.float(), dim=1)
        k = self.num_samples
        extra = k if self.baseline == "second_sample" else 0
        with torch.no_grad():
            samples = self._sample(log_probs, k + extra)  # (B, k+extra, h, w)
            maps = samples
            if self.baseline == "greedy":
                maps = torch.cat([samples, log_probs.argmax(dim=1, keepdim=True)], dim=1)
            m = maps.shape[1]
            flat = maps.flatten(0, 1)
            if index is not None:
                flat = flat.flatten(1)[:, index].view(flat.shape[0], *out_size)
            gt = label.repeat_interleave(m, dim=0)
            reward = per_image_miou(flat, gt, num_classes, ignore_index,
                                    class_weight=self.class_weight,
                                    empty_value=self.empty_reward).view(bsz, m)
            reward, reward_b = reward[:, :k], reward[:, k:]
            baseline = self._baseline(reward, reward_b)
            advantage = reward - baseline

        logp = log_probs.gather(1, samples[:, :k])  # (B, k, h, w)
        logp = (logp * valid[:, None]).flatten(2).sum(2)  # (B, k)
        if self.normalize == "pixel":
            logp = logp / valid.flatten(1).sum(1).clamp(min=1)[:, None]
        loss = -(advantage * logp).mean()
        if self.ce_weight:
            loss = loss + self._ce_term(logits, label, ignore_index, align_corners)
        stats = self._stats(reward, advantage, miou=reward)
        stats.update(self._policy_stats(logits, logits_s, index, log_probs, valid, label,
                                        ignore_index, align_corners))
        return RewardLossOutput(loss * self.loss_weight, stats)

    def _baseline(self, reward: Tensor, reward_b: Tensor) -> Tensor:
        """The baseline of each sample's reward, ``(B, k)``; ``reward_b`` holds the
        rewards of the extra maps (``second_sample``: k independent samples;
        ``greedy``: the argmax map), which are not differentiated."""
        if self.baseline == "none":
            return torch.zeros_like(reward)
        if self.baseline == "second_sample":
            return reward_b
        if self.baseline == "greedy":
            return reward_b.expand_as(reward)
        if self.baseline == "rloo":
            return self._leave_one_out_mean(reward, dim=1)
        if self.baseline == "batch_loo":
            # each image's mean over its samples, of the other images
            return self._batch_loo(reward.mean(dim=1, keepdim=True)).expand_as(reward)
        # ema: the value from earlier steps only, so the baseline never depends on the
        # current samples; the first step uses 0. Updated with the global batch's mean
        # reward, so every process keeps the same value.
        zero = torch.zeros((), device=reward.device)
        ema = self.ema_value.to(reward.device)
        baseline = torch.where(self.ema_initialized, ema, zero).expand_as(reward)
        if self.training:
            mean = gather_batch(reward)[0].mean()
            m = self.ema_momentum
            self.ema_value.copy_(torch.where(self.ema_initialized, m * ema + (1 - m) * mean,
                                             mean))
            self.ema_initialized.fill_(True)
        return baseline

    @staticmethod
    def _entropy(log_probs: Tensor, valid: Tensor) -> Tensor:
        """Mean per-pixel entropy (nats) of ``softmax`` over the ``valid`` pixels; 0 when
        there is none. ``log_probs``: ``(B, C, h, w)``, ``valid``: ``(B, h, w)``."""
        log_probs = log_probs.detach().float()
        probs = log_probs.exp()
        plogp = probs * log_probs
        plogp.masked_fill_(probs == 0, 0.0)  # p log p -> 0 (a -inf log-probability)
        entropy = -plogp.sum(dim=1)  # (B, h, w)
        mask = valid.to(entropy.dtype)
        return (entropy * mask).sum() / mask.sum().clamp(min=1)

    def _policy_stats(self, logits: Tensor, logits_s: Tensor, index: Optional[Tensor],
                      log_probs: Tensor, valid: Tensor, label: Tensor, ignore_index: int,
                      align_corners: bool) -> Dict[str, Tensor]:
        """``reward_argmax`` and ``entropy`` of a sampling estimator (see the class
        docstring), without gradient and without drawing from any RNG."""
        with torch.no_grad():
            # the map evaluation uses: argmax of the logits at the labels' size (bilinear)
            at_label = logits_s if index is None else self._upsample(
                logits.detach(), tuple(label.shape[-2:]), align_corners)
            # max(dim).indices is argmax (the first maximal class on ties), ~3x faster on
            # a CPU for a (B, C, H, W) map
            argmax = at_label.detach().max(dim=1).indices
            argmax_reward = per_image_miou(argmax, label, logits.shape[1], ignore_index,
                                           class_weight=self.class_weight,
                                           empty_value=self.empty_reward)
            return {"reward_argmax": argmax_reward.float().mean(),
                    "entropy": self._entropy(log_probs, valid)}

    @staticmethod
    def _stats(reward: Tensor, advantage: Tensor, miou: Tensor) -> Dict[str, Tensor]:
        adv = advantage.float().flatten()
        std = adv.std() if adv.numel() > 1 else torch.zeros((), device=adv.device)
        return {
            "reward": reward.float().mean(),
            "miou_train": torch.nan_to_num(miou.float(), nan=0.0).mean(),
            "adv_mean": adv.mean(),
            "adv_std": std,
            # E[A^2]: the score-function estimator's second moment scales with it
            # (for a roughly constant score norm); the cheap variance measure we log.
            "adv_sq": (adv * adv).mean(),
        }


def decode_loss_config(spec: Dict) -> tuple:
    """(decode head type, ``loss_decode`` list) of a run spec's ``loss``: what a study's
    loss and estimator fields mean to mmseg. A new estimator is a branch of ``RewardLoss``
    plus its names in ``vocabulary``; its spec fields reach it here."""
    loss = spec["loss"]
    if loss == "ce":
        cfg = dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0)
        if spec.get("class_weight"):
            # mmseg's own CE looks the weights up with the raw label, 255 included: it
            # fails on the first ignored pixel (MaskedCrossEntropyLoss masks them first)
            cfg.update(type="MaskedCrossEntropyLoss",
                       class_weight=load_class_weight(spec["class_weight"]))
        return "ASPPHead", [cfg]
    if loss == "lovasz":
        return "ASPPHead", [dict(type="LovaszLoss", loss_type="multi_class", per_image=True,
                                 reduction="mean", loss_weight=1.0)]
    cfg = dict(type="RewardLoss", loss=loss, baseline=spec["baseline"],
               alpha=spec["alpha"], class_weight=spec.get("class_weight"))
    if loss in SAMPLING:
        cfg.update(num_samples=spec["num_samples"], sample_at=spec["sample_at"],
                   normalize=spec.get("normalize", "image"),
                   ema_momentum=spec["ema_momentum"], ce_weight=spec["ce_weight"])
    return "RewardASPPHead", [cfg]
