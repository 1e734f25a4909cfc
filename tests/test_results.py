"""The study's statistics (rewardseg.results): paired Δ with its CI, paired t-test, Holm's
adjustment, minimum detectable effect, verdicts; and the unrounded IoU they are fed."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from rewardseg.results import (ALPHA, best_variant, final_table, holm,
                               minimum_detectable_effect, paired_comparison)


def test_paired_comparison_is_the_paired_t_test():
    diff = np.array([0.4, -0.1, 0.9, 0.3, 0.5])
    out = paired_comparison(diff)
    n, sd = len(diff), diff.std(ddof=1)
    assert out["delta"] == pytest.approx(diff.mean())
    assert out["p"] == pytest.approx(stats.ttest_1samp(diff, 0.0).pvalue)
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((diff.mean() - half,
                                                            diff.mean() + half))
    # the MDE is the true effect detected with 80 % power: check it with the noncentral t
    se = sd / math.sqrt(n)
    crit = stats.t.ppf(1 - ALPHA / 2, n - 1)
    nc = out["mde"] / se
    power = stats.nct.sf(crit, n - 1, nc) + stats.nct.cdf(-crit, n - 1, nc)
    assert 0.77 < power < 0.85, power


def test_identical_deltas_are_not_a_zero_width_interval():
    out = paired_comparison([-0.09, -0.09, -0.09])
    assert out["constant"] and out["delta"] == pytest.approx(-0.09)
    assert all(math.isnan(out[k]) for k in ("ci_low", "ci_high", "p", "mde"))


def test_holm_by_hand():
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # an untested comparison counts in the family and stays untested
    adjusted = holm([0.01, float("nan")])
    assert adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1])


def _metrics(finals):
    rows = []
    for variant, values in finals.items():
        for seed, value in enumerate(values):
            rows.append(dict(study="s", variant=variant, seed=seed, step=10, **{"class": "mIoU"},
                             IoU=value))
            rows.append(dict(study="s", variant=variant, seed=seed, step=0, **{"class": "mIoU"},
                             IoU=0.0))
    rows.append(dict(study="s", variant="pretrain", seed=0, step=100, **{"class": "mIoU"},
                     IoU=99.0))
    return pd.DataFrame(rows)


def test_final_table_pairs_each_variant_with_its_own_control_and_adjusts():
    control = [50.0, 52.0, 51.0, 53.0, 49.0]
    df = _metrics({
        "control": control,
        "clear_gain": [c + 2.0 + e for c, e in zip(control, [0.1, -0.1, 0.05, 0.0, -0.05])],
        "noise": [c + e for c, e in zip(control, [0.5, -0.6, 0.4, -0.2, 0.1])],
        "rounding": [c - 0.09 for c in control],
        "late_control": [40.0, 41.0, 42.0, 43.0, 44.0],
        "late": [39.0, 40.2, 40.9, 42.1, 43.0],
    })
    table = final_table(df, {"late": "late_control"}).set_index("variant")
    assert "pretrain" not in table.index
    assert table.loc["late", "control"] == "late_control"
    assert table.loc["late", "delta"] == pytest.approx(-0.96)
    assert table.loc["late_control", "verdict"] == "control"
    compared = table[table["control"] != table.index]
    assert len(compared) == 4
    raw = compared["p"].dropna().sort_values()
    assert compared["p_holm"].max() <= 1 and (compared["p_holm"].dropna() >= compared["p"].dropna()).all()
    assert compared.loc[raw.index[0], "p_holm"] == pytest.approx(min(1, 4 * raw.iloc[0]))
    assert table.loc["clear_gain", "verdict"] == "better than its control"
    assert table.loc["noise", "verdict"].startswith("no difference detected (MDE ")
    # the verdict's MDE is at the level of the adjusted tests: alpha / comparisons
    row = table.loc["noise"]
    family = int((table["control"] != table.index).sum())
    assert family > 1
    expected = minimum_detectable_effect(row["sd_delta"], int(row["pairs"]), ALPHA / family)
    assert row["mde_holm"] == pytest.approx(expected) and row["mde_holm"] > row["mde"]
    assert f"(MDE {row['mde_holm']:.2f})" in row["verdict"]
    assert table.loc["rounding", "verdict"].startswith("same Δ on every seed (-0.09)")
    assert best_variant(table.reset_index()) == "clear_gain"


def test_no_best_variant_when_nothing_beats_its_control():
    control = [50.0, 52.0, 51.0]
    df = _metrics({"control": control, "a": [c + e for c, e in zip(control, [0.3, -0.4, 0.2])]})
    table = final_table(df)
    assert best_variant(table) is None


def test_the_metric_reports_unrounded_iou():
    """mIoU is the mean of the per-class IoU from the summed confusion counts, not mmseg's
    value rounded to 0.01."""
    import torch

    from rewardseg.models.datasets import PerClassIoUMetric

    metric = PerClassIoUMetric(iou_metrics=["mIoU"])
    metric.dataset_meta = dict(classes=("a", "b", "c"))
    # (intersect, union, pred area, label area) per image; class c absent everywhere
    results = [(torch.tensor([1.0, 2.0, 0.0]), torch.tensor([3.0, 7.0, 0.0]),
                torch.tensor([2.0, 5.0, 0.0]), torch.tensor([2.0, 4.0, 0.0])),
               (torch.tensor([1.0, 1.0, 0.0]), torch.tensor([3.0, 2.0, 0.0]),
                torch.tensor([2.0, 1.0, 0.0]), torch.tensor([2.0, 2.0, 0.0]))]
    out = metric.compute_metrics(results)
    expected = [100 * 2 / 6, 100 * 3 / 9]
    assert out["IoU.a"] == pytest.approx(expected[0], abs=1e-9)
    assert out["IoU.b"] == pytest.approx(expected[1], abs=1e-9)
    assert math.isnan(out["IoU.c"])
    assert out["mIoU"] == pytest.approx(np.mean(expected), abs=1e-9)
    assert out["mIoU"] != round(out["mIoU"], 2)


def test_the_pretraining_plateau_criterion():
    from rewardseg.results import pretrain_plateau

    def curve(values):
        return pd.DataFrame([dict(study="s", variant="pretrain", seed=0, step=s,
                                  **{"class": "mIoU"}, IoU=v) for s, v in values])

    found = pretrain_plateau(curve([(250, 40.0), (500, 55.0), (750, 59.0), (1000, 59.6)]))
    assert found == dict(step=750, final_step=1000, final=59.6, gain=pytest.approx(0.6),
                         converged=True)
    assert not pretrain_plateau(curve([(500, 40.0), (750, 50.0), (1000, 55.0)]))["converged"]
    assert pretrain_plateau(curve([(40000, 79.1)])) is None
