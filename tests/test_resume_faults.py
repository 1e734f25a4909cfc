"""A job that dies while saving, or leaves a torn newest checkpoint, resumes from the
newest checkpoint that loads and ends where an uninterrupted run ends (rewardseg.runner,
``rewardseg stage``); ``run.json`` says which iterations the job itself trained."""
import contextlib
import errno
import io
import itertools
import json
import os
import shutil
import subprocess

import pytest

import rewardseg  # noqa: F401
from conftest import BIN, ENV, REPO
from rewardseg import cli, paths
from rewardseg.compat import load_checkpoint_file
from rewardseg.results import read_val_metrics
from rewardseg.runconfig import pretrain_spec, tune_spec
from rewardseg.study import load_study

_NAMES = itertools.count()


@contextlib.contextmanager
def own_experiment_names():
    """mmengine names a run's message hub after the second it starts in: two runs of one
    process started in the same second would share it, so each run gets its own name."""
    import rewardseg.runner as runner_mod

    build = runner_mod.build_run_config

    def named(spec, *args, **kwargs):
        cfg = build(spec, *args, **kwargs)
        cfg.experiment_name = f"faults-{os.getpid()}-{next(_NAMES)}"
        return cfg

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner_mod, "build_run_config", named)
        yield


def run_stage(spec, work_dir):
    from rewardseg.runner import run_stage as run

    with own_experiment_names():
        return run(spec, str(work_dir))


@pytest.fixture(scope="module")
def smoke_env(tmp_path_factory):
    """The smoke study's data and CE pretraining, made in this process (no workflow)."""
    from rewardseg import data

    root = tmp_path_factory.mktemp("faults")
    study = load_study(os.path.join(REPO, "configs/studies/smoke.yaml"))
    study["model"]["config"] = os.path.join(REPO, study["model"]["config"])
    data_dir, work = str(root / "data"), str(root / "work")
    data.prepare(paths.data_root(study["dataset"]["name"], data_dir), study["dataset"],
                 progress=False)
    run_stage(pretrain_spec(study, data_dir=data_dir), paths.pretrain_dir(study["study"], work))
    return dict(study=study, data_dir=data_dir, work=work, root=root)


def reference_spec(env, **fields):
    """The smoke study's reinforce reference (sampled rewards: the RNG must resume too),
    8 iterations, a checkpoint and a validation every 2 (tuning keeps the last two)."""
    spec = tune_spec(env["study"], "reference", 0, work_dir=env["work"],
                     data_dir=env["data_dir"])
    spec.update(iters=8, eval_interval=2, checkpoint_interval=2, **fields)
    return spec


@pytest.fixture(scope="module")
def straight(smoke_env):
    work = smoke_env["root"] / "straight"
    run_stage(reference_spec(smoke_env), work)
    return work


def record(work):
    with open(os.path.join(work, "run.json")) as fh:
        return json.load(fh)


def assert_same_run(got, expected):
    """Same validations at every step and the same final weights, bit for bit."""
    a, b = read_val_metrics(str(expected)), read_val_metrics(str(got))
    assert [r["step"] for r in b] == [r["step"] for r in a] == [2, 4, 6, 8]
    assert [r["metrics"] for r in b] == [r["metrics"] for r in a]
    want = load_checkpoint_file(str(expected / "iter_8.pth"), map_location="cpu")["state_dict"]
    have = load_checkpoint_file(str(got / "iter_8.pth"), map_location="cpu")["state_dict"]
    assert have.keys() == want.keys()
    for key, value in want.items():
        assert have[key].equal(value), key


class Stopped(Exception):
    """Stands in for a job killed right after a checkpoint."""


def run_until(spec, work, stop_after):
    """Run ``spec`` in ``work`` and stop right after the checkpoint of ``stop_after``
    (iter_<n>.pth and last_checkpoint written, no run.json)."""
    from mmengine.hooks import CheckpointHook

    save = CheckpointHook._save_checkpoint

    def save_then_stop(self, runner):
        save(self, runner)
        if runner.iter + 1 == stop_after:
            raise Stopped(stop_after)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(CheckpointHook, "_save_checkpoint", save_then_stop)
        with pytest.raises(Stopped):
            run_stage(spec, work)
    assert not (work / "run.json").exists()


def cut_short(path, keep=0.5):
    size = int(os.path.getsize(path) * keep)
    with open(path, "r+b") as fh:
        fh.truncate(size)
    return size


def stage_cli(spec, work):
    """``rewardseg stage`` in this process: exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with own_experiment_names(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["stage", "--spec", json.dumps(spec), "--work-dir", str(work)])
    return code, out.getvalue(), err.getvalue()


def test_an_uninterrupted_run_records_that_it_trained_every_iteration(straight):
    rec = record(straight)
    assert (rec["resumed"], rec["start_iter"], rec["iters_done"], rec["final_iter"]) == \
        (False, 0, 8, 8)
    assert sorted(p.name for p in straight.glob("iter_*.pth")) == ["iter_6.pth", "iter_8.pth"]


def test_torn_newest_checkpoint_falls_back_to_the_one_before(smoke_env, straight, tmp_path):
    """Stopped after the checkpoint at 6, whose file is then cut in half (what a copy or
    a file system can leave): the rerun resumes from iter_4, says so in one line, keeps
    the torn file as iter_6.pth.torn, prints and records the iterations it trained, and
    ends bit-identical to the uninterrupted run."""
    spec = reference_spec(smoke_env)
    work = tmp_path / "run"
    run_until(spec, work, stop_after=6)
    assert open(work / "last_checkpoint").read().strip().endswith("iter_6.pth")
    torn_size = cut_short(work / "iter_6.pth")

    code, out, err = stage_cli(spec, work)
    assert code == 0, err[-3000:]
    notes = [line for line in err.splitlines() if "resuming from" in line]
    assert len(notes) == 1, err[-3000:]
    assert notes[0].startswith(f"{work}: resuming from iter_4.pth (iteration 4): "
                               "iter_6.pth cannot be loaded ("), notes[0]
    assert notes[0].endswith("renamed to iter_6.pth.torn"), notes[0]
    assert (work / "iter_6.pth.torn").stat().st_size == torn_size  # kept as it was
    rec = record(work)
    assert (rec["resumed"], rec["start_iter"], rec["iters_done"], rec["final_iter"]) == \
        (True, 4, 4, 8)
    assert "tune reference seed 0: resumed at 4, 4 iterations (4 to 8) in " in out, out[-2000:]
    assert_same_run(work, straight)


def test_no_checkpoint_that_loads_starts_again_from_the_start_checkpoint(
        smoke_env, straight, tmp_path):
    spec = reference_spec(smoke_env)
    work = tmp_path / "run"
    run_until(spec, work, stop_after=6)
    cut_short(work / "iter_6.pth")
    cut_short(work / "iter_4.pth", keep=0)  # an empty file: not even a zip header

    code, out, err = stage_cli(spec, work)
    assert code == 0, err[-3000:]
    notes = [line for line in err.splitlines() if "no checkpoint to resume from" in line]
    assert len(notes) == 1, err[-3000:]
    assert "iter_6.pth cannot be loaded" in notes[0] and "iter_4.pth cannot be loaded" in notes[0]
    assert notes[0].endswith(f"starting again from the start checkpoint {spec['load_from']}")
    assert (work / "iter_6.pth.torn").exists() and (work / "iter_4.pth.torn").exists()
    rec = record(work)
    assert (rec["resumed"], rec["start_iter"], rec["iters_done"]) == (False, 0, 8)
    assert "tune reference seed 0: 8 iterations in " in out, out[-2000:]
    assert_same_run(work, straight)


def test_full_disk_while_saving_fails_the_job_and_the_rerun_resumes(
        smoke_env, straight, tmp_path):
    """The disk fills up while iter_6.pth is written (half of it lands): the job fails
    with the OSError, leaves no run.json, and the rerun resumes from iter_4 (the newest
    checkpoint whose save completed) and ends bit-identical to the uninterrupted run."""
    import mmengine.runner.runner as mm_runner

    real_save = mm_runner.save_checkpoint

    def save_until_full(checkpoint, filename, *args, **kwargs):
        if not filename.endswith("iter_6.pth"):
            return real_save(checkpoint, filename, *args, **kwargs)
        buffer = io.BytesIO()
        import torch

        torch.save(checkpoint, buffer)
        with open(filename, "wb") as fh:
            fh.write(buffer.getvalue()[:len(buffer.getvalue()) // 3])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)

    spec = reference_spec(smoke_env)
    work = tmp_path / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mm_runner, "save_checkpoint", save_until_full)
        with pytest.raises(OSError) as failed:
            run_stage(spec, work)
    assert failed.value.errno == errno.ENOSPC
    assert not (work / "run.json").exists()
    assert (work / "iter_6.pth").exists()  # the torn file is there
    assert open(work / "last_checkpoint").read().strip().endswith("iter_4.pth")

    code, out, err = stage_cli(spec, work)
    assert code == 0, err[-3000:]
    rec = record(work)
    assert (rec["resumed"], rec["start_iter"], rec["iters_done"]) == (True, 4, 4)
    assert_same_run(work, straight)


def test_a_moved_run_folder_resumes_from_its_own_checkpoints(smoke_env, straight, tmp_path):
    """``last_checkpoint`` holds an absolute path: a run folder copied elsewhere (another
    file system, another cluster) names a file that is not there, and the copy's own
    checkpoints are used instead."""
    spec = reference_spec(smoke_env)
    first = tmp_path / "first"
    run_until(spec, first, stop_after=6)
    moved = tmp_path / "moved"
    shutil.copytree(first, moved)
    shutil.rmtree(first)
    code, out, err = stage_cli(spec, moved)
    assert code == 0, err[-3000:]
    assert f"{moved}: resuming from iter_6.pth (iteration 6): {first / 'iter_6.pth'} is " \
        "missing" in err, err[-3000:]
    assert record(moved)["start_iter"] == 6
    assert_same_run(moved, straight)


def test_two_processes_fall_back_together(smoke_env, tmp_path):
    """Two gloo processes (each checks the candidates; rank 0 renames and reports): a
    finished run whose run.json is gone and whose newest checkpoint is torn resumes from
    the one before, once, and trains the same last iterations again."""
    spec = reference_spec(smoke_env, batch_size=2)

    def stage(work):
        return subprocess.run([os.path.join(BIN, "rewardseg"), "stage", "--spec",
                               json.dumps(spec), "--work-dir", str(work), "--nproc", "2"],
                              env=ENV, capture_output=True, text=True)

    whole, torn = tmp_path / "whole", tmp_path / "torn"
    proc = stage(whole)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shutil.copytree(whole, torn)
    (torn / "run.json").unlink()
    (torn / "last_checkpoint").write_text(str(torn / "iter_8.pth"))
    cut_short(torn / "iter_8.pth")
    records_before = len(open(torn / "val_metrics.jsonl").read().splitlines())
    proc = stage(torn)
    assert proc.returncode == 0, proc.stderr[-3000:]
    notes = [line for line in proc.stderr.splitlines() if "resuming from" in line]
    assert len(notes) == 1 and notes[0].startswith(
        f"{torn}: resuming from iter_6.pth (iteration 6): iter_8.pth cannot be loaded"), \
        proc.stderr[-3000:]
    assert (torn / "iter_8.pth.torn").exists()
    rec = record(torn)
    assert (rec["world_size"], rec["start_iter"], rec["iters_done"]) == (2, 6, 2)
    assert "resumed at 6, 2 iterations (6 to 8)" in proc.stdout
    assert len(open(torn / "val_metrics.jsonl").read().splitlines()) == records_before + 1
    assert_same_run(torn, whole)


@pytest.mark.parametrize("rec, expected", [
    (dict(spec={}, resumed=False, start_iter=0, final_iter=80), "80 iterations"),
    (dict(spec={}, resumed=True, start_iter=20, final_iter=80),
     "resumed at 20, 60 iterations (20 to 80)"),
    (dict(spec={"released": {"80000": {}, "40000": {}}}, resumed=False, start_iter=80000,
          final_iter=80000), "released checkpoints (iterations 40000, 80000) evaluated"),
])
def test_stage_summary_names_what_the_job_did(rec, expected):
    assert cli._stage_summary(rec) == expected


def test_pretraining_in_parts_ends_like_one_run(smoke_env, tmp_path):
    """`rewardseg stage --stop-at` (the workflow's pretraining parts, so that tuning
    starts as soon as its start checkpoint exists): the part stops at its checkpoint with
    part_<n>.json and no run.json, the next job resumes with the same schedule, and the
    whole ends with the uninterrupted pretraining's validations and weights."""
    from rewardseg.runner import run_stage as run
    from rewardseg.study import StudyError

    spec = pretrain_spec(smoke_env["study"], data_dir=smoke_env["data_dir"])
    whole = paths.pretrain_dir(smoke_env["study"]["study"], smoke_env["work"])
    work = tmp_path / "parts"
    with own_experiment_names():
        part = run(spec, str(work), stop_at=4)
    assert os.path.isfile(work / "part_4.json") and not os.path.exists(work / "run.json")
    assert (part["final_iter"], part["iters_done"]) == (4, 4)
    assert [r["step"] for r in read_val_metrics(str(work))] == [4]
    run_stage(spec, work)
    assert record(work)["start_iter"] == 4 and record(work)["final_iter"] == 8
    a, b = read_val_metrics(whole), read_val_metrics(str(work))
    assert [r["step"] for r in b] == [r["step"] for r in a] == [4, 8]
    assert [r["metrics"] for r in b] == [r["metrics"] for r in a]
    want = load_checkpoint_file(os.path.join(whole, "iter_8.pth"), map_location="cpu")
    have = load_checkpoint_file(str(work / "iter_8.pth"), map_location="cpu")
    assert have["state_dict"].keys() == want["state_dict"].keys()
    for key, value in want["state_dict"].items():
        assert have["state_dict"][key].equal(value), key
    # a part already passed (the run went on): its checkpoint is the part, nothing trains
    os.remove(work / "part_4.json")
    with own_experiment_names():
        again = run(spec, str(work), stop_at=4)
    assert again["iters_done"] == 0 and os.path.isfile(work / "part_4.json")
    assert os.path.isfile(work / "run.json")  # the finished run stays finished
    with pytest.raises(StudyError, match="--stop-at 3: expected a checkpoint step"):
        run(spec, str(tmp_path / "bad"), stop_at=3)


def train_stats_csv(env, work, out_dir):
    """``train_stats.csv`` as ``results.aggregate`` writes it for the run in ``work``
    alone (with the smoke pretraining as the pretraining file)."""
    from rewardseg.results import aggregate, collect_run

    os.makedirs(out_dir, exist_ok=True)
    pretrain = paths.pretrain_dir(env["study"]["study"], env["work"])
    collect_run(pretrain, str(out_dir / "pretrain.json"))
    collect_run(str(work), str(out_dir / "seed0.json"), pretrain_dir=pretrain)
    aggregate([str(out_dir / "seed0.json")], str(out_dir / "pretrain.json"),
              str(out_dir / "metrics.csv"), str(out_dir / "train_stats.csv"))
    with open(out_dir / "train_stats.csv") as fh:
        return fh.read()


def val_records(work):
    with open(work / "val_metrics.jsonl") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def test_a_run_stopped_between_a_checkpoint_and_its_validation_keeps_its_statistics(
        smoke_env, straight, tmp_path):
    """Stopped right after the checkpoint at 6, before the validation at 6 (a point in
    between mmengine's two: the checkpoint is saved in the iteration's hooks, validation
    runs after them): the rerun validates step 6 first, with the training statistics of
    iterations 5-6 that the checkpoint carried, and its val_metrics.jsonl (training
    means included) and train_stats.csv are those of the uninterrupted run."""
    spec = reference_spec(smoke_env)
    work = tmp_path / "run"
    run_until(spec, work, stop_after=6)
    assert [r["step"] for r in val_records(work)] == [2, 4]
    code, out, err = stage_cli(spec, work)
    assert code == 0, err[-3000:]
    assert record(work)["start_iter"] == 6
    assert_same_run(work, straight)
    want, have = val_records(straight), val_records(work)
    assert all(r["train"] for r in want), want
    assert [r["step"] for r in have] == [2, 4, 6, 8]
    for a, b in zip(have, want):
        assert a["train"] == b["train"], a["step"]
    assert have == want
    expected = train_stats_csv(smoke_env, straight, tmp_path / "expected")
    assert train_stats_csv(smoke_env, work, tmp_path / "got") == expected


def test_statistics_since_the_last_validation_survive_a_resume_between_validations(
        smoke_env, tmp_path):
    """A checkpoint every 2 iterations and a validation every 4: a run stopped after the
    checkpoint at 6 resumes there, and the validation at 8 still records the means over
    iterations 5-8 (5-6 come from the checkpoint), as the uninterrupted run does."""
    spec = dict(reference_spec(smoke_env), eval_interval=4)
    whole, work = tmp_path / "whole", tmp_path / "run"
    run_stage(spec, whole)
    run_until(spec, work, stop_after=6)
    assert [r["step"] for r in val_records(work)] == [4]
    run_stage(spec, work)
    assert record(work)["start_iter"] == 6
    want, have = val_records(whole), val_records(work)
    assert [r["step"] for r in want] == [4, 8] and all(r["train"] for r in want)
    assert have == want
    assert train_stats_csv(smoke_env, work, tmp_path / "got") == \
        train_stats_csv(smoke_env, whole, tmp_path / "expected")


# ---------------------------------------------------------------- mixed precision, SIGKILL
#: A job of ``rewardseg stage`` that SIGKILLs itself at a chosen point (a real kill: no
#: exception handler, no atexit, nothing flushed), in its own process like a SLURM job.
#: argv[1]: JSON [spec, work_dir, kill] with kill one of None, ["iteration", k] (at the
#: start of iteration k, after the previous checkpoint and its validation) or
#: ["checkpoint", n] (right after iter_<n>.pth and last_checkpoint are written, before
#: that step's validation). On a GPU it switches on deterministic algorithms first.
KILL_DRIVER = r'''
import json, os, signal, sys
import rewardseg  # the compat layer before mmengine
import torch
from mmengine.hooks import CheckpointHook
from mmengine.runner import IterBasedTrainLoop
import rewardseg.runner as runner_mod
from rewardseg import cli

spec, work, kill = json.loads(sys.argv[1])
build = runner_mod.build_run_config

def deterministic(spec, *args, **kwargs):
    cfg = build(spec, *args, **kwargs)
    env_cfg = dict(cfg.get("env_cfg") or {})
    env_cfg["cudnn_benchmark"] = False  # mmengine would switch benchmarking back on
    cfg.env_cfg = env_cfg
    return cfg

if torch.cuda.is_available():
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    runner_mod.build_run_config = deterministic
if kill and kill[0] == "checkpoint":
    save = CheckpointHook._save_checkpoint
    def save_then_die(self, runner):
        save(self, runner)
        if runner.iter + 1 == kill[1]:
            os.kill(os.getpid(), signal.SIGKILL)
    CheckpointHook._save_checkpoint = save_then_die
elif kill and kill[0] == "iteration":
    run_iter = IterBasedTrainLoop.run_iter
    def die_in_iteration(self, data_batch):
        if self._iter + 1 == kill[1]:
            os.kill(os.getpid(), signal.SIGKILL)
        return run_iter(self, data_batch)
    IterBasedTrainLoop.run_iter = die_in_iteration
sys.exit(cli.main(["stage", "--spec", json.dumps(spec), "--work-dir", work]))
'''

#: On a GPU the same job is not bit-identical even with deterministic algorithms on:
#: torch has no deterministic kernel for some backward passes these models use (the
#: bilinear upsampling's, ``warn_only``), whose float atomics add in any order; under
#: fp16 the loss scale's round-off carries that on. Measured differences are recorded by
#: bench/gpu_check.sh; these are the bounds a GPU resume must stay within.
CUDA_TOLERANCE = dict(weight_rtol=1e-3, weight_atol=1e-5, record_rtol=1e-3, record_atol=1e-4)


def on_cuda():
    import torch

    return torch.cuda.is_available()


def stage_job(spec, work, kill=None, timeout=600):
    """``rewardseg stage`` in its own process (KILL_DRIVER); the exit status and stderr."""
    env = dict(ENV, CUBLAS_WORKSPACE_CONFIG=":4096:8", PYTHONHASHSEED="0")
    proc = subprocess.run([os.path.join(BIN, "python"), "-c", KILL_DRIVER,
                           json.dumps([spec, str(work), kill])],
                          env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    return proc.returncode, proc.stderr


def close_records(have, want, rtol, atol, where=""):
    """The same structure, numbers within ``atol + rtol * |want|`` (exactly equal when
    both are 0); the first difference as an AssertionError naming where it is."""
    if isinstance(want, dict):
        assert isinstance(have, dict) and have.keys() == want.keys(), \
            f"{where}: keys {sorted(have)} != {sorted(want)}"
        for key in want:
            close_records(have[key], want[key], rtol, atol, f"{where}.{key}")
    elif isinstance(want, (list, tuple)):
        assert isinstance(have, (list, tuple)) and len(have) == len(want), where
        for i, (a, b) in enumerate(zip(have, want)):
            close_records(a, b, rtol, atol, f"{where}[{i}]")
    elif isinstance(want, float) and not isinstance(want, bool):
        assert abs(have - want) <= atol + rtol * abs(want), \
            f"{where}: {have!r} vs {want!r} (tolerance {atol} + {rtol} x |value|)"
    else:
        assert have == want, f"{where}: {have!r} != {want!r}"


def assert_same_records(env, got, expected, tmp_path):
    """Every record the run writes: validations (metrics and the training means beside
    them), ``train_stats.csv``, ``run.json``'s weight change and the final weights:
    bit-identical on a CPU, within :data:`CUDA_TOLERANCE` on a GPU."""
    import torch

    want, have = val_records(expected), val_records(got)
    assert [r["step"] for r in want] == [2, 4, 6, 8] and all(r["train"] for r in want)
    assert [r["step"] for r in have] == [2, 4, 6, 8]
    a = load_checkpoint_file(str(expected / "iter_8.pth"), map_location="cpu")["state_dict"]
    b = load_checkpoint_file(str(got / "iter_8.pth"), map_location="cpu")["state_dict"]
    assert b.keys() == a.keys()
    if not on_cuda():
        assert have == want
        assert record(got)["weight_change"] == record(expected)["weight_change"]
        assert train_stats_csv(env, got, tmp_path / "got") == \
            train_stats_csv(env, expected, tmp_path / "expected")
        for key, value in a.items():
            assert b[key].equal(value), key
        return
    tol = CUDA_TOLERANCE
    close_records(have, want, tol["record_rtol"], tol["record_atol"], "val_metrics")
    close_records(record(got)["weight_change"], record(expected)["weight_change"],
                  tol["record_rtol"], tol["record_atol"], "weight_change")
    import csv

    rows = [list(csv.DictReader(io.StringIO(train_stats_csv(env, w, tmp_path / n))))
            for w, n in ((got, "got"), (expected, "expected"))]
    close_records([{k: _number(v) for k, v in r.items()} for r in rows[0]],
                  [{k: _number(v) for k, v in r.items()} for r in rows[1]],
                  tol["record_rtol"], tol["record_atol"], "train_stats.csv")
    for key, value in a.items():
        if value.is_floating_point():
            torch.testing.assert_close(b[key], value, rtol=tol["weight_rtol"],
                                       atol=tol["weight_atol"], msg=key)
        else:
            assert b[key].equal(value), key


def _number(text):
    try:
        return float(text)
    except ValueError:
        return text


@pytest.fixture(scope="module")
def straight_jobs(smoke_env, tmp_path_factory):
    """The uninterrupted run of each precision, as a job in its own process (the killed
    runs are too: one thread each, the same kernels)."""
    done = {}

    def get(precision):
        if precision not in done:
            spec = reference_spec(smoke_env, precision=precision)
            work = tmp_path_factory.mktemp(f"straight-{precision}") / "run"
            code, err = stage_job(spec, work)
            assert code == 0, err[-3000:]
            done[precision] = work
        return done[precision]

    return get


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_a_mixed_precision_job_killed_twice_resumes_to_the_same_records(
        smoke_env, straight_jobs, precision, tmp_path):
    """bf16 / fp16 autocast on the CPU (fp16 with its dynamic loss scale, which travels in
    the checkpoint): a job SIGKILLed in iteration 5 (after the checkpoint at 4 and its
    validation), its rerun SIGKILLed right after the checkpoint at 6 (before the
    validation at 6), and a third job that finishes: every record equals the
    uninterrupted job's, bit for bit (on a GPU: within :data:`CUDA_TOLERANCE`, with
    deterministic algorithms on)."""
    spec = reference_spec(smoke_env, precision=precision)
    work = tmp_path / "run"
    code, err = stage_job(spec, work, kill=["iteration", 5])
    assert code == -9, err[-3000:]
    assert [r["step"] for r in val_records(work)] == [2, 4]
    assert open(work / "last_checkpoint").read().strip().endswith("iter_4.pth")
    code, err = stage_job(spec, work, kill=["checkpoint", 6])
    assert code == -9, err[-3000:]
    assert [r["step"] for r in val_records(work)] == [2, 4]
    assert open(work / "last_checkpoint").read().strip().endswith("iter_6.pth")
    saved = load_checkpoint_file(str(work / "iter_6.pth"), map_location="cpu")
    scaler = saved["optimizer"]["loss_scaler"]
    assert (scaler["scale"] > 1) if precision == "fp16" else not scaler
    code, err = stage_job(spec, work)
    assert code == 0, err[-3000:]
    rec = record(work)
    assert (rec["resumed"], rec["start_iter"], rec["iters_done"]) == (True, 6, 2)
    assert_same_records(smoke_env, work, straight_jobs(precision), tmp_path)
