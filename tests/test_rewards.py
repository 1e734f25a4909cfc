"""Vectorised per-image IoU against mmseg's own per-image computation."""
import numpy as np
import pytest
import torch

import rewardseg  # noqa: F401
from mmseg.evaluation.metrics import IoUMetric

from rewardseg.rewards import confusion_per_image, intersect_union, per_image_iou, per_image_miou

C = 6
IGNORE = 255


def random_maps(n=5, h=17, w=23, seed=0):
    g = torch.Generator().manual_seed(seed)
    # classes 4 and 5 never occur in the ground truth; class 5 never predicted either
    gt = torch.randint(0, 4, (n, h, w), generator=g)
    gt[torch.rand((n, h, w), generator=g) < 0.15] = IGNORE
    pred = torch.randint(0, 5, (n, h, w), generator=g)
    gt[1] = IGNORE  # an image with no valid pixel at all
    return pred, gt


@pytest.mark.parametrize("slots", [1, 3, 32])
def test_intersect_union_matches_mmseg_per_image(slots):
    pred, gt = random_maps()
    inter, union, area_pred, area_gt = intersect_union(pred, gt, C, IGNORE, slots=slots)
    for i in range(pred.shape[0]):
        ref = IoUMetric.intersect_and_union(pred[i], gt[i], C, IGNORE)
        for ours, theirs in zip((inter[i], union[i], area_pred[i], area_gt[i]), ref):
            assert torch.equal(ours.float(), theirs.float())


def test_miou_follows_iou_metric_nan_rule():
    pred, gt = random_maps(seed=1)
    miou = per_image_miou(pred, gt, C, IGNORE)
    iou = per_image_iou(pred, gt, C, IGNORE)
    for i in range(pred.shape[0]):
        i_, u_, p_, l_ = IoUMetric.intersect_and_union(pred[i], gt[i], C, IGNORE)
        ref = IoUMetric.total_area_to_metrics(i_, u_, p_, l_, ["mIoU"])["IoU"]
        np.testing.assert_allclose(iou[i].numpy(), np.asarray(ref), equal_nan=True)
        expected = np.nanmean(np.asarray(ref)) if not np.all(np.isnan(ref)) else np.nan
        np.testing.assert_allclose(miou[i].item(), expected, rtol=1e-6, equal_nan=True)
    assert torch.isnan(miou[1])  # the all-ignored image
    assert not torch.isnan(miou[0])


def test_empty_value_and_class_weight():
    pred, gt = random_maps(seed=2)
    miou = per_image_miou(pred, gt, C, IGNORE, empty_value=0.5)
    assert miou[1].item() == 0.5
    iou = per_image_iou(pred, gt, C, IGNORE)
    weight = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    weighted = per_image_miou(pred, gt, C, IGNORE, class_weight=weight)
    i = 0
    present = ~torch.isnan(iou[i])
    expected = (iou[i][present] * weight[present].double()).sum() / weight[present].sum()
    assert weighted[i].item() == pytest.approx(expected.item(), rel=1e-6)
    # uniform weights give the plain mean
    same = per_image_miou(pred, gt, C, IGNORE, class_weight=torch.ones(C))
    torch.testing.assert_close(same[0], per_image_miou(pred, gt, C, IGNORE)[0])


def test_perfect_and_disjoint_predictions():
    gt = torch.tensor([[[0, 1], [2, IGNORE]]])
    assert per_image_miou(gt.clamp(max=2), gt, 3).item() == pytest.approx(1.0)
    wrong = torch.tensor([[[1, 2], [0, 0]]])
    assert per_image_miou(wrong, gt, 3).item() == pytest.approx(0.0)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        intersect_union(torch.zeros(1, 2, 2, dtype=torch.long),
                        torch.zeros(1, 2, 3, dtype=torch.long), 3)


@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8])
def test_spreading_over_slots_gives_the_same_counts(dtype):
    g = torch.Generator().manual_seed(3)
    gt = torch.randint(0, 19, (3, 64, 96), generator=g)
    gt[torch.rand((3, 64, 96), generator=g) < 0.1] = IGNORE
    gt[0, :5] = 19  # a label outside [0, C): not counted, like IGNORE
    pred = torch.randint(0, 19, (3, 64, 96), generator=g)
    one = confusion_per_image(pred, gt.to(dtype), 19, IGNORE, slots=1)
    assert one.sum() == ((gt != IGNORE) & (gt < 19)).sum()
    for slots in (2, 32, 7 * 97):  # 679 slots: more than the pixels of a row
        assert torch.equal(confusion_per_image(pred, gt.to(dtype), 19, IGNORE, slots=slots),
                           one)
