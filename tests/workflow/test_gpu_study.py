"""The GPU check of the paper path on synthetic data (configs/studies/gpu-synthetic.yaml):
its DAG, and the whole DAG on a CPU at a reduced size given through `--config`."""
import copy
import os
import time

import pandas as pd
import pytest
import yaml

from conftest import REPO, copy_workflow, job_counts, snakemake

STUDY = "gpu-synthetic"
CONFIG = f"configs/studies/{STUDY}.yaml"
# the CI size: what the study's comment gives as its CPU command, with one CPU a job so
# that two jobs run side by side on 2 cores
REDUCED = [
    "dataset={height: 32, width: 64, num_train: 4, num_val: 2}",
    "pretrain={iters: 2, checkpoint_interval: 1, eval_interval: 1, batch_size: 2}",
    "tuning={start: 1, iters: 2, eval_interval: 2, batch_size: 2}",
    "resources={pretrain: {cpus: 1, first_part_cpus: 1}, tune: {cpus: 1}}",
]
VARIANTS = ("control", "reference", "local_exp")
SEEDS = (0, 1)
# every job of the study, by rule (no released checkpoint, no class weights; the
# pretrained_weights job finds no remote weights to fetch)
JOBS = {"dataset": 1, "pretrained_weights": 1, "study_config": 1, "resolved_study": 1,
        "pretrain_part": 1,
        "pretrain": 1, "tune": 6, "collect_pretrain": 1, "collect_run": 6, "aggregate": 1}


def study():
    with open(os.path.join(REPO, CONFIG)) as fh:
        return yaml.safe_load(fh)


def test_the_study_runs_the_paper_path_and_needs_no_download():
    """The R-18-D8 Cityscapes model (random init: no ImageNet weights to fetch), bf16 +
    channels-last like the R-18 study, the Cityscapes source's 19 classes, 3 variants x 2
    seeds, no credentials."""
    from mmengine.config import Config

    import rewardseg  # noqa: F401
    from rewardseg import preflight
    from rewardseg.pretrained import pretrained_sources
    from rewardseg.runconfig import pretrain_spec, tune_spec
    from rewardseg.study import check_study

    st = check_study(study())
    assert st["dataset"]["source"] == "synthetic_cityscapes"
    assert list(st["variants"]) == list(VARIANTS) and tuple(st["seeds"]) == SEEDS
    cfg = Config.fromfile(os.path.join(REPO, st["model"]["config"]))
    assert pretrained_sources(cfg) == []
    r18 = Config.fromfile(os.path.join(
        REPO, "configs/mmseg/deeplabv3_r18-d8_4xb2-80k_cityscapes-512x1024.py"))
    assert cfg.model.backbone == r18.model.backbone  # only the initialisation differs
    assert cfg.model.decode_head == r18.model.decode_head
    assert cfg.model.auxiliary_head == r18.model.auxiliary_head
    assert cfg.train_dataloader.dataset.type == "PreparedDataset"
    assert cfg.model.decode_head.num_classes == 19
    for spec in [pretrain_spec(st)] + [tune_spec(st, v, s) for v in VARIANTS for s in SEEDS]:
        assert (spec["precision"], spec["channels_last"]) == ("bf16", True)
    assert {tune_spec(st, v, 0)["loss"] for v in VARIANTS} == {
        "ce", "reinforce", "local_expectation"}
    assert tune_spec(st, "reference", 0)["baseline"] == "rloo"
    checked = preflight.check(st, {}, REPO, dry_run=False)
    assert not checked.fatal and not checked.problems, checked.message()


def test_dry_run_plans_every_job(tmp_path):
    root = copy_workflow(tmp_path / "wf")
    proc = snakemake(root, "-n", "--configfile", CONFIG)
    counts = job_counts(proc.stdout)
    for rule, n in JOBS.items():
        assert counts.get(rule) == n, (rule, counts)
    assert "released_checkpoint" not in counts and "class_weights" not in counts
    assert counts.get("figure_exp_experiment") == 1  # the one experiment: estimators
    for rule in ("tables", "notebook", "slides_markdown"):
        assert counts.get(rule) == 1, rule
    assert "CITYSCAPES_" not in proc.stdout + proc.stderr  # no credentials asked for
    # the reduced size reaches the workflow typed (`--config` values inside a mapping
    # are text to snakemake)
    proc = snakemake(root, "-n", "--configfile", CONFIG, "--config", *REDUCED)
    assert job_counts(proc.stdout)["tune"] == 6


def test_the_documented_cpu_command_is_the_tested_one():
    """The study file's comment and the README give the CI size this test runs."""
    import re

    with open(os.path.join(REPO, CONFIG)) as fh:
        comment = "".join(l for l in fh if l.startswith("#"))
    with open(os.path.join(REPO, "README.md")) as fh:
        readme = fh.read()
    section = readme[readme.index("## A GPU check of the paper path on synthetic data"):]
    section = section[:section.index("\n## ", 1)]
    for text in (comment, section):
        assert re.findall(r"'([a-z]+=\{.*?\})'", text) == REDUCED
        assert f"--configfile {CONFIG}" in text


def test_typed_overrides_reads_back_numbers_given_as_text():
    from rewardseg.study import check_study, typed_overrides

    st = study()
    given = copy.deepcopy(st)
    given["dataset"].update(height="32", width="64", name="123")
    given["tuning"].update(iters="2", lr="5.0e-3", aux_head="false", loss="ce",
                           class_weight_smoothing="null", experiment="7")
    given["resources"]["tune"]["seconds_per_step"] = "0.5"
    given["variants"]["control"]["min_lr"] = "1e-6"
    given["seeds"] = ["0", "1"]
    typed_overrides(given)
    assert given["dataset"]["height"] == 32 and given["dataset"]["width"] == 64
    assert given["dataset"]["name"] == "123"  # a string where the schema wants one
    tuning = given["tuning"]
    assert (tuning["iters"], tuning["lr"], tuning["aux_head"]) == (2, 5.0e-3, False)
    assert tuning["class_weight_smoothing"] is None and tuning["experiment"] == "7"
    assert given["resources"]["tune"]["seconds_per_step"] == 0.5
    assert given["variants"]["control"]["min_lr"] == 1e-6 and given["seeds"] == [0, 1]
    check_study(given)
    # text that is not a number stays, for the check to name
    bad = copy.deepcopy(st)
    bad["tuning"]["iters"] = "many"
    typed_overrides(bad)
    assert bad["tuning"]["iters"] == "many"
    assert typed_overrides(copy.deepcopy(st)) == st  # a valid study is unchanged


@pytest.fixture(scope="module")
def reduced(tmp_path_factory):
    """The whole DAG of the study at the CI size, once: (workflow root, seconds)."""
    root = copy_workflow(tmp_path_factory.mktemp("gpu_synthetic"))
    start = time.perf_counter()
    proc = snakemake(root, "--configfile", CONFIG, "--config", *REDUCED)
    seconds = time.perf_counter() - start
    with open(os.path.join(root, "console.log"), "w") as fh:
        fh.write(proc.stdout + proc.stderr)
    print(f"\n{STUDY} at the CI size: the whole DAG in {seconds:.0f} s")
    return root, seconds


def test_reduced_run_of_the_whole_dag(reduced):
    """Data through the Cityscapes source, CE pretraining from scratch in bf16 +
    channels-last, 3 variants x 2 seeds, metrics, every figure, the tables, the deck."""
    from rewardseg import figures, paths
    from rewardseg.data import load_meta
    from rewardseg.results import TABLES

    root, _ = reduced
    at = lambda *p: os.path.join(root, *p)  # noqa: E731
    # the data: the local copy's two archives, prepared by the Cityscapes source
    assert sorted(os.listdir(at("data", "raw", "synthcityscapes"))) == [
        "gtFine_trainvaltest.zip", "leftImg8bit_trainvaltest.zip"]
    meta = load_meta(at("data", "synthcityscapes"))
    assert meta["source"] == "cityscapes" and meta["num_classes"] == 19
    assert meta["splits"] == {"train": 4, "val": 2} and meta["generated"]["height"] == 32
    # the runs: bf16 + channels-last, from the pretraining's step-1 checkpoint
    import json

    for variant in VARIANTS:
        for seed in SEEDS:
            with open(at("work", STUDY, variant, f"seed{seed}", "run.json")) as fh:
                spec = json.load(fh)["spec"]
            assert (spec["precision"], spec["channels_last"]) == ("bf16", True)
            assert spec["load_from"].endswith(os.path.join("pretrain", "iter_1.pth"))
    metrics = pd.read_csv(at(paths.study_result(STUDY, "metrics.csv")))
    assert set(metrics["variant"]) == set(VARIANTS) | {"pretrain"}
    runs = metrics[metrics["variant"] != "pretrain"]
    assert set(map(tuple, runs[["variant", "seed"]].drop_duplicates().values)) == {
        (v, s) for v in VARIANTS for s in SEEDS}
    assert set(runs["step"]) == {0, 2}
    miou = runs[runs["class"] == "mIoU"]["IoU"]
    assert len(miou) == 12 and miou.notna().all()
    # the figures, the tables, the notebook, the deck
    st = study()
    for name in figures.names(st):
        for ext in ("png", "pdf"):
            assert os.path.getsize(at(paths.figure(STUDY, name, ext))) > 5000, name
    for name in TABLES:
        assert os.path.isfile(at(paths.table(STUDY, name))), name
    assert os.path.isfile(at(paths.study_result(STUDY, "results.html")))
    slides = open(at(paths.build(STUDY, "slides.md"))).read()
    assert "Cityscapes' format" in slides


def test_reduced_run_time(reduced):
    """The CI size stays a CI test: a few minutes on 2 shared cores (~2 min measured on a
    quiet machine; the limit leaves room for a busy one)."""
    _, seconds = reduced
    assert seconds < 600
