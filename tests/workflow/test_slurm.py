"""`snakemake --profile slurm` on a real single-node SLURM (slurmctld + slurmd on
localhost, fake GPU GRES): every training job goes through sbatch, the results equal a
local run, and a job cancelled mid-way with scancel is retried and resumes."""
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest
import yaml

from conftest import BIN, ENV, REPO, copy_workflow

START = os.path.join(REPO, "tests", "workflow", "slurm", "start-cluster.sh")


def cluster_up():
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                             timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and bool(re.search(r"idle|mix|alloc", out.stdout))


@pytest.fixture(scope="module")
def slurm():
    if not cluster_up():
        # Debian puts the daemons in /usr/sbin, which a plain PATH (env -i) lacks
        daemons = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
        if shutil.which("slurmctld", path=daemons) is None or os.geteuid() != 0:
            pytest.skip("no SLURM here: needs root and Debian's slurm-wlm + munge "
                        "(.ci/run installs them), then tests/workflow/slurm/start-cluster.sh")
        proc = subprocess.run(["bash", START], capture_output=True, text=True)
        if proc.returncode != 0 or not cluster_up():
            pytest.skip(f"could not start SLURM: {proc.stderr[-500:]}")
    return True


def run_profile(cwd, *args):
    cmd = [sys.executable, "-m", "snakemake", "--profile", "slurm", *args]
    return subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True)


def submitted(output):
    return re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: ([^)]+)\)",
                      output)


def test_profile_runs_the_smoke_study_through_sbatch(slurm, smoke, tmp_path):
    root = copy_workflow(tmp_path / "wf")
    shutil.copytree(os.path.join(REPO, "slurm"), os.path.join(root, "slurm"))
    proc = run_profile(root, "--configfile", "configs/studies/smoke.yaml")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    study = yaml.safe_load(open(os.path.join(root, "configs/studies/smoke.yaml")))
    jobs = submitted(out)
    expected = 1 + len(study["variants"]) * len(study["seeds"])  # pretraining + tune runs
    assert len(jobs) == expected, out[-3000:]
    for jobid, log in jobs:  # the sbatch log of each job exists and names the job id
        assert os.path.isfile(log) and log.endswith(f"{jobid}.log"), log
    assert all("/rule_pretrain/" in log or "/rule_tune/" in log for _, log in jobs)
    # GPU requests reached SLURM: scontrol remembers finished jobs (MinJobAge)
    info = subprocess.run(["scontrol", "show", "job", jobs[-1][0]], capture_output=True,
                          text=True).stdout
    assert "gres/gpu" in info or "gpu:1" in info, info
    # same numbers as the local run of the same study and seeds
    for path in glob.glob(os.path.join(smoke, "results/smoke/runs/*/seed*.json")):
        rel = os.path.relpath(path, smoke)
        local = [e["metrics"] for e in json.load(open(path))["evals"]]
        remote = [e["metrics"] for e in json.load(open(os.path.join(root, rel)))["evals"]]
        assert remote == local, rel


def test_cancelled_job_is_retried_and_resumes(slurm, tmp_path):
    root = copy_workflow(tmp_path / "wf")
    shutil.copytree(os.path.join(REPO, "slurm"), os.path.join(root, "slurm"))
    study = yaml.safe_load(open(os.path.join(root, "configs/studies/smoke.yaml")))
    study["study"] = "cancel"
    study["seeds"] = [0]
    study["variants"] = {"long": {"loss": "ce", "iters": 80, "eval_interval": 20,
                                  "experiment": "all"}}
    with open(os.path.join(root, "cancel.yaml"), "w") as fh:
        yaml.safe_dump(study, fh)
    target = "work/cancel/long/seed0/run.json"
    cmd = [sys.executable, "-m", "snakemake", target, "--profile", "slurm", "--configfile",
           "cancel.yaml"]  # the target first: --configfile takes several values
    proc = subprocess.Popen(cmd, cwd=root, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    # written by mmengine after iter_20.pth: the checkpoint is complete and resumable
    ckpt = os.path.join(root, "work/cancel/long/seed0/last_checkpoint")
    deadline = time.time() + 600
    while not os.path.exists(ckpt):
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.time() < deadline, "no checkpoint within 10 minutes"
        time.sleep(0.2)
    running = subprocess.run(["squeue", "-h", "-o", "%i %T"], capture_output=True,
                             text=True).stdout.split()
    assert running, "the tuning job is not in the queue"
    subprocess.run(["scancel", running[0]], check=True)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-4000:]
    jobs = submitted(out)
    assert len(jobs) >= 3, out[-3000:]  # baseline, the cancelled tune, its retry
    record = json.load(open(os.path.join(root, target)))
    assert record["resumed"] is True  # the retry continued from iter_20, not from scratch
    steps = [json.loads(l)["step"] for l in open(os.path.join(
        root, "work/cancel/long/seed0/val_metrics.jsonl"))]
    assert steps[0] == 20 and steps[-1] == 80
    # and ends with the numbers of an uninterrupted run of the same spec
    spec = record["spec"]
    again = tmp_path / "again"
    subprocess.run([os.path.join(BIN, "rewardseg"), "stage", "--spec", json.dumps(spec),
                    "--work-dir", str(again), "--threads", "1"], cwd=root, env=ENV,
                   check=True, capture_output=True)
    final = lambda d: [json.loads(l) for l in open(os.path.join(d, "val_metrics.jsonl"))][-1]  # noqa: E731
    assert final(str(again))["metrics"] == final(os.path.join(root, "work/cancel/long/seed0"))["metrics"]


def test_bad_profile_settings_fail_before_submission(slurm, tmp_path):
    root = copy_workflow(tmp_path / "wf")
    shutil.copytree(os.path.join(REPO, "slurm"), os.path.join(root, "slurm"))
    env = dict(ENV, REWARDSEG_SLURM_PARTITION="no-such-partition")
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--profile", "slurm",
                           "--configfile", "configs/studies/smoke.yaml", "-n"], cwd=root,
                          env=env, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "REWARDSEG_SLURM_PARTITION" in out and "no-such-partition" in out
    assert not submitted(out)
