"""Dataset sources: one module per source, found by looking at this package, listed nowhere.

A *source* is a module of this package that defines ``OPTIONS`` and ``prepare`` (the
helper modules ``archive``, ``labels``, ``meta`` and ``options`` define neither). Each
declares, without importing torch or mmseg:

* ``OPTIONS``: dataset-block key -> JSON-schema property (``type``, ``default`` where
  there is one, ``description``; see :mod:`.options` for the keywords);
* ``CLASSES_OPTIONS``: the valid values of the block's ``classes``, default first
  (``None``: the key may be left out);
* ``SECRETS``: environment variables it reads (never a config key or a command-line flag);
* ``prepare(root, dataset, progress=True, workers=0) -> dict``: build ``root`` from the
  study's ``dataset`` block (missing keys: the defaults of ``OPTIONS``) and write
  ``root/meta.json`` last (:mod:`.meta`: one dialect for all); returns that dict;
* ``describe(dataset) -> str``: one line for the slides;
* optionally ``preflight(root, dataset, environ, workdir) -> [(missing, what to do)]``:
  what ``prepare`` would lack (credentials, a manual download, a ``local_copy``), checked
  before any job of the workflow (:func:`preflight`; without it: every ``SECRETS``
  variable must be set).

Adding a dataset is adding such a module: :data:`SOURCES`, the study schema
(:func:`dataset_schema`), the checks (:func:`check_dataset`), ``rewardseg prepare`` and the
workflow's data rule all read the table built here. Raw archives live in the source's
``raw_dir`` so that a converted tree can be rebuilt without downloading again.
"""
from __future__ import annotations

import copy
import importlib
import json
import pkgutil
from types import ModuleType
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from .archive import DataError  # noqa: F401
from .meta import load_meta  # noqa: F401
from .options import KEYWORDS, check_value, resolve

#: a dataset's name: its folder under data/
NAME_PATTERN = "^[A-Za-z0-9_.-]+$"
_NAME = {"type": "string", "pattern": NAME_PATTERN, "description": "folder under data/"}
#: what a source module declares
_DECLARED = ("OPTIONS", "CLASSES_OPTIONS", "SECRETS", "prepare", "describe")


def _check_source(name: str, module: ModuleType) -> None:
    """A source module's declarations are complete and consistent (a TypeError naming
    the module otherwise: a programming error, found at import)."""
    where = f"{module.__name__}"
    missing = [a for a in _DECLARED if not hasattr(module, a)]
    if missing:
        raise TypeError(f"{where}: a dataset source also needs {', '.join(missing)}")
    settings = module.CLASSES_OPTIONS
    if not isinstance(settings, tuple) or not settings:
        raise TypeError(f"{where}.CLASSES_OPTIONS must be a non-empty tuple")
    if not isinstance(module.SECRETS, tuple):
        raise TypeError(f"{where}.SECRETS must be a tuple of variable names")
    if hasattr(module, "preflight") and not callable(module.preflight):
        raise TypeError(f"{where}.preflight must be a function")
    for key, spec in module.OPTIONS.items():
        if key in ("name", "source", "classes"):
            raise TypeError(f"{where}.OPTIONS: {key!r} is a common key of every source")
        unknown = set(spec) - KEYWORDS
        if unknown or "description" not in spec:
            raise TypeError(f"{where}.OPTIONS[{key!r}]: needs a description and uses only "
                            f"{', '.join(sorted(KEYWORDS))} (got {', '.join(sorted(spec))})")
        if spec.get("default") is not None:
            check_value(f"{where}.OPTIONS[{key!r}] default", spec["default"], spec)


def discover(path: Optional[Iterable[str]] = None) -> Dict[str, ModuleType]:
    """The source modules of this package (``path``: its ``__path__`` by default), by
    name, sorted: every module that defines both ``OPTIONS`` and ``prepare``."""
    found = {}
    for info in pkgutil.iter_modules(list(__path__ if path is None else path)):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if isinstance(getattr(module, "OPTIONS", None), dict) and \
                callable(getattr(module, "prepare", None)):
            _check_source(info.name, module)
            found[info.name] = module
    return dict(sorted(found.items()))


_TABLE: Dict[str, ModuleType] = discover()
#: the names of the dataset sources (``dataset.source``)
SOURCES: Tuple[str, ...] = tuple(_TABLE)


def source_module(name: Any, where: str = "dataset") -> ModuleType:
    """The module of source ``name``; a ValueError naming ``<where>.source`` and the
    valid sources otherwise."""
    if not isinstance(name, str) or name not in _TABLE:
        raise ValueError(f"{where}.source {name!r} is not a dataset source (one of: "
                         f"{', '.join(_TABLE)})")
    return _TABLE[name]


def _class_settings(module: ModuleType) -> List[str]:
    return [c for c in module.CLASSES_OPTIONS if c is not None]


def dataset_keys(source: str) -> Tuple[str, ...]:
    """The keys a dataset block of ``source`` may have."""
    module = source_module(source)
    return (("name", "source") + (("classes",) if _class_settings(module) else ())
            + tuple(module.OPTIONS))


def check_dataset(dataset: Any, where: str = "dataset") -> None:
    """A ValueError with a one-line message naming the key (``<where>.<key>``) when the
    dataset block is not valid for its source: unknown source, a key that is not an
    option of the source, a ``classes`` value the source does not have, a bad value."""
    if not isinstance(dataset, dict):
        raise ValueError(f"{where} must be a mapping, got {type(dataset).__name__}")
    if "source" not in dataset:
        raise ValueError(f"{where}.source is missing (one of: {', '.join(_TABLE)})")
    source = dataset["source"]
    module = source_module(source, where)
    accepted = dataset_keys(source)
    for key in dataset:
        if key not in accepted and key != "classes":
            raise ValueError(f"{where}.{key} is not an option of source {source!r} (its "
                             f"options: {', '.join(accepted)})")
    if "name" in dataset:
        check_value(f"{where}.name", dataset["name"], _NAME)
    classes = dataset.get("classes", module.CLASSES_OPTIONS[0])
    if classes not in module.CLASSES_OPTIONS:
        valid = _class_settings(module)
        text = ", ".join(valid) + (" or leave it out" if None in module.CLASSES_OPTIONS
                                   else "") if valid else "leave it out"
        raise ValueError(f"{where}.classes {classes!r} is not valid for source {source!r} "
                         f"(valid: {text})")
    for key, spec in module.OPTIONS.items():
        if key in dataset:
            check_value(f"{where}.{key}", dataset[key], spec)


def settings(dataset: Dict[str, Any]) -> Dict[str, Any]:
    """The block with every option of its source filled in: its own values, else the
    defaults (``classes``: the first of the source's ``CLASSES_OPTIONS``)."""
    module = source_module(dataset.get("source"))
    out = {k: dataset[k] for k in ("name",) if k in dataset}
    out.update(source=dataset["source"],
               classes=dataset.get("classes", module.CLASSES_OPTIONS[0]))
    out.update(resolve(module.OPTIONS, dataset))
    return out


def prepare(root: str, dataset: Dict[str, Any], progress: bool = True,
            workers: int = 0) -> Dict[str, Any]:
    """Build the dataset of the study's ``dataset`` block in ``root`` with its source's
    ``prepare`` (after :func:`check_dataset`); returns the meta dict written last to
    ``root/meta.json``."""
    check_dataset(dataset)
    module = source_module(dataset["source"])
    return module.prepare(root, dataset, progress=progress, workers=workers)


def preflight(root: str, dataset: Dict[str, Any], environ: Mapping[str, str],
              workdir: str = ".") -> List[Tuple[str, str]]:
    """What building ``root`` from the ``dataset`` block would lack, as (what is missing,
    what to do) pairs, without touching the network: the source's own ``preflight``, or,
    for a source without one, each of its ``SECRETS`` that ``environ`` lacks. Relative
    paths (``root``, the block's folders) are taken from ``workdir``. Never a value of a
    variable."""
    module = source_module(dataset.get("source"))
    hook = getattr(module, "preflight", None)
    if hook is not None:
        return list(hook(root, dataset, environ, workdir))
    return [(f"{var} is not set (the {dataset['source']} source reads it)",
             f"export {var} in the shell that runs snakemake (never put it in a config or "
             "on the command line)") for var in module.SECRETS if not environ.get(var)]


def describe(dataset: Dict[str, Any]) -> str:
    """One line about the dataset for the slides, from its source."""
    return source_module(dataset.get("source")).describe(dataset)


def _default_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _merge(key: str, decls: List[Tuple[str, Dict[str, Any]]]) -> Dict[str, Any]:
    """One schema property from the sources' declarations of ``key``: a constraint is
    kept when every source has it (types: their union, enums: their union, minimum: the
    smallest); other differences are a TypeError. No ``default``: a validator that fills
    defaults in would give every study one source's options; the description gives each
    source's default instead."""
    out: Dict[str, Any] = {}
    words = [w for w in decls[0][1] if w not in ("default", "description")
             and all(w in spec for _, spec in decls)]
    for word in words:
        values = [spec[word] for _, spec in decls]
        if word == "type":
            types = list(dict.fromkeys(t for v in values for t in ([v] if isinstance(v, str)
                                                                   else v)))
            out[word] = types[0] if len(types) == 1 else types
        elif word == "enum":
            out[word] = list(dict.fromkeys(v for vs in values for v in vs))
        elif word == "minimum":
            out[word] = min(values)
        elif any(v != values[0] for v in values):
            raise TypeError(f"dataset option {key!r}: the sources "
                            f"{', '.join(s for s, _ in decls)} declare different {word!r}")
        else:
            out[word] = copy.deepcopy(values[0])
    texts: Dict[str, List[str]] = {}
    for source, spec in decls:
        text = spec["description"]
        if spec.get("default") not in (None, {}, []):
            text += f" (default {_default_text(spec['default'])})"
        texts.setdefault(text, []).append(source)
    out["description"] = "; ".join(f"{', '.join(s)}: {t}" for t, s in texts.items())
    return out


def _setting_default(module: ModuleType) -> str:
    first = module.CLASSES_OPTIONS[0]
    return "may be left out" if first is None else f"default {first}"


def dataset_schema() -> Dict[str, Any]:
    """The JSON-schema ``properties`` of a study's ``dataset`` block: ``name``,
    ``source`` (one of :data:`SOURCES`), ``classes`` (every source's class settings) and
    the union of the sources' ``OPTIONS`` (which key goes with which source is
    :func:`check_dataset`'s business)."""
    with_settings = {s: _class_settings(m) for s, m in _TABLE.items() if _class_settings(m)}
    props: Dict[str, Any] = {
        "name": dict(_NAME),
        "source": {"enum": list(_TABLE),
                   "description": "where the images come from: a module of rewardseg.data, "
                                  "whose OPTIONS are the other keys this block may have"},
        "classes": {"enum": list(dict.fromkeys(c for v in with_settings.values() for c in v)),
                    "description": "; ".join(f"{s}: {' | '.join(v)} ("
                                             + _setting_default(_TABLE[s]) + ")"
                                             for s, v in with_settings.items())},
    }
    decls: Dict[str, List[Tuple[str, Dict[str, Any]]]] = {}
    for source, module in _TABLE.items():
        for key, spec in module.OPTIONS.items():
            decls.setdefault(key, []).append((source, spec))
    for key, found in decls.items():
        props[key] = _merge(key, found)
    return props
