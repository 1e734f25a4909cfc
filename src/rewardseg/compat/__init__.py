"""Make MMSegmentation 1.2.2 work on a pure-Python mmcv and on current PyTorch.

``import rewardseg`` installs :func:`install_import_hook`: the first import of ``mmcv``,
``mmengine`` or ``mmseg`` afterwards applies the fixes first (or right away, when one of
them is already imported). So ``import rewardseg`` alone stays cheap (no torch: the CLI's
light commands start in a fraction of a second), and mmseg is never seen unfixed. The fixes:

1. :mod:`.ops`: when mmcv-lite's compiled ops are missing, a stand-in ``mmcv.ops``
   (pure-PyTorch ``point_sample``, a clear error for every compiled op); with a full mmcv
   nothing. mmcv's one warning about it (``MultiScaleDeformableAttention``) is silenced.
2. :mod:`.checkpoints`: every checkpoint loader mmengine uses here loads with
   ``torch.load(..., weights_only=True)``, which accepts tensors, plain containers and
   :data:`CHECKPOINT_GLOBALS` only; anything else is refused with
   :class:`CheckpointRefused`, naming the file.
3. :mod:`.configs`: mmengine finds ``mmseg::`` base configs through ``importlib.metadata``
   instead of ``pkg_resources`` (gone from current setuptools, deprecated by older ones).
4. :mod:`.configs`: ``Config.pretty_text``'s yapf step is memoised (same text in, same
   text out).
5. :mod:`.configs`: a ``_base_/`` config is taken from ``.mim/configs`` directly; any other
   ``mmseg::`` name is looked up in mmseg's model index, read once per package.
6. :mod:`.startup`: mmengine's ``Visualizer`` builds its matplotlib figure the first time it
   is used, not when it is created.
7. :mod:`.startup`: a few mmseg modules' top-level imports of SciPy and CLIP's tokenizer,
   which only some models use, are deferred to their first use (:data:`DEFERRED_IMPORTS`).

Each module's docstring details its fixes. ``USING_STANDIN_OPS`` is read from :mod:`.ops`,
which sets it.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

from . import ops
from .checkpoints import (CHECKPOINT_GLOBALS, CHECKPOINT_NUMPY_DTYPES,
                          HISTORY_BUFFER_STATISTICS, CheckpointRefused, _patch_checkpoint_loader,
                          checkpoint_safe_globals, load_checkpoint_file, load_from_http,
                          load_from_local, load_from_openmmlab, refusal)
from .configs import (_memoise_config_formatting, _patch_external_config_lookup,
                      _patch_package_lookup)
from .ops import (MissingCompiledOp, _compiled_ops_available, _install_standin_ops,
                  _silence_missing_deform_attn_warning)
from .startup import DEFERRED_IMPORTS, _defer_optional_mmseg_imports, _defer_visualizer_figure

__all__ = ["CHECKPOINT_GLOBALS", "CHECKPOINT_NUMPY_DTYPES", "DEFERRED_IMPORTS",
           "HISTORY_BUFFER_STATISTICS", "USING_STANDIN_OPS", "CheckpointRefused",
           "MissingCompiledOp", "apply", "checkpoint_safe_globals", "install_import_hook",
           "load_checkpoint_file", "load_from_http", "load_from_local", "load_from_openmmlab",
           "refusal"]

_APPLIED = False


def __getattr__(name):  # noqa: N807 - module-level getattr
    """``USING_STANDIN_OPS``: the value :mod:`.ops` sets (one place), read when asked."""
    if name == "USING_STANDIN_OPS":
        return ops.USING_STANDIN_OPS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    _patch_external_config_lookup()
    _defer_visualizer_figure()
    _defer_optional_mmseg_imports()
    _APPLIED = True
