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
2. Checkpoints are never unpickled beyond weights: every loader mmengine uses here (local
   files, ``http(s)://``, ``open-mmlab://`` and what goes through them) is re-registered
   with ``torch.load(..., weights_only=True)`` (torch.hub itself passes
   ``weights_only=False``), which accepts tensors and plain containers and, within a
   scoped ``torch.serialization.safe_globals``, the few types this project's own
   checkpoints hold (:data:`CHECKPOINT_GLOBALS`: mmengine's ``HistoryBuffer`` and a
   ``getattr`` that fetches only its statistics methods, numpy arrays, scalars and
   dtypes, and ``bytes()``, the empty bytes). A released checkpoint downloaded to ``iter_<n>.pth`` is a local file like
   any other: a pickle that would build anything else (a function call, another class)
   is refused with :class:`CheckpointRefused`, naming the file.
3. mmengine finds ``mmseg::`` base configs through ``pkg_resources``, which current
   setuptools no longer ships, and which older setuptools (< 81) deprecate with a
   UserWarning on every config load (mmengine re-imports it each time). The two lookups
   use ``importlib.metadata`` instead, whichever setuptools is installed.
4. ``Config.pretty_text`` formats the config with yapf on every call, and mmengine's
   runner calls it about eight times per run (environment log, config dump, visualizer,
   and once per checkpoint): ~0.2 s each, a tenth of a short tuning job. The yapf step
   is a pure function of the text, so it is memoised (same text in, same text out).
5. Each ``mmseg::`` base config a config names made mmengine read mmseg's model index and
   all its ~160 metafiles (YAML, ~0.1-0.25 s a time, three times for the smoke study's
   model) to look the name up among the model zoo's configs, where a ``_base_/`` config
   never is (mmengine's own fallback: "base config does not have a metafile"). A
   ``_base_/...`` name whose file is there is now taken from ``.mim/configs`` directly,
   as that fallback does; any other name is looked up in the same table, read once per
   package (same answers, same errors).
6. mmengine's ``Visualizer`` builds a matplotlib figure when it is created (the runner
   creates one for every run), which imports matplotlib (~0.3 s of a job's start-up);
   training never draws with it (``SegVisualizationHook`` does only with ``draw=True``).
   The figure (``fig_save``, ``fig_save_canvas``, ``ax_save``, ``dpi``) is now built by
   the same code the first time one of them is used.
7. A few mmseg modules import at the top what only some models use: SciPy's ``ndimage``,
   ``optimize`` and ``interpolate`` (``BioMedicalGaussianBlur``, Mask2Former's Hungarian
   assigner, BEiT's position-embedding resize, the Hausdorff loss) and CLIP's tokenizer
   (which reads its vocabulary at import): ~0.4 s of every job's start-up. In those
   modules alone (:data:`DEFERRED_IMPORTS`), while they are imported, ``from ... import
   name`` of these binds a stand-in that imports the module at its first use (a call,
   an attribute) and hands over to the real object; a module already imported is bound
   as usual.

With the stand-in ops, mmcv warns on every import that ``MultiScaleDeformableAttention``
cannot be imported (expected: mmcv-lite has no compiled ops, and DeepLabV3 does not use
it). That one warning, and only it, is silenced so that every ``rewardseg`` and
``snakemake`` call does not print it.
"""
from __future__ import annotations

import importlib
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


#: The globals, beyond torch's own weights-only allowlist (tensors, ``OrderedDict``, ...),
#: that this project's checkpoints hold, as their pickles name them. Measured with
#: ``torch.serialization.get_unsafe_globals_in_checkpoint`` on the checkpoints of fp32,
#: bf16 and fp16 (GradScaler state) runs, pretraining and tuning (mmengine 0.10.7, numpy
#: 2.4, tests/test_checkpoint_trust.py): the message hub keeps logged scalars in
#: ``HistoryBuffer`` objects (numpy arrays and scalars), whose state names its statistics
#: methods as ``getattr(HistoryBuffer, 'mean')`` (pickle protocol 2). numpy 1 names its
#: helpers ``numpy.core.*``, numpy 2 ``numpy._core.*``: both are accepted, whichever is
#: installed. Pickle protocol 2 writes an empty ``bytes`` as a call of ``bytes()`` (a
#: non-empty one as ``_codecs.encode``): an empty numpy array (a fresh ``HistoryBuffer``
#: holds two) or an empty bytes value anywhere in the checkpoint (mmcv 1.x / mmseg 0.x
#: released checkpoints, tests/test_released_checkpoints.py) names ``builtins.bytes``,
#: which is accepted only as ``bytes()``: see :func:`_empty_bytes`.
CHECKPOINT_GLOBALS = (
    "mmengine.logging.history_buffer.HistoryBuffer",
    "builtins.getattr",  # only getattr(HistoryBuffer, <statistics method>): see below
    "builtins.bytes",  # only bytes(), the empty bytes: see below
    "numpy.ndarray",
    "numpy.dtype",
    "numpy._core.multiarray._reconstruct", "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray.scalar", "numpy.core.multiarray.scalar",
    "_codecs.encode",  # the bytes of a numpy array or scalar (recent torch allows it too)
)
#: The dtypes (``numpy.dtypes.Float64DType``, ...) a checkpoint's numpy arrays and scalars
#: may be built with: the numeric and boolean ones.
CHECKPOINT_NUMPY_DTYPES = "?bhilqBHILQefdgFD"
#: What ``getattr`` may fetch while loading: ``HistoryBuffer``'s own statistics methods.
HISTORY_BUFFER_STATISTICS = ("min", "max", "current", "mean")


class CheckpointRefused(ValueError):
    """torch's weights-only unpickler refused a checkpoint: it would build something other
    than tensors, containers and :data:`CHECKPOINT_GLOBALS` (code could run)."""


def _history_buffer_getattr(obj, name):
    """``getattr`` as a checkpoint may use it: ``HistoryBuffer.__setstate__`` puts what
    the pickle names into the class's table of statistics methods, which the logger then
    calls, so only ``HistoryBuffer``'s own are handed out."""
    import pickle

    from mmengine.logging import HistoryBuffer

    if obj is HistoryBuffer and name in HISTORY_BUFFER_STATISTICS:
        return getattr(obj, name)
    raise pickle.UnpicklingError(f"rewardseg refuses getattr({obj!r}, {name!r})")


def _empty_bytes(*args):
    """``bytes`` as a checkpoint may call it: ``bytes()``, how pickle protocol 2 writes an
    empty bytes object (an empty numpy array's data, say). Any argument is refused:
    ``bytes(n)`` would let a few bytes of pickle allocate ``n`` bytes of memory."""
    import pickle

    if args:
        shown = ", ".join(repr(a)[:40] for a in args)
        raise pickle.UnpicklingError(f"rewardseg refuses bytes({shown})")
    return b""


def _named(func, path: str):
    """``func`` under the name a pickle uses for it: torch matches an allowlisted global
    by its ``__module__`` and ``__qualname__`` (the other numpy's module, getattr)."""
    def call(*args):
        return func(*args)

    call.__module__, _, call.__qualname__ = path.rpartition(".")
    call.__name__ = call.__qualname__
    return call


def _resolve(name: str):
    """The installed object a pickle's global ``name`` stands for (numpy 1 and 2 names
    both resolve), or None."""
    if name == "builtins.getattr":
        return _history_buffer_getattr
    if name == "builtins.bytes":
        return _empty_bytes
    module, _, attr = name.rpartition(".")
    tries = [module]
    if module.startswith(("numpy.core.", "numpy._core.")):
        rest = module.split(".", 2)[2]
        tries = ["numpy._core." + rest, "numpy.core." + rest]
    for candidate in tries:
        try:
            with warnings.catch_warnings():  # numpy 2 deprecates numpy.core
                warnings.simplefilter("ignore", DeprecationWarning)
                return getattr(importlib.import_module(candidate), attr)
        except (ImportError, AttributeError):
            continue
    return None


_SAFE_GLOBALS = None


def checkpoint_safe_globals() -> list:
    """:data:`CHECKPOINT_GLOBALS` as ``torch.serialization.safe_globals`` takes them (the
    installed object, or a stand-in carrying the pickle's name), and the numpy dtypes."""
    global _SAFE_GLOBALS
    if _SAFE_GLOBALS is None:
        import numpy

        entries = []
        for name in CHECKPOINT_GLOBALS:
            obj = _resolve(name)
            if obj is None:
                continue
            own = f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}"
            entries.append(obj if own == name else _named(obj, name))
        for code in CHECKPOINT_NUMPY_DTYPES:
            kind = type(numpy.dtype(code))
            if kind is not numpy.dtype and kind not in entries:
                entries.append(kind)
        _SAFE_GLOBALS = entries
    return list(_SAFE_GLOBALS)


def _allowing_checkpoint_globals():
    """Context in which ``torch.load(weights_only=True)`` accepts
    :data:`CHECKPOINT_GLOBALS`: scoped (``torch.serialization.safe_globals``, torch >=
    2.5); torch 2.4 has only ``add_safe_globals``, which adds the same list process-wide;
    older torch cannot allowlist anything and is refused."""
    import contextlib

    import torch

    serialization = torch.serialization
    if hasattr(serialization, "safe_globals"):
        return serialization.safe_globals(checkpoint_safe_globals())
    if hasattr(serialization, "add_safe_globals"):
        serialization.add_safe_globals(checkpoint_safe_globals())
        return contextlib.nullcontext()
    raise RuntimeError(f"torch {torch.__version__} cannot load mmengine checkpoints without "
                       "unpickling arbitrary objects (it lacks "
                       "torch.serialization.add_safe_globals); install torch >= 2.4")


def _refused_global(message: str):
    """What a weights-only refusal names (a global, a type), or None when the message is
    not a refusal (a damaged file, say)."""
    import re

    for pattern in (r"GLOBAL (\S+) was not an allowed global",
                    r"unsupported GLOBAL (\S+) whose module",
                    r"reduce for unrecognized function (.+)",
                    r"rewardseg refuses ((?:getattr|bytes)\(.*\))",
                    r"allowlisted via `add_safe_globals`,? but got (.+)"):
        match = re.search(pattern, message)
        if match:
            what = match.group(1).strip().rstrip(".")
            # torch names builtins without their module ("open")
            return f"builtins.{what}" if what.isidentifier() else what
    return None


def refusal(path: str, error: BaseException):
    """A :class:`CheckpointRefused` for ``path`` when ``error`` is torch refusing to
    unpickle something, else None."""
    import pickle

    what = _refused_global(str(error)) if isinstance(error, pickle.UnpicklingError) else None
    if what is None:
        return None
    return CheckpointRefused(
        f"{path}: refused to unpickle {what} (torch.load with weights_only=True): "
        "rewardseg loads only tensors and the mmengine / numpy types of its own "
        "checkpoints (rewardseg.compat.CHECKPOINT_GLOBALS); if you trust this file, "
        "load it yourself with weights_only=False and torch.save its 'state_dict' to a "
        "new file to start from")


def load_checkpoint_file(path: str, map_location=None, mmap: bool = False):
    """``torch.load(path, weights_only=True)`` accepting :data:`CHECKPOINT_GLOBALS`; a
    refused pickle raises :class:`CheckpointRefused` naming ``path``. ``mmap=True`` maps
    the tensors of a zip archive (torch's format since 1.6) instead of reading them: a
    cheap check that the file loads."""
    import torch

    kwargs = dict(map_location=map_location, weights_only=True)
    if mmap:
        with open(path, "rb") as fh:
            kwargs["mmap"] = fh.read(4) == b"PK\x03\x04"
    with _allowing_checkpoint_globals():
        try:
            return torch.load(path, **kwargs)
        except Exception as err:
            refused = refusal(path, err)
            if refused is None:
                raise
            raise refused from None


def load_from_local(filename, map_location=None):
    filename = os.path.expanduser(filename)
    if not os.path.isfile(filename):
        raise FileNotFoundError(f"{filename} can not be found.")
    return load_checkpoint_file(filename, map_location=map_location)


def load_from_http(filename, map_location=None, model_dir=None, progress=os.isatty(0)):
    """mmengine's ``load_from_http`` (rank 0 downloads, the others wait and read the
    cache) with torch.hub's load limited to weights."""
    import torch
    from mmengine.dist import get_dist_info

    def fetch():
        with _allowing_checkpoint_globals():
            try:
                return torch.hub.load_state_dict_from_url(
                    filename, model_dir=model_dir, map_location=map_location,
                    progress=progress, weights_only=True)
            except Exception as err:
                from urllib.parse import urlsplit

                cached = os.path.join(model_dir or os.path.join(torch.hub.get_dir(),
                                                                "checkpoints"),
                                      os.path.basename(urlsplit(filename).path))
                refused = refusal(f"{filename} (cached as {cached})", err)
                if refused is None:
                    raise
                raise refused from None

    rank, world_size = get_dist_info()
    checkpoint = fetch() if rank == 0 else None
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            checkpoint = fetch()
    return checkpoint


def load_from_openmmlab(filename, map_location=None):
    """mmengine's ``load_from_openmmlab``: a name of its model table, a URL or a file
    under ``$MMENGINE_HOME``; both loaded as above."""
    from mmengine.runner import checkpoint as mm_checkpoint

    prefix = "open-mmlab://" if filename.startswith("open-mmlab://") else "openmmlab://"
    name = filename[len(prefix):]
    name = mm_checkpoint.get_deprecated_model_names().get(name, name)
    url = mm_checkpoint.get_external_models()[name]
    if url.startswith(("http://", "https://")):
        return load_from_http(url, map_location=map_location)
    return load_from_local(os.path.join(mm_checkpoint._get_mmengine_home(), url), map_location)


def _patch_checkpoint_loader() -> None:
    from mmengine.runner import checkpoint as mm_checkpoint

    loader = mm_checkpoint.CheckpointLoader
    loader.register_scheme(prefixes="", loader=load_from_local, force=True)
    loader.register_scheme(prefixes=("http://", "https://"), loader=load_from_http, force=True)
    loader.register_scheme(prefixes=("open-mmlab://", "openmmlab://"), loader=load_from_openmmlab,
                           force=True)
    # torchvision:// and mmcls:// call the module's load_from_http by name
    mm_checkpoint.load_from_http = load_from_http


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


def _set_on_hub(name: str, value) -> None:
    """``mmengine.hub.hub.<name> = value`` (the hub imported the original by name), when
    the hub module is there."""
    try:
        import mmengine.hub.hub as hub_mod
    except ImportError:  # pragma: no cover
        return
    setattr(hub_mod, name, value)


def _patch_package_lookup() -> None:
    import mmengine.config.config as config_mod
    import mmengine.utils as utils_mod
    import mmengine.utils.package_utils as pkg_mod

    for mod in (pkg_mod, utils_mod, config_mod):
        mod.is_installed = _is_installed
        mod.get_installed_path = _get_installed_path
    _set_on_hub("get_installed_path", _get_installed_path)


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


_CFG_INDEXES: dict = {}


def _cfg_index(package_path: str) -> dict:
    """mmengine's ``_get_cfg_metainfo`` table (config name -> metafile entry) of a package,
    read once."""
    if package_path not in _CFG_INDEXES:
        from mmengine.fileio import load

        mim = os.path.join(package_path, ".mim")
        index = {}
        for meta_path in load(os.path.join(mim, "model-index.yml"))["Import"]:
            for model_cfg in load(os.path.join(mim, meta_path))["Models"]:
                if "Config" not in model_cfg:
                    warnings.warn(f"There is not `Config` define in {model_cfg}")
                    continue
                # several weights of one config: the first one, as mmengine
                index.setdefault(model_cfg["Config"].partition("/")[-1], model_cfg)
        _CFG_INDEXES[package_path] = index
    return _CFG_INDEXES[package_path]


def _get_cfg_metainfo(package_path: str, cfg_path: str) -> dict:
    """mmengine's ``_get_cfg_metainfo`` with the table read once per package."""
    import copy

    index = _cfg_index(package_path)
    if cfg_path not in index:
        raise ValueError(f"Expected configs: {index.keys()}, but got {cfg_path}")
    return copy.deepcopy(index[cfg_path])


def _get_external_cfg_path(package_path: str, cfg_file: str) -> str:
    """mmengine's ``_get_external_cfg_path``; a ``_base_/`` config is not looked for among
    the model zoo's: the ValueError sends mmengine to ``.mim/configs/<name>`` (checked to
    exist here, else the table decides as before)."""
    from mmengine.utils import check_file_exist

    if cfg_file.startswith("_base_/") and os.path.isfile(
            os.path.join(package_path, ".mim", "configs", cfg_file)):
        raise ValueError(f"{cfg_file} is a base config (no metafile entry)")
    model_cfg = _get_cfg_metainfo(package_path, cfg_file.split(".")[0])
    cfg_path = os.path.join(package_path, model_cfg["Config"])
    check_file_exist(cfg_path)
    return cfg_path


def _patch_external_config_lookup() -> None:
    import mmengine.config.config as config_mod
    import mmengine.config.utils as utils_mod

    utils_mod._get_cfg_metainfo = _get_cfg_metainfo
    utils_mod._get_external_cfg_path = _get_external_cfg_path
    config_mod._get_external_cfg_path = _get_external_cfg_path
    _set_on_hub("_get_cfg_metainfo", _get_cfg_metainfo)


#: The attributes of an mmengine ``Visualizer`` that its figure sets.
_FIGURE_ATTRIBUTES = ("fig_save_canvas", "fig_save", "ax_save", "dpi")


class _PendingFigure:
    """What ``Visualizer.__init__`` gets instead of the figure it would build (its
    ``dpi`` included); removed again when ``__init__`` returns."""

    def get_dpi(self):
        return self


_PENDING_FIGURE = _PendingFigure()


class _LazyFigureAttribute:
    """Class attribute standing for one of :data:`_FIGURE_ATTRIBUTES` while the instance
    has none: builds the figure (mmengine's ``_initialize_fig``, ``fig_save_cfg``) and
    sets all four on the instance, which from then on has its own."""

    def __init__(self, name: str, initialize_fig):
        self.name, self.initialize_fig = name, initialize_fig

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        canvas, fig, ax = self.initialize_fig(obj, obj.fig_save_cfg)
        obj.fig_save_canvas, obj.fig_save, obj.ax_save = canvas, fig, ax
        obj.dpi = fig.get_dpi()
        return obj.__dict__[self.name]


def _defer_visualizer_figure() -> None:
    import functools
    import inspect

    from mmengine.visualization import Visualizer

    if getattr(Visualizer, "rewardseg_lazy_figure", False):
        return
    init, initialize_fig = Visualizer.__init__, Visualizer._initialize_fig
    signature = inspect.signature(init)

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        try:
            image = signature.bind(self, *args, **kwargs).arguments.get("image")
        except TypeError:
            image = None  # the original raises it
        if image is not None:  # set_image draws at the end of __init__: build it now
            return init(self, *args, **kwargs)
        self.__dict__["_initialize_fig"] = lambda fig_cfg: (_PENDING_FIGURE,) * 3
        try:
            init(self, *args, **kwargs)
        finally:
            self.__dict__.pop("_initialize_fig", None)
            for name in _FIGURE_ATTRIBUTES:
                if self.__dict__.get(name) is _PENDING_FIGURE:
                    del self.__dict__[name]

    for name in _FIGURE_ATTRIBUTES:
        setattr(Visualizer, name, _LazyFigureAttribute(name, initialize_fig))
    Visualizer.__init__ = __init__
    Visualizer.rewardseg_lazy_figure = True


#: mmseg modules (importing -> imported) whose top-level ``from ... import`` of what only
#: some models use is deferred to its first use (docstring, item 7).
DEFERRED_IMPORTS = {
    "mmseg.datasets.transforms.transforms": ("scipy.ndimage",),  # BioMedicalGaussianBlur
    "mmseg.models.assigners.hungarian_assigner": ("scipy.optimize",),  # Mask2Former
    "mmseg.models.backbones.beit": ("scipy.interpolate",),  # `from scipy import interpolate`
    "mmseg.models.losses.huasdorff_distance_loss": ("scipy.ndimage",),
    "mmseg.utils": ("mmseg.utils.tokenizer",),  # CLIP's tokenizer, built at its import
    "mmseg.models.text_encoder.clip_text_encoder": ("mmseg.utils.tokenizer",),
}


class _Deferred:
    """Stands for ``name`` of module ``module`` (``from module import name``) until its
    first use (a call, an attribute), which imports it and hands over to the real object
    (a function, a class, a submodule)."""

    def __init__(self, module: str, name: str):
        self._module, self._name = module, name

    def _resolve(self):
        module = importlib.import_module(self._module)
        try:
            return getattr(module, self._name)
        except AttributeError:  # a submodule not imported yet
            return importlib.import_module(f"{self._module}.{self._name}")

    def __call__(self, *args, **kwargs):
        return self._resolve()(*args, **kwargs)

    def __getattr__(self, attr):
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        return getattr(self._resolve(), attr)

    def __repr__(self):
        return f"<rewardseg: {self._module}.{self._name}, imported at its first use>"


class _DeferringFrom:
    """What a deferring ``__import__`` returns to ``from module import ...``: the names
    it defers as :class:`_Deferred`, the others from the imported module."""

    def __init__(self, module: str, deferred, imported):
        self._module, self._deferred, self._imported = module, deferred, imported

    def __getattr__(self, name):
        if name in self._deferred:
            return _Deferred(self._module, name)
        if self._imported is None or (name.startswith("__") and name.endswith("__")):
            raise AttributeError(name)
        return getattr(self._imported, name)


def _absolute(name: str, globals, level: int) -> str:
    if not level:
        return name
    package = (globals or {}).get("__package__") or ""
    base = package.rsplit(".", level - 1)[0] if level > 1 else package
    return f"{base}.{name}" if name else base


def _deferring_import(deferred_modules):
    """An ``__import__`` for a module of :data:`DEFERRED_IMPORTS`: ``from X import n``
    defers ``n`` when ``X`` or ``X.n`` is one of ``deferred_modules`` and not imported
    yet; anything else imports as usual."""
    import builtins

    def __import__(name, globals=None, locals=None, fromlist=(), level=0):
        if fromlist:
            module = _absolute(name, globals, level)
            pending = [m for m in deferred_modules if m not in sys.modules]
            if module in pending:
                return _DeferringFrom(module, set(fromlist), None)
            deferred = {n for n in fromlist if f"{module}.{n}" in pending}
            if deferred:
                rest = tuple(n for n in fromlist if n not in deferred)
                imported = builtins.__import__(name, globals, locals, rest or ("__name__",),
                                               level)
                return _DeferringFrom(module, deferred, imported)
        return builtins.__import__(name, globals, locals, fromlist, level)

    return __import__


class _DeferringLoader(importlib.abc.Loader):
    """Runs a module of :data:`DEFERRED_IMPORTS` with :func:`_deferring_import` as its
    ``__import__``, then gives it the usual builtins back (what its functions import at
    run time imports as usual)."""

    def __init__(self, loader, deferred_modules):
        self.loader, self.deferred_modules = loader, deferred_modules

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        import builtins

        module.__dict__["__builtins__"] = dict(
            vars(builtins), __import__=_deferring_import(self.deferred_modules))
        try:
            self.loader.exec_module(module)
        finally:
            module.__dict__["__builtins__"] = builtins

    def __getattr__(self, name):  # get_code, get_source, is_package, ... of the file loader
        return getattr(self.loader, name)


class _DeferringFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        deferred_modules = DEFERRED_IMPORTS.get(name)
        if deferred_modules is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if hasattr(spec.loader, "exec_module"):
                    spec.loader = _DeferringLoader(spec.loader, deferred_modules)
                return spec
        return None


_DEFERRING = _DeferringFinder()


def _defer_optional_mmseg_imports() -> None:
    if _DEFERRING not in sys.meta_path:
        sys.meta_path.insert(0, _DEFERRING)


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
