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

from conftest import ENV, REPO, copy_workflow
from rewardseg import figures, paths
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
                    for stat in ("decode.reward_adv_sq", "decode.reward_miou_train"):
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
    return [n for n in figures.names(study) if "runs" not in figures.resolve(n)[0].needs]


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
        "training_reward", "weight_change"]
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
    fig = figures.build("exp_weights", study, metrics=metrics)
    try:
        lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
        trend = lines[TREND]
        pre = metrics[(metrics.variant == paths.PRETRAIN) & (metrics.step >= start)]
        assert list(trend.get_xdata()) == [0, start]  # the pretraining's steps from the start
        assert list(trend.get_ydata()) == list(pre.sort_values("step")["IoU"])
        assert f"pretraining at step {start}" in lines
        legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        assert TREND in legend and "CE (control)" in legend
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
        starts = {variant_fields(study, v)["start"] for v in ("reference", "late")}
        assert len(starts) == 2 and {f"pretraining at step {s}" for s in starts} <= set(lines)
        assert lines[TREND].get_xdata()[0] == min(starts)  # absolute iterations
        assert "own start" in ax.get_xlabel()
        # the seaborn curves (the axhlines have axes x-coordinates [0, 1])
        firsts = {float(min(line.get_xdata())) for line in ax.get_lines()
                  if line.get_label().startswith("_") and list(line.get_xdata()) != [0, 1]
                  and len(line.get_xdata()) > 1}
        assert firsts == {float(s) for s in starts}
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
