"""bench/gpu_check.sh on the CPU (`--device cpu`, toy sizes): one JSON with every part and
check, and a failing part's message in it. The slow parts (the GPU study, which has its
own CPU test, and the R-50 ones) are left out here with GPU_CHECK_SKIP, which the JSON
records."""
import json
import os
import subprocess

import pytest

from conftest import BIN, ENV, REPO

SCRIPT = os.path.join(REPO, "bench", "gpu_check.sh")
SKIP = "study,gradients-r50,steps-r50,steps-r50-bf16-cl"


def gpu_check(out, **env):
    full = dict(ENV, PYTHON=os.path.join(BIN, "python"), GPU_CHECK_SKIP=SKIP,
                GPU_CHECK_COMMIT="test", GPU_CHECK_RESUME_K="precision_is_checked", **env)
    return subprocess.run(["bash", SCRIPT, "--device", "cpu", str(out)], env=full,
                          capture_output=True, text=True, timeout=900, cwd=REPO)


@pytest.fixture(scope="module")
def failed_run(tmp_path_factory):
    """One run with the reward part failing on purpose (GPU_CHECK_FAIL)."""
    out = tmp_path_factory.mktemp("gpu_check") / "cpu.json"
    proc = gpu_check(out, GPU_CHECK_FAIL="reward")
    return proc, out


def test_the_cpu_path_writes_one_json_with_every_part_and_check(failed_run):
    proc, out = failed_run
    assert out.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not os.path.exists(str(out) + ".partial")
    with open(out) as fh:
        data = json.load(fh)  # strict JSON: no NaN
    assert data["schema"] == "rewardseg-gpu-check/1"
    assert data["device"].startswith("cpu-") and data["device_type"] == "cpu"
    assert data["commit"] == "test" and isinstance(data["wall_s"], int)
    for key in ("steps", "checks", "study", "resume", "gradients", "failed"):
        assert key in data, key
    parts = {c["name"]: c for c in data["checks"] if c["kind"] == "part"}
    assert list(parts) == ["study", "resume", "gradients-r18", "gradients-r50", "reward",
                           "steps-r50", "steps-r50-bf16-cl", "steps-r18-bf16-cl"]
    for name in SKIP.split(","):
        assert parts[name]["status"] == "skipped" and "GPU_CHECK_SKIP" in parts[name]["message"]
    for name in ("resume", "gradients-r18", "steps-r18-bf16-cl"):
        assert parts[name]["status"] == "ok", parts[name]
        assert "message" not in parts[name]
    for c in data["checks"]:
        assert c["status"] in ("ok", "failed", "miss", "skipped"), c
        assert c["status"] == "ok" or c["message"], c
    # the resume tests: one check each, from pytest's report
    assert data["resume"]["tests"] and all(
        t["status"] == "ok" for t in data["resume"]["tests"].values())
    assert any(c["name"].startswith("resume: test_precision::") for c in data["checks"])
    # the matched LRs of R-18-D8, CE's own at the study's LR
    grads = data["gradients"]["R-18-D8"]
    assert grads["config"].endswith("deeplabv3_r18-d8_4xb2-80k_cityscapes-512x1024.py")
    assert grads["lr_match"]["decode CE"] == pytest.approx(grads["lr"])
    assert grads["lr_match"]["local_expectation k=1 image"] > 0
    # the step times of R-18-D8 (bf16, channels-last), CE and the local expectation
    losses = {r["loss"] for r in data["steps"]}
    assert {"ce", "local_expectation"} <= losses
    assert all(r["precision"] == "bf16" and r["channels_last"] for r in data["steps"])
    # GPU-only checks say so
    skipped = {c["name"]: c["message"] for c in data["checks"] if c["status"] == "skipped"}
    assert "needs a GPU" in skipped["host sync"]


def test_a_failing_part_writes_its_message_into_the_json(failed_run):
    proc, out = failed_run
    assert proc.returncode == 1, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["failed"] == ["reward"]
    [reward] = [c for c in data["checks"] if c["name"] == "reward"]
    assert reward["status"] == "failed"
    assert reward["message"].startswith("exit status 1; last lines: ")
    assert "injected failure of part reward (GPU_CHECK_FAIL)" in reward["message"]
    assert "gpu_check: 1 failed part(s) / check(s)" in proc.stderr


def test_a_missing_study_config_is_recorded_as_skipped(tmp_path):
    """No configs/studies/gpu-synthetic.yaml at this commit: the study part says so (the
    other parts left out here)."""
    import shutil

    root = tmp_path / "checkout"
    os.makedirs(root / "bench")
    shutil.copy(SCRIPT, root / "bench")
    out = tmp_path / "out.json"
    env = dict(ENV, PYTHON=os.path.join(BIN, "python"), GPU_CHECK_COMMIT="test",
               GPU_CHECK_SKIP="resume,gradients,reward,steps")
    proc = subprocess.run(["bash", str(root / "bench" / "gpu_check.sh"), "--device", "cpu",
                           str(out)], env=env, capture_output=True, text=True, timeout=300,
                          cwd=root)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    data = json.loads(out.read_text())
    [study] = [c for c in data["checks"] if c["name"] == "study"]
    assert study["status"] == "skipped"
    assert study["message"] == ("skipped: configs/studies/gpu-synthetic.yaml does not exist "
                                "at this commit")
    assert data["failed"] == []
