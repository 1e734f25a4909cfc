"""No checkpoint is unpickled beyond weights (rewardseg.compat): a pickle that would run
code is refused, naming the file, wherever the file comes from (a released checkpoint
downloaded with its own, correct sha256; a run's own checkpoint on resume; a tuning
run's start checkpoint; a URL or an ``open-mmlab://`` name), and the project's own
checkpoints load with ``torch.load(weights_only=True)`` and a narrow allowlist."""
import copy
import hashlib
import io
import json
import os
import shlex
import shutil
import zipfile

import numpy
import pytest
import torch

import rewardseg  # noqa: F401
from conftest import tiny_config
from fakeserver import FakeServer
from rewardseg import cli, paths
from rewardseg.compat import (CHECKPOINT_GLOBALS, CheckpointRefused, checkpoint_safe_globals,
                              load_checkpoint_file)
from rewardseg.runconfig import pretrain_spec
from test_resume_faults import (reference_spec, run_stage, smoke_env,  # noqa: F401
                                stage_cli, straight)
from test_runner import ESTIMATOR_CFGS, run

REFUSED = "refused to unpickle {} (torch.load with weights_only=True): rewardseg loads only"


class CreatesFile:
    """Unpickling this creates ``path``: what a malicious checkpoint would do instead."""

    def __init__(self, path, how):
        self.path, self.how = str(path), how

    def __reduce__(self):
        if self.how == "os.system":
            return os.system, (f"touch {shlex.quote(self.path)}",)
        return open, (self.path, "w")


HOW = {"os.system": "posix.system", "builtins.open": "io.open"}  # -> the name pickled


def poisoned(good, dest, marker, how):
    """A copy of the real checkpoint ``good`` with a :class:`CreatesFile` in its meta."""
    checkpoint = load_checkpoint_file(str(good), map_location="cpu")
    checkpoint.setdefault("meta", {})["note"] = CreatesFile(marker, how)
    torch.save(checkpoint, str(dest))
    return dest


def pretrained(env):
    return os.path.join(paths.pretrain_dir(env["study"]["study"], env["work"]), "iter_4.pth")


@pytest.mark.parametrize("how", sorted(HOW))
def test_the_payload_runs_when_unpickled_without_weights_only(smoke_env, tmp_path, how):
    """What the tests below guard against: a plain ``torch.load`` of such a file creates
    the marker file."""
    marker = tmp_path / "pwned"
    bad = poisoned(pretrained(smoke_env), tmp_path / "bad.pth", marker, how)
    torch.load(str(bad), weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("how", sorted(HOW))
def test_a_released_checkpoint_with_its_correct_sha256_is_refused(smoke_env, tmp_path, how):
    """A released pretraining checkpoint (``pretrain.released``) whose sha256 matches, as
    a compromised server or study file would give it: ``rewardseg download`` fetches and
    verifies it without unpickling, and ``rewardseg stage`` evaluating it stops with one
    line naming the file; nothing of the pickle runs."""
    marker = tmp_path / "pwned"
    body = poisoned(pretrained(smoke_env), tmp_path / "released.pth", marker, how).read_bytes()
    sha256 = hashlib.sha256(body).hexdigest()
    server = FakeServer().start()
    try:
        server.files["/v0.5/deeplabv3_iter_4-abc.pth"] = body
        url = server.url + "/v0.5/deeplabv3_iter_4-abc.pth"
        assert cli.main(["download", url, str(tmp_path / "dl.pth"), "--sha256", sha256,
                         "--quiet"]) == 0
        study = copy.deepcopy(smoke_env["study"])
        study["study"] = "released"
        study["pretrain"]["released"] = {4: dict(url=url, sha256=sha256[:8])}
        spec = pretrain_spec(study, data_dir=smoke_env["data_dir"])
        work = tmp_path / "work" / "released" / "pretrain"
        code, out, err = stage_cli(spec, work)
    finally:
        server.stop()
    assert code == 2, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("rewardseg stage: error:")]
    assert len(errors) == 1, err[-3000:]
    assert errors[0].startswith(f"rewardseg stage: error: {work / 'iter_4.pth'}: "
                                + REFUSED.format(HOW[how])), errors[0]
    assert not marker.exists()
    assert (work / "iter_4.pth").read_bytes() == body  # downloaded and verified, not run
    assert not (work / "run.json").exists()


@pytest.mark.parametrize("how", sorted(HOW))
def test_resuming_from_an_unsafe_checkpoint_is_refused_not_skipped(
        smoke_env, straight, tmp_path, how):  # noqa: F811
    """A run folder whose newest checkpoint (named by last_checkpoint) is poisoned: the
    job stops naming it, even though an older checkpoint loads (a refused pickle is not
    a torn file to fall back from), and leaves the file where it is."""
    marker = tmp_path / "pwned"
    work = tmp_path / "run"
    work.mkdir()
    shutil.copy(straight / "iter_6.pth", work / "iter_6.pth")
    poisoned(straight / "iter_8.pth", work / "iter_8.pth", marker, how)
    (work / "last_checkpoint").write_text(str(work / "iter_8.pth"))
    with pytest.raises(CheckpointRefused) as refused:
        run_stage(reference_spec(smoke_env), work)
    assert str(refused.value).startswith(f"{work / 'iter_8.pth'}: " + REFUSED.format(HOW[how]))
    assert "\n" not in str(refused.value)
    assert not marker.exists()
    assert sorted(p.name for p in work.iterdir()) == ["iter_6.pth", "iter_8.pth",
                                                      "last_checkpoint"]


@pytest.mark.parametrize("how", sorted(HOW))
def test_an_unsafe_start_checkpoint_of_a_tuning_run_is_refused(smoke_env, tmp_path, how):
    """A tuning run's ``load_from`` (mmengine's loader) and ``weight_change`` (which reads
    the start checkpoint again after training) both refuse it."""
    from rewardseg.runner import weight_change

    marker = tmp_path / "pwned"
    start = poisoned(pretrained(smoke_env), tmp_path / "start.pth", marker, how)
    spec = reference_spec(smoke_env, load_from=str(start))
    with pytest.raises(CheckpointRefused) as refused:
        run_stage(spec, tmp_path / "run")
    assert str(refused.value).startswith(f"{start}: " + REFUSED.format(HOW[how]))
    with pytest.raises(CheckpointRefused) as refused:
        weight_change(torch.nn.Linear(2, 2), str(start))
    assert str(refused.value).startswith(f"{start}: " + REFUSED.format(HOW[how]))
    assert not marker.exists()
    assert not (tmp_path / "run" / "run.json").exists()


@pytest.mark.parametrize("how", sorted(HOW))
def test_remote_checkpoints_are_loaded_as_weights_only(tmp_path, monkeypatch, how):
    """mmengine loads URLs and ``open-mmlab://`` names (ImageNet backbones) through
    torch.hub, which itself passes ``weights_only=False``: here they are refused like a
    local file, naming the URL and the cached file; plain weights still load."""
    from mmengine.runner.checkpoint import CheckpointLoader

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("MMENGINE_HOME", str(tmp_path / "mmengine"))
    marker = tmp_path / "pwned"
    weights = {"conv.weight": torch.arange(6.0).reshape(2, 3)}
    bodies = {}
    for name, extra in (("bad", {"note": CreatesFile(marker, how)}), ("good", {})):
        buffer = io.BytesIO()
        torch.save(dict(state_dict=weights, **extra), buffer)
        bodies[name] = buffer.getvalue()
    server = FakeServer().start()
    try:
        for name, body in bodies.items():
            server.files[f"/{name}.pth"] = body
        (tmp_path / "mmengine").mkdir()
        (tmp_path / "mmengine" / "open_mmlab.json").write_text(json.dumps(
            {f"rs_{name}": f"{server.url}/{name}.pth" for name in bodies}))
        for source in (f"{server.url}/bad.pth", "open-mmlab://rs_bad"):
            with pytest.raises(CheckpointRefused) as refused:
                CheckpointLoader.load_checkpoint(source, map_location="cpu")
            cached = tmp_path / "torch" / "hub" / "checkpoints" / "bad.pth"
            assert str(refused.value).startswith(
                f"{server.url}/bad.pth (cached as {cached}): " + REFUSED.format(HOW[how]))
        for source in (f"{server.url}/good.pth", "open-mmlab://rs_good"):
            got = CheckpointLoader.load_checkpoint(source, map_location="cpu")
            assert torch.equal(got["state_dict"]["conv.weight"], weights["conv.weight"])
    finally:
        server.stop()
    assert not marker.exists()


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_the_projects_own_checkpoints_need_only_the_allowlist(tiny_dataset, tmp_path,
                                                              precision):
    """What a run saves beyond torch's own allowlist (statically, from the pickle) is in
    ``CHECKPOINT_GLOBALS``, and the file loads with weights_only=True (fp16: with its
    GradScaler state); the allowlist is scoped to the load."""
    from rewardseg.models.amp import precision_config

    cfg = tiny_config(tiny_dataset, loss_decode=ESTIMATOR_CFGS["reinforce_ema_label"],
                      max_iters=2)
    if precision != "fp32":
        cfg = precision_config(cfg, precision)
    run(cfg, tmp_path)
    path = str(tmp_path / "iter_2.pth")
    extra = set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    assert "mmengine.logging.history_buffer.HistoryBuffer" in extra
    assert extra <= set(CHECKPOINT_GLOBALS), extra - set(CHECKPOINT_GLOBALS)
    checkpoint = load_checkpoint_file(path, map_location="cpu")
    assert checkpoint["meta"]["iter"] == 2
    losses = checkpoint["message_hub"]["log_scalars"]["train/loss"]
    assert type(losses).__name__ == "HistoryBuffer" and len(losses.data[0]) == 2
    if precision == "fp16":
        assert checkpoint["optimizer"]["loss_scaler"]["scale"] > 1
    active = {id(g) for g in torch.serialization.get_safe_globals()}
    assert not active & {id(g) for g in checkpoint_safe_globals()}


def test_a_checkpoint_written_under_the_other_numpy_loads(tiny_dataset, tmp_path):
    """numpy 1 pickles its helpers as ``numpy.core.multiarray.*``, numpy 2 as
    ``numpy._core.multiarray.*``: a checkpoint written under the other one (here: its
    names rewritten) loads too."""
    run(tiny_config(tiny_dataset, max_iters=2), tmp_path / "run")
    mine, other = ((b"numpy._core.multiarray", b"numpy.core.multiarray")
                   if int(numpy.__version__.split(".")[0]) >= 2 else
                   (b"numpy.core.multiarray", b"numpy._core.multiarray"))
    src, dest = tmp_path / "run" / "iter_2.pth", tmp_path / "other.pth"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("/data.pkl"):
                assert mine in data
                data = data.replace(mine, other)
            zout.writestr(info.filename, data)
    names = torch.serialization.get_unsafe_globals_in_checkpoint(str(dest))
    assert other.decode() + "._reconstruct" in names
    want = load_checkpoint_file(str(src), map_location="cpu")
    got = load_checkpoint_file(str(dest), map_location="cpu")
    key = "train/loss"
    assert numpy.array_equal(got["message_hub"]["log_scalars"][key].data[0],
                             want["message_hub"]["log_scalars"][key].data[0])


class Fetch:
    def __init__(self, name):
        self.name = name

    def __reduce__(self):
        from mmengine.logging import HistoryBuffer

        return getattr, (HistoryBuffer, self.name)


def test_getattr_only_fetches_history_buffer_statistics(tmp_path):
    """HistoryBuffer's state names its statistics methods as getattr(HistoryBuffer, 'min')
    (and its ``__setstate__`` installs them in the class, where the logger calls them):
    those load, any other attribute is refused."""
    from mmengine.logging import HistoryBuffer

    path = str(tmp_path / "ok.pth")
    torch.save({"m": Fetch("mean")}, path)
    assert load_checkpoint_file(path)["m"] is HistoryBuffer.mean
    torch.save({"m": Fetch("register_statistics")}, path)
    with pytest.raises(CheckpointRefused, match=r"refused to unpickle getattr\(<class "
                       r"'mmengine\.logging\.history_buffer\.HistoryBuffer'>, "
                       r"'register_statistics'\)"):
        load_checkpoint_file(path)


def test_a_torn_file_is_not_called_unsafe(tmp_path):
    """A file cut short fails with torch's own error (the resume falls back from it);
    only a refused global is a CheckpointRefused."""
    path = tmp_path / "x.pth"
    torch.save({"w": torch.ones(3)}, str(path))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(Exception) as failed:
        load_checkpoint_file(str(path))
    assert not isinstance(failed.value, CheckpointRefused)
    path.write_bytes(b"")
    with pytest.raises(Exception) as failed:
        load_checkpoint_file(str(path), mmap=True)
    assert not isinstance(failed.value, CheckpointRefused)


def test_torch_without_scoped_allowlists(tmp_path, monkeypatch):
    """torch 2.4 has ``add_safe_globals`` but no ``safe_globals``: the same list is added
    process-wide; torch < 2.4 can allowlist nothing, and loading says which torch to
    install instead of unpickling."""
    from mmengine.logging import HistoryBuffer

    path = str(tmp_path / "buf.pth")
    buf = HistoryBuffer()
    buf.update(1.0)
    torch.save({"buf": buf, "w": torch.ones(2)}, path)
    before = torch.serialization.get_safe_globals()
    monkeypatch.delattr(torch.serialization, "safe_globals")
    try:
        assert isinstance(load_checkpoint_file(path)["buf"], HistoryBuffer)
        assert HistoryBuffer in torch.serialization.get_safe_globals()
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(before)
    monkeypatch.delattr(torch.serialization, "add_safe_globals")
    with pytest.raises(RuntimeError, match=r"cannot load mmengine checkpoints without "
                       r"unpickling arbitrary objects .*install torch >= 2\.4"):
        load_checkpoint_file(path)
