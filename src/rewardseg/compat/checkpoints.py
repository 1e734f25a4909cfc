"""Checkpoints loaded as weights only: mmengine's loaders, :data:`CHECKPOINT_GLOBALS` and
:class:`CheckpointRefused`.

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
"""
from __future__ import annotations

import importlib
import os
import warnings

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
