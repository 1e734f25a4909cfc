"""The estimators against exact answers.

``reinforce``: on a model small enough (a few pixels, 3 classes) to enumerate every
label map, the expected-reward gradient is computed exactly; the mean of many
estimates must match it for every baseline, and the baselines must lower the variance.
``weighted_ce``: a hand-computed example of the original formulas.
"""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

import rewardseg  # noqa: F401
from rewardseg.models.losses import RewardLoss
from rewardseg.rewards import per_image_miou

C = 3
IGNORE = 255
# per-pixel logits (C, P) favouring the right class, so rewards are far from 0 and
# baselines have something to remove
BASE_LOGITS = torch.tensor([[1.5, 0.0, 0.3, -0.5],
                            [0.2, 1.2, 0.0, 0.4],
                            [-0.3, 0.1, 1.0, 0.0]])
GT = torch.tensor([0, 1, 2, IGNORE])  # one ignored pixel


def exact_gradient(logits: torch.Tensor, gt: torch.Tensor, upsample: int = 1):
    """d/dlogits of E_{y~softmax}[mIoU(y, gt)], by enumerating every label map."""
    theta = logits.clone().requires_grad_(True)
    num_pixels = logits.shape[1]
    maps = torch.tensor(list(itertools.product(range(C), repeat=num_pixels)))  # (M, P)
    log_probs = F.log_softmax(theta, dim=0)  # (C, P)
    logp = log_probs[maps, torch.arange(num_pixels)].sum(1)  # (M,)
    preds = maps.repeat_interleave(upsample, dim=1)[:, None, :]  # (M, 1, P*up)
    gts = gt.view(1, 1, -1).expand(len(maps), 1, gt.numel())
    reward = per_image_miou(preds, gts, C, IGNORE, empty_value=0.5).double()
    expected = (logp.double().exp() * reward).sum()
    (grad,) = torch.autograd.grad(expected, theta)
    return grad


def estimates(loss: RewardLoss, logits, gt, copies=4000, batches=5, seed=0):
    """Independent per-image gradient estimates of d E[R] / d logits, ``(n, C, P)``."""
    torch.manual_seed(seed)
    out = []
    for _ in range(batches):
        theta = logits[None, :, None, :].repeat(copies, 1, 1, 1).requires_grad_(True)
        labels = gt.view(1, 1, -1).repeat(copies, 1, 1)
        value, _ = loss(theta, labels, ignore_index=IGNORE)
        (grad,) = torch.autograd.grad(value, theta)
        if loss.sample_at == "label":
            valid = (gt != IGNORE).sum()
        else:
            valid = (gt.view(1, 1, 1, -1)[..., ::gt.numel() // logits.shape[1]] != IGNORE).sum()
        # loss = -mean_i (A_i logp_i) / n_valid  =>  estimate_i = -copies * n_valid * grad_i
        out.append(-copies * valid * grad[:, :, 0, :])
    return torch.cat(out).double()


def assert_unbiased(samples, exact, z=5.0):
    mean = samples.mean(0)
    se = samples.std(0) / math.sqrt(samples.shape[0])
    err = (mean - exact).abs()
    bound = z * se + 1e-6
    assert torch.all(err <= bound), (
        f"estimator mean {mean} differs from exact gradient {exact}: |err| {err} > {bound}")


def total_variance(samples):
    return samples.var(0).sum().item()


CASES = [
    dict(baseline="none", num_samples=1),
    dict(baseline="none", num_samples=4),
    dict(baseline="second_sample", num_samples=1),
    dict(baseline="rloo", num_samples=4),
    dict(baseline="batch_loo", num_samples=1, alpha=1.0),
    dict(baseline="ema", num_samples=1, ema_momentum=0.5),
]


@pytest.fixture(scope="module")
def exact():
    return exact_gradient(BASE_LOGITS, GT)


@pytest.fixture(scope="module")
def sampled():
    results = {}
    for case in CASES:
        loss = RewardLoss(estimator="reinforce", sample_at="label", **case)
        loss.train()
        key = (case["baseline"], case["num_samples"])
        results[key] = estimates(loss, BASE_LOGITS, GT)
    return results


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['baseline']}-k{c['num_samples']}")
def test_reinforce_is_unbiased(case, exact, sampled):
    samples = sampled[(case["baseline"], case["num_samples"])]
    assert_unbiased(samples, exact)
    # the ignored pixel gets no gradient at all
    assert torch.all(samples[:, :, 3] == 0)


def test_baselines_reduce_variance(sampled):
    none1 = total_variance(sampled[("none", 1)])
    none4 = total_variance(sampled[("none", 4)])
    # measured (seeded, CPU): second_sample 0.87, rloo 0.56, ema 0.49, batch_loo 0.36
    # of `none` at the same number of samples. A second sample only helps by
    # (mean reward)^2 - Var(R), hence its small gain on this toy problem.
    assert total_variance(sampled[("second_sample", 1)]) < 0.92 * none1
    assert total_variance(sampled[("rloo", 4)]) < 0.7 * none4
    assert total_variance(sampled[("ema", 1)]) < 0.7 * none1
    assert total_variance(sampled[("batch_loo", 1)]) < 0.5 * none1


def test_the_check_detects_a_biased_baseline(exact, monkeypatch):
    """A baseline that includes the sample's own reward is biased; the check must see it."""
    loss = RewardLoss(estimator="reinforce", baseline="rloo", num_samples=2, sample_at="label")
    monkeypatch.setattr(loss, "_baseline", lambda reward, reward_b: reward.mean(1, keepdim=True))
    samples = estimates(loss, BASE_LOGITS, GT)
    with pytest.raises(AssertionError, match="differs from exact"):
        assert_unbiased(samples, exact)


def test_reinforce_at_head_resolution_is_unbiased():
    """Sampling at the logits' resolution, upsampled (nearest) for the reward."""
    logits = BASE_LOGITS[:, :3]
    gt = torch.tensor([0, 0, 1, 2, 2, 1])  # label map twice as wide as the logits
    exact = exact_gradient(logits, gt, upsample=2)
    loss = RewardLoss(estimator="reinforce", baseline="rloo", num_samples=2,
                      sample_at="logits")
    samples = estimates(loss, logits, gt)
    assert_unbiased(samples, exact)


def test_reinforce_ce_mixing_adds_lambda_ce():
    torch.manual_seed(0)
    logits = torch.randn(2, C, 4, 4, requires_grad=True)
    label = torch.randint(0, C, (2, 4, 4))
    plain = RewardLoss(estimator="reinforce", baseline="rloo", num_samples=2)
    mixed = RewardLoss(estimator="reinforce", baseline="rloo", num_samples=2, ce_weight=0.5)
    torch.manual_seed(1)
    a = plain(logits, label).loss
    torch.manual_seed(1)
    b = mixed(logits, label).loss
    ce = F.cross_entropy(logits, label)
    assert b.item() == pytest.approx(a.item() + 0.5 * ce.item(), rel=1e-5)


def test_weighted_ce_hand_computed():
    """Two images, two classes, 1x2 pixels, alpha = 0.1, as in the original code."""
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]],     # image 0: argmax (0, 1)
                           [[[1.0, 1.0]], [[0.0, 0.0]]]],    # image 1: argmax (0, 0)
                          requires_grad=True)
    label = torch.tensor([[[0, 1]], [[0, 1]]])
    loss = RewardLoss(estimator="weighted_ce", baseline="batch_loo", alpha=0.1)
    value, stats = loss(logits, label)
    # image 0 is perfect: mIoU 1, r0 = 0. image 1: class 0 IoU 1/2, class 1 IoU 0 -> 0.25
    r0, r1 = 0.0, 1.0 - 0.25
    a0, a1 = r0 - 0.1 * r1, r1 - 0.1 * r0
    ls = lambda z, i: z[i] - math.log(sum(math.exp(v) for v in z))  # noqa: E731
    ce0 = -(ls([2.0, 0.0], 0) + ls([0.0, 1.0], 1)) / 2
    ce1 = -(ls([1.0, 0.0], 0) + ls([1.0, 0.0], 1)) / 2
    expected = (a0 * ce0 + a1 * ce1) / 2
    assert value.item() == pytest.approx(expected, rel=1e-6)
    assert stats["reward"].item() == pytest.approx((r0 + r1) / 2)
    assert stats["adv_mean"].item() == pytest.approx((a0 + a1) / 2)
    # gradient flows only through the CE, weighted by the advantage
    value.backward()
    assert logits.grad[0].abs().sum() > 0


def test_weighted_ce_empty_image_and_class_weights():
    logits = torch.zeros(2, 2, 1, 2, requires_grad=True)
    label = torch.tensor([[[IGNORE, IGNORE]], [[0, 0]]])
    loss = RewardLoss(estimator="weighted_ce", alpha=0.0, empty_reward=0.5)
    _, stats = loss(logits, label)
    # image 0 has no valid pixel: cost 0.5; image 1: argmax 0 everywhere -> perfect, 0
    assert stats["reward"].item() == pytest.approx(0.25)
    weighted = RewardLoss(estimator="weighted_ce", alpha=0.0, class_weight=[2.0, 1.0])
    lbl = torch.tensor([[[0, 1]], [[0, 1]]])
    logits2 = torch.tensor([[[[0.0, 0.0]], [[1.0, 1.0]]]] * 2)
    value, stats = weighted(logits2, lbl)
    # argmax is class 1 everywhere: class 0 IoU 0, class 1 IoU 1/2 -> cost 0.75
    ce_pixel0 = -(0.0 - math.log(1 + math.e))
    ce_pixel1 = -(1.0 - math.log(1 + math.e))
    per_image = (2.0 * ce_pixel0 + 1.0 * ce_pixel1) / 2
    assert value.item() == pytest.approx(0.75 * per_image, rel=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    (dict(estimator="ppo"), "unknown estimator 'ppo'; valid: weighted_ce, reinforce"),
    (dict(estimator="reinforce", baseline="mean"),
     "unknown baseline 'mean' for estimator 'reinforce'; valid: none, second_sample, rloo"),
    (dict(estimator="weighted_ce", baseline="rloo"), "valid: batch_loo, none"),
    (dict(sample_at="pixels"), "unknown sample_at 'pixels'; valid: logits, label"),
    (dict(baseline="rloo", num_samples=1), "rloo' needs num_samples >= 2"),
])
def test_bad_names_list_the_valid_ones(kwargs, message):
    with pytest.raises(ValueError) as err:
        RewardLoss(**kwargs)
    assert message in str(err.value)


def test_class_weight_length_must_match():
    loss = RewardLoss(estimator="reinforce", class_weight=[1.0, 2.0])
    with pytest.raises(ValueError, match="class_weight has 2 values but the head predicts 3"):
        loss(torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
