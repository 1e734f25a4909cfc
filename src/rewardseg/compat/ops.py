"""The stand-in ``mmcv.ops`` for mmcv-lite, and the silenced mmcv warning that comes with it.

1. ``mmcv-lite`` ships ``mmcv/ops/*.py`` but not the compiled ``mmcv._ext``, so
   ``import mmcv.ops`` fails, and a few mmseg modules import it unguarded. When (and only
   when) the compiled ops are missing, we register a stand-in ``mmcv.ops`` module that
   offers the pure-PyTorch ``point_sample`` and a clear error for every compiled op.
   With a full mmcv installed this does nothing.

With the stand-in ops, mmcv warns on every import that ``MultiScaleDeformableAttention``
cannot be imported (expected: mmcv-lite has no compiled ops, and DeepLabV3 does not use
it). That one warning, and only it, is silenced so that every ``rewardseg`` and
``snakemake`` call does not print it.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
import warnings

#: True when the stand-in ``mmcv.ops`` is in use (compiled ops missing).
USING_STANDIN_OPS = False


class MissingCompiledOp:
    """Placeholder for an mmcv op that needs the compiled ``mmcv._ext``."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self, *args, **kwargs):
        raise RuntimeError(
            f"mmcv.ops.{self.name} needs mmcv's compiled extension (mmcv._ext), which "
            "mmcv-lite does not ship; DeepLabV3 does not use it. Install full mmcv "
            "(mmcv==2.1.0 built for your torch/CUDA) to use models that need it.")


def _compiled_ops_available() -> bool:
    try:
        return importlib.util.find_spec("mmcv._ext") is not None
    except (ImportError, ValueError):
        return False


def _sigmoid_focal_loss_torch(pred, target, gamma=2.0, alpha=0.25, weight=None,
                              reduction="mean"):
    """Pure-PyTorch sigmoid focal loss with mmcv's signature (target: class indices)."""
    import torch
    import torch.nn.functional as F

    num_classes = pred.size(1)
    onehot = F.one_hot(target.clamp(0, num_classes), num_classes + 1)[:, :num_classes]
    onehot = onehot.type_as(pred)
    p = pred.sigmoid()
    pt = (1 - p) * onehot + p * (1 - onehot)
    focal = (alpha * onehot + (1 - alpha) * (1 - onehot)) * pt.pow(gamma)
    loss = F.binary_cross_entropy_with_logits(pred, onehot, reduction="none") * focal
    if weight is not None:
        loss = loss * weight.view(-1, 1)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss if reduction == "none" else torch.as_tensor(loss)


def _install_standin_ops() -> None:
    global USING_STANDIN_OPS
    import mmcv

    ops_dir = os.path.join(os.path.dirname(mmcv.__file__), "ops")
    module = types.ModuleType("mmcv.ops")
    module.__file__ = os.path.join(ops_dir, "__init__.py")
    module.__path__ = [ops_dir]  # submodules stay importable (and fail on their own)
    module.__doc__ = "rewardseg stand-in for mmcv.ops (mmcv-lite: no compiled ops)"

    # point_sample.py is plain PyTorch: load it as mmcv.ops.point_sample.
    spec = importlib.util.spec_from_file_location(
        "mmcv.ops.point_sample", os.path.join(ops_dir, "point_sample.py"))
    point_sample_mod = importlib.util.module_from_spec(spec)
    sys.modules["mmcv.ops.point_sample"] = point_sample_mod
    spec.loader.exec_module(point_sample_mod)
    for name in ("point_sample", "bilinear_grid_sample", "rel_roi_point_to_rel_img_point",
                 "SimpleRoIAlign"):
        if hasattr(point_sample_mod, name):
            setattr(module, name, getattr(point_sample_mod, name))
    module.sigmoid_focal_loss = _sigmoid_focal_loss_torch

    def __getattr__(name):  # noqa: N807 - module-level getattr
        if name.startswith("_"):
            raise AttributeError(name)
        # mmseg guards some imports with `except ModuleNotFoundError`, which an
        # ImportError would escape: hand out a placeholder that fails when used.
        return MissingCompiledOp(name)

    module.__getattr__ = __getattr__
    sys.modules["mmcv.ops"] = module
    mmcv.ops = module
    USING_STANDIN_OPS = True


def _silence_missing_deform_attn_warning() -> None:
    """mmcv.cnn.bricks.transformer warns once per process that it cannot import
    ``MultiScaleDeformableAttention`` from the compiled ops; with mmcv-lite that is
    expected. Only that message from that module is ignored; this runs before mmcv.cnn
    is imported."""
    warnings.filterwarnings(
        "ignore",
        message=r"Fail to import ``MultiScaleDeformableAttention`` from "
                r"``mmcv\.ops\.multi_scale_deform_attn``",
        category=UserWarning,
        module=r"mmcv\.cnn\.bricks\.transformer$",
    )
