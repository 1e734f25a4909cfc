"""The study's statistics (rewardseg.results): paired Δ with its CI, paired t-test, Holm's
adjustment, minimum detectable effect, verdicts; and the unrounded IoU they are fed."""
import math
import os

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from rewardseg.results import (ALPHA, POWER, best_variant, final_table, holm,
                               minimum_detectable_effect, paired_comparison, reference_mde,
                               variant_table)


def nct_power(effect, sd, n, alpha):
    """The two-sided paired t-test's power from scipy's noncentral t, written out:
    P(T > c) + P(T < -c), T ~ nct(n - 1, effect·√n/sd). (scipy's nct.cdf is NaN far in
    the lower tail; there it is P(T' > c) for the mirrored noncentrality.)"""
    df, nc = n - 1, effect * math.sqrt(n) / sd
    crit = stats.t.ppf(1 - alpha / 2, df)
    lower = stats.nct.cdf(-crit, df, nc)
    if math.isnan(lower):
        lower = stats.nct.sf(crit, df, -nc)
    return stats.nct.sf(crit, df, nc) + lower


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
    assert nct_power(out["mde"], sd, n, ALPHA) == pytest.approx(POWER, abs=1e-6)


@pytest.mark.parametrize("n", [3, 10])
@pytest.mark.parametrize("alpha", [ALPHA, ALPHA / 6])
def test_the_mde_is_exact_for_the_noncentral_t(n, alpha):
    """Plugging the MDE into the power of the paired t-test (scipy.stats.nct, written out
    here) gives 80 % to 1e-6, and any smaller Δ gives less: it is the smallest such Δ."""
    sd = 0.73
    mde = minimum_detectable_effect(sd, n, alpha)
    assert nct_power(mde, sd, n, alpha) == pytest.approx(POWER, abs=1e-6)
    assert nct_power(mde * (1 - 1e-4), sd, n, alpha) < POWER
    # it scales with the spread: the MDE in units of sd depends on n and alpha alone
    assert minimum_detectable_effect(2 * sd, n, alpha) == pytest.approx(2 * mde, rel=1e-9)


def test_the_exact_mde_is_larger_than_the_central_approximation_at_three_seeds():
    sd, n = 1.0, 3
    for alpha in (ALPHA, ALPHA / 6):
        central = ((stats.t.ppf(1 - alpha / 2, n - 1) + stats.t.ppf(POWER, n - 1))
                   * sd / math.sqrt(n))
        exact = minimum_detectable_effect(sd, n, alpha)
        assert exact > 1.05 * central, (alpha, exact, central)
        assert nct_power(central, sd, n, alpha) < POWER - 0.02  # what the approximation misses
    assert math.isnan(minimum_detectable_effect(1.0, 1)) and math.isnan(
        minimum_detectable_effect(0.0, 5))


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


CONTROL_FINALS = [50.0, 52.0, 51.0, 53.0, 49.0]


def _study_metrics():
    control = CONTROL_FINALS
    return _metrics({
        "control": control,
        "clear_gain": [c + 2.0 + e for c, e in zip(control, [0.1, -0.1, 0.05, 0.0, -0.05])],
        "noise": [c + e for c, e in zip(control, [0.5, -0.6, 0.4, -0.2, 0.1])],
        "rounding": [c - 0.09 for c in control],
        "reference": [c + e for c, e in zip(control, [0.3, -0.2, 0.6, 0.1, 0.4])],
        "late_control": [40.0, 41.0, 42.0, 43.0, 44.0],
        "late": [39.0, 40.2, 40.9, 42.1, 43.0],
    })


# experiment -> the variants its figure shows (study.experiments: ``all`` joins each one)
EXPERIMENTS = {
    "gain": ["control", "reference", "clear_gain", "noise"],
    "small": ["control", "reference", "rounding"],
    "late": ["control", "late", "late_control"],
}
CONTROLS = {"late": "late_control", "late_control": "late_control"}


def test_final_table_has_a_row_per_experiment_and_variant_with_holm_within_each():
    table = final_table(_study_metrics(), CONTROLS, EXPERIMENTS)
    assert list(table.columns[:15]) == [
        "experiment", "variant", "control", "n", "mean", "std", "delta", "sd_delta",
        "ci_low", "ci_high", "p", "p_holm", "mde", "mde_holm", "verdict"]
    pairs = sorted(zip(table["experiment"], table["variant"]))
    assert pairs == [("gain", "clear_gain"), ("gain", "noise"), ("gain", "reference"),
                     ("late", "late"), ("small", "reference"), ("small", "rounding")]
    assert "pretrain" not in set(table["variant"]) and "control" not in set(table["variant"])
    assert list(table["mean"]) == sorted(table["mean"], reverse=True)
    for experiment, rows in table.groupby("experiment"):
        # Holm over that experiment's comparisons only, and its MDE at alpha / family
        assert rows["p_holm"].tolist() == pytest.approx(holm(rows["p"]), nan_ok=True)
        assert (rows["family"] == len(rows)).all()
        for _, row in rows[rows["p"].notna()].iterrows():
            assert row["mde_holm"] == pytest.approx(minimum_detectable_effect(
                row["sd_delta"], int(row["pairs"]), ALPHA / len(rows)))
            assert row["mde_holm"] > row["mde"] or len(rows) == 1
    ref = table[table["variant"] == "reference"].set_index("experiment")
    assert (ref.loc["gain", "family"], ref.loc["small", "family"]) == (3, 2)
    whole = final_table(_study_metrics(), CONTROLS).set_index("variant")  # one family of 5
    assert whole.loc["reference", "p_holm"] > ref["p_holm"].max()
    assert ref.loc["gain", "p"] == ref.loc["small", "p"]
    assert ref.loc["gain", "mde_holm"] > ref.loc["small", "mde_holm"]
    late = table.set_index("variant").loc["late"]
    assert late["control"] == "late_control" and late["delta"] == pytest.approx(-0.96)
    assert late["p_holm"] == pytest.approx(late["p"]) and late["family"] == 1
    rows = table.set_index(["experiment", "variant"])
    assert rows.loc[("gain", "clear_gain"), "verdict"] == "better than its control"
    assert rows.loc[("gain", "noise"), "verdict"].startswith("no difference detected (p_Holm ")
    row = rows.loc[("gain", "noise")]
    assert f"MDE {row['mde_holm']:.2f})" in row["verdict"]
    assert rows.loc[("small", "rounding"), "verdict"].startswith("same Δ on every seed (-0.09)")
    assert best_variant(table) == "clear_gain"


def test_without_experiments_the_whole_study_is_one_family():
    table = final_table(_study_metrics(), CONTROLS)
    assert set(table["experiment"]) == {"all"} and len(table) == 5
    assert table["p_holm"].tolist() == pytest.approx(holm(table["p"]), nan_ok=True)
    # a compared variant that no experiment shows is adjusted in a family of its own kind
    table = final_table(_study_metrics(), CONTROLS, {"gain": EXPERIMENTS["gain"]})
    assert set(table[table["experiment"] == "ungrouped"]["variant"]) == {"late", "rounding"}


def test_the_verdict_follows_the_holm_p_and_says_so_where_the_ci_excludes_zero():
    """A Δ whose unadjusted CI excludes 0 but whose Holm-adjusted p does not reject is
    "no difference detected after Holm adjustment", and the table says "n.s. after Holm"."""
    control = CONTROL_FINALS
    small = [0.30, 0.10, 0.25, 0.15, 0.20]  # p ~ 0.003 alone
    finals = {"control": control, "x": [c + e for c, e in zip(control, small)]}
    for i in range(12):  # eleven more comparisons in its experiment, all noise
        noise = np.random.default_rng(i).normal(0, 0.5, len(control))
        finals[f"n{i}"] = list(np.add(control, noise))
    table = final_table(_metrics(finals), {}, {"e": list(finals)})
    x = table.set_index("variant").loc["x"]
    assert x["ci_low"] > 0 and x["p"] < ALPHA <= x["p_holm"]
    assert x["verdict"].startswith("no difference detected after Holm adjustment")
    assert "unadjusted 95 % CI excludes 0" in x["verdict"]
    from rewardseg.results import _short

    assert _short(x["verdict"]) == "n.s. after Holm (CI unadjusted)"
    # alone in its experiment the same Δ is better
    table = final_table(_metrics(finals), {}, {"e": ["control", "x"]})
    assert table.set_index("variant").loc["x", "verdict"] == "better than its control"


def test_variant_table_has_one_row_per_variant_with_its_strictest_comparison():
    control = CONTROL_FINALS
    # better in its small experiment, not after the adjustment in its big one
    gain = [c + 0.5 + e for c, e in zip(control, [0.3, -0.3, 0.2, 0.0, -0.2])]
    finals = {"control": control, "reference": gain}
    for i in range(30):
        finals[f"n{i}"] = list(np.add(control, np.random.default_rng(i).normal(0, 3, 5)))
    experiments = {"small": ["control", "reference"],
                   "big": ["control", "reference"] + [f"n{i}" for i in range(30)]}
    comparisons = final_table(_metrics(finals), {}, experiments)
    ref = comparisons[comparisons["variant"] == "reference"].set_index("experiment")
    assert ref.loc["small", "verdict"] == "better than its control"
    assert ref.loc["big", "verdict"].startswith("no difference detected after Holm")
    per_variant = variant_table(_metrics(finals), {}, experiments)
    assert sorted(per_variant["variant"]) == sorted(finals)  # one row each, control too
    row = per_variant.set_index("variant").loc["reference"]
    assert row["experiments"] == "small, big" and row["family"] == 31
    assert row["p_holm"] == ref["p_holm"].max() and row["mde_holm"] == ref["mde_holm"].max()
    assert row["verdict"].startswith("no difference detected after Holm")
    assert per_variant.set_index("variant").loc["control", "verdict"] == "control"
    assert best_variant(per_variant) is None and best_variant(comparisons) is None
    # the reference's Holm-level MDE: the largest over its experiments
    found = reference_mde(comparisons)
    assert found["experiment"] == "big" and found["family"] == 31
    assert found["mde_holm"] == pytest.approx(minimum_detectable_effect(
        ref.loc["big", "sd_delta"], 5, ALPHA / 31))
    assert found["experiments"] == 2 and found["pairs"] == 5
    assert reference_mde(comparisons, "nobody") is None


def test_no_best_variant_when_nothing_beats_its_control():
    control = [50.0, 52.0, 51.0]
    df = _metrics({"control": control, "a": [c + e for c, e in zip(control, [0.3, -0.4, 0.2])]})
    table = final_table(df)
    assert best_variant(table) is None


def test_tables_group_by_experiment_state_their_statistics_and_write_findings(tmp_path,
                                                                               capsys):
    import json

    from rewardseg.results import TABLES, write_tables
    from rewardseg.slides import split_table

    df = _study_metrics()
    per_class = []
    for _, row in df[df["class"] == "mIoU"].iterrows():
        for cls, shift in (("road", 30.0), ("pole", -30.0)):
            per_class.append(dict(row, **{"class": cls, "IoU": row["IoU"] + shift}))
    df = pd.concat([df, pd.DataFrame(per_class)], ignore_index=True)
    written = write_tables(df, str(tmp_path), {"reference": "the reference"}, CONTROLS,
                           experiments=EXPERIMENTS)
    assert sorted(os.path.basename(p) for p in written) == sorted(TABLES)
    md = (tmp_path / "final_miou.md").read_text()
    for words in ("95 % CI (unadjusted, paired over seeds)",
                  "p adjusted by Holm within the experiment",
                  "MDE: the smallest Δ this design detects with 80 % power at that level",
                  "Verdict: better / worse where p (Holm) < 0.05"):
        assert words in md
    rows = [line.split(" | ") for line in md.splitlines() if line.startswith("| ")][1:]
    experiments = [r[0].lstrip("| ") for r in rows]
    assert experiments == ["gain"] * 3 + ["small"] * 2 + ["late"]  # grouped, study order
    assert sum(r[1] == "reference" for r in rows) == 2
    csv = pd.read_csv(tmp_path / "final_miou.csv")
    assert list(csv["experiment"]) == experiments
    # the statistics' notes stay under every slide of a split table
    slides = split_table(md, 2, "# Final mIoU").split("\n---\n")
    assert len(slides) == 3 and all("adjusted by Holm within the experiment" in s
                                    for s in slides)
    assert "\\hline" in (tmp_path / "final_miou.tex").read_text()

    found = json.loads((tmp_path / "findings.json").read_text())
    assert found["seeds"] == [0, 1, 2, 3, 4]
    assert len(found["comparisons"]) == 6
    first = found["comparisons"][0]
    assert {"experiment", "variant", "control", "n", "mean", "std", "delta", "sd_delta",
            "ci_low", "ci_high", "p", "p_holm", "mde", "mde_holm", "verdict"} <= set(first)
    untestable = [c for c in found["comparisons"] if c["variant"] == "rounding"][0]
    assert untestable["p"] is None  # NaN is null: valid JSON
    table = final_table(df, CONTROLS, EXPERIMENTS)
    assert found["reference"]["mde_holm"] == pytest.approx(reference_mde(table)["mde_holm"])
    assert found["reference"]["experiment"] == "gain" and found["reference"]["family"] == 3
    assert found["control"]["variant"] == "control"
    assert found["control"]["per_class_iou"] == pytest.approx(
        {"road": np.mean(CONTROL_FINALS) + 30, "pole": np.mean(CONTROL_FINALS) - 30})
    assert found["control"]["final_miou"] == pytest.approx(np.mean(CONTROL_FINALS))
    printed = capsys.readouterr().out
    assert "reference vs control: Δ" in printed
    assert f"Holm-level MDE {found['reference']['mde_holm']:.2f} mIoU (5 seeds; family of 3" \
        in printed


def test_findings_md_states_the_numbers_of_findings_json(tmp_path):
    """findings.md (what the README includes) is made from findings.json: the reference's
    Δ and Holm-level MDE, the control's rare classes, a row and verdict per comparison."""
    import json

    from rewardseg.results import render_findings, write_tables

    df = _study_metrics()
    per_class = []
    for _, row in df[df["class"] == "mIoU"].iterrows():
        for cls, shift in (("road", 30.0), ("person", -40.0), ("pole", -35.0)):
            per_class.append(dict(row, **{"class": cls, "IoU": row["IoU"] + shift}))
    df = pd.concat([df, pd.DataFrame(per_class)], ignore_index=True)
    write_tables(df, str(tmp_path), {"clear_gain": "a clear gain"}, CONTROLS,
                 experiments=EXPERIMENTS)
    found = json.loads((tmp_path / "findings.json").read_text())
    md = (tmp_path / "findings.md").read_text()
    assert md == render_findings(found)
    ref = found["reference"]
    assert f"**{ref['mde_holm']:.2f} mIoU**" in md
    assert f"Δ {ref['delta']:+.2f} [{ref['ci_low']:+.2f}, {ref['ci_high']:+.2f}]" in md
    control = np.mean(CONTROL_FINALS)
    assert f"person {control - 40:.2f}, pole {control - 35:.2f} IoU" in md
    assert f"the other classes' mean {control + 30:.2f}" in md  # road only
    rows = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + len(found["comparisons"])
    assert any("| gain | a clear gain | +2.00" in r and r.endswith("| better |") for r in rows)
    # a number changed in the JSON changes the text
    shown = f"**{ref['mde_holm']:.2f} mIoU**"
    found["reference"]["mde_holm"] += 1.0
    assert shown not in render_findings(found)


def test_update_readme_rewrites_only_the_findings_block(tmp_path):
    import json

    from rewardseg.results import readme_block, render_findings, update_readme

    found = {"study": "s", "seeds": [0, 1], "comparisons": [], "reference": None}
    (tmp_path / "f.json").write_text(json.dumps(found))
    readme = tmp_path / "README.md"
    readme.write_text("# title\nbefore\n<!-- findings: generated from x -->\nold\n"
                      "<!-- end of findings -->\nafter\n")
    assert update_readme(str(readme), str(tmp_path / "f.json"))
    text = readme.read_text()
    assert text.startswith("# title\nbefore\n") and text.endswith("<!-- end of findings -->\nafter\n")
    assert readme_block(text) == render_findings(found)
    assert not update_readme(str(readme), str(tmp_path / "f.json"))  # nothing to change
    (tmp_path / "bare.md").write_text("no block\n")
    with pytest.raises(ValueError, match="bare.md: no findings block"):
        update_readme(str(tmp_path / "bare.md"), str(tmp_path / "f.json"))


def test_the_metric_reports_unrounded_iou():
    """mIoU is the mean of the per-class IoU from the summed confusion counts, not mmseg's
    value rounded to 0.01."""
    import torch

    from rewardseg.models.metrics import PerClassIoUMetric

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


RECORDED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "paper", "recorded", "default")


def test_the_readme_states_the_recorded_default_study_as_the_code_computes_it():
    """The README's findings block is rendered from the recorded findings.json, and that file
    is what the code computes from the recorded metrics.csv and study file: no number in it
    is typed by hand."""
    import json

    import yaml

    from rewardseg.results import findings, readme_block, render_findings
    from rewardseg.study import controls, experiments, labels

    with open(os.path.join(RECORDED, "findings.json")) as fh:
        recorded = json.load(fh)
    readme = open(os.path.join(os.path.dirname(RECORDED), "..", "..", "README.md")).read()
    assert readme_block(readme) == render_findings(recorded), \
        "README.md is stale: run `rewardseg findings --readme README.md`"
    with open(os.path.join(RECORDED, "findings.md")) as fh:
        assert fh.read() == render_findings(recorded)
    with open(os.path.join(RECORDED, "study.yaml")) as fh:
        study = yaml.safe_load(fh)
    df = pd.read_csv(os.path.join(RECORDED, "metrics.csv"))
    again = json.loads(json.dumps(findings(df, controls(study), experiments(study),
                                           labels(study), study=study)))
    assert _close(again, recorded)


def _close(a, b, path="findings"):
    """Nested equality with floats compared to 1e-9 (CSV round trip)."""
    if isinstance(a, dict):
        assert set(a) == set(b), path
        return all(_close(a[k], b[k], f"{path}.{k}") for k in a)
    if isinstance(a, list):
        assert len(a) == len(b), path
        return all(_close(x, y, f"{path}[{i}]") for i, (x, y) in enumerate(zip(a, b)))
    if isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-9), path
        return True
    assert a == b, path
    return True


def test_a_ci_excluding_zero_with_no_verdict_says_why_in_the_table(tmp_path):
    """final_miou.md: where the unadjusted CI excludes 0 and p (Holm) does not reject, the
    verdict cell gives the reason, and the definitions under the table say it."""
    from rewardseg.results import write_tables

    control = CONTROL_FINALS
    finals = {"control": control,
              "x": [c + e for c, e in zip(control, [0.30, 0.10, 0.25, 0.15, 0.20])]}
    for i in range(12):
        finals[f"n{i}"] = list(np.add(control, np.random.default_rng(i).normal(0, 0.5, 5)))
    write_tables(_metrics(finals), str(tmp_path), {}, {}, experiments={"e": list(finals)})
    md = (tmp_path / "final_miou.md").read_text()
    header = [c.strip() for c in md.splitlines()[0].strip("|").split("|")]
    rows = {r[1]: r for r in ([c.strip() for c in line.strip("|").split("|")]
                              for line in md.splitlines()[2:] if line.startswith("| "))}
    x = dict(zip(header, rows["x"]))
    low = float(x["Δ vs control [95 % CI]"].split("[")[1].split(",")[0])
    assert low > 0 and float(x["p (Holm)"]) >= ALPHA
    assert x["verdict"] == "n.s. after Holm (CI unadjusted)"
    assert '"n.s. after Holm": the unadjusted CI excludes 0' in md
    tex = (tmp_path / "final_miou.tex").read_text()
    assert "p (Holm) $<$ 0.05" in tex and "<" not in tex.replace("$<$", "")  # not ¡
    # findings.md (the README's table) says the same
    findings_md = (tmp_path / "findings.md").read_text()
    assert "| n.s. after Holm (CI unadjusted) |" in findings_md
    assert "95 % CI (unadjusted, paired over seeds)" in findings_md


def _per_class_metrics(order):
    """_study_metrics with per-class rows (IoU = mIoU + a class's shift) in ``order``,
    the pretraining's too."""
    df = _study_metrics()
    shift = {"road": 30.0, "sky": 20.0, "car": -10.0, "pole": -30.0}
    rows = []
    for _, row in df[df["class"] == "mIoU"].iterrows():
        rows.append(dict(row))
        for cls in order:
            rows.append(dict(row, **{"class": cls, "IoU": row["IoU"] + shift[cls]}))
    return pd.DataFrame(rows)


def test_per_class_table_in_the_dataset_order_as_the_final_table_with_its_spread(tmp_path):
    from rewardseg.results import (PER_CLASS_NOTE, class_order, final_table,
                                   group_by_experiment, write_tables)

    dataset_order = ["road", "sky", "car", "pole"]
    # the order the runs give (aggregate keeps it), not the alphabet
    df = _per_class_metrics(dataset_order)
    assert class_order(df) == dataset_order
    study = {"variants": {v: {} for v in ["control", "reference", "clear_gain", "noise",
                                          "rounding", "late_control", "late"]}}
    write_tables(df, str(tmp_path), {"reference": "the reference"}, CONTROLS,
                 experiments=EXPERIMENTS, study=study)
    md = (tmp_path / "per_class_iou.md").read_text()
    lines = md.splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["experiment", "variant", "description", "seeds"] + dataset_order \
        + ["mIoU"]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]
            if line.startswith("| ")]
    # each variant once, in the order the final table first shows it, its control before
    final = group_by_experiment(final_table(df, CONTROLS, EXPERIMENTS), EXPERIMENTS)
    expected = []
    for _, row in final.iterrows():
        for name in (row["control"], row["variant"]):
            if name not in expected:
                expected.append(name)
    assert [r[1] for r in rows] == expected
    assert [r[0] for r in rows][:1] == [final["experiment"].iloc[0]]
    # mean ± std over seeds, two decimals, in %
    control = dict(zip(header, rows[[r[1] for r in rows].index("control")]))
    values = np.array(CONTROL_FINALS)
    assert control["road"] == f"{values.mean() + 30:.2f} ± {values.std(ddof=1):.2f}"
    assert control["mIoU"] == f"{values.mean():.2f} ± {values.std(ddof=1):.2f}"
    assert control["description"] == "control" and control["seeds"] == "5"
    assert PER_CLASS_NOTE in md and "IoU per class in %" in PER_CLASS_NOTE
    assert "\\pm" in (tmp_path / "per_class_iou.tex").read_text()


def test_class_order_is_the_study_dataset_s_over_an_alphabetical_csv():
    """A metrics.csv in the alphabet (as aggregate wrote it before it kept the runs' order)
    gets the dataset's order from the study's source; a source that names none keeps the
    CSV's."""
    from rewardseg.data import synthetic
    from rewardseg.results import class_order, per_class_table

    df = _per_class_metrics(sorted(["road", "sky", "car", "pole"]))
    study = {"dataset": {"name": "x", "source": "synthetic"}}
    assert class_order(df, study) == [c for c in synthetic.CLASSES
                                      if c in {"road", "sky", "car", "pole"}]
    assert list(per_class_table(df, study).columns) == class_order(df, study) + ["mIoU"]
    assert class_order(df) == ["car", "pole", "road", "sky"]
    assert class_order(df, {"dataset": {"name": "x", "source": "mapillary",
                                        "classes": "vistas"}}) == class_order(df)


def test_aggregate_keeps_the_dataset_class_order(tmp_path):
    import json

    from rewardseg.results import aggregate, class_order

    def run(variant, seed, order):
        evals = [dict(step=s, metrics=dict({"mIoU": 50.0 + s},
                                           **{f"IoU.{c}": 40.0 + s for c in order}))
                 for s in (0, 10)]
        return dict(study="s", variant=variant, seed=seed, evals=evals)

    order = ["road", "sky", "car", "pole"]
    files = []
    for variant, seed in (("control", 0), ("control", 1), ("b", 0)):
        path = tmp_path / f"{variant}{seed}.json"
        path.write_text(json.dumps(run(variant, seed, order)))
        files.append(str(path))
    (tmp_path / "pre.json").write_text(json.dumps(run("pretrain", 0, order)))
    df = aggregate(files, str(tmp_path / "pre.json"), str(tmp_path / "m.csv"),
                   str(tmp_path / "s.csv"))
    assert class_order(pd.read_csv(tmp_path / "m.csv")) == order
    assert list(df[["variant", "seed", "step"]].itertuples(index=False)) == sorted(
        df[["variant", "seed", "step"]].itertuples(index=False))


def test_the_conclusion_is_written_from_the_numbers():
    """results.conclusion: the counts of better / worse / n.s. variants (a variant counts
    once, by its strictest experiment), the largest gain and loss, the reference's MDE, all
    from findings; a number changed there changes the text."""
    from rewardseg.results import conclusion, findings, group_by_experiment

    labels = {"clear_gain": "a clear gain", "late": "late, from its own control"}
    found = findings(_study_metrics(), CONTROLS, EXPERIMENTS, labels)
    text = conclusion(found)
    verdicts = {}
    for row in found["comparisons"]:
        verdicts.setdefault(row["variant"], []).append(row["verdict"])
    better = sum(all(v.startswith("better") for v in vs) for vs in verdicts.values())
    assert f"{len(verdicts)} variants compared" in text
    assert f"{better} {'is' if better == 1 else 'are'} better" in text
    gain = [r for r in found["comparisons"] if r["variant"] == "clear_gain"][0]
    assert (f"The largest gain: *a clear gain*, Δ {gain['delta']:+.2f} mIoU [95 % CI "
            f"{gain['ci_low']:+.2f}, {gain['ci_high']:+.2f}]") in text
    assert f"is {found['reference']['mde_holm']:.2f} mIoU" in text
    assert f"ends at {found['control']['final_miou']:.2f} mIoU" in text
    assert "\n" not in text
    found["reference"]["mde_holm"] += 1.0
    assert conclusion(found) != text
    # nothing better: it says so
    none = findings(_metrics({"control": CONTROL_FINALS,
                              "a": [c + e for c, e in zip(CONTROL_FINALS,
                                                          [0.3, -0.4, 0.2, 0.1, -0.3])]}))
    assert "No variant beats its control." in conclusion(none)
    assert "0 are better" in conclusion(none)


def test_the_reader_table_has_the_reader_columns_rounded():
    from rewardseg.results import READER_COLUMNS, findings, reader_table

    found = findings(_study_metrics(), CONTROLS, EXPERIMENTS,
                     {"late": "late", "late_control": "its own control"})
    table = reader_table(found)
    assert list(table.columns) == list(READER_COLUMNS)
    assert len(table) == len(found["comparisons"])
    rows = table.set_index(["experiment", "variant"])
    late = rows.loc[("late", "late vs its own control")]
    row = [r for r in found["comparisons"] if r["variant"] == "late"][0]
    assert late["Δ mIoU vs control [95 % CI]"] == (
        f"{row['delta']:+.2f} [{row['ci_low']:+.2f}, {row['ci_high']:+.2f}]")
    assert late["MDE (80 % power)"] == f"{row['mde_holm']:.2f}"
    assert rows.loc[("small", "rounding"), "Δ mIoU vs control [95 % CI]"].endswith(
        "on every seed")
    assert "nan" not in table.to_string().lower()
