"""Train or fine-tune an mmseg model with mmengine's Runner (the ``rewardseg train`` CLI).

mmengine (hence torch) is imported by the functions that use it, not with this module:
``rewardseg stage`` needs :func:`distributed_rank` and :func:`torchrun_command` before
anything is built, and a job's start-up runs without automatic garbage collection from
its first heavy import on (:func:`collector_paused`). ``import rewardseg`` still applies
the compat layer before mmengine is imported."""
from __future__ import annotations

import contextlib
import copy
import gc
import os
from typing import TYPE_CHECKING, Optional, Sequence

import rewardseg  # noqa: F401  (compat layer first)

if TYPE_CHECKING:  # pragma: no cover
    from mmengine.config import Config

EXTENSION_MODULE = "rewardseg.models"
DEFAULT_CUSTOM_HOOKS = ("NonFiniteLossHook", "RNGStateHook")
# several processes: logged values over the global batch, BN statistics averaged
DISTRIBUTED_CUSTOM_HOOKS = ("AverageLogVarsHook", "SyncNormStatsHook")


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


def _seed_train_sampler(cfg: Config, seed: Optional[int]) -> None:
    """Give the training sampler ``seed`` unless its config names one (mmengine passes
    ``seed=None`` to the samplers under ``diff_rank_seed``; a given seed wins). Without a
    seed there is nothing to match: the sampler's broadcast seed is the same on every
    rank anyway."""
    loader = cfg.get("train_dataloader")
    if seed is None or not loader:
        return
    sampler = loader.get("sampler")
    if isinstance(sampler, dict) and sampler.get("seed") is None:
        sampler = dict(sampler)
        sampler["seed"] = int(seed)
        cfg.train_dataloader.sampler = sampler


def prepare_config(cfg: Config, work_dir: str, seed: Optional[int] = None,
                   resume: bool = False, load_from: Optional[str] = None,
                   launcher: str = "none") -> Config:
    """Return a copy of ``cfg`` ready for ``Runner.from_cfg``.

    Adds ``rewardseg.models`` to ``custom_imports``, the NaN/inf guard and the RNG-state
    hook, the work dir, seed, resume/load and launcher; SyncBN becomes BN when not
    distributed.

    Several processes (``launcher != 'none'``): ``randomness.diff_rank_seed`` is set, so
    mmengine seeds rank ``r`` with ``seed + r`` (``random``, numpy, torch): each rank
    draws its own reward-loss samples, dropout masks and augmentations instead of the
    same numbers as every other rank. That mmengine option also hands the data samplers
    ``seed=None`` (each then draws a seed on rank 0 and broadcasts it); the training
    sampler is given the run's seed explicitly instead, the seed a single process's
    sampler gets, so every rank shuffles with the same permutation as one process and
    the global batch of step ``t`` (rank ``r`` takes every ``W``-th index from ``r``)
    holds the same images as one process's batch with ``W`` times the batch size.
    Data-loader workers are seeded by mmengine with ``num_workers * rank + worker_id +
    seed + rank``: different on every rank either way. Two hooks are added too:
    ``AverageLogVarsHook`` (the logged losses and reward statistics are means over the
    global batch, not rank 0's images) and ``SyncNormStatsHook`` (plain BN layers'
    running statistics are averaged over the ranks before each checkpoint and
    validation, so that what is validated is what is saved).
    """
    cfg = copy.deepcopy(cfg)
    cfg.work_dir = os.path.abspath(work_dir)
    imports = dict(cfg.get("custom_imports") or {})
    names = list(imports.get("imports", []))
    if EXTENSION_MODULE not in names:
        names.append(EXTENSION_MODULE)
    cfg.custom_imports = dict(imports=names, allow_failed_imports=False)
    # Config.fromfile imports custom_imports only for files; do it here for the rest.
    from mmengine.utils import import_modules_from_strings

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
    import torch

    on_gpu = torch.cuda.is_available()
    if launcher == "none" or not on_gpu:
        # SyncBN needs a process group on GPUs; one process, or CPU processes (gloo),
        # train with plain BN.
        model = cfg.model.to_dict() if hasattr(cfg.model, "to_dict") else dict(cfg.model)
        _replace_syncbn(model)
        cfg.model = model
    if launcher != "none":
        randomness = dict(cfg.get("randomness") or {})
        randomness["diff_rank_seed"] = True
        cfg.randomness = randomness
        _seed_train_sampler(cfg, randomness.get("seed"))
        present = {h.get("type") for h in hooks}
        cfg.custom_hooks = hooks + [dict(type=name) for name in DISTRIBUTED_CUSTOM_HOOKS
                                    if name not in present]
        env_cfg = dict(cfg.get("env_cfg") or {})
        dist_cfg = dict(env_cfg.get("dist_cfg") or {})
        dist_cfg["backend"] = "nccl" if on_gpu else "gloo"
        env_cfg["dist_cfg"] = dist_cfg
        cfg.env_cfg = env_cfg
        if not on_gpu and cfg.get("model_wrapper_cfg") is None:
            # mmengine's default wrapper pins device_ids to a GPU
            cfg.model_wrapper_cfg = dict(type="MMDistributedDataParallel", device_ids=None,
                                         broadcast_buffers=False,
                                         find_unused_parameters=False)
    return cfg


def init_cpu_process_group(launcher: str) -> None:
    """mmengine's pytorch launcher calls ``torch.cuda.set_device``, which a CPU build of
    torch lacks; on a machine without GPUs start the gloo process group ourselves
    (mmengine then uses it as is).

    The group is destroyed when the interpreter exits: with torch 2.13 a process that
    exits with its gloo group alive aborts now and then (``terminate called without an
    active exception``, SIGABRT after the run's last line: torchrun reports a failed
    job; measured: 6 of 15 two-process toy runs, none with the group destroyed)."""
    import atexit

    import torch
    import torch.distributed as dist

    if launcher == "none" or torch.cuda.is_available() or dist.is_initialized():
        return
    dist.init_process_group(backend="gloo")
    atexit.register(_destroy_process_group)


def _destroy_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def collector_paused():
    """Automatic garbage collection off while a job starts up, yielding ``started``: call
    it when start-up is over (before training) to freeze what start-up built and turn
    collection back on.

    Start-up imports torch, mmengine and mmseg and builds the model: about half a million
    objects the collector tracks, which live as long as the process. Each full collection
    scans them all (0.1-0.25 s on a 2-core CPU; measured: seven before the first
    iteration of a smoke tuning job, two of them mmengine's own ``gc.collect()`` after
    building each dataset, ~0.65 s with the younger generations). Frozen
    (``gc.freeze``), they are not scanned again, in the first iteration or any later
    one. Garbage collection only frees memory: nothing a run computes depends on when it
    runs. On leaving, collection is as it was and the frozen objects are collectable
    again (a process may run several jobs: the tests)."""
    was_enabled = gc.isenabled()
    frozen = []

    def started():
        if not frozen:
            gc.freeze()
            frozen.append(True)
        if was_enabled:
            gc.enable()

    gc.disable()
    try:
        yield started
    finally:
        if was_enabled:
            gc.enable()
        if frozen:
            gc.unfreeze()


def distributed_rank() -> int:
    """This process's rank under torchrun (0 when not distributed)."""
    return int(os.environ.get("RANK", "0"))


def torchrun_command(nproc: int, module_args: Sequence[str]) -> list:
    """``python -m torch.distributed.run`` launching ``python -m rewardseg ...`` on
    ``nproc`` local processes (one per GPU; gloo processes on a CPU)."""
    import sys

    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={int(nproc)}", "-m", "rewardseg", *module_args]


def load_config(path: str, cfg_options: Optional[dict] = None) -> Config:
    from mmengine.config import Config

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
    with collector_paused() as started:
        from mmengine.runner import Runner

        cfg = prepare_config(load_config(config, cfg_options), work_dir, seed=seed,
                             resume=resume, load_from=load_from, launcher=launcher)
        init_cpu_process_group(launcher)
        runner = Runner.from_cfg(cfg)
        started()
        runner.train()
    return runner


def parse_cfg_options(items: Optional[Sequence[str]]) -> Optional[dict]:
    """``KEY=VALUE`` items as mmengine's ``DictAction`` parses them (lists, tuples)."""
    if not items:
        return None
    from mmengine.config import DictAction

    options = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--cfg-options {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        options[key] = DictAction._parse_iterable(value)
    return options


