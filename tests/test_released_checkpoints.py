"""Released checkpoints as mmcv 1.x / mmseg 0.x wrote them load and evaluate (issue 21).

The replicas here are written the way mmcv 1.x's ``save_checkpoint`` wrote them: a
``meta`` with the ``CLASSES`` tuple, ``PALETTE``, the config as text, ``env_info``,
``mmcv_version``, ``hook_msgs`` (a numpy float ``best_score``), ``seed``, ``iter`` and
``epoch``; the weights as an ``OrderedDict``; the SGD optimizer's state with its momentum
buffers; in torch's legacy (non-zip) format and in the zip format. The "empty" replicas
also hold an empty numpy array and an empty bytes value, which pickle protocol 2 writes
as a call of ``bytes()``. Each is served as the smoke study's released pretraining
checkpoint and goes through the study's first job (``rewardseg.runner.run_stage`` ->
``evaluate_released``: download, sha256, mmengine's ``load_from``, validation) down to an
mIoU; its weights make the model predict one class everywhere, so the per-class IoU
shows which weights were evaluated (a model not loaded from them would not). The allowlist stays narrow: ``bytes`` with an
argument, and a code-running payload in either format, are refused.
"""
import collections
import copy
import hashlib
import itertools
import os
import shlex

import numpy
import pytest
import torch

import rewardseg  # noqa: F401
from conftest import REPO
from fakeserver import FakeServer
from rewardseg import paths
from rewardseg.compat import CHECKPOINT_GLOBALS, CheckpointRefused, load_checkpoint_file
from rewardseg.results import read_val_metrics
from rewardseg.runconfig import pretrain_spec
from rewardseg.study import load_study

SMOKE_MODEL = os.path.join(REPO, "configs/mmseg/deeplabv3_r18-d8-small_synthstreet.py")
FORMATS = {"legacy": False, "zip": True}  # -> _use_new_zipfile_serialization
_STEPS = itertools.count(1)  # a released step per evaluation: its own message hub name


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory):
    """The smoke study and its (synthetic) data; nothing trained."""
    from rewardseg import data

    root = tmp_path_factory.mktemp("released")
    study = load_study(os.path.join(REPO, "configs/studies/smoke.yaml"))
    study["model"]["config"] = SMOKE_MODEL
    data_dir = str(root / "data")
    data.prepare(paths.data_root(study["dataset"]["name"], data_dir), study["dataset"],
                 progress=False)
    return dict(study=study, data_dir=data_dir)


def mmseg0_checkpoint(predict_class=None, empty=False, seed=0):
    """A checkpoint as mmcv 1.x / mmseg 0.x's ``save_checkpoint`` wrote it, of the smoke
    model (DeepLabV3's parameter names are the same in mmseg 0.x and 1.x). With
    ``predict_class`` the classifier predicts that class everywhere."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    cfg = Config.fromfile(SMOKE_MODEL)
    init_default_scope("mmseg")
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    if predict_class is not None:
        with torch.no_grad():
            model.decode_head.conv_seg.weight.zero_()
            model.decode_head.conv_seg.bias.fill_(-10.0)
            model.decode_head.conv_seg.bias[predict_class] = 10.0
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9,
                                weight_decay=0.0005)
    for param in model.parameters():  # one step: every parameter gets a momentum buffer
        param.grad = torch.randn_like(param) * 1e-8
    optimizer.step()
    optimizer.zero_grad()
    if predict_class is not None:  # the step must not move the classifier's verdict
        with torch.no_grad():
            model.decode_head.conv_seg.weight.zero_()
    classes = tuple(f"class{i}" for i in range(cfg.model.decode_head.num_classes))
    meta = dict(
        mmcv_version="1.7.1",
        env_info="sys.platform: linux\nPython: 3.8.13\nCUDA available: True\n"
                 "PyTorch: 1.11.0\nMMCV: 1.7.1\nMMSegmentation: 0.30.0+4eaa8e1",
        config=cfg.pretty_text, seed=seed, exp_name="deeplabv3_r18-d8_512x1024_80k.py",
        CLASSES=classes, PALETTE=[[i * 30, 255 - i * 30, i * 10] for i in range(len(classes))],
        epoch=1, iter=80000, time="Sat Dec  3 10:12:41 2022",
        hook_msgs=dict(last_ckpt="work_dirs/deeplabv3/iter_80000.pth",
                       best_score=numpy.float64(0.7636), best_ckpt="work_dirs/best_mIoU.pth"))
    if empty:
        meta["hook_msgs"]["eval_hist"] = numpy.zeros((0,), dtype=numpy.float32)
        meta["note"] = b""
    state_dict = collections.OrderedDict(
        (key, value.detach().cpu().clone()) for key, value in model.state_dict().items())
    return dict(meta=meta, state_dict=state_dict, optimizer=optimizer.state_dict())


def write(checkpoint, path, fmt):
    torch.save(checkpoint, str(path), _use_new_zipfile_serialization=FORMATS[fmt])
    with open(path, "rb") as fh:
        assert (fh.read(4) == b"PK\x03\x04") == FORMATS[fmt]  # the format asked for
    return path


def test_what_a_released_checkpoint_needs_beyond_torchs_allowlist(tmp_path):
    """Measured statically (zip format): a plain replica needs numpy's scalar and dtype
    (the numpy ``best_score``); an empty array or empty bytes also ``builtins.bytes``
    (and an array, numpy's ``_reconstruct``). All are in ``CHECKPOINT_GLOBALS``."""
    need = {}
    for empty in (False, True):
        path = write(mmseg0_checkpoint(empty=empty), tmp_path / f"{empty}.pth", "zip")
        need[empty] = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
        assert need[empty] <= set(CHECKPOINT_GLOBALS), need[empty] - set(CHECKPOINT_GLOBALS)
    assert "builtins.bytes" not in need[False]
    assert "builtins.bytes" in need[True]
    assert any(name.endswith("multiarray._reconstruct") for name in need[True])


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("empty", [False, True], ids=["plain", "empty"])
def test_a_replica_loads_as_written(tmp_path, fmt, empty):
    """Everything mmcv 1.x wrote comes back, with its types: the OrderedDict of weights,
    the CLASSES tuple, the numpy score, the momentum buffers, the empty array and bytes."""
    want = mmseg0_checkpoint(empty=empty)
    path = write(want, tmp_path / "ckpt.pth", fmt)
    got = load_checkpoint_file(str(path), map_location="cpu", mmap=True)
    assert type(got["state_dict"]) is collections.OrderedDict
    assert list(got["state_dict"]) == list(want["state_dict"])
    for key, value in want["state_dict"].items():
        assert torch.equal(got["state_dict"][key], value), key
    meta = got["meta"]
    assert type(meta["CLASSES"]) is tuple and meta["CLASSES"] == want["meta"]["CLASSES"]
    assert meta["PALETTE"] == want["meta"]["PALETTE"]
    assert meta["config"] == want["meta"]["config"] and "ASPPHead" in meta["config"]
    assert (meta["iter"], meta["epoch"], meta["seed"]) == (80000, 1, 0)
    score = meta["hook_msgs"]["best_score"]
    assert type(score) is numpy.float64 and score == numpy.float64(0.7636)
    state = got["optimizer"]["state"]
    assert len(state) == len(list(want["state_dict"])) - sum(
        1 for k in want["state_dict"] if k.endswith(("running_mean", "running_var",
                                                     "num_batches_tracked")))
    for index, buffers in want["optimizer"]["state"].items():
        assert torch.equal(state[index]["momentum_buffer"], buffers["momentum_buffer"])
    assert got["optimizer"]["param_groups"][0]["momentum"] == 0.9
    if empty:
        hist = meta["hook_msgs"]["eval_hist"]
        assert type(hist) is numpy.ndarray and hist.shape == (0,) and hist.dtype == "float32"
        assert meta["note"] == b"" and type(meta["note"]) is bytes


def test_an_empty_history_buffer_and_message_hub_load(tmp_path):
    """mmengine's own: a fresh ``HistoryBuffer`` (two empty arrays, so ``bytes()``) and
    the state of a message hub without scalars load, and the buffer still works."""
    from mmengine.logging import HistoryBuffer, MessageHub

    hub = MessageHub.get_instance(f"released-{os.getpid()}-empty")
    path = str(tmp_path / "hub.pth")
    torch.save({"buffer": HistoryBuffer(), "message_hub": hub.state_dict(),
                "hub_with_empty_buffer": {"log_scalars": {"train/loss": HistoryBuffer()}}},
               path)
    assert "builtins.bytes" in torch.serialization.get_unsafe_globals_in_checkpoint(path)
    got = load_checkpoint_file(path, map_location="cpu")
    buffer = got["buffer"]
    assert isinstance(buffer, HistoryBuffer) and len(buffer.data[0]) == 0
    buffer.update(2.0)
    assert buffer.mean() == 2.0
    assert dict(got["message_hub"]["log_scalars"]) == {}
    assert len(got["hub_with_empty_buffer"]["log_scalars"]["train/loss"].data[0]) == 0


class Calls:
    """Unpickles as ``func(*args)``."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_bytes_is_accepted_only_empty(tmp_path, fmt):
    """``bytes(n)`` would allocate n bytes from a few bytes of pickle: refused, named."""
    path = tmp_path / "big.pth"
    torch.save({"x": Calls(bytes, 1 << 40)}, str(path),
               _use_new_zipfile_serialization=FORMATS[fmt])
    with pytest.raises(CheckpointRefused, match=r"big\.pth: refused to unpickle "
                       r"bytes\(1099511627776\) \(torch\.load with weights_only=True\)"):
        load_checkpoint_file(str(path), map_location="cpu")


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_a_replica_with_a_payload_is_refused(tmp_path, fmt):
    """The same replica with an ``os.system`` call in its meta: refused in either format,
    and nothing of it runs."""
    marker = tmp_path / "pwned"
    checkpoint = mmseg0_checkpoint(empty=True)
    checkpoint["meta"]["env_info"] = Calls(os.system, f"touch {shlex.quote(str(marker))}")
    path = write(checkpoint, tmp_path / "bad.pth", fmt)
    with pytest.raises(CheckpointRefused, match=r"bad\.pth: refused to unpickle posix\.system"):
        load_checkpoint_file(str(path), map_location="cpu", mmap=True)
    assert not marker.exists()


def evaluate_as_released(smoke_study, tmp_path, body):
    """``body`` served as the smoke study's released pretraining checkpoint, evaluated by
    the study's first job (``run_stage`` -> ``evaluate_released``): its val record."""
    from rewardseg.runner import run_stage

    step = next(_STEPS)
    sha256 = hashlib.sha256(body).hexdigest()
    server = FakeServer().start()
    try:
        server.files[f"/v0.x/deeplabv3_iter_{step}-{sha256[:8]}.pth"] = body
        study = copy.deepcopy(smoke_study["study"])
        study["study"] = "released"
        study["pretrain"]["released"] = {step: dict(
            url=f"{server.url}/v0.x/deeplabv3_iter_{step}-{sha256[:8]}.pth",
            sha256=sha256[:8])}
        spec = pretrain_spec(study, data_dir=smoke_study["data_dir"])
        work = tmp_path / "work" / "released" / "pretrain"
        run_stage(spec, str(work))
    finally:
        server.stop()
    assert (work / f"iter_{step}.pth").read_bytes() == body
    assert (work / "run.json").exists()
    records = read_val_metrics(str(work))
    assert [r["step"] for r in records] == [step]
    return records[0]["metrics"]


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("empty", [False, True], ids=["plain", "empty"])
def test_a_released_mmseg0_checkpoint_is_evaluated(smoke_study, tmp_path, fmt, empty):
    """Downloaded, verified, loaded by mmengine's ``load_from`` and evaluated: the mIoU is
    that of the replica's weights (every pixel predicted as class 2: only that class has
    an IoU above 0)."""
    body = write(mmseg0_checkpoint(predict_class=2, empty=empty), tmp_path / "c.pth",
                 fmt).read_bytes()
    metrics = evaluate_as_released(smoke_study, tmp_path, body)
    ious = [v for k, v in metrics.items() if k.startswith("IoU.")]  # in class order
    assert len(ious) == 8, metrics
    assert [v > 0 for v in ious] == [i == 2 for i in range(8)], metrics
    assert metrics["mIoU"] == pytest.approx(ious[2] / 8, abs=1e-6)
    assert metrics["mAcc"] == pytest.approx(100 / 8)  # class 2 right everywhere, no other
