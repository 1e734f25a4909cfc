"""The Snakemake DAG on the smoke study, schema rejection, determinism, kill and resume,
rebuilding from a record."""
import glob
import json
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from conftest import BIN, ENV, REPO, copy_workflow, kill_after_first_checkpoint, snakemake
from rewardseg.runconfig import tune_spec
from rewardseg.study import load_study

def test_the_console_shows_where_each_training_job_is(smoke):
    """One line per evaluation of every training job reaches the console (the job's own
    output goes to its log)."""
    study = load_study(os.path.join(smoke, "configs/studies/smoke.yaml"))
    console = open(os.path.join(smoke, "console.log")).read()
    tune = study["tuning"]
    for variant in study["variants"]:
        for seed in study["seeds"]:
            for step in range(tune["eval_interval"], tune["iters"] + 1, tune["eval_interval"]):
                line = f"work/smoke/{variant}/seed{seed}: step {step}/{tune['iters']}, val mIoU "
                assert line in console, line
    pre = study["pretrain"]
    assert f"work/smoke/pretrain: step {pre['iters']}/{pre['iters']}, val mIoU " in console
    assert "mmengine" not in console  # the training logs stay in the job logs


def test_dag_outputs_exist_and_agree(smoke):
    study = load_study(os.path.join(smoke, "configs/studies/smoke.yaml"))
    metrics = pd.read_csv(os.path.join(smoke, "results/smoke/metrics.csv"))
    assert list(metrics.columns) == ["study", "variant", "seed", "step", "class", "IoU"]
    assert set(metrics["variant"]) == set(study["variants"]) | {"pretrain"}
    assert set(metrics[metrics.variant == "control"]["seed"]) == {0, 1}
    assert set(metrics[metrics.variant == "control"]["step"]) == {0, 2, 4}
    # the table's numbers are the metrics.csv numbers
    final = pd.read_csv(os.path.join(smoke, "paper/tables/smoke/final_miou.csv"))
    miou = metrics[(metrics["class"] == "mIoU") & (metrics["step"] == 4)]
    for _, row in final.iterrows():
        values = miou[miou.variant == row.variant]["IoU"]
        assert row["mean"] == pytest.approx(values.mean())
        md = open(os.path.join(smoke, "paper/tables/smoke/final_miou.md")).read()
        assert f"{values.mean():.2f} ± {values.std(ddof=1):.2f}" in md
    # every registered figure (experiment figures: one per experiment), PNG and PDF; every
    # table file; the executed notebook; no sentinel files
    from rewardseg import figures, paths
    from rewardseg.results import TABLES

    names = figures.names(study)
    assert {"exp_baseline", "exp_weights", "qualitative"} <= set(names)
    for name in names:
        for ext in ("png", "pdf"):
            path = os.path.join(smoke, paths.figure("smoke", name, ext))
            assert os.path.getsize(path) > 5000, path
    assert sorted(os.listdir(os.path.join(smoke, paths.table("smoke", "")))) == sorted(TABLES)
    assert os.path.isfile(os.path.join(smoke, paths.study_result("smoke", "results.ipynb")))
    done = [os.path.join(d, f) for d, _, files in os.walk(smoke) for f in files
            if f.endswith(".done")]
    assert not done, done
    # every run directory records its provenance
    run = json.load(open(os.path.join(smoke, "work/smoke/reference/seed0/run.json")))
    assert run["seed"] == 0 and run["spec"]["variant"] == "reference"
    assert "torch" in run["versions"] and run["wall_time_s"] > 0
    assert os.path.isfile(os.path.join(smoke, "work/smoke/reference/seed0/config.py"))


def test_rerun_is_a_no_op_and_deleted_run_is_reproduced(smoke):
    proc = snakemake(smoke, "--configfile", "configs/studies/smoke.yaml", "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr
    path = os.path.join(smoke, "results/smoke/runs/reference/seed1.json")
    before = json.load(open(path))["evals"]
    shutil.rmtree(os.path.join(smoke, "work/smoke/reference/seed1"))
    os.remove(path)
    snakemake(smoke, "--configfile", "configs/studies/smoke.yaml")
    after = json.load(open(path))["evals"]
    assert [e["metrics"] for e in after] == [e["metrics"] for e in before]


def test_kill_and_resume_continues_from_checkpoint(smoke, tmp_path):
    study = load_study(os.path.join(smoke, "configs/studies/smoke.yaml"))
    spec = tune_spec(study, "reference", 0, work_dir=os.path.join(smoke, "work"),
                     data_dir=os.path.join(smoke, "data"))
    spec.update(iters=40, eval_interval=10, checkpoint_interval=10)
    cmd = [os.path.join(BIN, "rewardseg"), "stage", "--spec", json.dumps(spec), "--work-dir"]
    straight = tmp_path / "straight"
    subprocess.run(cmd + [str(straight)], env=ENV, cwd=smoke, check=True, capture_output=True)
    killed = tmp_path / "killed"
    kill_after_first_checkpoint(cmd + [str(killed)], killed, cwd=smoke)
    assert not (killed / "run.json").exists()  # not taken as complete
    subprocess.run(cmd + [str(killed)], env=ENV, cwd=smoke, check=True, capture_output=True)
    record = json.load(open(killed / "run.json"))
    assert record["resumed"] is True
    log = "".join(open(p).read() for p in killed.glob("*/*.log"))
    assert "Resumed" in log or "resumed" in log
    a = [json.loads(l) for l in open(straight / "val_metrics.jsonl")]
    b = {}
    for line in open(killed / "val_metrics.jsonl"):
        rec = json.loads(line)
        b[rec["step"]] = rec
    assert [r["metrics"] for r in a] == [b[r["step"]]["metrics"] for r in a]


def test_validation_lost_to_a_kill_is_redone_on_resume(smoke, tmp_path):
    """Killed after saving iter_10 but before validating it: the resumed run validates
    step 10 first, and the curve equals the uninterrupted one."""
    study = load_study(os.path.join(smoke, "configs/studies/smoke.yaml"))
    spec = tune_spec(study, "control", 0, work_dir=os.path.join(smoke, "work"),
                     data_dir=os.path.join(smoke, "data"))
    spec.update(iters=20, eval_interval=10, checkpoint_interval=10)
    work = tmp_path / "run"
    cmd = [os.path.join(BIN, "rewardseg"), "stage", "--spec", json.dumps(spec), "--work-dir",
           str(work)]
    subprocess.run(cmd, env=ENV, cwd=smoke, check=True, capture_output=True)
    lines = open(work / "val_metrics.jsonl").read().splitlines()
    expected = [json.loads(l) for l in lines]
    # the state right after the checkpoint at 10, before its validation
    (work / "val_metrics.jsonl").write_text("")
    (work / "run.json").unlink()
    for extra in work.glob("iter_20.pth"):
        extra.unlink()
    (work / "last_checkpoint").write_text(str(work / "iter_10.pth"))
    subprocess.run(cmd, env=ENV, cwd=smoke, check=True, capture_output=True)
    got = [json.loads(l) for l in open(work / "val_metrics.jsonl")]
    assert [r["step"] for r in got] == [10, 20]
    assert [r["metrics"] for r in got] == [r["metrics"] for r in expected]


def test_same_seed_same_numbers(smoke, tmp_path):
    """Determinism on CPU: the DAG's control seed 0 run, again in a fresh work dir."""
    study = load_study(os.path.join(smoke, "configs/studies/smoke.yaml"))
    spec = tune_spec(study, "control", 0, work_dir=os.path.join(smoke, "work"),
                     data_dir=os.path.join(smoke, "data"))
    subprocess.run([os.path.join(BIN, "rewardseg"), "stage", "--spec", json.dumps(spec),
                    "--work-dir", str(tmp_path / "again")], env=ENV, cwd=smoke, check=True,
                   capture_output=True)
    again = [json.loads(l)["metrics"] for l in open(tmp_path / "again/val_metrics.jsonl")]
    first = [json.loads(l)["metrics"]
             for l in open(os.path.join(smoke, "work/smoke/control/seed0/val_metrics.jsonl"))]
    assert again == first


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(sedes=[0]), "sedes"),
    (lambda c: c["pretrain"].update(iters="many"), "many"),
    (lambda c: c["variants"]["reference"].update(learning_rate=0.1), "learning_rate"),
    (lambda c: c["variants"]["reference"].update(loss="ppo"), "ppo"),
])
def test_bad_study_config_fails_before_any_job(tmp_path, edit, message):
    root = copy_workflow(tmp_path / "wf")
    with open(os.path.join(root, "configs/studies/smoke.yaml")) as fh:
        cfg = yaml.safe_load(fh)
    edit(cfg)
    with open(os.path.join(root, "bad.yaml"), "w") as fh:
        yaml.safe_dump(cfg, fh)
    proc = snakemake(root, "--configfile", "bad.yaml", check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert not os.path.exists(os.path.join(root, "data"))


def test_default_study_dry_run_lists_every_run():
    """In the checkout itself, whatever it holds: --forceall, since after `make study` (the
    README's first command) every run is done and a plain dry run lists none."""
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--forceall", "--cores",
                           "1"], cwd=REPO, env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    study = load_study(os.path.join(REPO, "configs/studies/default.yaml"))
    runs = len(study["variants"]) * len(study["seeds"])
    out = proc.stdout + proc.stderr
    assert any(line.split() == ["tune", str(runs)] for line in out.splitlines()), out[-2000:]


def test_pretraining_in_parts_lets_tuning_start_at_its_checkpoint(smoke, tmp_path):
    """`pretrain: {parts: true}`: one pretraining job up to each tuning start point; the
    tuning runs wait for that part only, and every number equals the one-job run's."""
    root = copy_workflow(tmp_path / "wf")
    path = os.path.join(root, "configs/studies/smoke.yaml")
    study = yaml.safe_load(open(path))
    study["pretrain"]["parts"] = True
    yaml.safe_dump(study, open(path, "w"))
    targets = ["work/smoke/control/seed0/run.json", "work/smoke/pretrain/run.json"]
    plan = snakemake(root, *targets, "-n", "--configfile", path).stdout
    jobs = {block.split(":")[0].strip(): block for block in plan.split("rule ")[1:]}
    assert "output: work/smoke/pretrain/part_4.json" in jobs["pretrain_part"]
    assert "work/smoke/pretrain/part_4.json" in jobs["tune"]
    assert "work/smoke/pretrain/run.json" not in jobs["tune"]
    assert "work/smoke/pretrain/part_4.json" in jobs["pretrain"]
    snakemake(root, *targets, "--configfile", path)
    assert os.path.isfile(os.path.join(root, "work/smoke/pretrain/part_4.json"))
    for run in ("pretrain", "control/seed0"):
        got, want = (os.path.join(r, "work/smoke", run, "val_metrics.jsonl") for r in (root, smoke))
        assert [json.loads(l)["metrics"] for l in open(got)] == \
            [json.loads(l)["metrics"] for l in open(want)], run


def _outputs(root):
    """What a reader gets, by path: every figure (PNG), table and the deck's Markdown."""
    found = {}
    for pattern in ("figures/smoke/*.png", "paper/tables/smoke/*", "paper/build/smoke/slides.md"):
        for path in glob.glob(os.path.join(root, pattern)):
            with open(path, "rb") as fh:
                found[os.path.relpath(path, root)] = fh.read()
    return found


def test_a_record_rebuilds_the_outputs_without_training_and_a_run_compares_itself(smoke,
                                                                                  tmp_path):
    """`rewardseg record` of the finished smoke study; a fresh copy of the workflow rebuilt
    from that record (`--config recorded=DIR`, what `make figures` runs) trains nothing and
    writes the same figures, tables and deck. The run itself, given the record, says it is
    identical; a record with one number changed reads "not identical" with the largest
    per-run difference, and a rebuild over those results is refused."""
    rec = str(tmp_path / "rec")
    subprocess.run([os.path.join(BIN, "rewardseg"), "record", "--study", "smoke", "--out-dir",
                    rec], cwd=smoke, env=ENV, check=True, capture_output=True)
    rebuilt = copy_workflow(tmp_path / "rebuilt")
    proc = snakemake(rebuilt, "--configfile", os.path.join(rec, "study.yaml"), "--config",
                     f"recorded={rec}")
    log = proc.stdout + proc.stderr
    assert not os.path.exists(os.path.join(rebuilt, "work")), "a rebuild trained"
    assert "restore_recorded" in log and "rule stage" not in log
    ours, theirs = _outputs(rebuilt), _outputs(smoke)
    assert len(theirs) >= 15 and set(ours) == set(theirs)
    differ = sorted(p for p in ours if ours[p] != theirs[p])
    assert not differ, differ
    assert os.path.isfile(os.path.join(rebuilt, "results/smoke/results.html"))

    # the run, with the record as the repository's paper/recorded/smoke
    run = str(tmp_path / "run")
    shutil.copytree(smoke, run, symlinks=True)
    shutil.copytree(rec, os.path.join(run, "paper/recorded/smoke"))
    proc = snakemake(run, "--configfile", "configs/studies/smoke.yaml")
    report = os.path.join(run, "results/smoke/reproduction.md")
    assert "**Identical**" in open(report).read()
    assert "**Identical**" in proc.stdout + proc.stderr  # printed at the end
    metrics = pd.read_csv(os.path.join(rec, "metrics.csv"))
    run_rows = (metrics["variant"] == "reference") & (metrics["seed"] == 1)
    last = metrics["step"] == metrics.loc[run_rows, "step"].max()
    row = metrics.index[run_rows & last & (metrics["class"] == "mIoU")][0]
    metrics.loc[row, "IoU"] += 7.0  # that run's final mIoU, as the record states it
    metrics.to_csv(os.path.join(run, "paper/recorded/smoke/metrics.csv"), index=False)
    snakemake(run, "--configfile", "configs/studies/smoke.yaml")
    text = open(report).read()
    assert "**Not identical**" in text and "Final mIoU: 1 of" in text
    assert "the largest per-run difference is 7 points (`reference`, seed 1)" in text
    proc = snakemake(run, "--configfile", "paper/recorded/smoke/study.yaml", "--config",
                     "recorded=paper/recorded/smoke", check=False)
    assert proc.returncode != 0
    assert "results/smoke/metrics.csv: differs from paper/recorded/smoke/metrics.csv" in (
        proc.stdout + proc.stderr)
