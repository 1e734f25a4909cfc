"""Train or fine-tune an mmseg model with mmengine's Runner (the ``rewardseg train`` CLI)."""
from __future__ import annotations

import copy
import os
from typing import Optional, Sequence

from mmengine.config import Config, DictAction
from mmengine.utils import import_modules_from_strings

import rewardseg  # noqa: F401  (compat layer first)

EXTENSION_MODULE = "rewardseg.models"
DEFAULT_CUSTOM_HOOKS = ("NonFiniteLossHook", "RNGStateHook")


def _replace_syncbn(node):
    """SyncBN needs a process group; a single process trains with BN instead."""
    if isinstance(node, dict):
        if node.get("type") == "SyncBN":
            node["type"] = "BN"
        for value in node.values():
            _replace_syncbn(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _replace_syncbn(value)


def prepare_config(cfg: Config, work_dir: str, seed: Optional[int] = None,
                   resume: bool = False, load_from: Optional[str] = None,
                   launcher: str = "none") -> Config:
    """Return a copy of ``cfg`` ready for ``Runner.from_cfg``.

    Adds ``rewardseg.models`` to ``custom_imports``, the NaN/inf guard and the RNG-state
    hook, the work dir, seed, resume/load and launcher; SyncBN becomes BN when not
    distributed.
    """
    cfg = copy.deepcopy(cfg)
    cfg.work_dir = os.path.abspath(work_dir)
    imports = dict(cfg.get("custom_imports") or {})
    names = list(imports.get("imports", []))
    if EXTENSION_MODULE not in names:
        names.append(EXTENSION_MODULE)
    cfg.custom_imports = dict(imports=names, allow_failed_imports=False)
    # Config.fromfile imports custom_imports only for files; do it here for the rest.
    import_modules_from_strings(names, allow_failed_imports=False)
    hooks = list(cfg.get("custom_hooks") or [])
    present = {h.get("type") for h in hooks}
    hooks += [dict(type=name) for name in DEFAULT_CUSTOM_HOOKS if name not in present]
    cfg.custom_hooks = hooks
    if seed is not None:
        randomness = dict(cfg.get("randomness") or {})
        randomness["seed"] = int(seed)
        cfg.randomness = randomness
    cfg.resume = bool(resume)
    if load_from is not None:
        cfg.load_from = load_from
    cfg.launcher = launcher
    if launcher == "none":
        model = cfg.model.to_dict() if hasattr(cfg.model, "to_dict") else dict(cfg.model)
        _replace_syncbn(model)
        cfg.model = model
    return cfg


def load_config(path: str, cfg_options: Optional[dict] = None) -> Config:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} does not exist")
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def train(config: str, work_dir: str, seed: Optional[int] = None, resume: bool = False,
          load_from: Optional[str] = None, launcher: str = "none",
          cfg_options: Optional[dict] = None):
    """Build a Runner from ``config`` and train; returns the runner."""
    from mmengine.runner import Runner

    cfg = prepare_config(load_config(config, cfg_options), work_dir, seed=seed,
                         resume=resume, load_from=load_from, launcher=launcher)
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


def add_train_arguments(parser) -> None:
    parser.add_argument("config", help="mmseg python config (configs/mmseg/...)")
    parser.add_argument("--work-dir", required=True, help="checkpoints and logs go here")
    parser.add_argument("--seed", type=int, default=None, help="random seed")
    parser.add_argument("--resume", action="store_true",
                        help="resume from the latest checkpoint in --work-dir "
                             "(or from --load-from)")
    parser.add_argument("--load-from", default=None,
                        help="initialise weights from this checkpoint")
    parser.add_argument("--launcher", default="none",
                        choices=["none", "pytorch", "slurm", "mpi"],
                        help="distributed launcher (mmengine)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default=None,
                        help="override config keys, e.g. model.decode_head.loss_decode.0.alpha=0.2")


