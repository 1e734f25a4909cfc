"""The estimators against exact answers.

``reinforce``: on problems small enough to enumerate every label map (a few pixels, 3
classes, several *distinct* images with ignored pixels), the exact expected-reward
gradient is computed by an independent reference (NumPy, its own IoU and its own
nearest-neighbour rule). The estimator's *exact* mean is computed too: every joint draw
of the sampler is enumerated (the sampler is replaced by each draw in turn) and the
estimates are averaged with their probabilities. The two must agree to float precision
for every baseline, normalisation, sampling resolution and class weighting; a biased
variant (a baseline that sees the sample's own reward) must fail the same check.
Separately, the sampler is checked against the softmax, and Monte Carlo runs check that
the baselines lower the variance. ``weighted_ce``: hand-computed examples.
"""
import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import rewardseg  # noqa: F401
from rewardseg.models.losses import RewardLoss

C = 3
IGNORE = 255


# ----------------------------------------------------------------- independent reference
def ref_nearest(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output position for nearest-neighbour resizing."""
    return np.minimum(np.floor(np.arange(n_out) * (n_in / n_out)).astype(int), n_in - 1)


def ref_miou(pred: np.ndarray, gt: np.ndarray, weights=None, empty=0.5) -> float:
    """mIoU of one map over the classes present in prediction or ground truth."""
    valid = gt != IGNORE
    num = den = 0.0
    for c in range(C):
        inter = np.sum((pred == c) & (gt == c) & valid)
        union = np.sum(((pred == c) | (gt == c)) & valid)
        if union:
            w = 1.0 if weights is None else weights[c]
            num += w * inter / union
            den += w
    return num / den if den else empty


def ref_gradient(logits: np.ndarray, gt: np.ndarray, weights=None) -> np.ndarray:
    """d/dlogits of E_{y ~ softmax(logits)} [mIoU(upsample(y), gt)] for one image.

    ``logits`` ``(C, h, w)``, ``gt`` ``(H, W)``; ``y`` is upsampled to ``(H, W)``
    nearest-neighbour. Uses grad log p(y) = onehot(y) - p, summed over all maps."""
    _, h, w = logits.shape
    z = logits - logits.max(0, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(0, keepdims=True)  # (C, h, w)
    rows, cols = ref_nearest(h, gt.shape[0]), ref_nearest(w, gt.shape[1])
    grad = np.zeros_like(p)
    for flat in itertools.product(range(C), repeat=h * w):
        y = np.array(flat).reshape(h, w)
        prob = np.prod(np.take_along_axis(p, y[None], 0))
        reward = ref_miou(y[rows][:, cols], gt, weights)
        onehot = (np.arange(C)[:, None, None] == y[None]).astype(float)
        grad += prob * reward * (onehot - p)
    return grad


def ref_valid_count(logits_hw, gt: np.ndarray, sample_at: str) -> np.ndarray:
    """Number of valid pixels at the sampling resolution, per the documented rule."""
    if sample_at == "label":
        return int(np.sum(gt != IGNORE))
    h, w = logits_hw
    rows, cols = ref_nearest(h, gt.shape[0]), ref_nearest(w, gt.shape[1])
    hit = np.zeros((h, w), bool)
    for r in range(gt.shape[0]):
        for c in range(gt.shape[1]):
            hit[rows[r], cols[c]] |= gt[r, c] != IGNORE
    return int(hit.sum())


# ----------------------------------------------------------------- exact estimator mean
def draws_per_image(loss: RewardLoss) -> int:
    return loss.num_samples * (2 if loss.baseline == "second_sample" else 1)


def _run(loss, theta, labels, draws):
    def fixed(log_probs, num):
        assert num == draws.shape[1]
        return draws

    loss._sample = fixed
    value, _ = loss(theta, labels, ignore_index=IGNORE)
    (grad,) = torch.autograd.grad(value, theta)
    del loss._sample
    return grad.double()


def exact_mean(loss: RewardLoss, logits: torch.Tensor, labels: torch.Tensor,
               joint: bool, ema_state=None):
    """Exact ``E[g_i]`` (``(B, C, h, w)``) of the per-image estimates
    ``g_i = (1/k) sum_s A_is grad log p(y_is)`` (= -batch x d loss / d logits_i), and the
    exact total variance per image.

    ``joint=True`` enumerates the draws of the whole batch together (needed when the
    baseline couples images: batch_loo, ema); ``joint=False`` puts every draw of every
    image into one batch of ``B x (draws)`` rows, so images still differ inside a batch.
    """
    bsz, _, h, w = logits.shape
    m = draws_per_image(loss)
    probs = torch.softmax(logits.double(), dim=1)

    def prob(i, y):  # y: (m, h, w) draws of image i
        return probs[i].gather(0, y).prod()

    mean = torch.zeros(logits.shape, dtype=torch.double)
    second = torch.zeros(bsz, dtype=torch.double)
    if joint:
        for combo in itertools.product(range(C), repeat=bsz * m * h * w):
            draws = torch.tensor(combo).view(bsz, m, h, w)
            if ema_state is not None:
                loss.ema_value.fill_(ema_state)
                loss.ema_initialized.fill_(True)
            theta = logits.clone().requires_grad_(True)
            est = -bsz * _run(loss, theta, labels, draws)
            p = torch.stack([prob(i, draws[i]) for i in range(bsz)]).prod()
            mean += p * est
            second += p * est.pow(2).flatten(1).sum(1)
    else:
        combos = torch.tensor(list(itertools.product(range(C), repeat=m * h * w)))
        combos = combos.view(-1, m, h, w)
        rows = combos.shape[0]
        draws = combos.repeat(bsz, 1, 1, 1)  # image 0's rows, then image 1's, ...
        theta = logits.repeat_interleave(rows, dim=0).clone().requires_grad_(True)
        batch_labels = labels.repeat_interleave(rows, dim=0)
        est = -(bsz * rows) * _run(loss, theta, batch_labels, draws)
        for i in range(bsz):
            p = torch.stack([prob(i, y) for y in combos])
            block = est[i * rows:(i + 1) * rows]
            mean[i] = (p[:, None, None, None] * block).sum(0)
            second[i] = (p * block.pow(2).flatten(1).sum(1)).sum()
    variance = second - mean.pow(2).flatten(1).sum(1)
    return mean, variance


def exact_target(logits, labels, loss: RewardLoss, weights=None):
    """Reference expected gradient per image, divided by n_valid in ``pixel`` mode."""
    out = []
    for i in range(logits.shape[0]):
        gt = labels[i].numpy()
        g = ref_gradient(logits[i].double().numpy(), gt, weights)
        if loss.normalize == "pixel":
            g = g / max(ref_valid_count(logits.shape[-2:], gt, loss.sample_at), 1)
        out.append(torch.from_numpy(g))
    return torch.stack(out)


def assert_exact(mean, target, atol=2e-6):
    err = (mean - target).abs().max().item()
    assert err <= atol + 1e-5 * target.abs().max().item(), (
        f"estimator mean differs from the exact gradient by {err:.3g}:\n{mean}\nvs\n{target}")


# Two distinct images, logits 1 x 2, labels at a larger size with ignored pixels.
# Image 0 is the minimal case: labels [255, 0, 1, 1] (the head pixel 0 covers
# an ignored and a valid label pixel). Image 1: a non-integer ratio (1 x 2 -> 1 x 3)
# where head pixel 0 reaches labels 0 and 1, head pixel 1 label 2 (ignored there).
LOGITS2 = torch.tensor([[[[1.2, -0.3]], [[0.1, 0.9]], [[-0.4, 0.2]]],
                        [[[0.3, 0.8]], [[1.0, -0.5]], [[-0.2, 0.4]]]])
LABELS_X2 = torch.tensor([[[IGNORE, 0, 1, 1]], [[1, 1, 0, 2]]])
LABELS_NONINT = torch.tensor([[[0, IGNORE, 2]], [[1, 2, IGNORE]]])
# label-resolution sampling: logits already at the labels' size (1 x 3)
LOGITS3 = torch.tensor([[[[1.5, 0.0, 0.3]], [[0.2, 1.2, 0.0]], [[-0.3, 0.1, 1.0]]],
                        [[[0.4, -0.2, 0.9]], [[0.0, 0.8, 0.1]], [[0.6, 0.3, -0.7]]]])
LABELS3 = torch.tensor([[[0, 1, IGNORE]], [[2, IGNORE, 2]]])
# a third image for the batch-coupled baselines
LOGITS2_B3 = torch.cat([LOGITS2, torch.tensor([[[[0.5, 0.5]], [[-0.5, 0.0]], [[0.0, 1.0]]]])])
LABELS_X2_B3 = torch.cat([LABELS_X2, torch.tensor([[[2, 2, IGNORE, 0]]])])

CASES = {
    # name: (loss kwargs, logits, labels, joint enumeration)
    "none-logits-x2": (dict(baseline="none", num_samples=1), LOGITS2, LABELS_X2, False),
    "none-logits-nonint": (dict(baseline="none", num_samples=1), LOGITS2, LABELS_NONINT,
                           False),
    "none-label": (dict(baseline="none", num_samples=1, sample_at="label"), LOGITS3,
                   LABELS3, False),
    "rloo2-logits-x2": (dict(baseline="rloo", num_samples=2), LOGITS2, LABELS_X2, False),
    "rloo2-logits-nonint": (dict(baseline="rloo", num_samples=2), LOGITS2, LABELS_NONINT,
                            False),
    "rloo2-label": (dict(baseline="rloo", num_samples=2, sample_at="label"), LOGITS3,
                    LABELS3, False),
    "second-logits-x2": (dict(baseline="second_sample", num_samples=1), LOGITS2, LABELS_X2,
                         False),
    "greedy-logits-nonint": (dict(baseline="greedy", num_samples=1), LOGITS2,
                             LABELS_NONINT, False),
    "greedy2-label": (dict(baseline="greedy", num_samples=2, sample_at="label"), LOGITS3,
                      LABELS3, False),
    "batchloo-logits-x2": (dict(baseline="batch_loo", num_samples=1, alpha=1.0), LOGITS2_B3,
                           LABELS_X2_B3, True),
    "batchloo-a0.5-label": (dict(baseline="batch_loo", num_samples=1, alpha=0.5,
                                 sample_at="label"), LOGITS3, LABELS3, True),
    "ema-logits-x2": (dict(baseline="ema", num_samples=1, ema_momentum=0.5), LOGITS2,
                      LABELS_X2, True),
}


@pytest.mark.parametrize("normalize", ["image", "pixel"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_reinforce_mean_is_the_exact_gradient(name, normalize):
    kwargs, logits, labels, joint = CASES[name]
    loss = RewardLoss(loss="reinforce", normalize=normalize, **kwargs)
    loss.train()
    mean, _ = exact_mean(loss, logits, labels, joint,
                         ema_state=0.4 if kwargs["baseline"] == "ema" else None)
    assert_exact(mean, exact_target(logits, labels, loss))


def test_the_minimal_ignore_edge_case_gets_its_gradient():
    """logits 1 x 2, labels [255, 0, 1, 1]: head pixel 0 covers one valid label pixel, so
    its sample changes the reward. The nearest-downsampled label (the old validity rule)
    reads 255 there and gave it no gradient; for uniform logits its exact gradient is
    [2/27 + 1/81, -3.5/81, -3.5/81] = [0.0864, -0.0432, -0.0432]."""
    logits = torch.tensor([[[[0.0, 0.0]], [[0.0, 0.0]], [[0.0, 0.0]]]])
    labels = torch.tensor([[[IGNORE, 0, 1, 1]]])
    target = torch.from_numpy(ref_gradient(logits[0].double().numpy(), labels[0].numpy()))
    torch.testing.assert_close(target[:, 0, 0], torch.tensor([7, -3.5, -3.5],
                                                             dtype=torch.double) / 81)
    loss = RewardLoss(loss="reinforce", baseline="none", num_samples=1)
    mean, _ = exact_mean(loss, logits, labels, joint=False)
    assert_exact(mean, target[None])


def test_class_weighted_reinforce_is_unbiased_for_the_weighted_reward():
    weights = [2.0, 0.5, 1.0]
    loss = RewardLoss(loss="reinforce", baseline="rloo", num_samples=2,
                      class_weight=weights)
    mean, _ = exact_mean(loss, LOGITS2, LABELS_NONINT, joint=False)
    target = exact_target(LOGITS2, LABELS_NONINT, loss, weights=np.array(weights))
    assert_exact(mean, target)
    # ... and not for the unweighted one (the check tells the two apart)
    plain = exact_target(LOGITS2, LABELS_NONINT, loss)
    assert (mean - plain).abs().max() > 1e-3


@pytest.mark.parametrize("mutation", ["batch_loo_sees_own_reward", "ema_sees_current_batch"])
def test_the_check_catches_batch_level_bugs(mutation, monkeypatch):
    """Two plausible bugs that a batch of identical copies cannot reveal."""
    if mutation == "batch_loo_sees_own_reward":
        kwargs, logits, labels, _ = CASES["batchloo-logits-x2"]
        loss = RewardLoss(loss="reinforce", **kwargs)

        def biased(reward, reward_b):
            return loss.alpha * reward.mean(dim=0, keepdim=True).expand_as(reward)
        ema = None
    else:
        kwargs, logits, labels, _ = CASES["ema-logits-x2"]
        loss = RewardLoss(loss="reinforce", **kwargs)

        def biased(reward, reward_b):
            m = loss.ema_momentum
            return (m * loss.ema_value + (1 - m) * reward.mean()).expand_as(reward)
        ema = 0.4
    loss.train()
    monkeypatch.setattr(loss, "_baseline", biased)
    mean, _ = exact_mean(loss, logits, labels, joint=True, ema_state=ema)
    with pytest.raises(AssertionError, match="differs from the exact gradient"):
        assert_exact(mean, exact_target(logits, labels, loss))


def test_pixel_normalisation_divides_by_the_valid_count():
    """The two modes differ exactly by n_valid per image (at the sampling resolution)."""
    a = RewardLoss(loss="reinforce", baseline="rloo", num_samples=2)
    b = RewardLoss(loss="reinforce", baseline="rloo", num_samples=2, normalize="pixel")
    labels = torch.tensor([[[IGNORE] * 8 + [1] * 8], [[0] * 16]])
    logits = torch.randn(2, C, 1, 4, generator=torch.Generator().manual_seed(0))
    grads = []
    for loss in (a, b):
        theta = logits.clone().requires_grad_(True)
        torch.manual_seed(3)
        value, _ = loss(theta, labels, ignore_index=IGNORE)
        grads.append(torch.autograd.grad(value, theta)[0])
    # image 0: head pixels 0, 1 reach only ignored labels -> n_valid 2; image 1: 4
    torch.testing.assert_close(grads[1][0] * 2, grads[0][0])
    torch.testing.assert_close(grads[1][1] * 4, grads[0][1])
    assert torch.all(grads[0][0, :, :, :2] == 0)


# ----------------------------------------------------------------- sampler, variance
def test_sampler_follows_the_softmax():
    logits = torch.tensor([[[[2.0, -1.0]], [[0.0, 0.5]], [[-1.0, 0.4]]]])
    loss = RewardLoss(loss="reinforce", baseline="none", num_samples=1)
    torch.manual_seed(0)
    n = 20000
    samples = loss._sample(F.log_softmax(logits, 1), n)[0, :, 0]  # (n, 2)
    probs = torch.softmax(logits, 1)[0, :, 0]  # (C, 2)
    for j in range(2):
        freq = torch.bincount(samples[:, j], minlength=C).double() / n
        se = (probs[:, j].double() * (1 - probs[:, j].double()) / n).sqrt()
        assert torch.all((freq - probs[:, j]).abs() <= 5 * se), (freq, probs[:, j])


def mc_estimates(loss, logits, gt, copies=4000, batches=5, seed=0):
    """Monte Carlo per-image estimates of grad E[R] on copies of one image ``(n, C, P)``."""
    torch.manual_seed(seed)
    out = []
    for _ in range(batches):
        theta = logits[None, :, None, :].repeat(copies, 1, 1, 1).requires_grad_(True)
        labels = gt.view(1, 1, -1).repeat(copies, 1, 1)
        value, _ = loss(theta, labels, ignore_index=IGNORE)
        (grad,) = torch.autograd.grad(value, theta)
        out.append(-copies * grad[:, :, 0, :])
    return torch.cat(out).double()


BASE_LOGITS = torch.tensor([[1.5, 0.0, 0.3, -0.5],
                            [0.2, 1.2, 0.0, 0.4],
                            [-0.3, 0.1, 1.0, 0.0]])
GT = torch.tensor([0, 1, 2, IGNORE])
VARIANCE_CASES = [
    dict(baseline="none", num_samples=1),
    dict(baseline="none", num_samples=4),
    dict(baseline="second_sample", num_samples=1),
    dict(baseline="rloo", num_samples=4),
    dict(baseline="batch_loo", num_samples=1, alpha=1.0),
    dict(baseline="ema", num_samples=1, ema_momentum=0.5),
]


def test_baselines_reduce_variance():
    var = {}
    for case in VARIANCE_CASES:
        loss = RewardLoss(loss="reinforce", sample_at="label", **case)
        loss.train()
        samples = mc_estimates(loss, BASE_LOGITS, GT)
        var[(case["baseline"], case["num_samples"])] = samples.var(0).sum().item()
        # the ignored pixel gets no gradient at all
        assert torch.all(samples[:, :, 3] == 0)
    none1, none4 = var[("none", 1)], var[("none", 4)]
    # measured (seeded, CPU), as a fraction of `none` with as many samples: second_sample
    # 0.87, rloo 0.56, ema 0.49, batch_loo 0.36. A second sample only helps by
    # (mean reward)^2 - Var(R), hence its small gain on this toy problem.
    assert var[("second_sample", 1)] < 0.92 * none1
    assert var[("rloo", 4)] < 0.7 * none4
    assert var[("ema", 1)] < 0.7 * none1
    assert var[("batch_loo", 1)] < 0.5 * none1


def test_greedy_baseline_reduces_variance_on_a_larger_image():
    """Self-critical baseline, b = R(argmax map). On 3 valid pixels it does not help (the
    argmax map is perfect, R = 1, far above a sample's mean reward: measured 2.3x the
    variance of no baseline). On 64 pixels with a confident policy (a trained model's
    situation) a sample's reward concentrates, and greedy removes most of the variance,
    though less than a sampled baseline, because R(argmax) sits above E[R]: measured
    none 7.8, greedy 3.3, second sample 0.21."""
    g = torch.Generator().manual_seed(0)
    gt = torch.randint(0, C, (64,), generator=g)
    gt[::9] = IGNORE
    logits = torch.randn(C, 64, generator=g) * 0.5 + 2.0 * F.one_hot(gt.clamp(max=C - 1), C).T
    var = {}
    for baseline in ("none", "greedy", "second_sample"):
        loss = RewardLoss(loss="reinforce", sample_at="label", baseline=baseline,
                          num_samples=1)
        samples = mc_estimates(loss, logits, gt, copies=2000, batches=3)
        var[baseline] = samples.var(0).sum().item()
        assert torch.all(samples[:, :, ::9] == 0)  # ignored pixels get no gradient
    assert var["greedy"] < 0.6 * var["none"], var
    assert var["second_sample"] < var["greedy"], var


# ----------------------------------------------------------------- the CE term, weighted_ce
def test_ce_weight_term_with_ignored_pixels_and_different_valid_counts():
    """``ce_weight`` adds lambda x the mean over images of each image's CE averaged over
    its own valid pixels (not over the batch's pooled pixels)."""
    torch.manual_seed(0)
    logits = torch.randn(2, C, 4, 4, requires_grad=True)
    label = torch.randint(0, C, (2, 4, 4))
    label[0, :3] = IGNORE  # image 0: 4 valid pixels; image 1: 16
    plain = RewardLoss(loss="reinforce", baseline="rloo", num_samples=2)
    mixed = RewardLoss(loss="reinforce", baseline="rloo", num_samples=2, ce_weight=0.5)
    torch.manual_seed(1)
    a = plain(logits, label).loss
    torch.manual_seed(1)
    b = mixed(logits, label).loss
    per_image = [F.cross_entropy(logits[i:i + 1], label[i:i + 1], ignore_index=IGNORE)
                 for i in range(2)]
    expected_ce = (per_image[0] + per_image[1]) / 2
    pooled = F.cross_entropy(logits, label, ignore_index=IGNORE)
    assert abs(expected_ce.item() - pooled.item()) > 1e-3  # the two readings differ here
    assert b.item() == pytest.approx(a.item() + 0.5 * expected_ce.item(), rel=1e-5)
    # its gradient is that of lambda x the per-image mean CE
    ga = torch.autograd.grad(a, logits, retain_graph=True)[0]
    gb = torch.autograd.grad(b, logits)[0]
    gce = torch.autograd.grad(0.5 * expected_ce, logits)[0]
    torch.testing.assert_close(gb - ga, gce, rtol=1e-4, atol=1e-6)


def test_weighted_ce_hand_computed():
    """Two images, two classes, 1x2 pixels, alpha = 0.1, as in the original code."""
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]],     # image 0: argmax (0, 1)
                           [[[1.0, 1.0]], [[0.0, 0.0]]]],    # image 1: argmax (0, 0)
                          requires_grad=True)
    label = torch.tensor([[[0, 1]], [[0, 1]]])
    loss = RewardLoss(loss="weighted_ce", baseline="batch_loo", alpha=0.1)
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
    loss = RewardLoss(loss="weighted_ce", alpha=0.0, empty_reward=0.5)
    _, stats = loss(logits, label)
    # image 0 has no valid pixel: cost 0.5; image 1: argmax 0 everywhere -> perfect, 0
    assert stats["reward"].item() == pytest.approx(0.25)
    weighted = RewardLoss(loss="weighted_ce", alpha=0.0, class_weight=[2.0, 1.0])
    lbl = torch.tensor([[[0, 1]], [[0, 1]]])
    logits2 = torch.tensor([[[[0.0, 0.0]], [[1.0, 1.0]]]] * 2)
    value, stats = weighted(logits2, lbl)
    # argmax is class 1 everywhere: class 0 IoU 0, class 1 IoU 1/2 -> cost 0.75
    ce_pixel0 = -(0.0 - math.log(1 + math.e))
    ce_pixel1 = -(1.0 - math.log(1 + math.e))
    per_image = (2.0 * ce_pixel0 + 1.0 * ce_pixel1) / 2
    assert value.item() == pytest.approx(0.75 * per_image, rel=1e-6)


@pytest.mark.parametrize("estimator", ["weighted_ce", "reinforce"])
def test_batch_loo_needs_two_images(estimator):
    loss = RewardLoss(loss=estimator, baseline="batch_loo", num_samples=1)
    with pytest.raises(ValueError, match="at least 2 images in the global batch"):
        loss(torch.zeros(1, C, 1, 2), torch.zeros(1, 1, 2, dtype=torch.long))


@pytest.mark.parametrize("kwargs, message", [
    (dict(loss="ppo"), "unknown loss 'ppo'; valid: weighted_ce, reinforce"),
    (dict(loss="reinforce", baseline="mean"),
     "loss 'reinforce' takes baseline none / second_sample / rloo"),
    (dict(loss="weighted_ce", baseline="rloo"), "takes baseline batch_loo / none, not"),
    (dict(sample_at="pixels"), "unknown sample_at 'pixels'; valid: logits, label"),
    (dict(normalize="mean"), "unknown normalize 'mean'; valid: image, pixel"),
    (dict(baseline="rloo", num_samples=1), "rloo' needs num_samples >= 2"),
])
def test_bad_names_list_the_valid_ones(kwargs, message):
    with pytest.raises(ValueError) as err:
        RewardLoss(**kwargs)
    assert message in str(err.value)


def test_class_weight_length_must_match():
    loss = RewardLoss(loss="reinforce", class_weight=[1.0, 2.0])
    with pytest.raises(ValueError, match="class_weight has 2 values but the head predicts 3"):
        loss(torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))


# ----------------------------------------------------------------- class-weighted CE (loss: ce)
WEIGHTS4 = [1.0, 2.5, 0.5, 3.0]


@pytest.mark.parametrize("avg_non_ignore", [False, True])
@pytest.mark.parametrize("seg_weight", [False, True])
def test_masked_ce_is_mmsegs_weighted_ce_on_labels_without_ignored_pixels(avg_non_ignore,
                                                                          seg_weight):
    from mmseg.models.losses import CrossEntropyLoss

    from rewardseg.models.losses import MaskedCrossEntropyLoss

    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5, 6)
    label = torch.randint(0, 4, (2, 5, 6))
    weight = torch.rand(2, 5, 6) if seg_weight else None
    kwargs = dict(class_weight=WEIGHTS4, loss_weight=0.7, avg_non_ignore=avg_non_ignore)
    grads = []
    values = []
    for cls in (CrossEntropyLoss, MaskedCrossEntropyLoss):
        x = logits.clone().requires_grad_(True)
        value = cls(**kwargs)(x, label, weight=weight, ignore_index=IGNORE)
        values.append(value.detach())
        grads.append(torch.autograd.grad(value, x)[0])
    assert torch.equal(values[0], values[1]), values
    assert torch.equal(grads[0], grads[1])
    # and without class weights it is mmseg's unweighted CE, untouched
    plain = [cls(avg_non_ignore=avg_non_ignore)(logits, label, ignore_index=IGNORE)
             for cls in (CrossEntropyLoss, MaskedCrossEntropyLoss)]
    assert torch.equal(plain[0], plain[1])


@pytest.mark.parametrize("avg_non_ignore", [False, True])
def test_masked_ce_with_ignored_pixels_is_the_weighted_mean_over_valid_pixels(avg_non_ignore):
    """mmseg 1.2.2's CE looks the class weights up with the raw label: a 255 pixel is an
    IndexError. Ours weighs ignored pixels 0: PyTorch's weighted mean over valid pixels."""
    from mmseg.models.losses import CrossEntropyLoss

    from rewardseg.models.losses import MaskedCrossEntropyLoss

    torch.manual_seed(1)
    logits = torch.randn(2, 4, 5, 6, requires_grad=True)
    label = torch.randint(0, 4, (2, 5, 6))
    label[0, :2] = IGNORE
    with pytest.raises(IndexError, match="255"):  # the bug this loss exists for
        CrossEntropyLoss(class_weight=WEIGHTS4, avg_non_ignore=avg_non_ignore)(
            logits, label, ignore_index=IGNORE)
    value = MaskedCrossEntropyLoss(class_weight=WEIGHTS4, avg_non_ignore=avg_non_ignore)(
        logits, label, ignore_index=IGNORE)
    expected = F.cross_entropy(logits, label, weight=torch.tensor(WEIGHTS4),
                               ignore_index=IGNORE)
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)
    (grad,) = torch.autograd.grad(value, logits)
    assert torch.all(grad[0, :, :2] == 0)  # ignored pixels get no gradient
    assert torch.isfinite(grad).all()


def test_ce_loss_config_with_class_weights_survives_ignored_pixels(tmp_path):
    """``loss: ce`` with a class-weight file: the decode head's loss built from
    ``decode_loss_config`` runs on labels with 255; the config it replaced failed at the
    first iteration. Without class weights the config is unchanged."""
    import json

    from mmseg.registry import MODELS

    from rewardseg.models.losses import decode_loss_config

    path = tmp_path / "class_weights_s0.05.json"
    path.write_text(json.dumps({"weights": WEIGHTS4}))
    head, (cfg,) = decode_loss_config(dict(loss="ce", class_weight=str(path)))
    assert head == "ASPPHead"
    assert cfg == dict(type="MaskedCrossEntropyLoss", use_sigmoid=False, loss_weight=1.0,
                       class_weight=WEIGHTS4)
    logits = torch.randn(2, 4, 5, 6)
    label = torch.randint(0, 4, (2, 5, 6))
    label[1, -1] = IGNORE
    value = MODELS.build(cfg)(logits, label, ignore_index=IGNORE)
    assert torch.isfinite(value)
    old = dict(cfg, type="CrossEntropyLoss")  # what decode_loss_config used to return
    with pytest.raises(IndexError):
        MODELS.build(old)(logits, label, ignore_index=IGNORE)
    # no class weights: mmseg's CE, the same config as before
    assert decode_loss_config(dict(loss="ce", class_weight=None)) == (
        "ASPPHead", [dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0)])


# ----------------------------------------------------------------- reward_argmax and entropy
POLICY_CASES = [
    dict(loss="reinforce", baseline="rloo", num_samples=2),
    dict(loss="reinforce", baseline="greedy", num_samples=1, sample_at="label"),
    dict(loss="reinforce", baseline="batch_loo", num_samples=2, class_weight=[1.0, 2.0, 0.5]),
    dict(loss="local_expectation", num_samples=1),
    dict(loss="local_expectation", num_samples=2, sample_at="label", ce_weight=0.3),
    dict(loss="weighted_ce", baseline="batch_loo"),
    dict(loss="weighted_ce", baseline="none", class_weight=[1.0, 2.0, 0.5]),
]


@pytest.mark.parametrize("kwargs", POLICY_CASES, ids=lambda k: "-".join(map(str, k.values())))
def test_the_new_statistics_change_neither_loss_nor_gradient(kwargs, monkeypatch):
    """``reward_argmax`` and ``entropy`` are read off without gradient and draw nothing
    from the RNG: with them stubbed out, the loss, the gradient, the other statistics
    and the next random number are bit-identical."""
    def run():
        torch.manual_seed(5)
        logits = torch.randn(3, C, 4, 6, requires_grad=True)
        label = torch.randint(0, C, (3, 8, 12))
        label[0, :3] = IGNORE
        out = RewardLoss(**kwargs)(logits, label)
        (grad,) = torch.autograd.grad(out.loss, logits)
        return out, grad, torch.rand(())

    out, grad, after = run()
    assert {"reward_argmax", "entropy"} <= set(out.stats)
    monkeypatch.setattr(RewardLoss, "_policy_stats", lambda self, *a, **k: {})
    monkeypatch.setattr(RewardLoss, "_entropy", staticmethod(lambda *a: torch.zeros(())))
    out0, grad0, after0 = run()
    assert torch.equal(out.loss, out0.loss)
    assert torch.equal(grad, grad0)
    assert torch.equal(after, after0)
    for key in ("reward", "miou_train", "adv_mean", "adv_std", "adv_sq"):
        assert torch.equal(out.stats[key], out0.stats[key]), key


@pytest.mark.parametrize("estimator", ["reinforce", "local_expectation", "weighted_ce"])
@pytest.mark.parametrize("sample_at", ["logits", "label"])
def test_entropy_of_uniform_logits_is_log_c(estimator, sample_at):
    loss = RewardLoss(loss=estimator, sample_at=sample_at, num_samples=2,
                      baseline="none")
    label = torch.randint(0, C, (2, 6, 8))
    label[0, :2] = IGNORE
    _, stats = loss(torch.zeros(2, C, 3, 4, requires_grad=True), label)
    assert stats["entropy"].item() == pytest.approx(math.log(C), rel=1e-6)


def test_entropy_is_the_mean_over_valid_pixels_at_the_sampling_resolution():
    """Head pixel 0 covers only ignored label pixels (it is not valid): its entropy (a
    uniform softmax) does not count; head pixel 1 is one-hot, entropy 0. weighted_ce
    samples nothing but is measured the same way."""
    logits = torch.tensor([[[[0.0, 120.0]], [[0.0, 0.0]], [[0.0, 0.0]]]])  # (1, 3, 1, 2)
    label = torch.tensor([[[IGNORE, IGNORE, 0, 0]]])
    for estimator in ("reinforce", "local_expectation", "weighted_ce"):
        _, stats = RewardLoss(loss=estimator, baseline="none", num_samples=1)(
            logits, label)
        assert stats["entropy"].item() == pytest.approx(0.0, abs=1e-12)
    # at the labels' resolution the upsampled logits' valid pixels are counted instead
    logits = torch.tensor([[[[0.0, 3.0]], [[0.0, 0.0]], [[0.0, 0.0]]]])
    up = F.interpolate(logits, size=(1, 4), mode="bilinear", align_corners=False)
    ent = torch.special.entr(up.softmax(1)).sum(1)[0, 0]
    assert ent[0] > ent[2] > ent[3] > 0.1
    ent = ent[2:].mean().item()
    for estimator in ("reinforce", "local_expectation", "weighted_ce"):
        _, stats = RewardLoss(loss=estimator, baseline="none", num_samples=1,
                              sample_at="label")(logits, label)
        assert stats["entropy"].item() == pytest.approx(ent, rel=1e-6)


def test_reward_argmax_is_the_argmax_maps_mean_reward():
    """Two images, logits 1 x 2, labels 1 x 4 with an ignored pixel: the argmax of the
    bilinearly upsampled logits (what evaluation predicts), scored with the reward of the
    sampled maps (mIoU, class-weighted with class_weight; empty_reward for image 1, which
    has no valid pixel)."""
    logits = torch.tensor([[[[3.0, -1.0]], [[0.0, 2.0]], [[-1.0, 0.0]]],
                           [[[0.0, 0.0]], [[1.0, 1.0]], [[0.0, 0.0]]]])
    label = torch.tensor([[[0, 0, 1, IGNORE]], [[IGNORE, IGNORE, IGNORE, IGNORE]]])
    up = F.interpolate(logits, size=(1, 4), mode="bilinear", align_corners=False)
    pred = up.argmax(1)
    assert pred[0].tolist() == [[0, 0, 1, 1]]  # image 0: a perfect map on its valid pixels
    weights = [1.0, 3.0, 1.0]
    for estimator in ("reinforce", "local_expectation"):
        for class_weight in (None, weights):
            loss = RewardLoss(loss=estimator, baseline="none", num_samples=1,
                              empty_reward=0.25, class_weight=class_weight)
            _, stats = loss(logits, label)
            assert stats["reward_argmax"].item() == pytest.approx((1.0 + 0.25) / 2)
    # an imperfect one: image 0 predicts [0, 0, 1, .] for [0, 1, 1, .]; image 1 (class 1
    # everywhere) is perfect
    assert pred[1].tolist() == [[1, 1, 1, 1]]
    label = torch.tensor([[[0, 1, 1, IGNORE]], [[1, IGNORE, 1, 1]]])
    for class_weight in (None, weights):
        w = [1.0, 1.0, 1.0] if class_weight is None else class_weight
        # image 0 [0, 0, 1] vs gt [0, 1, 1]: IoU0 1/2, IoU1 1/2; image 1: perfect
        image0 = (w[0] * 0.5 + w[1] * 0.5) / (w[0] + w[1])
        expected = (image0 + 1.0) / 2
        direct = np.mean([ref_miou(pred[i, 0].numpy(), label[i, 0].numpy(), w)
                          for i in range(2)])
        assert direct == pytest.approx(expected)
        _, stats = RewardLoss(loss="reinforce", baseline="none", num_samples=1,
                              class_weight=class_weight)(logits, label)
        assert stats["reward_argmax"].item() == pytest.approx(expected, rel=1e-6)
    # weighted_ce: the argmax map's (unweighted) mIoU, 1 - its cost
    _, stats = RewardLoss(loss="weighted_ce", baseline="none")(logits, label)
    assert stats["reward_argmax"].item() == pytest.approx((0.5 + 1.0) / 2, rel=1e-6)
    assert stats["reward_argmax"].item() == pytest.approx(1 - stats["reward"].item())
