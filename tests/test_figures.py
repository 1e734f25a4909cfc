"""The figure registry: every registered figure draws PNG + PDF from the study's tables,
returns a Figure the notebook can show, and gets its own workflow rule and target without
any other file naming it."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from unittest.mock import ANY

from conftest import ENV, REPO, copy_workflow
from rewardseg import figures, paths, vocabulary
from rewardseg.cli import main as cli
from rewardseg.results import TABLES
from rewardseg.study import experiments, load_study, variant_fields

TREND = "CE pretraining, own schedule (trend)"


@pytest.fixture(scope="module")
def study():
    return load_study(os.path.join(REPO, "configs", "studies", "smoke.yaml"))


@pytest.fixture(scope="module")
def tables(study, tmp_path_factory):
    """A tiny metrics.csv / train_stats.csv in the workflow's format: every variant x two
    seeds x the tuning steps, the pretraining's own curve (variant ``pretrain``), and the
    estimator's variance measure of the reward variants."""
    rng = np.random.default_rng(0)
    start = variant_fields(study, "control")["start"]
    steps = [0, start // 2, start]
    rows, stats = [], []
    for variant in study["variants"]:
        for seed in (0, 1):
            for step in steps:
                per_class = {"road": 60 + rng.normal(), "car": 30 + rng.normal()}
                for name, value in dict(per_class, mIoU=np.mean(list(per_class.values()))).items():
                    rows.append(dict(study=study["study"], variant=variant, seed=seed,
                                     step=step, **{"class": name, "IoU": value}))
                if variant != "control":
                    for stat in ("decode.reward_adv_sq", "decode.reward_miou_train",
                                 figures.SAMPLED_REWARD, figures.ARGMAX_REWARD,
                                 figures.POLICY_ENTROPY):
                        stats.append(dict(study=study["study"], variant=variant, seed=seed,
                                          step=step, stat=stat,
                                          value=float(rng.uniform(0.01, 0.1))))
            for part in ("decode_head", "backbone", "bn_statistics"):
                stats.append(dict(study=study["study"], variant=variant, seed=seed,
                                  step=start, stat=f"weight_change.{part}",
                                  value=float(rng.uniform(1e-4, 1e-2))))
    for step, value in ((0, 20.0), (start, 40.0), (2 * start, 45.0)):
        rows.append(dict(study=study["study"], variant=paths.PRETRAIN, seed=0, step=step,
                         **{"class": "mIoU", "IoU": value}))
    folder = tmp_path_factory.mktemp("tables")
    metrics, stats_csv = str(folder / "metrics.csv"), str(folder / "train_stats.csv")
    pd.DataFrame(rows).to_csv(metrics, index=False)
    pd.DataFrame(stats).to_csv(stats_csv, index=False)
    return metrics, stats_csv


def drawable(study):
    """The figures drawn from the tables alone (the qualitative panel loads trained
    models: the workflow test draws it)."""
    return [n for n in figures.names(study)
            if set(figures.resolve(n)[0].needs) <= {"metrics", "stats"}]


def test_importing_the_registry_is_cheap():
    code = ("import sys, rewardseg; before = set(sys.modules); import rewardseg.figures; "
            "print(sorted(m for m in set(sys.modules) - before "
            "if m.split('.')[0] in ('matplotlib', 'seaborn', 'pandas', 'mmseg', 'PIL')))")
    out = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"


def test_registry_names_and_captions(study):
    expected = [f"exp_{e}" for e in experiments(study)] + [
        "delta_vs_control", "per_class_iou", "estimator_variance", "qualitative",
        "training_reward", "weight_change", "per_class_delta", "reward_gap"]
    assert sorted(figures.names(study)) == sorted(expected)
    spec, values = figures.resolve("exp_weights")
    assert spec.pattern == "exp_{experiment}" and values == {"experiment": "weights"}
    assert spec.rule == "figure_exp_experiment"
    for spec in figures.FIGURES.values():
        values = {spec.field: "x"} if spec.field else {}
        caption = spec.caption_for(study="s", **values)
        assert caption.endswith(".") and "{" not in caption, spec.pattern
    with pytest.raises(ValueError, match="unknown figure"):
        figures.resolve("no_such_figure")
    with pytest.raises(ValueError, match="unknown needs"):
        figures.figure("bad", needs=("weather",), caption="A bad one.")
    with pytest.raises(ValueError, match="family"):
        figures.figure("bad_{x}", caption="A family without values.")


def test_each_figure_writes_png_and_pdf(study, tables, tmp_path):
    metrics, stats = tables
    for name in drawable(study):
        out = str(tmp_path / f"{name}.png")
        written = figures.draw(name, study, out, metrics=metrics, stats=stats)
        assert written == [out, str(tmp_path / f"{name}.pdf")]
        with open(written[0], "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n", name
        with open(written[1], "rb") as fh:
            assert fh.read(5) == b"%PDF-", name
        assert min(os.path.getsize(p) for p in written) > 5000, name


def test_experiment_trend_comes_from_the_pretraining_rows(study, tables):
    import matplotlib.pyplot as plt

    metrics = pd.read_csv(tables[0])
    start = variant_fields(study, "reference")["start"]
    iters = variant_fields(study, "reference")["iters"]
    fig = figures.build("exp_weights", study, metrics=metrics)
    try:
        ax = fig.axes[0]
        lines = {line.get_label(): line for line in ax.get_lines()}
        trend = lines[TREND]
        pre = metrics[metrics.variant == paths.PRETRAIN].sort_values("step")
        # the pretraining's evaluations from the last one before the window to the first
        # after it, in steps from the start
        assert list(trend.get_xdata()) == list(pre["step"] - start)
        assert list(trend.get_ydata()) == list(pre["IoU"])
        assert f"pretraining at step {start}" in lines
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert TREND in legend and "CE (control)" in legend
        # the axis is the tuning window (and a short stretch of pretraining before it),
        # not the pretraining's range
        left, right = ax.get_xlim()
        assert -0.2 * iters <= left < 0 and iters <= right <= 1.05 * iters
        # the y range is what is drawn inside the window: the variants' curves
        means = metrics[(metrics["class"] == "mIoU") & (metrics.variant != paths.PRETRAIN)]
        means = means.groupby(["variant", "step"])["IoU"].mean()
        bottom, top = ax.get_ylim()
        assert bottom <= means.min() and means.max() <= top
        assert bottom > pre["IoU"].min()  # the pretraining before the window: not in it
        # the question in words, not the experiment's code name
        question = ax.get_title().split("\n")[0]
        assert question == vocabulary.experiment_question("weights") != "weights"
    finally:
        plt.close(fig)


def test_an_experiment_with_several_starts_puts_each_curve_at_its_own(study, tables):
    """The 'steps' slide: variants from different checkpoints are drawn over pretraining
    iterations, each from its own start, against the one pretraining curve."""
    import copy

    import matplotlib.pyplot as plt

    study = copy.deepcopy(study)
    study["variants"]["late"] = dict(start=8, label="late", experiment="weights")
    metrics = pd.read_csv(tables[0])
    late = metrics[metrics.variant == "reference"].copy()
    late["variant"] = "late"
    metrics = pd.concat([metrics, late])
    fig = figures.build("exp_weights", study, metrics=metrics)
    try:
        ax = fig.axes[0]
        lines = {line.get_label(): line for line in ax.get_lines()}
        starts = {v: variant_fields(study, v)["start"] for v in ("reference", "late")}
        assert len(set(starts.values())) == 2
        assert {f"pretraining at step {s}" for s in starts.values()} <= set(lines)
        assert "own start" in ax.get_xlabel()
        labels = {"reference": "reinforce, rloo k=2", "late": "late"}
        for variant, label in labels.items():  # absolute iterations, each from its start
            assert lines[label].get_xdata()[0] == starts[variant]
        left, right = ax.get_xlim()
        end = max(starts.values()) + variant_fields(study, "late")["iters"]
        assert left < min(starts.values()) and right >= end
    finally:
        plt.close(fig)


def test_cli_figure_and_tables(study, tables, tmp_path):
    metrics, stats = tables
    study_yaml = os.path.join(REPO, "configs", "studies", "smoke.yaml")
    out = str(tmp_path / "fig" / "delta_vs_control.png")
    assert cli(["figure", "delta_vs_control", "--study", study_yaml, "--metrics", metrics,
                "--out", out]) == 0
    assert os.path.isfile(out) and os.path.isfile(out[:-4] + ".pdf")
    # a figure that needs train_stats.csv, called without it: a clear error, no file
    out = str(tmp_path / "fig" / "estimator_variance.png")
    assert cli(["figure", "estimator_variance", "--study", study_yaml, "--metrics", metrics,
                "--out", out]) == 2
    assert not os.path.exists(out)
    assert cli(["figure", "exp_nope", "--study", study_yaml, "--metrics", metrics,
                "--out", str(tmp_path / "x.png")]) == 2
    out_dir = str(tmp_path / "tables")
    assert cli(["tables", "--study", study_yaml, "--metrics", metrics,
                "--out-dir", out_dir]) == 0
    assert sorted(os.listdir(out_dir)) == sorted(TABLES)


# ---------------------------------------------------------------- diagnosis figures
# per_class_delta: person gains 5 points and road loses 3 on every seed (with a spread, so
# that the t-interval exists), car moves by noise; the step before the last says the
# opposite, so a figure that read the wrong step fails
SEEDS = (0, 1, 2)
GAIN = {"person": (5.0, (-0.3, 0.1, 0.2)), "road": (-3.0, (0.2, -0.1, -0.1)),
        "car": (0.0, (0.6, -0.9, 0.3))}


def class_metrics(study, variants=None, shift=None):
    """metrics.csv rows of ``variants`` (default: every variant): the control's per-class
    IoU per seed, and each other variant's = the control's + ``GAIN`` (+ ``shift``)."""
    shift = shift or {}
    start = variant_fields(study, "control")["start"]
    rows = []
    for variant in variants or study["variants"]:
        for seed in SEEDS:
            for step, sign in ((0, 0.0), (start // 2, -1.0), (start, 1.0)):
                base = {"road": 80.0 + seed, "person": 30.0 - seed, "car": 50.0 + 2 * seed}
                values = {c: v + (0.0 if variant == "control" else
                                  sign * (GAIN[c][0] + GAIN[c][1][seed] + shift.get(c, 0.0)))
                          for c, v in base.items()}
                values["mIoU"] = float(np.mean(list(values.values())))
                rows += [dict(study=study["study"], variant=variant, seed=seed, step=step,
                              **{"class": c, "IoU": v}) for c, v in values.items()]
    rows.append(dict(study=study["study"], variant=paths.PRETRAIN, seed=0, step=start,
                     **{"class": "mIoU", "IoU": 1.0}))
    return pd.DataFrame(rows)


def t_interval(values):
    from scipy import stats

    values = np.asarray(values)
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return values.mean() - half, values.mean() + half


def heat_map(fig):
    """(Δ by (row label, column label), cell text by the same, framed cells) of the
    per_class_delta figure."""
    from matplotlib.patches import Rectangle

    ax = fig.axes[0]
    rows = [t.get_text() for t in ax.get_yticklabels()]
    cols = [t.get_text() for t in ax.get_xticklabels()]
    array = ax.images[0].get_array()
    values = {(r, c): float(array[i, j]) for i, r in enumerate(rows) for j, c in enumerate(cols)}
    texts = {(rows[round(t.get_position()[1])], cols[round(t.get_position()[0])]): t.get_text()
             for t in ax.texts}
    framed = {(rows[round(p.get_y() + p.get_height() / 2)],
               cols[round(p.get_x() + p.get_width() / 2)])
              for p in ax.patches if isinstance(p, Rectangle) and p.get_linestyle() == "solid"}
    return values, texts, framed


def test_per_class_delta_shows_the_gain_and_the_loss_of_each_class(study):
    import matplotlib.pyplot as plt

    table = figures.per_class_deltas(study, class_metrics(study))
    compared = [v for v in study["variants"] if v != "control"]
    assert list(dict.fromkeys(table["variant"])) == compared
    assert set(table["control"]) == {"control"}
    for variant in compared:
        rows = table[table["variant"] == variant].set_index("class")
        assert list(rows.index) == ["road", "person", "car", "mIoU"]  # mIoU last
        for name, (mean, noise) in GAIN.items():
            diffs = [mean + e for e in noise]
            assert rows.loc[name, "delta"] == pytest.approx(mean, abs=1e-9)
            assert rows.loc[name, "pairs"] == len(SEEDS)
            low, high = t_interval(diffs)
            assert (rows.loc[name, "ci_low"], rows.loc[name, "ci_high"]) == (
                pytest.approx(low), pytest.approx(high))
        assert rows.loc["mIoU", "delta"] == pytest.approx(2.0 / 3.0)
    fig = figures.build("per_class_delta", study, metrics=class_metrics(study))
    try:
        values, texts, framed = heat_map(fig)
        label = "reinforce, rloo k=2"
        assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == [
            "road", "person", "car", "mIoU"]
        assert values[(label, "person")] == pytest.approx(5.0)
        assert values[(label, "road")] == pytest.approx(-3.0)
        assert texts[(label, "person")].startswith("5.0")
        assert texts[(label, "road")].startswith("−3.0")
        assert "±" in texts[(label, "person")]  # three rows leave room for the interval
        # person and road are framed (their CI excludes 0) for every variant, car is not
        assert framed == {(r, c) for r in {k[0] for k in values} for c in ("person", "road",
                                                                            "mIoU")}
        assert fig.axes[-1].get_ylabel() == "Δ IoU vs control (points)"
    finally:
        plt.close(fig)


def test_per_class_delta_pairs_a_variant_with_its_own_control(study):
    import copy

    import matplotlib.pyplot as plt

    study = copy.deepcopy(study)
    study["variants"]["wce"]["control"] = "reference"  # wce = reference + 1 on person
    metrics = class_metrics(study, variants=["control", "reference", "weights_s0.05"])
    wce = class_metrics(study, variants=["wce"], shift={"person": 1.0})
    metrics = pd.concat([metrics, wce[wce["variant"] == "wce"]])
    table = figures.per_class_deltas(study, metrics).set_index(["variant", "class"])
    assert table.loc[("wce", "person"), "control"] == "reference"
    assert table.loc[("wce", "person"), "delta"] == pytest.approx(1.0)
    assert table.loc[("wce", "road"), "delta"] == pytest.approx(0.0)
    assert table.loc[("weights_s0.05", "person"), "delta"] == pytest.approx(5.0)
    assert "reference" not in table.index.get_level_values("variant")  # a control itself
    fig = figures.build("per_class_delta", study, metrics=metrics)
    try:
        rows = [t.get_text() for t in fig.axes[0].get_yticklabels()]
        assert "weighted CE (vs reference)" in rows and "class weights s=0.05" in rows
    finally:
        plt.close(fig)
    # a control without results: one line that names it
    for missing, variant in (("reference", "wce"), ("control", "weights_s0.05")):
        with pytest.raises(ValueError, match=f"{variant!r}.*control {missing!r}") as err:
            figures.per_class_deltas(study, metrics[metrics["variant"] != missing])
        assert "\n" not in str(err.value)


def test_per_class_delta_keeps_the_classes_that_moved_when_there_are_too_many(study):
    """Mapillary has 65 classes: the heat map keeps the 19 with the largest Δ (those whose
    CI excludes 0 first), in their order, and says how many it left out."""
    import matplotlib.pyplot as plt

    rows = []
    for variant in study["variants"]:
        for seed in SEEDS:
            values = {f"c{i:02d}": 50.0 + (0.0 if variant == "control" else
                                           0.01 * i + (0.3, -0.2, -0.1)[seed])
                      for i in range(30)}
            if variant != "control":
                values["c03"] += 8.0  # the one that moved
            values["mIoU"] = float(np.mean(list(values.values())))
            rows += [dict(study="smoke", variant=variant, seed=seed, step=4,
                          **{"class": c, "IoU": v}) for c, v in values.items()]
    fig = figures.build("per_class_delta", study, metrics=pd.DataFrame(rows))
    try:
        shown = [t.get_text() for t in fig.axes[0].get_xticklabels()]
        assert len(shown) == figures.PER_CLASS_COLUMNS and shown[-1] == "mIoU"
        assert shown[:-1] == ["c03"] + [f"c{i:02d}" for i in range(12, 30)]
        assert "11 classes with smaller Δ not shown" in fig.texts[-1].get_text()
    finally:
        plt.close(fig)


REWARD_RUNS = {  # variant -> stat -> value per seed (the smoke study: seeds 0 and 1)
    "reference": {figures.SAMPLED_REWARD: (0.28, 0.32), figures.ARGMAX_REWARD: (0.5, 0.5),
                  figures.POLICY_ENTROPY: (1.1, 1.3), "decode.reward_adv_sq": (0.1, 0.1)},
    # weighted CE's decode.reward_reward is the cost 1 - mIoU(argmax): not a sampled reward
    "wce": {figures.SAMPLED_REWARD: (0.6, 0.6), figures.ARGMAX_REWARD: (0.4, 0.4),
            figures.POLICY_ENTROPY: (0.8, 0.8)},
}


def reward_stats(study, runs=REWARD_RUNS, steps=(2, 4)):
    rows = [dict(study=study["study"], variant=variant, seed=seed, step=step, stat=stat,
                 value=values[seed] + 0.01 * step * (stat != figures.POLICY_ENTROPY))
            for variant, stats in runs.items() for stat, values in stats.items()
            for seed in (0, 1) for step in steps]
    rows += [dict(study=study["study"], variant=v, seed=s, step=4,
                  stat="weight_change.backbone", value=1e-3)
             for v in ("control", "reference", "wce") for s in (0, 1)]
    return pd.DataFrame(rows)


def panels(fig):
    """{(row, estimator title's first line): axes} of the reward_gap figure."""
    out = {}
    for ax in fig.axes:
        title = ax.get_title().split("\n")[0]
        if title:
            out[("top", title)] = ax
    for (_, title), top in list(out.items()):
        column = top.get_subplotspec().colspan.start
        out[("bottom", title)] = next(
            ax for ax in fig.axes if ax.get_subplotspec().rowspan.start == 1
            and ax.get_subplotspec().colspan.start == column)
    return out


def lines_of(ax):
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata()))
            for line in ax.get_lines()}


def test_reward_gap_draws_sampled_and_argmax_reward_and_the_entropy(study):
    import matplotlib.pyplot as plt

    fig = figures.build("reward_gap", study, stats=reward_stats(study))
    try:
        axes = panels(fig)
        assert sorted(k[1] for k in axes if k[0] == "top") == ["REINFORCE", "weighted CE"]
        ref = lines_of(axes[("top", "REINFORCE")])
        assert ref["reinforce, rloo k=2: sampled"] == ([2, 4], [pytest.approx(32.0),
                                                              pytest.approx(34.0)])
        assert ref["reinforce, rloo k=2: argmax"] == ([2, 4], [pytest.approx(52.0),
                                                             pytest.approx(54.0)])
        assert lines_of(axes[("bottom", "REINFORCE")])["reinforce, rloo k=2: entropy"] == (
            [2, 4], [pytest.approx(1.2), pytest.approx(1.2)])
        styles = {line.get_label(): line.get_linestyle()
                  for line in axes[("top", "REINFORCE")].get_lines()}
        assert styles == {"reinforce, rloo k=2: sampled": "-",  # as the legend says
                          "reinforce, rloo k=2: argmax": "--"}
        # weights_s0.05 has no rows: drawn nowhere, named nowhere
        assert not any(k.startswith("class weights") for k in ref)
        wce = lines_of(axes[("top", "weighted CE")])
        assert list(wce) == ["weighted CE: argmax"]  # its cost is not drawn as a reward
        assert wce["weighted CE: argmax"][1] == [pytest.approx(42.0), pytest.approx(44.0)]
        assert "argmax only" in axes[("top", "weighted CE")].get_title()
        assert not [t for ax in fig.axes for t in ax.texts]  # nothing is missing
        legend = [t.get_text() for t in fig.legends[0].get_texts()]
        assert legend[:2] == ["sampled maps (mean reward)", "argmax map, same batches"]
        assert legend[2:] == ["reinforce, rloo k=2", "weighted CE"]
    finally:
        plt.close(fig)
    rows, missing = figures.reward_gap_data(study, reward_stats(study))
    assert missing == {}
    assert set(rows[rows["variant"] == "wce"]["quantity"]) == {"argmax", "entropy"}


def test_reward_gap_names_the_runs_recorded_before_the_new_statistics(study):
    import matplotlib.pyplot as plt

    stats = reward_stats(study)
    new = stats["stat"].isin([figures.ARGMAX_REWARD, figures.POLICY_ENTROPY])
    old = stats[~(new & ((stats["variant"] == "wce")
                         | ((stats["variant"] == "reference") & (stats["seed"] == 1))))]
    rows, missing = figures.reward_gap_data(study, old)
    assert missing == {"reinforce": ["reference seed 1"], "weighted_ce": ["wce seed 0",
                                                                          "wce seed 1"]}
    fig = figures.build("reward_gap", study, stats=old)
    try:
        axes = panels(fig)
        notes = {key: " ".join(t.get_text() for t in ax.texts) for key, ax in axes.items()}
        assert "older results" in notes[("bottom", "REINFORCE")]
        assert "reference seed 1" in notes[("bottom", "REINFORCE")]
        assert "wce seed 0\nwce seed 1" in notes[("top", "weighted CE")]  # one per line
        assert "wce seed 0\nwce seed 1" in notes[("bottom", "weighted CE")]
        # the seed that has them is still drawn
        ref = lines_of(axes[("top", "REINFORCE")])
        assert ref["reinforce, rloo k=2: argmax"][1] == [pytest.approx(52.0),
                                                       pytest.approx(54.0)]
        assert ref["reinforce, rloo k=2: sampled"][1] == [pytest.approx(32.0),
                                                        pytest.approx(34.0)]
    finally:
        plt.close(fig)
    # no statistics of a reward run yet, or no reward estimator in the study: it says so
    fig = figures.build("reward_gap", study, stats=stats[stats["variant"] == "control"])
    try:
        for key, ax in panels(fig).items():
            if key[0] == "top":
                assert [t.get_text() for t in ax.texts] == [
                    "no training statistics of these runs yet"], key
    finally:
        plt.close(fig)
    ce_only = dict(study, variants={"control": study["variants"]["control"]})
    fig = figures.build("reward_gap", ce_only, stats=stats)
    try:
        assert "no reward-estimator runs in this study" in [
            t.get_text() for ax in fig.axes for t in ax.texts]
    finally:
        plt.close(fig)


def rst_problems(text):
    """docutils' warnings and errors for ``text`` (the report renders captions as rST)."""
    import io

    import docutils.core

    stream = io.StringIO()
    docutils.core.publish_doctree(text, settings_overrides=dict(
        report_level=2, halt_level=5, warning_stream=stream))
    return stream.getvalue()


@pytest.mark.parametrize("name", ["per_class_delta", "reward_gap"])
def test_diagnosis_captions_are_specific_valid_restructured_text(name):
    caption = figures.FIGURES[name].caption_for(study="smoke")
    assert rst_problems(caption) == "", caption
    assert rst_problems("R(y_-j, c)")  # the check sees an accidental link target


# ---------------------------------------------------------------- the workflow's side
DRIVER = textwrap.dedent("""
    import sys

    from rewardseg import figures
    from snakemake.cli import main

    if sys.argv[1] == "--extra":  # a figure registered by its function alone
        @figures.figure("extra_panel", needs=("stats",), caption="An extra figure.")
        def extra_panel(study, stats):
            raise AssertionError("a dry run draws nothing")
    main(["-n", "--cores", "1", "--configfile", "configs/studies/smoke.yaml"])
""")


def dry_run(root, *args):
    proc = subprocess.run([sys.executable, "-c", DRIVER, *args], cwd=root, env=ENV,
                          capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    return out


def job_counts(out):
    counts = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    return counts


@pytest.fixture(scope="module")
def workflow_copy(tmp_path_factory):
    return copy_workflow(tmp_path_factory.mktemp("wf"))


def test_every_registered_figure_has_a_rule_and_is_a_target(study, workflow_copy):
    out = dry_run(workflow_copy, "--plain")
    counts = job_counts(out)
    for spec in figures.FIGURES.values():
        assert counts.get(spec.rule) == len(spec.names(study)), (spec.rule, counts)
        for name in spec.names(study):
            for ext in ("png", "pdf"):
                assert paths.figure("smoke", name, ext) in out, name
    assert "report.done" not in out and "notebook.done" not in out
    for name in TABLES:
        assert paths.table("smoke", name) in out


def test_a_registered_figure_gets_its_rule_without_other_edits(workflow_copy):
    out = dry_run(workflow_copy, "--extra")
    assert job_counts(out).get("figure_extra_panel") == 1
    for ext in ("png", "pdf"):
        assert paths.figure("smoke", "extra_panel", ext) in out
    # its rule reads what it needs, nothing more
    block = out[out.index("rule figure_extra_panel:"):]
    block = block[:block.index("jobid")]
    assert paths.study_result("smoke", "train_stats.csv") in block
    assert paths.study_result("smoke", "metrics.csv") not in block


# ---------------------------------------------------------------- one look for every figure
def drawn_colours(fig, labels):
    """{variant label: colours it is drawn in} over a figure's lines (a reward_gap line is
    labelled "<label>: <quantity>") and heat-map row swatches."""
    from matplotlib.colors import to_hex

    found = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            label = line.get_label()
            label = label.split(" (mIoU ")[0]
            for name in labels:
                if label == name or label.startswith(name + ": "):
                    found.setdefault(name, set()).add(to_hex(line.get_color()))
        rows = [t.get_text().split(" (vs ")[0] for t in ax.get_yticklabels()]
        for collection in ax.collections:
            colours = collection.get_facecolors()
            if collection.get_offsets().shape[0] == len(rows) == len(colours) and rows:
                for row, colour in zip(rows, colours):
                    found.setdefault(row, set()).add(to_hex(colour))
    return found


def test_a_variant_has_one_colour_in_every_figure(study, tables):
    import matplotlib.pyplot as plt

    palette = figures.variant_colours(study)
    labels = {label: variant for variant, label in
              __import__("rewardseg.study", fromlist=["labels"]).labels(study).items()}
    # the control dark grey, the reference blue, every variant its own colour
    assert palette["control"] == figures.CONTROL_COLOURS[0]
    assert palette["reference"] == figures.REFERENCE_COLOUR
    assert len(set(palette.values())) == len(palette)
    metrics, stats = tables
    seen = {}
    for name in drawable(study):
        fig = figures.build(name, study, metrics=metrics, stats=stats)
        try:
            for label, colours in drawn_colours(fig, labels).items():
                assert colours == {palette[labels[label]]}, (name, label, colours)
                seen.setdefault(labels[label], set()).add(name)
        finally:
            plt.close(fig)
    for figure in ("exp_weights", "delta_vs_control", "estimator_variance", "training_reward",
                   "weight_change", "per_class_delta", "reward_gap"):
        assert any(figure in names for names in seen.values()), figure
    assert set(seen) == set(study["variants"])


def test_the_palette_follows_the_study_order_and_keeps_colours_when_a_variant_is_added(study):
    import copy

    bigger = copy.deepcopy(study)
    for i in range(20):
        bigger["variants"][f"extra{i}"] = dict(lr=1e-3 * (i + 1), experiment="weights")
    small, large = figures.variant_colours(study), figures.variant_colours(bigger)
    assert {v: large[v] for v in small} == small
    assert list(large) == list(bigger["variants"])
    others = [c for v, c in large.items() if v not in ("control", "reference")]
    n = len(figures.VARIANT_COLOURS)
    assert len(set(others[:n])) == n  # distinct until the list is used up
    assert not set(others) & {figures.REFERENCE_COLOUR, *figures.CONTROL_COLOURS}
    # a study without a variant called control or reference: the most compared-with
    # variant is the dark one, the one without fields of its own the blue one
    renamed = copy.deepcopy(study)
    renamed["variants"] = {("ce" if v == "control" else "base" if v == "reference" else v):
                           dict(f or {}) for v, f in study["variants"].items()}
    for fields in renamed["variants"].values():
        fields.setdefault("control", "ce")
    renamed["variants"]["ce"].pop("control")
    colours = figures.variant_colours(renamed)
    assert colours["ce"] == figures.CONTROL_COLOURS[0]
    assert colours["base"] == figures.REFERENCE_COLOUR


def png_text(path):
    from PIL import Image

    with Image.open(path) as image:
        return dict(image.info), image.size


def test_save_writes_the_smallest_text_size_into_the_png(tmp_path):
    import matplotlib.pyplot as plt

    fig, (ax, off) = plt.subplots(1, 2, figsize=(4, 3))
    ax.plot([0, 1], [0, 1], label="a line")
    ax.set_title("title", fontsize=20)
    ax.set_xlabel("x", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=7.5)
    ax.text(0.5, 0.5, "hidden", fontsize=2).set_visible(False)  # not drawn: not counted
    ax.text(0.5, 0.2, "", fontsize=1)                            # empty: not counted
    off.tick_params(labelsize=3)
    off.set_axis_off()                                           # its ticks are not drawn
    off.text(0.5, 0.5, "annotation", fontsize=9)
    assert figures.min_text_px(fig, 100) == pytest.approx(7.5 * 100 / 72)
    out = str(tmp_path / "f.png")
    figures.save(fig, out, dpi=100)
    info, _ = png_text(out)
    assert float(info["min_text_px"]) == pytest.approx(7.5 * 100 / 72, abs=0.01)
    fig, ax = plt.subplots()
    ax.set_axis_off()
    assert figures.min_text_px(fig, 100) == 0.0
    plt.close(fig)


def test_every_figure_is_legible_on_a_slide(study, tables, tmp_path):
    """Shown SLIDE_PX high (the deck's ``h:440``) on a 1280 x 720 slide, or narrower when
    the slide's width limits it, every figure's smallest text is at least 12 px."""
    metrics, stats = tables
    for name in drawable(study):
        out = str(tmp_path / f"{name}.png")
        figures.draw(name, study, out, metrics=metrics, stats=stats)
        info, (width, height) = png_text(out)
        scale = min(figures.SLIDE_PX / height, 1100 / width)
        assert float(info["min_text_px"]) * scale >= 12.0, (name, info["min_text_px"])


def test_delta_figure_keeps_small_effects_visible_next_to_a_collapse(study, tables):
    import matplotlib.pyplot as plt

    metrics = pd.read_csv(tables[0])
    fig = figures.build("delta_vs_control", study, metrics=metrics)
    try:
        assert fig.axes[0].get_xscale() == "linear"  # nothing large: a plain axis
    finally:
        plt.close(fig)
    final = metrics["step"] == metrics[metrics["variant"] == "wce"]["step"].max()
    collapse = (metrics["variant"] == "wce") & final & (metrics["seed"] == 0)
    metrics.loc[collapse, "IoU"] -= 40.0
    metrics.loc[(metrics["variant"] == "wce") & final & (metrics["seed"] == 1), "IoU"] -= 44.0
    fig = figures.build("delta_vs_control", study, metrics=metrics)
    try:
        ax = fig.axes[0]
        assert ax.get_xscale() == "symlog"
        assert "symmetric log" in ax.get_xlabel()
        written = " ".join(t.get_text() for t in ax.texts)
        assert "95 % CI" in written
        legend = " ".join(t.get_text() for t in fig.legends[0].get_texts())
        assert "unadjusted, paired over seeds" in legend and "Holm" in legend
    finally:
        plt.close(fig)


def test_estimator_variance_marks_the_runs_whose_miou_fell(study, tables):
    import matplotlib.pyplot as plt

    metrics, stats = pd.read_csv(tables[0]), pd.read_csv(tables[1])
    last = metrics["step"] == metrics[metrics["variant"] == "wce"]["step"].max()
    metrics.loc[(metrics["variant"] == "wce") & last, "IoU"] -= 30.0
    metrics.loc[(metrics["variant"] == "reference") & last, "IoU"] += 30.0
    fig = figures.build("estimator_variance", study, metrics=metrics, stats=stats)
    try:
        lines = {line.get_label(): line for ax in fig.axes for line in ax.get_lines()}
        fell = [label for label in lines if label.startswith("weighted CE (mIoU ")]
        assert len(fell) == 1 and lines[fell[0]].get_linestyle() == "--"
        assert lines["reinforce, rloo k=2"].get_linestyle() == "-"
        titles = [ax.get_title().split("\n")[0] for ax in fig.axes if ax.get_title()]
        assert titles == ["weighted CE", "REINFORCE"]  # one panel per estimator, as titled
        assert "per step" in fig._suptitle.get_text() and "baseline" not in \
            fig._suptitle.get_text()
    finally:
        plt.close(fig)


def test_training_reward_puts_each_measure_on_its_own_axis_in_percent(study, tables):
    import matplotlib.pyplot as plt

    stats = pd.read_csv(tables[1])
    fig = figures.build("training_reward", study, stats=stats)
    try:
        panels = {ax.get_title(): {line.get_label(): list(line.get_ydata())
                                   for line in ax.get_lines()} for ax in fig.axes}
        assert panels == {
            figures.REWARD_MEASURES["sampled"]: {"reinforce, rloo k=2": pytest.approx(
                list(stats[(stats.variant == "reference")
                           & (stats.stat == "decode.reward_miou_train")]
                     .groupby("step")["value"].mean() * 100))},
            figures.REWARD_MEASURES["sampled_weighted"]: {"class weights s=0.05": ANY},
            figures.REWARD_MEASURES["argmax"]: {"weighted CE": ANY}}
        assert not [ax.get_legend() for ax in fig.axes if ax.get_legend()]  # outside
        assert fig.legends
    finally:
        plt.close(fig)


DEFAULT_RECORD = os.path.join(REPO, "paper", "recorded", "default")


def test_the_qualitative_panel_shows_the_best_reward_tuned_variant_and_says_so():
    """From the default study's record: the panel's second model is reward-tuned (a loss of
    vocabulary.ESTIMATORS, not a CE variant such as Lovasz or unweighted CE) and beats its
    control; with every reward-tuned variant made worse, it shows the highest Δ and says
    it is not better."""
    study = load_study(os.path.join(DEFAULT_RECORD, "study.yaml"))
    metrics = pd.read_csv(os.path.join(DEFAULT_RECORD, "metrics.csv"))
    (control, best), better = figures.qualitative_variants(study, metrics)
    assert control == "control" and better
    assert variant_fields(study, best)["loss"] in vocabulary.ESTIMATORS
    tuned = [v for v in study["variants"]
             if variant_fields(study, v)["loss"] in vocabulary.ESTIMATORS]
    worse = metrics.copy()
    rows = worse["variant"].isin(tuned) & (worse["step"] > 0)
    worse.loc[rows, "IoU"] -= 30.0
    worse.loc[worse["variant"].eq(tuned[-1]) & (worse["step"] > 0), "IoU"] += 29.0
    (_, shown), better = figures.qualitative_variants(study, worse)
    assert (shown, better) == (tuned[-1], False)


def fake_predictions(rows=3, classes=("road", "car", "person")):
    rng = np.random.default_rng(1)
    data = {"variants": np.array(["control", "reference"]), "better": np.array(True),
            "seed": np.array(0), "classes": np.array(list(classes)),
            "palette": rng.integers(0, 255, size=(len(classes), 3)).astype(np.uint8),
            "names": np.array([f"img{i}.png" for i in range(rows)]),
            "disagreement": np.linspace(0.3, 0.1, rows), "searched": np.array(10)}
    for row in range(rows):
        data[f"image{row}"] = rng.integers(0, 255, size=(64, 128, 3)).astype(np.uint8)
        data[f"label{row}"] = rng.integers(0, len(classes), size=(64, 128)).astype(np.uint8)
        data[f"pred{row}"] = rng.integers(0, len(classes), size=(2, 64, 128)).astype(np.uint8)
    return data


@pytest.mark.parametrize("classes", [("road", "car", "person"),
                                     tuple(f"class{i}" for i in range(19))])
def test_the_qualitative_panel_is_drawn_from_its_predictions_file_and_legible(tmp_path,
                                                                               classes):
    study = load_study(os.path.join(REPO, "configs", "studies", "smoke.yaml"))
    path = figures.save_predictions(fake_predictions(classes=classes),
                                    str(tmp_path / "predictions.npz"))
    out = str(tmp_path / "qualitative.png")
    figures.draw("qualitative", study, out, predictions=path)
    info, (width, height) = png_text(out)
    scale = min(figures.SLIDE_PX / height, 1100 / width)
    assert float(info["min_text_px"]) * scale >= 12.0, (info["min_text_px"], width, height)
    fig = figures.build("qualitative", study, predictions=path)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[3].startswith("best reward-tuned:")
    assert [ax.get_ylabel() for ax in fig.axes[::4]] == ["30.0 %\ndiffer", "20.0 %\ndiffer",
                                                         "10.0 %\ndiffer"]


def test_the_qualitative_predictions_are_where_the_two_models_differ_most(tmp_path,
                                                                           monkeypatch):
    """Of the validation images searched, the panel keeps those on which the control's
    and the tuned variant's predictions disagree on the most labelled pixels, most first;
    ignored pixels (255) do not count."""
    import torch
    from PIL import Image
    from types import SimpleNamespace

    import mmseg.apis

    study = load_study(os.path.join(DEFAULT_RECORD, "study.yaml"))
    metrics = pd.read_csv(os.path.join(DEFAULT_RECORD, "metrics.csv"))
    (_, best), _ = figures.qualitative_variants(study, metrics)
    differ = [0.1, 0.5, 0.0, 0.3, 0.9]  # fraction of labelled pixels that differ
    pairs = []
    for i, frac in enumerate(differ):
        img, gt = str(tmp_path / f"i{i}.png"), str(tmp_path / f"g{i}.png")
        Image.fromarray(np.full((10, 20, 3), i, np.uint8)).save(img)
        label = np.zeros((10, 20), np.uint8)
        label[:, 10:] = 255 if i == 4 else 0  # image 4: half ignored, its differences there
        Image.fromarray(label).save(gt)
        pairs.append((img, gt))

    def predict(model, path):
        i = int(os.path.basename(path)[1:-4])
        pred = np.zeros((10, 20), np.int64)
        if model.variant == best:
            if i == 4:
                pred[:, 10:] = 1  # only on ignored pixels: no labelled pixel differs
            else:
                pred.flat[: int(round(differ[i] * pred.size))] = 1
        return SimpleNamespace(pred_sem_seg=SimpleNamespace(data=torch.from_numpy(pred)[None]))

    def init_model(cfg, checkpoint, device):
        variant = cfg.split(os.sep)[-3]
        return SimpleNamespace(variant=variant, cfg=None,
                               dataset_meta={"classes": ["a", "b"], "palette": [[0, 0, 0], [9, 9, 9]]})

    monkeypatch.setattr(mmseg.apis, "init_model", init_model)
    monkeypatch.setattr(mmseg.apis, "inference_model", predict)
    # the module that reads them (rewardseg.figures.predictions), not the package's names
    monkeypatch.setattr(figures.predictions, "val_pairs", lambda cfg: pairs)
    monkeypatch.setattr(figures.predictions, "_last_checkpoint", lambda run_dir: "x.pth")
    data = figures.qualitative_predictions(study, metrics, work_root=str(tmp_path), seed=0,
                                           num_images=3)
    assert list(data["names"]) == ["i1.png", "i3.png", "i0.png"]
    assert np.allclose(data["disagreement"], [0.5, 0.3, 0.1])
    assert list(data["variants"]) == ["control", best] and int(data["searched"]) == 5
    assert data["image0"].shape == (10, 20, 3) and data["pred0"].shape == (2, 10, 20)
