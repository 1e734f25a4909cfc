"""mmengine hooks used by rewardseg configs, and the workflow's console progress line."""
from __future__ import annotations

import json
import logging
import math
import os
from typing import Dict, List, Optional

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmseg.registry import HOOKS

from .. import paths
from .losses import process_world


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Stop training with an error naming the iteration when the loss is NaN or inf.

    Runs before the checkpoint hook, so the broken weights are never saved.
    """

    priority = "ABOVE_NORMAL"

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if not outputs or "loss" not in outputs:
            return
        loss = outputs["loss"]
        value = float(loss.detach() if torch.is_tensor(loss) else loss)
        if not math.isfinite(value):
            parts = ", ".join(f"{k}={float(v.detach() if torch.is_tensor(v) else v):.4g}"
                              for k, v in outputs.items()
                              if k != "loss" and "loss" in k)
            raise FloatingPointError(
                f"non-finite training loss {value} at iteration {runner.iter + 1}"
                + (f" ({parts})" if parts else "")
                + "; stopping before the weights are saved (lower the learning rate or "
                  "check the data)")


def _checkpoint_due(runner, by_epoch: bool) -> bool:
    """Whether a ``CheckpointHook`` saves a checkpoint at the end of this training
    iteration (``by_epoch=False``) or epoch (``True``); the same test the hook makes."""
    from mmengine.hooks import CheckpointHook

    for hook in getattr(runner, "hooks", ()):
        if not isinstance(hook, CheckpointHook) or bool(hook.by_epoch) != by_epoch:
            continue
        begin = getattr(hook, "save_begin", 0)
        if by_epoch:
            due = hook.every_n_epochs(runner, hook.interval, begin) or (
                hook.save_last and hook.is_last_train_epoch(runner))
        else:
            due = hook.every_n_train_iters(runner, hook.interval, begin) or (
                hook.save_last and hook.is_last_train_iter(runner))
        if due:
            return True
    return False


def _saves_best(runner) -> bool:
    from mmengine.hooks import CheckpointHook

    return any(isinstance(h, CheckpointHook) and getattr(h, "save_best", None) is not None
               for h in getattr(runner, "hooks", ()))


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Save the RNG states in checkpoints and restore them when training resumes.

    mmengine re-seeds on resume but does not restore the generator states, so dropout
    masks and the reward losses' samples would differ from an uninterrupted run. The
    torch generators (CPU, CUDA) are restored just before the first resumed
    iteration; numpy and ``random`` are left to mmengine, whose data-loader fast-forward
    already replays them. Validation is made RNG-neutral (the torch state is put back
    after it: building the val loader's iterator draws from the global generator), so a
    run resumed from a checkpoint saved just before a validation matches one that ran it.

    Several processes: every rank draws from its own stream (``prepare_config`` sets
    mmengine's ``randomness.diff_rank_seed``), and the checkpoint keeps all of them:
    ``checkpoint['rewardseg_rng'] = {'world_size': W, 'ranks': [state_0, ...]}``. Only
    rank 0 writes checkpoints (``Runner.save_checkpoint`` is ``master_only``, so
    ``before_save_checkpoint`` runs on rank 0 alone): the states are therefore gathered
    from every rank, collectively, just before a ``CheckpointHook`` is due to save (in
    ``after_train_iter`` / ``after_train_epoch``, which run on every rank and before the
    checkpoint hook; and in ``before_val`` when a best checkpoint may be saved during
    validation). On resume each rank restores its own entry. A checkpoint written with
    another number of processes restores nothing (a warning says the streams restart);
    a single-process checkpoint of the earlier format (``{'torch': ..., 'cuda': ...}``)
    still reads as a world of one. A checkpoint saved during validation (a best one)
    keeps the state validation returns to.
    """

    priority = "VERY_HIGH"
    KEY = "rewardseg_rng"

    def __init__(self):
        self._pending = None
        self._before_val = None
        self._gathered = None  # (runner.iter, [state of each rank]) for the next save
        self._val_gathered = None

    @staticmethod
    def _state():
        state = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    @staticmethod
    def _restore(state):
        """Put a saved state back. The generators take CPU byte tensors only, and on a GPU
        mmengine's ``Runner.resume`` loads the whole checkpoint onto the GPU
        (``map_location=get_device()``), these states included: they are brought back
        to the CPU first (without it every resume on a GPU failed: "RNG state must be a
        torch.ByteTensor")."""
        torch.set_rng_state(state["torch"].cpu())
        if "cuda" in state and torch.cuda.is_available():
            if len(state["cuda"]) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])

    @classmethod
    def _gather(cls, state=None) -> list:
        """Every rank's state, in rank order (a collective: all ranks must call it)."""
        import torch.distributed as dist

        state = cls._state() if state is None else state
        _, world = process_world()
        if world == 1:
            return [state]
        states = [None] * world
        dist.all_gather_object(states, state)
        return states

    # ------------------------------------------------------------------ validation
    def before_val(self, runner) -> None:
        self._before_val = self._state()
        if process_world()[1] > 1 and _saves_best(runner):
            self._val_gathered = self._gather(self._before_val)

    def after_val(self, runner) -> None:
        if self._before_val is not None:
            self._restore(self._before_val)
            self._before_val = None
        self._val_gathered = None

    # ------------------------------------------------------------------ saving
    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self._gathered = None
        if process_world()[1] > 1 and _checkpoint_due(runner, by_epoch=False):
            self._gathered = (runner.iter, self._gather())

    def after_train_epoch(self, runner) -> None:
        self._gathered = None
        if process_world()[1] > 1 and _checkpoint_due(runner, by_epoch=True):
            self._gathered = (runner.iter, self._gather())

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        rank, world = process_world()
        own = self._before_val if self._before_val is not None else self._state()
        if world == 1:
            states = [own]
        elif self._before_val is not None and self._val_gathered is not None:
            states = list(self._val_gathered)
        elif self._before_val is None and self._gathered is not None \
                and self._gathered[0] == runner.iter:
            states = list(self._gathered[1])
            if not torch.equal(states[rank]["torch"], own["torch"]):
                print_log("RNGStateHook: the torch RNG was drawn from between gathering "
                          "the ranks' states and saving the checkpoint; a resumed run "
                          "will not continue identically", logger="current",
                          level=logging.WARNING)
        else:  # a save no CheckpointHook announced: only this rank's state is known
            print_log("RNGStateHook: checkpoint saved outside a CheckpointHook's schedule; "
                      "it keeps the RNG state of rank 0 only (the other ranks' streams "
                      "restart on resume)", logger="current", level=logging.WARNING)
            states = [None] * world
        states[rank] = own
        checkpoint[self.KEY] = {"world_size": world, "ranks": states}

    # ------------------------------------------------------------------ resuming
    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._pending = checkpoint.get(self.KEY)

    @staticmethod
    def _ranks(saved) -> list:
        """The list of per-rank states of either checkpoint format."""
        if isinstance(saved, dict) and "ranks" in saved:
            return list(saved["ranks"])
        return [saved]  # the single-process format: one state dict

    def before_train(self, runner) -> None:
        saved, self._pending = self._pending, None
        if saved is None or runner.iter == 0:  # a plain load_from: keep this seed's RNG
            return
        rank, world = process_world()
        states = self._ranks(saved)
        if len(states) != world:
            print_log(f"RNGStateHook: the checkpoint holds the RNG states of {len(states)} "
                      f"process(es) but {world} are running: the RNG streams restart from "
                      "the seed, so the numbers will differ from an uninterrupted run",
                      logger="current", level=logging.WARNING)
            return
        if states[rank] is None:
            print_log(f"RNGStateHook: the checkpoint has no RNG state for rank {rank}: its "
                      "stream restarts from the seed", logger="current",
                      level=logging.WARNING)
            return
        self._restore(states[rank])


def _local_norm_buffers(model) -> list:
    """The running statistics of the model's plain batch-norm layers: each process
    updates its own (``SyncBatchNorm`` keeps them equal on every rank already)."""
    from torch.nn.modules.batchnorm import SyncBatchNorm, _BatchNorm

    model = getattr(model, "module", model)
    buffers = []
    for module in model.modules():
        if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNorm) \
                and module.track_running_stats and module.running_mean is not None:
            buffers += [module.running_mean, module.running_var]
    return buffers


@HOOKS.register_module()
class SyncNormStatsHook(Hook):
    """Several processes with plain BatchNorm (CPU gloo runs, where ``prepare_config``
    turns SyncBN into BN): average the BN running statistics over the ranks before each
    checkpoint and each validation, so that what is validated is what is saved.

    Every rank updates its running mean / variance from its own images, and only rank
    0's are saved; without this, each rank validated its share of the val set with its
    own statistics (a model no checkpoint holds), and a resumed run's validations
    differed from an uninterrupted run's (every rank restarts from rank 0's saved
    statistics). Averaged just before a ``CheckpointHook`` saves (in ``after_train_iter``
    / ``after_train_epoch``, ahead of the checkpoint hook) and in ``before_val`` when
    not already done for this iteration; training itself is not affected (BN normalises
    a training batch with its own statistics). Nothing happens in one process or when
    every norm layer is ``SyncBatchNorm``. mmengine's ``SyncBuffersHook`` averages only
    before validation (after the checkpoint is saved), and every buffer, integer ones
    included.
    """

    priority = "NORMAL"  # after_train_iter before CheckpointHook (VERY_LOW)

    def __init__(self):
        self._synced_at = None  # runner.iter at which every rank has the same statistics

    @staticmethod
    def _average(runner) -> None:
        import torch.distributed as dist
        from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

        buffers = _local_norm_buffers(runner.model)
        _, world = process_world()
        if world == 1 or not buffers:
            return
        # summed in float64: exact for equal values (a mean of identical statistics
        # leaves them unchanged, whatever the number of ranks)
        flat = _flatten_dense_tensors([b.data.double() for b in buffers])
        dist.all_reduce(flat)
        flat.div_(world)
        for buf, value in zip(buffers, _unflatten_dense_tensors(flat, buffers)):
            buf.data.copy_(value)

    def before_train(self, runner) -> None:
        # weights from init (broadcast by mmengine), load_from or resume: equal on all ranks
        self._synced_at = runner.iter

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if process_world()[1] > 1 and _checkpoint_due(runner, by_epoch=False):
            self._average(runner)
            self._synced_at = runner.iter + 1  # the loop counts this iteration next

    def after_train_epoch(self, runner) -> None:
        if process_world()[1] > 1 and _checkpoint_due(runner, by_epoch=True):
            self._average(runner)
            self._synced_at = runner.iter

    def before_val(self, runner) -> None:
        if process_world()[1] > 1 and self._synced_at != runner.iter:
            self._average(runner)
            self._synced_at = runner.iter


@HOOKS.register_module()
class AverageLogVarsHook(Hook):
    """Several processes: make the logged training values global-batch means.

    mmengine logs (and ``ValMetricsRecorder`` records) the ``outputs`` of rank 0's
    ``train_step``: the losses and reward statistics of rank 0's images only. For means
    over images (the losses, ``reward``, ``adv_mean``, ``adv_sq``) the average over the
    ranks is the global batch's value, since every rank has the same number of images:
    with ``batch_loo`` the local ``loss`` is not even on the right scale (the advantages
    sum to zero over the global batch, not over one rank's images). ``adv_std`` and the
    accuracies become the mean of the ranks' values. Runs first (``HIGHEST``), before
    mmengine's ``RuntimeInfoHook`` hands the values to the logger; a NaN on any rank
    then reaches every rank's ``NonFiniteLossHook``, so all stop together.
    """

    priority = "HIGHEST"

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        import torch.distributed as dist

        _, world = process_world()
        if world == 1 or not outputs:
            return
        keys = sorted(outputs)
        first = next(iter(outputs.values()))
        device = first.device if isinstance(first, torch.Tensor) else "cpu"
        values = torch.stack([torch.as_tensor(outputs[k], dtype=torch.float64).detach()
                              .to(device).reshape(()) for k in keys])
        dist.all_reduce(values)
        values /= world
        for key, value in zip(keys, values):
            old = outputs[key]
            outputs[key] = value.to(old.dtype) if isinstance(old, torch.Tensor) else float(value)


@HOOKS.register_module()
class StopAtHook(Hook):
    """End training after iteration ``stop_at``, its checkpoint saved (``CheckpointHook``,
    ``VERY_LOW``, runs before this ``LOWEST`` hook) and its validation run (the loop
    validates before it looks at ``stop_training``). A pretraining run in parts, one job
    each (``rewardseg stage --stop-at``), so that tuning runs start as soon as their
    start checkpoint exists; the next part resumes from that checkpoint with the same
    schedule, and ends with the numbers of an uninterrupted run."""

    priority = "LOWEST"

    def __init__(self, stop_at: int):
        self.stop_at = int(stop_at)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if runner.iter + 1 >= self.stop_at:
            runner.train_loop.stop_training = True


__all__ = ["AverageLogVarsHook", "NonFiniteLossHook", "RNGStateHook", "StopAtHook",
           "SyncNormStatsHook"]


PROGRESS_FD = "REWARDSEG_PROGRESS_FD"


def report_progress(line: str) -> None:
    """One line on the console of the workflow (file descriptor ``$REWARDSEG_PROGRESS_FD``,
    which the training rules point at snakemake's stderr while the job's own output goes
    to its log); nothing when unset or closed."""
    fd = os.environ.get(PROGRESS_FD)
    if not fd:
        return
    try:
        os.write(int(fd), (line + "\n").encode())
    except (OSError, ValueError):
        pass


@HOOKS.register_module()
class ValMetricsRecorder(Hook):
    """Append every validation result, with its training iteration, to a JSON-lines file
    (default: ``paths.val_metrics(<work_dir>)``, ``val_metrics.jsonl``); also records the
    training statistics logged since the previous validation (mean of each scalar).

    The statistics not yet recorded travel in every checkpoint
    (``checkpoint['rewardseg_val_train'] = {'step': n, 'train': {key: [float, ...]}}``:
    plain lists, which the weights-only loader accepts), so a resumed run records the
    same means as an uninterrupted one. At a step that both checkpoints and validates,
    mmengine saves the checkpoint first (``CheckpointHook.after_train_iter``, after this
    hook's) and validates after the iteration's hooks: the checkpoint holds exactly what
    that validation records. On resume they are restored unless the validation of the
    checkpoint's step is already in the file (it recorded them)."""

    priority = "LOW"
    KEY = "rewardseg_val_train"

    def __init__(self, filename: Optional[str] = None, step=None):
        self.filename = filename  # None: paths.val_metrics
        self.step = step  # fixed step (evaluating a released checkpoint outside training)
        self._train: Dict[str, List[float]] = {}
        self._loaded = None  # the checkpoint's pending statistics, until before_train

    def _path(self, runner) -> str:
        if self.filename is None:
            return paths.val_metrics(runner.work_dir)
        return os.path.join(runner.work_dir, self.filename)

    def _recorded_steps(self, runner):
        path = self._path(runner)
        if not os.path.isfile(path):
            return set()
        with open(path) as fh:
            return {json.loads(line)["step"] for line in fh if line.strip()}

    @staticmethod
    def _val_due(runner, step: int) -> bool:
        loop = runner.train_loop
        return runner.val_loop is not None and step >= loop.val_begin and (
            step % loop.val_interval == 0 or step == loop.max_iters)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint[self.KEY] = {
            "step": int(checkpoint.get("meta", {}).get("iter", runner.iter)),
            "train": {str(k): [float(x) for x in v] for k, v in self._train.items()}}

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._loaded = checkpoint.get(self.KEY)

    def before_train(self, runner):
        """Restore the statistics a resumed checkpoint holds; and, for a run killed
        between saving a checkpoint and validating it (it resumes at a step whose
        validation never happened), run that validation now, so no point of the curve
        (nor its training statistics) is lost."""
        saved, self._loaded = self._loaded, None
        step = runner.iter
        if step == 0:  # a fresh run, or a plain load_from (a start checkpoint)
            return
        recorded = self._recorded_steps(runner)
        due = self._val_due(runner, step)
        if isinstance(saved, dict) and saved.get("step") == step \
                and not (due and step in recorded):
            self._train = {k: list(v) for k, v in (saved.get("train") or {}).items()}
        if due and step not in recorded:
            runner.val_loop.run()

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        for key, value in (outputs or {}).items():
            value = value.detach() if hasattr(value, "detach") else value
            self._train.setdefault(key, []).append(float(value))

    def after_val_epoch(self, runner, metrics=None):
        record = {"step": int(runner.iter if self.step is None else self.step),
                  "metrics": {k: float(v) for k, v in (metrics or {}).items()},
                  "train": {k: float(np.mean(v)) for k, v in self._train.items()}}
        self._train = {}
        if runner.rank != 0:
            return
        path = self._path(runner)
        with open(path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        total = getattr(runner.train_loop, "max_iters", None) if self.step is None else None
        miou = record["metrics"].get("mIoU", float("nan"))
        report_progress(f"{os.path.relpath(runner.work_dir)}: step {record['step']}"
                        + (f"/{total}" if total else "") + f", val mIoU {miou:.2f}")
