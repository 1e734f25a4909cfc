"""mmengine's configs: ``mmseg::`` lookups without ``pkg_resources``, memoised formatting,
``_base_/`` configs found directly.

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
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import warnings


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
