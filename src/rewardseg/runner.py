"""Running one job of the study: train a run spec (resuming when its folder has a last
checkpoint), or download and evaluate released pretraining checkpoints; ``run.json``
written last marks the run complete."""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from . import paths
from .fileio import write_json_atomic
from .runconfig import build_run_config
from .study import StudyError


def run_stage(spec: Dict[str, Any], work_dir: str, launcher: str = "none",
              stop_at: Optional[int] = None, threads: int = 0) -> Dict[str, Any]:
    """Train one run; resumes from ``work_dir``'s last checkpoint when there is one.

    Writes ``work_dir/run.json`` (spec, seed, git commit, package versions, wall time)
    last and atomically: the workflow takes the run as complete only when it exists.
    ``stop_at``: train only up to that iteration (a checkpoint step, before ``iters``;
    the schedule stays the full run's) and write ``part_<stop_at>.json`` instead: one part
    of a pretraining (:func:`rewardseg.paths.pretrain_part`). ``threads``: torch's CPU
    threads (0: leave torch's setting), set before anything is built. Start-up (imports,
    config, model, checkpoint) runs without automatic garbage collection
    (:func:`rewardseg.train.collector_paused`).
    """
    from .train import collector_paused

    with collector_paused() as started:
        if threads:
            import torch

            torch.set_num_threads(threads)
        return _run_stage(spec, work_dir, launcher, stop_at, started)


def _run_stage(spec: Dict[str, Any], work_dir: str, launcher: str, stop_at: Optional[int],
               started) -> Dict[str, Any]:
    from mmengine.runner import Runner

    from .train import distributed_rank, init_cpu_process_group, prepare_config

    os.makedirs(work_dir, exist_ok=True)
    record_path = paths.run_record(work_dir)
    rank = distributed_rank()
    if stop_at is not None:
        stop_at = int(stop_at)
        if spec.get("released") or not 0 < stop_at < spec["iters"] or \
                stop_at % spec["checkpoint_interval"]:
            raise StudyError(f"--stop-at {stop_at}: expected a checkpoint step "
                             f"(a multiple of {spec['checkpoint_interval']}) below the "
                             f"run's {spec['iters']} iterations, of a run trained here")
        record_path = paths.part_record(work_dir, stop_at)
    if rank == 0 and os.path.exists(record_path):
        os.remove(record_path)  # being re-run: no stale completion marker
    if spec.get("released"):
        started()  # a runner per checkpoint: collected as usual
        return evaluate_released(spec, work_dir, launcher=launcher)
    resume_from, start_iter = None, 0
    if os.path.isfile(paths.last_checkpoint(work_dir)):
        resume_from, start_iter = resume_point(work_dir, spec.get("load_from"), rank=rank)
    if stop_at is not None and start_iter >= stop_at:
        # already past it (the run went on in an earlier job): its checkpoint is the part
        if not os.path.isfile(paths.checkpoint(work_dir, stop_at)):
            raise StudyError(f"{work_dir} is at iteration {start_iter}, past {stop_at}, but "
                             f"{os.path.basename(paths.checkpoint(work_dir, stop_at))} is "
                             "missing: remove the folder to train it again")
        return _finish_run(record_path, spec, True, time.time(), stop_at, start_iter=stop_at)
    resume = resume_from is not None
    load_from = resume_from if resume else spec.get("load_from")
    if not resume and load_from and not os.path.isfile(load_from):
        raise StudyError(f"start checkpoint {load_from!r} does not exist (run the pretraining)")
    cfg = prepare_config(build_run_config(spec), work_dir, seed=spec["seed"], resume=resume,
                         load_from=load_from, launcher=launcher)
    if stop_at is not None:
        cfg.custom_hooks = list(cfg.get("custom_hooks") or []) + [
            dict(type="StopAtHook", stop_at=stop_at)]
    if rank == 0:
        cfg.dump(os.path.join(work_dir, "config.py"))
    t0 = time.time()
    init_cpu_process_group(launcher)
    runner = Runner.from_cfg(cfg)
    started()
    runner.train()
    moved = None
    if stop_at is not None and int(runner.iter) != stop_at:
        raise RuntimeError(f"{work_dir}: training stopped at iteration {runner.iter}, "
                           f"not at {stop_at}")
    if rank == 0 and spec.get("load_from"):
        moved = weight_change(runner.model, spec["load_from"])
    return _finish_run(record_path, spec, resume, t0, int(runner.iter), weight_change=moved,
                       start_iter=start_iter)


def _resume_candidates(work_dir: str) -> List[str]:
    """The checkpoint ``last_checkpoint`` names, then the run's older ``iter_<n>.pth``,
    newest first (a newer one than named is a save that did not complete)."""
    with open(paths.last_checkpoint(work_dir)) as fh:
        named = fh.read().strip()
    newest = paths.checkpoint_step(named) if named else None
    older = {n: path for n, path in paths.checkpoints(work_dir)
             if newest is None or n <= newest}
    found, seen = [], set()
    for path in ([named] if named else []) + [older[n] for n in sorted(older, reverse=True)]:
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            found.append(path)
    return found


def _set_aside(path: str) -> str:
    """Rename a torn checkpoint to ``<name>.torn`` (``.torn1``, ... when taken): kept for
    the user to look at, out of the way of the next resume."""
    target, k = path + ".torn", 0
    while os.path.exists(target):
        k += 1
        target = f"{path}.torn{k}"
    os.rename(path, target)
    return target


def resume_point(work_dir: str, start_checkpoint: Optional[str] = None,
                 rank: int = 0) -> Tuple[Optional[str], int]:
    """The newest checkpoint of ``work_dir`` that loads, and its iteration: tuning keeps
    two, so a torn newest one (a job killed or a disk full while saving, a file cut short
    by a copy) falls back to the one before. A torn file is renamed ``<name>.torn``;
    one log line says what was skipped. None (and 0) when no checkpoint loads: the run
    starts again from ``start_checkpoint`` (or from scratch). A checkpoint that loads but
    holds something other than weights stays an error (:class:`CheckpointRefused`)."""
    from .compat import CheckpointRefused, load_checkpoint_file

    def label(path):  # the run's own files by name, another folder's in full
        inside = os.path.dirname(os.path.abspath(path)) == os.path.abspath(work_dir)
        return os.path.basename(path) if inside else path

    skipped = []
    for path in _resume_candidates(work_dir):
        try:
            # mmap: the tensors are mapped, not read (loading is checked, not paid twice)
            checkpoint = load_checkpoint_file(path, map_location="cpu", mmap=True)
        except CheckpointRefused:
            raise
        except FileNotFoundError:
            skipped.append(f"{label(path)} is missing")
            continue
        except Exception as err:  # noqa: BLE001 - whatever a torn file raises
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
            reason = reason.split(". ")[0][:120]  # torch's first sentence says it
            note = f"{label(path)} cannot be loaded ({reason})"
            if rank == 0 and os.path.isfile(path):
                note += f", renamed to {os.path.basename(_set_aside(path))}"
            skipped.append(note)
            continue
        meta = checkpoint.get("meta") if isinstance(checkpoint, dict) else None
        if not isinstance(meta, dict) or not isinstance(meta.get("iter"), int):
            skipped.append(f"{label(path)} is not a training checkpoint "
                           "(no meta.iter)")
            continue
        if skipped and rank == 0:
            print(f"{work_dir}: resuming from {label(path)} (iteration "
                  f"{meta['iter']}): {'; '.join(skipped)}", file=sys.stderr, flush=True)
        return path, int(meta["iter"])
    if rank == 0:
        start = f"the start checkpoint {start_checkpoint}" if start_checkpoint else "scratch"
        print(f"{work_dir}: no checkpoint to resume from loads ({'; '.join(skipped) or 'none'}"
              f"): starting again from {start}", file=sys.stderr, flush=True)
    return None, 0


def _groups(name: str):
    top = name.split(".", 1)[0]
    yield top
    if name.startswith("decode_head.conv_seg."):
        yield "decode_head.conv_seg"


def weight_change(model, start_checkpoint: str) -> Dict[str, float]:
    """How far a run moved from its start checkpoint: ‖θ − θ₀‖ / ‖θ₀‖ over the parameters
    of each part of the model (``backbone``, ``decode_head``, its classifier
    ``decode_head.conv_seg``, ``auxiliary_head``, and ``all``), and the same for the
    BatchNorm running statistics (``bn_statistics``). A study result counts only when the
    runs moved: this is the record of it."""
    from .compat import load_checkpoint_file

    state = load_checkpoint_file(start_checkpoint, map_location="cpu")
    start = state.get("state_dict", state)
    model = getattr(model, "module", model)
    sums: Dict[str, list] = {}

    def add(group, now, before):
        now, before = now.detach().double().cpu(), before.double().cpu()
        acc = sums.setdefault(group, [0.0, 0.0])
        acc[0] += float(((now - before) ** 2).sum())
        acc[1] += float((before ** 2).sum())

    for name, param in model.named_parameters():
        if name in start and start[name].shape == param.shape:
            for group in list(_groups(name)) + ["all"]:
                add(group, param, start[name])
    for name, buf in model.named_buffers():
        if name.endswith(("running_mean", "running_var")) and name in start:
            add("bn_statistics", buf, start[name])
    return {g: (d ** 0.5) / (n ** 0.5) for g, (d, n) in sorted(sums.items()) if n > 0}


def _finish_run(record_path: str, spec: Dict[str, Any], resumed: bool, t0: float,
                final_iter: int, weight_change: Dict[str, float] = None,
                start_iter: int = 0) -> Dict[str, Any]:
    """``run.json``: spec, provenance, wall time; written last and atomically by rank 0
    (the workflow's completion marker). ``start_iter`` is the iteration resumed from (0
    when fresh), ``iters_done`` what this job trained: the wall time is for those."""
    from .provenance import git_commit, machine, package_versions
    from .train import distributed_rank

    record = dict(spec=spec, seed=spec["seed"], resumed=resumed, git_commit=git_commit(),
                  world_size=int(os.environ.get("WORLD_SIZE", "1")),
                  versions=package_versions(), machine=machine(),
                  wall_time_s=round(time.time() - t0, 2),
                  final_iter=final_iter, start_iter=start_iter,
                  iters_done=final_iter - start_iter, finished=time.strftime("%Y-%m-%dT%H:%M:%S"),
                  weight_change=weight_change)
    if distributed_rank() == 0:
        write_json_atomic(record_path, record)
    return record


def evaluate_released(spec: Dict[str, Any], work_dir: str, launcher: str = "none"):
    """Pretraining from released checkpoints: download each (sha256-verified, resumable)
    to ``iter_<step>.pth`` and evaluate the ones not yet in ``val_metrics.jsonl``."""
    from mmengine.runner import Runner

    from .data.archive import download
    from .results import read_val_metrics  # pandas: not imported by a training job
    from .train import distributed_rank, init_cpu_process_group, prepare_config

    t0 = time.time()
    rank = distributed_rank()
    done = {rec["step"] for rec in read_val_metrics(work_dir)}
    init_cpu_process_group(launcher)
    if launcher != "none":
        import torch.distributed as dist

        if not dist.is_initialized():  # GPUs: mmengine's set-up (NCCL, each rank's device),
            from mmengine.dist import init_dist  # which its Runner then finds in place

            init_dist(launcher)
    for step, ckpt in sorted(spec["released"].items(), key=lambda kv: int(kv[0])):
        path = paths.checkpoint(work_dir, int(step))
        if rank == 0:
            download(ckpt["url"], path, sha256=ckpt["sha256"], desc=os.path.basename(path))
        if launcher != "none":
            import torch.distributed as dist

            dist.barrier()
        if int(step) in done:
            continue
        cfg = prepare_config(build_run_config(spec, record_step=int(step)), work_dir,
                             seed=spec["seed"], load_from=path, launcher=launcher)
        cfg.experiment_name = f"released_iter_{int(step)}_{os.getpid()}"
        Runner.from_cfg(cfg).val()
    last = max(int(s) for s in spec["released"])
    return _finish_run(paths.run_record(work_dir), spec, bool(done), t0, last,
                       start_iter=last)  # nothing trained here
