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


def estimator_error(loss: str, baseline: str, num_samples=None, global_batch=None):
    """None, or what is wrong with a reward estimator's settings, as one line: the
    cross-field check that a study's variant (``rewardseg.study``) and ``RewardLoss`` both
    run. ``loss`` is the estimator (one of :data:`ESTIMATORS`), named ``loss`` in a study
    and in ``RewardLoss`` alike; ``num_samples`` (a sampling estimator's) and
    ``global_batch`` (images per optimizer step, all GPUs) are checked when given."""
    estimator = loss
    if baseline not in BASELINES[estimator]:
        return (f"loss {estimator!r} takes baseline {' / '.join(BASELINES[estimator])}, "
                f"not {baseline!r}")
    if (num_samples is not None and estimator in SAMPLING
            and int(num_samples) < MIN_SAMPLES.get(baseline, 1)):
        return f"baseline {baseline!r} needs num_samples >= {MIN_SAMPLES[baseline]}"
    if global_batch is not None and global_batch < MIN_GLOBAL_BATCH.get(baseline, 1):
        return (f"baseline {baseline!r} needs at least {MIN_GLOBAL_BATCH[baseline]} images "
                "in the global batch")
    return None
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
FP32 = PRECISIONS[0]  # full precision, the default
AMP_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}

# ---------------------------------------------------------------- words for the reader
# The question each experiment answers (figure titles) and its short title (slide
# headings); an experiment not named here is titled by its name.
EXPERIMENT_TITLES = {
    "scheduler": "Learning-rate schedule",
    "structure": "Auxiliary head",
    "baseline_reinforce": "REINFORCE baselines",
    "baseline_weighted_ce": "Weighted CE: the baseline's α",
    "baseline": "Baselines",
    "steps": "Start checkpoint and steps",
    "start": "Start checkpoint",
    "weights": "Class weights",
    "surrogate": "A differentiable surrogate",
    "estimator": "Estimators",
    "losses": "Losses",
}
EXPERIMENT_QUESTIONS = {
    "scheduler": "Which learning-rate schedule lets reward tuning beat CE?",
    "structure": "Does reward tuning need the auxiliary head?",
    "baseline_reinforce": "Which baseline (variance reduction) makes the estimator work?",
    "baseline_weighted_ce": "Weighted CE: how much of the batch's mean cost to subtract (α)?",
    "baseline": "Which baseline (variance reduction) works best?",
    "steps": "Does an earlier start checkpoint change the gain?",
    "start": "Does the start checkpoint matter?",
    "weights": "Do class weights in the reward help?",
    "surrogate": "Reward tuning or a differentiable mIoU surrogate (Lovász)?",
    "estimator": "Which estimator of the reward's gradient?",
    "losses": "Which tuning loss?",
}


def experiment_title(experiment: str) -> str:
    """The short title of an experiment (its name in words when it has none)."""
    return EXPERIMENT_TITLES.get(experiment) or experiment.replace("_", " ").capitalize()


def experiment_question(experiment: str) -> str:
    """The question an experiment answers, in words (its title when none is written)."""
    return EXPERIMENT_QUESTIONS.get(experiment) or experiment_title(experiment)


# How the deck describes each estimator (Markdown with KaTeX; ``rewardseg.slides`` fills in
# ``{logp}``, the sampled map's log-likelihood as ``normalize`` sums it, and the
# study's values); each says what ``models.losses.RewardLoss`` computes.
ESTIMATOR_SOURCES = {"weighted_ce": "the original study's code",
                     "reinforce": "Pinto et al., 2023",
                     "local_expectation": "Titsias & Lázaro-Gredilla, 2015"}
ESTIMATOR_DESCRIPTIONS = {
    "weighted_ce": (
        r"image cost $c_i = 1-\text{{mIoU}}(\arg\max, y^*)$, advantage "
        r"$c_i - \alpha\,\overline{{c}}_{{j\ne i}}$ over the other images of the batch "
        r"(α = {alpha}), loss = advantage × the image's CE **on the ground truth**. "
        "Nothing is sampled: an image-level re-weighting of maximum likelihood."),
    "reinforce": (
        r"$k$ = {k} label maps $y' \sim p_\theta(\cdot\mid x)$ per image, drawn pixel by pixel, "
        r"$R=\text{{mIoU}}(y', y^*)$, loss $-(R-b)\,{logp}$ per image and sample "
        "({normalize}), averaged over images and samples."),
    "local_expectation": (
        r"$k$ = {k} sampled maps $y'$ per image, every pixel's classes summed exactly: loss "
        r"$-\sum_j\sum_c p_j(c)\,(R(y'_{{-j}}, c) - R(y'))$ over the image's valid pixels $j$ "
        r"({normalize}), each $R(y'_{{-j}}, c)$ from the image's confusion counts. "
        "Unbiased, without the noise of pixel $j$'s own draw; no baseline needed."),
}
# ``normalize`` of a sampling estimator: the log-likelihood term and its words
NORMALIZE_LOGP = {"image": r"\sum_{j} \log p_\theta(y'_j\mid x)",
                  "pixel": r"\tfrac{1}{n_\text{valid}}\sum_{j} \log p_\theta(y'_j\mid x)"}
NORMALIZE_WORDS = {"image": "`normalize: image`: the sum over the image's valid pixels",
                   "pixel": "`normalize: pixel`: the mean over the image's valid pixels"}
BASELINE_WORDS = {"none": "none", "second_sample": "a second sample of the image",
                  "rloo": "leave-one-out over the image's $k$ samples (rloo)",
                  "batch_loo": "α × leave-one-out over the batch",
                  "ema": "a moving average", "greedy": "the argmax map (self-critical)"}
