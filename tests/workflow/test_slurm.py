"""`snakemake --profile slurm` on a real single-node SLURM (slurmctld + slurmd on
localhost, fake GPU GRES), in its two set-ups (tests/workflow/slurm/start-cluster.sh):

- without accounting (no slurmdbd: `sacct` fails): the run stops before submitting unless
  job states come from squeue (`--slurm-status-command squeue`); every training job goes
  through sbatch and sees its GPU, the results equal a local run, and a job cancelled
  mid-way with scancel is retried, resumes, and both attempts stay in its log;
- with accounting (MariaDB + slurmdbd): the plugin's default (sacct) shows a cancelled
  job's SLURM state, `--slurm-efficiency-report` writes its report, and `rewardseg plan`
  sets the planned GPU-hours next to the measured ones.

The module leaves the plain cluster running."""
import asyncio
import csv
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time
import types

import pytest
import yaml

from conftest import BIN, ENV, REPO, copy_workflow
from rewardseg import slurm as slurmcheck

START = os.path.join(REPO, "tests", "workflow", "slurm", "start-cluster.sh")
SQUEUE = ("--slurm-status-command", "squeue")  # the user's flag on a cluster without sacct
# Debian puts the daemons in /usr/sbin, which a plain PATH (env -i) lacks
DAEMONS = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
HEADER = re.compile(r"^=== attempt (\d+), (\S+), host (\S+), SLURM job (\S+) "
                    r"\(requeued (\d+)x\), (.*) ===$", re.M)


def cluster_mode():
    """"plain" / "accounting" for the cluster answering now, None when none does."""
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                             timeout=20)
        config = subprocess.run(["scontrol", "show", "config"], capture_output=True,
                                text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0 or not re.search(r"idle|mix|alloc", out.stdout):
        return None
    return "accounting" if "accounting_storage/slurmdbd" in config else "plain"


_COULD_NOT_START = {}  # mode -> why start-cluster.sh failed (once a session: ~3 min each)


def start_cluster(mode):
    """The cluster in ``mode``, started or switched by start-cluster.sh, or a skip."""
    if cluster_mode() == mode:
        return
    if mode in _COULD_NOT_START:
        pytest.skip(_COULD_NOT_START[mode])
    needs = ["slurmctld", "slurmd", "munged"]
    if mode == "accounting":
        needs += ["slurmdbd", "mariadbd"]
    missing = [b for b in needs if shutil.which(b, path=DAEMONS) is None]
    if missing or os.geteuid() != 0:
        pytest.skip(f"no SLURM {mode} cluster here: needs root and Debian's slurm-wlm + munge"
                    + (" + slurmdbd + mariadb-server" if mode == "accounting" else "")
                    + f" (.ci/run installs them; missing: {', '.join(missing) or 'root'}), "
                    f"then tests/workflow/slurm/start-cluster.sh"
                    + (" --accounting" if mode == "accounting" else ""))
    args = ["bash", START] + (["--accounting"] if mode == "accounting" else [])
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0 or cluster_mode() != mode:
        _COULD_NOT_START[mode] = (f"could not start the SLURM {mode} cluster: "
                                  f"{(proc.stdout + proc.stderr)[-800:]}")
        pytest.skip(_COULD_NOT_START[mode])


@pytest.fixture(scope="module", autouse=True)
def plain_cluster_afterwards():
    """Whatever a test switched to, the module ends on the plain cluster."""
    yield
    if cluster_mode() == "accounting":
        subprocess.run(["bash", START], capture_output=True, text=True)


@pytest.fixture
def slurm():
    start_cluster("plain")
    return "plain"


@pytest.fixture
def slurm_accounting():
    start_cluster("accounting")
    return "accounting"


def workflow_copy(tmp_path):
    root = copy_workflow(tmp_path / "wf")
    shutil.copytree(os.path.join(REPO, "slurm"), os.path.join(root, "slurm"))
    return root


def run_profile(cwd, *args):
    cmd = [sys.executable, "-m", "snakemake", "--profile", "slurm", *args]
    return subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True)


def submitted(output):
    return re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: ([^)]+)\)",
                      output)


def headers(text):
    """The attempt headers of a job log: [(attempt, SLURM job id, {GPU variable: value})]."""
    return [(int(m.group(1)), m.group(4), dict(kv.split("=", 1) for kv in m.group(6).split()))
            for m in HEADER.finditer(text)]


def read(*parts):
    with open(os.path.join(*parts)) as fh:
        return fh.read()


def plan_output(root):
    return subprocess.run([os.path.join(BIN, "rewardseg"), "plan", "--configfile",
                           "configs/studies/smoke.yaml"], cwd=root, env=ENV,
                          capture_output=True, text=True, check=True).stdout


def after_study(plan_text):
    """The rows of `rewardseg plan`'s after-the-study block: {stage: fields}."""
    block = plan_text[plan_text.index("after the study"):].splitlines()[2:]
    return {line.split()[0]: line.split()[1:] for line in block
            if line.split() and line.split()[0] in ("pretrain", "tune", "total")}


def same_numbers_as_local(root, smoke):
    """Each run's evaluations and the training statistics recorded beside them, and the
    study's ``metrics.csv`` and ``train_stats.csv``, equal the local run's."""
    found = glob.glob(os.path.join(smoke, "results/smoke/runs/*/seed*.json"))
    assert found
    for path in found:
        rel = os.path.relpath(path, smoke)
        local = json.load(open(path))["evals"]
        remote = json.load(open(os.path.join(root, rel)))["evals"]
        assert [e["metrics"] for e in remote] == [e["metrics"] for e in local], rel
        assert [e["train"] for e in remote] == [e["train"] for e in local], rel
    for name in ("metrics.csv", "train_stats.csv"):
        assert read(root, "results/smoke", name) == read(smoke, "results/smoke", name), name


def train_stats_csv(run_dir, pretrain_dir, out_dir):
    """``train_stats.csv`` as the workflow's aggregation writes it, for one run."""
    from rewardseg.results import aggregate, collect_run

    os.makedirs(out_dir, exist_ok=True)
    collect_run(pretrain_dir, os.path.join(out_dir, "pretrain.json"))
    collect_run(run_dir, os.path.join(out_dir, "seed0.json"), pretrain_dir=pretrain_dir)
    aggregate([os.path.join(out_dir, "seed0.json")], os.path.join(out_dir, "pretrain.json"),
              os.path.join(out_dir, "metrics.csv"), os.path.join(out_dir, "train_stats.csv"))
    return read(out_dir, "train_stats.csv")


# ---------------------------------------------------------------- without accounting
def test_without_accounting_the_run_stops_before_submitting_naming_the_flag(slurm, tmp_path):
    """sacct is installed but the cluster keeps no accounting: the plugin's default status
    command would wait forever, so the run stops at start, naming the one flag to add."""
    ok, why = slurmcheck.accounting()
    assert not ok and "accounting storage is disabled" in why
    root = workflow_copy(tmp_path)
    proc = run_profile(root, "--configfile", "configs/studies/smoke.yaml")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "keeps no job accounting" in out and "--slurm-status-command squeue" in out, out[-3000:]
    assert not submitted(out)
    assert not os.path.exists(os.path.join(root, "data"))  # nothing ran, not even locally
    # with the flag the check passes (what the next test runs)
    assert slurmcheck.problems("squeue", 10) == (None, [])


def test_profile_runs_the_smoke_study_through_sbatch(slurm, smoke, tmp_path):
    root = workflow_copy(tmp_path)
    proc = run_profile(root, *SQUEUE, "--configfile", "configs/studies/smoke.yaml")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    study = yaml.safe_load(open(os.path.join(root, "configs/studies/smoke.yaml")))
    jobs = submitted(out)
    expected = 1 + len(study["variants"]) * len(study["seeds"])  # pretraining + tune runs
    assert len(jobs) == expected, out[-3000:]
    by_log = {}
    for jobid, log in jobs:  # logs/slurm/rule_<rule>/<wildcards joined by _>/<jobid>.log
        rel = os.path.relpath(log, root)
        match = re.fullmatch(r"logs/slurm/rule_(pretrain|tune)/smoke(?:_(.+)_(\d+))?/"
                             rf"{jobid}\.log", rel)
        assert match and os.path.isfile(log), rel
        rule, variant, seed = match.groups()
        by_log["pretrain" if rule == "pretrain" else f"{variant}/seed{seed}"] = jobid
    assert len(by_log) == expected
    # GPU requests reached SLURM: scontrol remembers finished jobs (MinJobAge)
    info = subprocess.run(["scontrol", "show", "job", jobs[-1][0]], capture_output=True,
                          text=True).stdout
    assert "gres/gpu" in info or "gpu:1" in info, info
    # ... and each job saw its GPU: the variables SLURM set inside it, in its log's header
    gpus = {"pretrain": study["resources"]["pretrain"]["gpus"],
            **{name: study["resources"]["tune"]["gpus"] for name in by_log if name != "pretrain"}}
    for name, jobid in by_log.items():
        log = read(root, "logs", "smoke", f"{name}.log")
        assert log.startswith("=== attempt 1, "), log[:300]
        [(attempt, seen_id, env)] = headers(log)
        assert (attempt, seen_id) == (1, jobid), name
        visible = env["CUDA_VISIBLE_DEVICES"]
        assert visible != "unset" and len(visible.split(",")) == gpus[name], (name, env)
        assert env["SLURM_STEP_GPUS"] != "unset" or env["SLURM_JOB_GPUS"] != "unset", env
        assert env["SLURM_GPUS_ON_NODE"] == str(gpus[name]), env
        assert "Saving checkpoint at" in log  # the run's own output follows
        assert read(root, "logs", "smoke", f"{name}.attempts.log") == log  # one attempt
    same_numbers_as_local(root, smoke)
    # after the study: planned next to measured GPU-hours, from run.json (no efficiency
    # report: the cluster keeps no accounting)
    text = plan_output(root)
    rows = after_study(text)
    assert rows["pretrain"][1] == "1/1" and rows["tune"][1] == f"{expected - 1}/{expected - 1}"
    measured = sum(json.load(open(p))["wall_time_s"] for p in glob.glob(
        os.path.join(root, "work/smoke/*/seed*/run.json"))) / 3600  # 1 GPU per job
    assert float(rows["tune"][2]) == pytest.approx(measured, abs=6e-4)
    assert rows["tune"][3:] == ["-", "-", "-", "-"]
    assert "no efficiency report" in text


def test_cancelled_job_is_retried_and_resumes(slurm, tmp_path):
    root = workflow_copy(tmp_path)
    study = yaml.safe_load(open(os.path.join(root, "configs/studies/smoke.yaml")))
    study["study"] = "cancel"
    study["seeds"] = [0]
    study["variants"] = {"long": {"loss": "ce", "iters": 80, "eval_interval": 20,
                                  "experiment": "all"}}
    with open(os.path.join(root, "cancel.yaml"), "w") as fh:
        yaml.safe_dump(study, fh)
    target = "work/cancel/long/seed0/run.json"
    cmd = [sys.executable, "-m", "snakemake", target, "--profile", "slurm", *SQUEUE,
           "--configfile", "cancel.yaml"]  # the target first: --configfile takes several values
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
    cancelled = running[0]
    subprocess.run(["scancel", cancelled], check=True)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-4000:]
    jobs = submitted(out)
    assert len(jobs) >= 3, out[-3000:]  # baseline, the cancelled tune, its retry
    # squeue gives the state, not the reason (that needs accounting: the test below)
    assert f"SLURM-job '{cancelled}' failed, SLURM status is: 'CANCELLED'" in out, out[-3000:]
    record = json.load(open(os.path.join(root, target)))
    assert record["resumed"] is True  # the retry continued from iter_20, not from scratch
    steps = [json.loads(l)["step"] for l in open(os.path.join(
        root, "work/cancel/long/seed0/val_metrics.jsonl"))]
    assert steps[0] == 20 and steps[-1] == 80
    # both attempts are in the attempts log, each after its header; the job's log (which
    # snakemake removes before each attempt) holds the last one
    attempts = read(root, "logs/cancel/long/seed0.attempts.log")
    tune_ids = [jobid for jobid, log in jobs if "/rule_tune/" in log]
    found = headers(attempts)
    assert [(a, i) for a, i, _ in found] == [(1, cancelled), (2, tune_ids[-1])], attempts[:2000]
    first, second = attempts.split("=== attempt 2, ")
    assert "Saving checkpoint at 20 iterations" in first, first[-2000:]  # unbuffered
    assert "Saving checkpoint at 80 iterations" in second, second[-2000:]
    log = read(root, "logs/cancel/long/seed0.log")
    assert [a for a, _, _ in headers(log)] == [2] and log in attempts
    # and ends with the numbers of an uninterrupted run of the same spec
    spec = record["spec"]
    again = tmp_path / "again"
    subprocess.run([os.path.join(BIN, "rewardseg"), "stage", "--spec", json.dumps(spec),
                    "--work-dir", str(again), "--threads", "1"], cwd=root, env=ENV,
                   check=True, capture_output=True)
    run_dir = os.path.join(root, "work/cancel/long/seed0")
    final = lambda d: [json.loads(l) for l in open(os.path.join(d, "val_metrics.jsonl"))][-1]  # noqa: E731
    assert final(str(again))["metrics"] == final(run_dir)["metrics"]
    # every validation with the training means beside it (a resumed run keeps the
    # statistics since its last validation: they travel in the checkpoint), and the
    # train_stats.csv the aggregation makes of them
    from rewardseg.results import read_val_metrics

    assert read_val_metrics(run_dir) == read_val_metrics(str(again))
    from rewardseg import paths

    pretrain = paths.pretrain_dir("cancel", os.path.join(root, "work"))
    assert train_stats_csv(run_dir, pretrain, str(tmp_path / "got")) == \
        train_stats_csv(str(again), pretrain, str(tmp_path / "expected"))


def test_bad_profile_settings_fail_before_submission(slurm, tmp_path):
    root = workflow_copy(tmp_path)
    env = dict(ENV, REWARDSEG_SLURM_PARTITION="no-such-partition")
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--profile", "slurm",
                           "--configfile", "configs/studies/smoke.yaml", "-n"], cwd=root,
                          env=env, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "REWARDSEG_SLURM_PARTITION" in out and "no-such-partition" in out
    assert not submitted(out)


def test_sacct_cancelled_by_uid_reads_as_cancelled():
    """The plugin (2.8.0) compares states to CANCELLED exactly; sacct says `CANCELLED by
    <uid>`. The wrapper the workflow installs at start cuts the suffix, once."""
    async def query_job_status(command, logger):
        return {"1": "CANCELLED by 0", "2": "COMPLETED", "3": "RUNNING"}, 0.01

    plugin = types.SimpleNamespace(query_job_status=query_job_status)
    assert slurmcheck.normalize_cancelled_states(plugin)
    wrapped = plugin.query_job_status
    assert slurmcheck.normalize_cancelled_states(plugin) and plugin.query_job_status is wrapped
    states, _ = asyncio.run(plugin.query_job_status("sacct ...", None))
    assert states == {"1": "CANCELLED", "2": "COMPLETED", "3": "RUNNING"}
    assert not slurmcheck.normalize_cancelled_states(types.SimpleNamespace())
    import snakemake_executor_plugin_slurm as real  # the name the wrapper replaces
    assert callable(getattr(real, "query_job_status", None))


# ---------------------------------------------------------------- with accounting
def test_with_accounting_sacct_shows_the_cancelled_job_and_the_efficiency_report(
        slurm_accounting, smoke, tmp_path):
    """The smoke study with the plugin's default status command (sacct) and
    --slurm-efficiency-report; one tuning job is cancelled while it waits in the queue
    (the node runs two at a time): the plugin reports its sacct state, snakemake retries
    it, the results equal the local run, and `rewardseg plan` reads the report."""
    assert slurmcheck.accounting() == (True, "")
    assert slurmcheck.problems(None, 10, efficiency_report=True) == (None, [])
    error, warnings = slurmcheck.problems("squeue", 10)
    assert error is None and "reason is not shown" in warnings[0]
    root = workflow_copy(tmp_path)
    cmd = [sys.executable, "-m", "snakemake", "--profile", "slurm",
           "--slurm-efficiency-report", "--configfile", "configs/studies/smoke.yaml"]
    proc = subprocess.Popen(cmd, cwd=root, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    cancelled = None
    deadline = time.time() + 600
    while cancelled is None:
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.time() < deadline, "no tuning job waited in the queue within 10 minutes"
        queue = subprocess.run(["squeue", "-h", "-t", "PENDING", "-o", "%i|%k|%Z"],
                               capture_output=True, text=True).stdout.splitlines()
        ours = [line.split("|")[0] for line in queue
                if line.split("|")[1].startswith("rule_tune_wildcards_smoke_")
                and os.path.realpath(line.split("|")[2]) == os.path.realpath(root)]
        if ours:
            cancelled = ours[0]
            subprocess.run(["scancel", cancelled], check=True)
        time.sleep(0.2)
    out, _ = proc.communicate(timeout=1200)
    assert proc.returncode == 0, out[-4000:]
    study = yaml.safe_load(open(os.path.join(root, "configs/studies/smoke.yaml")))
    runs = len(study["variants"]) * len(study["seeds"])
    jobs = submitted(out)
    assert len(jobs) == 1 + runs + 1, out[-3000:]  # + the cancelled job's retry
    # the state comes from sacct (accounting), which also gives the reason
    state = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "State", "-j", cancelled],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert state.startswith("CANCELLED"), state
    assert f"SLURM-job '{cancelled}' failed, SLURM status is: 'CANCELLED'. Reason" in out, \
        out[-4000:]
    assert "Detailed failure reason unavailable" not in out
    assert "Trying to restart job" in out
    same_numbers_as_local(root, smoke)
    # the efficiency report: one job step per job that ran (the cancelled one never did)
    [report] = glob.glob(os.path.join(root, "logs/slurm/efficiency_report_*.csv"))
    assert f"saved to logs/slurm/{os.path.basename(report)}" in out
    with open(report, newline="") as fh:
        rows = list(csv.DictReader(fh))
    rules = sorted(r["RuleName"].split("_wildcards_")[0] for r in rows)
    assert rules == ["rule_pretrain"] + ["rule_tune"] * runs, rules
    assert cancelled not in {r["MainJobID"] for r in rows}
    assert all(float(r["Elapsed_sec"]) > 0 and float(r["MaxRSS_MB"]) > 0 for r in rows)
    # `rewardseg plan` after the study: planned next to run.json and the report's numbers
    text = plan_output(root)
    table = after_study(text)
    tune_elapsed = sum(float(r["Elapsed_sec"]) for r in rows if r["RuleName"].startswith(
        "rule_tune_"))
    assert table["tune"][1] == f"{runs}/{runs}" and table["tune"][3] == str(runs)
    assert float(table["tune"][4]) == pytest.approx(tune_elapsed / 3600, abs=6e-4)
    assert table["pretrain"][3] == "1"
    assert os.path.basename(report) in text
