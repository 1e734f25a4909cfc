"""The local-expectation estimator: every R(y_-j, c) equals the mIoU recomputed from
scratch, and the estimator's mean over all maps equals grad E[R] exactly (enumeration)."""
import itertools

import pytest
import torch

import rewardseg  # noqa: F401
from rewardseg.models.losses import RewardLoss, nearest_index
from rewardseg.rewards import local_reward_changes, per_image_miou

IGNORE = 255


def label_map(shape, classes, seed, ignore=0.2):
    g = torch.Generator().manual_seed(seed)
    gt = torch.randint(0, classes, shape, generator=g)
    gt[torch.rand(shape, generator=g) < ignore] = IGNORE
    return gt


def copy_to_labels(pred, index, label_shape):
    flat = pred.reshape(pred.shape[0], -1)
    return flat if index is None else flat[:, index].view(pred.shape[0], *label_shape)


@pytest.mark.parametrize("size, label_size", [((5, 6), (5, 6)), ((3, 4), (7, 9)),
                                              ((4, 4), (2, 3))])
@pytest.mark.parametrize("weighted", [False, True])
def test_every_local_reward_is_the_miou_recomputed(size, label_size, weighted):
    c, b = 5, 4
    g = torch.Generator().manual_seed(1)
    pred = torch.randint(0, c, (b, *size), generator=g)
    gt = label_map((b, *label_size), c - 1, seed=2)  # class 4 never in the ground truth
    gt[3] = IGNORE  # an image without a valid pixel
    index = None if size == label_size else nearest_index(size, label_size, pred.device)
    weight = torch.tensor([1.0, 2.0, 0.5, 3.0, 1.5]) if weighted else None

    def reward(p):
        return per_image_miou(copy_to_labels(p, index, label_size).view(b, *label_size), gt,
                              c, IGNORE, class_weight=weight).double()

    delta, r = local_reward_changes(pred, gt, c, IGNORE, index, weight)
    assert delta.shape == (b, c, *size) and delta.dtype == torch.float64
    base = reward(pred)
    torch.testing.assert_close(r, base, equal_nan=True, rtol=0, atol=1e-6)
    worst = 0.0
    for j in range(size[0] * size[1]):
        for k in range(c):
            changed = pred.clone().view(b, -1)
            changed[:, j] = k
            expected = torch.nan_to_num(reward(changed.view(b, *size)) - base, nan=0.0)
            worst = max(worst, (delta.view(b, c, -1)[:, k, j] - expected).abs().max().item())
    assert worst < 1e-6  # per_image_miou is float32; the changes themselves are float64
    assert (delta[3] == 0).all()  # nothing to change in an image without labels
    assert delta.abs().max() > 1e-3  # the check is not vacuous


def enumerate_gradients(module, logits, label):
    """(the estimator's mean gradient over every label map, weighted by its probability;
    the exact grad E[R]), for ``num_samples = 1`` and a loss that is a mean over images."""
    b, c, h, w = logits.shape
    probs = torch.softmax(logits.detach(), dim=1)
    mean = torch.zeros_like(logits)
    maps = list(itertools.product(range(c), repeat=h * w))
    for values in maps:
        y = torch.tensor(values).view(1, 1, h, w).expand(b, 1, h, w)
        module._sample = lambda log_probs, num, y=y: y  # the map to evaluate
        x = logits.detach().clone().requires_grad_(True)
        module(x, label, ignore_index=IGNORE).loss.backward()
        p = probs.gather(1, y.reshape(b, 1, h, w)).flatten(1).prod(1)  # p_b(y)
        mean += p.view(b, 1, 1, 1) * x.grad
    # exact: d/dlogits of -(1/B) sum_b E[R_b], E[R_b] = sum_y p_b(y) R_b(y)
    x = logits.detach().clone().requires_grad_(True)
    logp = torch.log_softmax(x, dim=1)
    ys = torch.tensor(maps).view(-1, 1, h, w)  # (M, 1, h, w)
    size = tuple(label.shape[-2:])
    index = None if (h, w) == size else nearest_index((h, w), size, x.device)
    expected = 0.0
    for i in range(b):
        y = ys[:, 0]
        lp = logp[i].flatten(1)  # (C, hw)
        logp_y = lp.gather(0, y.flatten(1)).sum(1)  # (M,)
        labels = copy_to_labels(y, index, size).view(-1, *size)
        r = per_image_miou(labels, label[i:i + 1].expand(len(maps), *size), c, IGNORE,
                           empty_value=module.empty_reward).double()
        expected = expected + (logp_y.double().exp() * r).sum()
    (-expected / b).backward()
    return mean, x.grad


@pytest.mark.parametrize("logits_size, label_size, sample_at", [
    ((2, 2), (3, 4), "logits"),  # each head pixel copied to several label pixels
    ((2, 3), (2, 3), "label"),   # one pixel each
])
def test_the_estimators_mean_is_the_exact_gradient(logits_size, label_size, sample_at):
    torch.manual_seed(0)
    c, b = 3, 3
    logits = torch.randn(b, c, *logits_size, dtype=torch.float64) * 1.5
    label = label_map((b, *label_size), c, seed=5)
    label[1, 0] = 2  # class 2 in image 1 ...
    label[2][label[2] == 2] = 0  # ... and absent from image 2's ground truth
    label[0, :, 0] = IGNORE
    module = RewardLoss(loss="local_expectation", num_samples=1, sample_at=sample_at)
    mean, exact = enumerate_gradients(module, logits.float(), label)
    assert exact.abs().max() > 1e-3
    torch.testing.assert_close(mean, exact.float(), rtol=1e-4, atol=1e-6)


def test_reinforce_is_checked_by_the_same_enumeration():
    """The enumeration itself: REINFORCE without a baseline is unbiased too, so the same
    check passes for it, and fails for one whose mean is not grad E[R] (pixel normalisation divides it by n_valid)."""
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 2, 2) * 1.5
    label = label_map((2, 3, 4), 3, seed=5)
    module = RewardLoss(loss="reinforce", baseline="none", num_samples=1)
    mean, exact = enumerate_gradients(module, logits, label)
    torch.testing.assert_close(mean, exact.float(), rtol=1e-4, atol=1e-6)
    module = RewardLoss(loss="local_expectation", num_samples=1, normalize="pixel")
    mean, exact = enumerate_gradients(module, logits, label)
    assert not torch.allclose(mean, exact.float(), rtol=1e-4, atol=1e-6)


def test_several_samples_average_and_stats_are_logged():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 8, 8, requires_grad=True)
    label = label_map((2, 32, 32), 4, seed=3)
    out = RewardLoss(loss="local_expectation", num_samples=3)(logits, label)
    out.loss.backward()
    assert torch.isfinite(out.loss) and logits.grad.abs().sum() > 0
    assert set(out.stats) >= {"reward", "miou_train", "adv_mean", "adv_std", "adv_sq"}
    with pytest.raises(ValueError, match="loss 'local_expectation' takes baseline none, "
                                         "not 'rloo'"):
        RewardLoss(loss="local_expectation", baseline="rloo")
