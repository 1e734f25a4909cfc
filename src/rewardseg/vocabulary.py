"""The estimators' vocabulary, defined once (no torch, no mmseg: the workflow and the CLI
read it without importing the models).

``RewardLoss`` (``models/losses.py``) validates against these names and
``models.losses.decode_loss_config`` maps a study's fields onto it; ``study.schema()``
fills the study schema's enums (``study.schema.yaml`` spells none) and ``study.py``
checks study configs with them. Adding an estimator or a baseline: its names here, its
code in ``models/losses.py``, its test. (Dataset sources are the modules of
``rewardseg.data``; figures are registered in ``rewardseg.figures``.)
"""
from __future__ import annotations

# reward estimators of ``RewardLoss`` and, for each, its variance-reduction baselines
# (local_expectation needs none: a baseline constant in the pixel's class cancels exactly)
ESTIMATORS = ("weighted_ce", "reinforce", "local_expectation")
BASELINES = {
    "weighted_ce": ("batch_loo", "none"),
    "reinforce": ("none", "second_sample", "rloo", "batch_loo", "ema", "greedy"),
    "local_expectation": ("none",),
}
DEFAULT_BASELINE = {"weighted_ce": "batch_loo", "reinforce": "rloo",
                    "local_expectation": "none"}
# the estimators that sample label maps from the softmax: num_samples, sample_at,
# normalize and ce_weight are theirs
SAMPLING = ("reinforce", "local_expectation")
# what each estimator logs as its advantage (``decode.reward_adv_*``), for axis labels
LOGGED_ADVANTAGE = {"weighted_ce": "(1 − mIoU) − b", "reinforce": "R − b",
                    "local_expectation": "Σⱼ Σ_c p_j(c)·(R(y₋ⱼ, c) − R(y))"}
# how figures title each estimator
ESTIMATOR_TITLES = {"weighted_ce": "weighted CE", "reinforce": "REINFORCE",
                    "local_expectation": "local expectation"}
# what a baseline needs: samples per image (``num_samples``) / images in the global batch
MIN_SAMPLES = {"rloo": 2}
MIN_GLOBAL_BATCH = {"batch_loo": 2}
SAMPLE_AT = ("logits", "label")
# reinforce: ``image`` sums the log-likelihood over an image's valid pixels (the loss's
# expected gradient is grad E[R] itself); ``pixel`` averages it (grad E[R] / n_valid).
NORMALIZE = ("image", "pixel")
# the ``loss`` of a study's run: plain losses and the reward estimators
LOSSES = ("ce", "lovasz") + ESTIMATORS
# tuning optimizers: ``sgd`` keeps the model config's (momentum, weight decay); AdamW's
# update does not depend on the loss's scale (like big_vision's Adafactor)
OPTIMIZERS = ("sgd", "adamw")
# training precision of a run: fp32, or mixed precision (autocast) in bfloat16 or in float16
# with dynamic loss scaling; the reward and its sampling always run in float32
PRECISIONS = ("fp32", "bf16", "fp16")
AMP_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}
