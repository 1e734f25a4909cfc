"""Make MMSegmentation 1.2.2 work on a pure-Python mmcv and on current PyTorch.

``import rewardseg`` installs :func:`install_import_hook`: the first import of ``mmcv``,
``mmengine`` or ``mmseg`` afterwards applies the fixes first (or right away, when one of
them is already imported). So ``import rewardseg`` alone stays cheap (no torch: the CLI's
light commands start in a fraction of a second), and mmseg is never seen unfixed. The fixes:

1. ``mmcv-lite`` ships ``mmcv/ops/*.py`` but not the compiled ``mmcv._ext``, so
   ``import mmcv.ops`` fails, and a few mmseg modules import it unguarded. When (and only
   when) the compiled ops are missing, we register a stand-in ``mmcv.ops`` module that
   offers the pure-PyTorch ``point_sample`` and a clear error for every compiled op.
   With a full mmcv installed this does nothing.
2. torch >= 2.6 loads with ``weights_only=True`` by default, which refuses mmengine's own
   checkpoints (``HistoryBuffer``, numpy objects in ``meta``). We re-register mmengine's
   loader for *local files* with ``weights_only=False``: local checkpoints are the ones
   this workflow wrote itself. Remote (http, ``open-mmlab://``) checkpoints keep torch's
   safe default.
3. mmengine finds ``mmseg::`` base configs through ``pkg_resources``, which current
   setuptools no longer ships, and which older setuptools (< 81) deprecate with a
   UserWarning on every config load (mmengine re-imports it each time). The two lookups
   use ``importlib.metadata`` instead, whichever setuptools is installed.
4. ``Config.pretty_text`` formats the config with yapf on every call, and mmengine's
   runner calls it about eight times per run (environment log, config dump, visualizer,
   and once per checkpoint): ~0.2 s each, a tenth of a short tuning job. The yapf step
   is a pure function of the text, so it is memoised (same text in, same text out).

With the stand-in ops, mmcv warns on every import that ``MultiScaleDeformableAttention``
cannot be imported (expected: mmcv-lite has no compiled ops, and DeepLabV3 does not use
it). That one warning, and only it, is silenced so that every ``rewardseg`` and
``snakemake`` call does not print it.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
import types
import warnings

_APPLIED = False
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


def _patch_checkpoint_loader() -> None:
    import torch
    from mmengine.runner.checkpoint import CheckpointLoader

    def load_trusted_local(filename, map_location=None):
        filename = os.path.expanduser(filename)
        if not os.path.isfile(filename):
            raise FileNotFoundError(f"{filename} can not be found.")
        try:
            return torch.load(filename, map_location=map_location, weights_only=False)
        except TypeError:  # torch without the weights_only argument
            return torch.load(filename, map_location=map_location)

    CheckpointLoader.register_scheme(prefixes="", loader=load_trusted_local, force=True)


def _is_installed(package: str) -> bool:
    from importlib import metadata

    try:
        metadata.distribution(package)
        return True
    except metadata.PackageNotFoundError:
        spec = importlib.util.find_spec(package)
        return spec is not None and spec.origin is not None


def _get_installed_path(package: str) -> str:
    from importlib import metadata

    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        spec = importlib.util.find_spec(package)
        if spec is None:
            raise
        if spec.origin is None:
            raise RuntimeError(f"{package} is a namespace package, which is invalid "
                               "for `get_installed_path`")
        return os.path.dirname(spec.origin)
    location = str(dist.locate_file(""))
    candidate = os.path.join(location, package)
    if os.path.exists(candidate):
        return candidate
    top_level = (dist.read_text("top_level.txt") or package).split()
    return os.path.join(location, top_level[0] if top_level else package)


def _patch_package_lookup() -> None:
    import mmengine.config.config as config_mod
    import mmengine.utils as utils_mod
    import mmengine.utils.package_utils as pkg_mod

    for mod in (pkg_mod, utils_mod, config_mod):
        mod.is_installed = _is_installed
        mod.get_installed_path = _get_installed_path
    try:
        import mmengine.hub.hub as hub_mod

        hub_mod.get_installed_path = _get_installed_path
    except ImportError:  # pragma: no cover
        pass


def _memoise_config_formatting() -> None:
    import functools

    import mmengine.config.config as config_mod

    format_code = getattr(config_mod, "FormatCode", None)
    if format_code is None or getattr(format_code, "rewardseg_memoised", False):
        return

    @functools.lru_cache(maxsize=16)
    def _format(text, style_items):
        return format_code(text, style_config=dict(style_items))

    @functools.wraps(format_code)
    def memoised(text, style_config=None, **kwargs):
        if kwargs or not isinstance(style_config, dict):
            return format_code(text, style_config=style_config, **kwargs)
        try:
            return _format(text, tuple(sorted(style_config.items())))
        except TypeError:  # an unhashable style value: format without the cache
            return format_code(text, style_config=style_config)

    memoised.rewardseg_memoised = True
    memoised.cache_info = _format.cache_info
    config_mod.FormatCode = memoised


_TRIGGERS = ("mmcv", "mmengine", "mmseg")


class _Present(importlib.abc.Loader):
    """Hands the import system a module that :func:`apply` has already imported (the
    import system would otherwise run the module's file a second time, since it found it
    before :func:`apply` imported it); its own ``__spec__`` is put back afterwards."""

    def __init__(self, module, spec):
        self.module, self.spec = module, spec

    def create_module(self, spec):
        return self.module

    def exec_module(self, module):
        module.__spec__ = self.spec


class _ApplyOnFirstImport(importlib.abc.MetaPathFinder):
    """A ``sys.meta_path`` finder that applies the fixes when mmcv, mmengine or mmseg is
    first imported, then steps aside."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] not in _TRIGGERS:
            return None
        _remove_import_hook()
        apply()  # imports mmcv and mmengine itself
        module = sys.modules.get(name)
        if module is None:  # not imported by apply (mmseg): the usual import follows
            return None
        spec = importlib.util.spec_from_loader(name, _Present(module, module.__spec__))
        module.__spec__ = spec  # the import system reads the spec of a module it now finds
        return spec


_HOOK = _ApplyOnFirstImport()


def _remove_import_hook() -> None:
    while _HOOK in sys.meta_path:
        sys.meta_path.remove(_HOOK)


def install_import_hook() -> None:
    """Apply the fixes at the first import of mmcv / mmengine / mmseg (now, when one is
    already imported)."""
    if _APPLIED:
        return
    if any(name in sys.modules for name in _TRIGGERS):
        apply()
    elif _HOOK not in sys.meta_path:
        sys.meta_path.insert(0, _HOOK)


def apply() -> None:
    """Apply the fixes once; safe to call repeatedly."""
    global _APPLIED
    if _APPLIED:
        return
    _remove_import_hook()
    if "mmcv.ops" not in sys.modules and not _compiled_ops_available():
        _silence_missing_deform_attn_warning()
        _install_standin_ops()
    _patch_checkpoint_loader()
    _patch_package_lookup()
    _memoise_config_formatting()
    _APPLIED = True
