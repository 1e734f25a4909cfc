"""Multi-process data-parallel training (torchrun, gloo on the CPU) matches one process
with the same global batch."""
import json
import os
import subprocess

import pytest

from conftest import BIN, ENV
from rewardseg.study import load_study, tune_spec


def records(work_dir):
    with open(os.path.join(work_dir, "val_metrics.jsonl")) as fh:
        return [json.loads(line) for line in fh]


def test_two_gloo_processes_match_one_process(smoke, tmp_path):
    study = load_study(os.path.join(smoke, "configs/studies/smoke.yaml"))
    spec = tune_spec(study, "control", 0, work_dir=os.path.join(smoke, "work"),
                     data_dir=os.path.join(smoke, "data"))
    spec.update(iters=10, eval_interval=5, checkpoint_interval=5, lr=0.01)
    runs = {}
    for name, nproc, batch in (("one", 1, 4), ("two", 2, 2)):  # global batch 4 in both
        work = str(tmp_path / name)
        cmd = [os.path.join(BIN, "rewardseg"), "stage", "--spec",
               json.dumps(dict(spec, batch_size=batch)), "--work-dir", work,
               "--nproc", str(nproc)]
        proc = subprocess.run(cmd, env=ENV, cwd=smoke, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[name] = records(work)
        with open(os.path.join(work, "run.json")) as fh:
            assert json.load(fh)["world_size"] == nproc
    one, two = runs["one"], runs["two"]
    assert [r["step"] for r in one] == [r["step"] for r in two] == [5, 10]
    for a, b in zip(one, two):
        # same loss curve within 2 % (different samples per process, same global batch)
        assert b["train"]["loss"] == pytest.approx(a["train"]["loss"], rel=0.02)
    assert two[-1]["metrics"]["mIoU"] == pytest.approx(one[-1]["metrics"]["mIoU"], abs=1.0)
