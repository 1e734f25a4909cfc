"""Multi-process data-parallel training (torchrun, gloo on the CPU) matches one process
with the same global batch, and a killed multi-process run resumes identically."""
import json
import os
import subprocess

import pytest
import torch

from conftest import BIN, ENV, kill_after_first_checkpoint
from rewardseg.results import read_val_metrics
from rewardseg.runconfig import tune_spec
from rewardseg.study import load_study


def smoke_spec(smoke, variant, **fields):
    study = load_study(os.path.join(smoke, "configs/studies/smoke.yaml"))
    spec = tune_spec(study, variant, 0, work_dir=os.path.join(smoke, "work"),
                     data_dir=os.path.join(smoke, "data"))
    spec.update(fields)
    return spec


def stage_cmd(spec, work, nproc):
    return [os.path.join(BIN, "rewardseg"), "stage", "--spec", json.dumps(spec),
            "--work-dir", str(work), "--nproc", str(nproc)]


def stage(smoke, spec, work, nproc):
    """Run a stage to the end; its validation records."""
    proc = subprocess.run(stage_cmd(spec, work, nproc), env=ENV, cwd=smoke,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(work, "run.json")) as fh:
        assert json.load(fh)["world_size"] == nproc
    return read_val_metrics(str(work))


def test_two_gloo_processes_match_one_process(smoke, tmp_path):
    spec = smoke_spec(smoke, "control", iters=10, eval_interval=5, checkpoint_interval=5,
                      lr=0.01)
    runs = {}
    for name, nproc, batch in (("one", 1, 4), ("two", 2, 2)):  # global batch 4 in both
        runs[name] = stage(smoke, dict(spec, batch_size=batch), tmp_path / name, nproc)
    one, two = runs["one"], runs["two"]
    assert [r["step"] for r in one] == [r["step"] for r in two] == [5, 10]
    for a, b in zip(one, two):
        # same loss curve within 2 % (different samples per process, same global batch)
        assert b["train"]["loss"] == pytest.approx(a["train"]["loss"], rel=0.02)
    assert two[-1]["metrics"]["mIoU"] == pytest.approx(one[-1]["metrics"]["mIoU"], abs=1.0)


# Largest allowed |2 processes - 1 process| of the mean over a run's evaluations (8
# iterations, global batch 4, seed 0), for the reinforce variants below: 4 x the mean
# |seed a - seed b| of one process, measured over seeds 0-3 (6 pairs) for `reference`
# and `batch_loo` (the larger of the two). The two runs cannot agree exactly: each rank
# samples from its own stream, augments with its own numpy stream, and normalises with
# the batch statistics of its own 2 images (plain BN on the CPU), so 2 x 2 differs from
# 1 x 4 about as much as one seed from another. Measured for seeds 0-3, 2 processes vs
# 1: at most 1.2 (loss), 1.4 (decode.loss_reward), 2.5 (reward), 1.6 (aux.loss_ce) and
# 1.8 (mIoU) x that mean seed spread, i.e. within these tolerances with a margin of 1.6
# or more. Before the logged values were averaged over the ranks, `batch_loo`'s logged
# loss was -0.42 (rank 0's images) against 0.21 for one process.
SEED_SPREAD = {"loss": 0.0032, "decode.loss_reward": 0.0031, "decode.reward_reward": 0.0028,
               "aux.loss_ce": 0.00014, "mIoU": 0.25}
TOLERANCE = {key: 4 * spread for key, spread in SEED_SPREAD.items()}


def run_means(records):
    keys = list(TOLERANCE) + ["decode.reward_adv_sq", "decode.reward_adv_mean"]
    return {key: sum(r["metrics"]["mIoU"] if key == "mIoU" else r["train"][key]
                     for r in records) / len(records) for key in keys}


@pytest.mark.parametrize("variant, fields", [
    ("reference", {}),  # reinforce, rloo, k = 2
    ("reference", dict(baseline="batch_loo", num_samples=1, alpha=1.0)),
], ids=["rloo", "batch_loo"])
def test_reward_loss_two_processes_match_one_process(smoke, tmp_path, variant, fields):
    """2 gloo processes x 2 images against 1 process x 4 images, a reward loss: the same
    logged loss and reward statistics (means over the global batch) within the spread
    between seeds (see ``TOLERANCE``)."""
    spec = smoke_spec(smoke, variant, iters=8, eval_interval=4, checkpoint_interval=4,
                      **fields)
    one = stage(smoke, dict(spec, batch_size=4), tmp_path / "one", 1)
    two = stage(smoke, dict(spec, batch_size=2), tmp_path / "two", 2)
    assert [r["step"] for r in one] == [r["step"] for r in two] == [4, 8]
    a, b = run_means(one), run_means(two)
    for key, tol in TOLERANCE.items():
        assert abs(b[key] - a[key]) <= tol, (key, a[key], b[key], tol)
    # rloo and batch_loo with alpha 1: the advantages sum to zero over the global batch,
    # so their logged mean is 0 only when it is the mean over every rank's images
    assert abs(a["decode.reward_adv_mean"]) < 1e-6 and abs(b["decode.reward_adv_mean"]) < 1e-6
    # E[A^2] (the estimator's variance measure) is heavy-tailed: measured ratios between
    # 2 and 1 processes up to 2.4 (rloo) and 3.1 (batch_loo) for single evaluations,
    # 1.7 for this mean
    ratio = b["decode.reward_adv_sq"] / a["decode.reward_adv_sq"]
    assert 1 / 3 < ratio < 3, ratio


def test_killed_two_process_run_resumes_identically(smoke, tmp_path):
    """Two processes, a reward loss, killed (SIGKILL to the torchrun process group) once
    the first checkpoint is recorded, then run again: it resumes, and its evaluations,
    final weights, optimizer state and every rank's RNG state equal those of an
    uninterrupted run, bit for bit."""
    spec = smoke_spec(smoke, "reference", iters=12, eval_interval=4, checkpoint_interval=4,
                      batch_size=2)
    straight = tmp_path / "straight"
    expected = stage(smoke, spec, straight, 2)

    killed = tmp_path / "killed"
    kill_after_first_checkpoint(stage_cmd(spec, killed, 2), killed, cwd=smoke)
    assert not (killed / "run.json").exists()
    start = int(open(killed / "last_checkpoint").read().strip().split("iter_")[-1][:-4])
    assert start < 12
    got = stage(smoke, spec, killed, 2)
    with open(killed / "run.json") as fh:
        assert json.load(fh)["resumed"] is True

    assert [r["step"] for r in got] == [r["step"] for r in expected] == [4, 8, 12]
    for a, b in zip(expected, got):
        assert b["metrics"] == a["metrics"], a["step"]
        if a["step"] > start:  # trained after the resume (a redone validation has no
            assert b["train"] == a["train"], a["step"]  # training statistics)
    a = torch.load(straight / "iter_12.pth", weights_only=False)
    b = torch.load(killed / "iter_12.pth", weights_only=False)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=0, atol=0, msg=key)
    for x, y in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        torch.testing.assert_close(y["momentum_buffer"], x["momentum_buffer"], rtol=0, atol=0)
    rng_a, rng_b = a["rewardseg_rng"], b["rewardseg_rng"]
    assert rng_a["world_size"] == rng_b["world_size"] == 2
    for x, y in zip(rng_a["ranks"], rng_b["ranks"]):
        assert torch.equal(x["torch"], y["torch"])
    # and the two ranks' streams are distinct
    assert not torch.equal(rng_a["ranks"][0]["torch"], rng_a["ranks"][1]["torch"])
    logs = "".join(p.read_text() for p in killed.glob("*/*.log"))
    assert "RNGStateHook:" not in logs  # no warning: every rank's state was restored
