"""Study configs: validation, per-run specs, and the mmseg config of each stage.

A *study* (``configs/studies/*.yaml``) names a dataset, a model config, the CE baseline
schedule, a reference tuning configuration and variants (each overriding fields of the
reference). A *run spec* is the fully resolved dict for one stage of one run: it is what
``rewardseg stage`` consumes and what the run directory records.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, List, Optional

import yaml

from .fileio import write_json_atomic
from .vocabulary import BASELINES, DEFAULT_BASELINE, OPTIMIZERS

RUN_FIELDS = ("start", "iters", "eval_interval", "batch_size", "lr", "min_lr", "optimizer",
              "weight_decay", "loss", "baseline", "alpha", "num_samples", "sample_at",
              "normalize", "ema_momentum", "ce_weight", "aux_head", "class_weight_smoothing",
              "experiment", "label")
TUNING_DEFAULTS = dict(batch_size=4, min_lr=1e-6, optimizer="sgd", weight_decay=None,
                       baseline="rloo", alpha=0.1, num_samples=2, sample_at="logits",
                       normalize="image", ema_momentum=0.9, ce_weight=0.0, aux_head=True,
                       class_weight_smoothing=None)
ADAMW_WEIGHT_DECAY = 0.01


class StudyError(ValueError):
    """A study config that cannot run; the message names the key."""


def load_study(path: str) -> Dict[str, Any]:
    if not os.path.isfile(path):
        raise StudyError(f"study config {path!r} does not exist")
    with open(path) as fh:
        study = yaml.safe_load(fh)
    if not isinstance(study, dict):
        raise StudyError(f"{path}: expected a mapping at the top level")
    return check_study(study, source=path)


def check_study(study: Dict[str, Any], source: str = "study config") -> Dict[str, Any]:
    """Checks beyond the JSON schema (cross-field rules); returns the study."""
    for key in ("study", "seeds", "dataset", "model", "baseline", "tuning", "variants"):
        if key not in study:
            raise StudyError(f"{source}: missing required key '{key}'")
    base = study["baseline"]
    released = released_checkpoints(study)
    if not released:
        for key in ("iters", "checkpoint_interval", "eval_interval"):
            if not isinstance(base.get(key), int) or base[key] < 1:
                raise StudyError(f"{source}: baseline.{key} must be a positive integer "
                                 "(or give baseline.released checkpoints)")
    _check_dataset(study.get("dataset") or {}, source)
    variants = study["variants"]
    if not isinstance(variants, dict) or not variants:
        raise StudyError(f"{source}: 'variants' must be a non-empty mapping")
    for name, fields in variants.items():
        unknown = sorted(set(fields or {}) - set(RUN_FIELDS))
        if unknown:
            raise StudyError(f"{source}: variants.{name}: unknown field '{unknown[0]}' "
                             f"(valid: {', '.join(RUN_FIELDS)})")
        spec = variant_fields(study, name)
        start = spec["start"]
        if released:
            if start not in released:
                raise StudyError(f"{source}: variants.{name}.start = {start} is not one of "
                                 f"baseline.released ({', '.join(map(str, released))})")
        elif start % base["checkpoint_interval"] or not 0 < start <= base["iters"]:
            raise StudyError(
                f"{source}: variants.{name}.start = {start} must be a multiple of "
                f"baseline.checkpoint_interval ({base['checkpoint_interval']}) in "
                f"(0, baseline.iters = {base['iters']}]")
        if not released and start % base["eval_interval"]:
            raise StudyError(f"{source}: variants.{name}.start = {start} must be a multiple "
                             f"of baseline.eval_interval ({base['eval_interval']})")
        if spec["loss"] == "reinforce" and spec["baseline"] == "rloo" and spec["num_samples"] < 2:
            raise StudyError(f"{source}: variants.{name}: baseline 'rloo' needs "
                             "num_samples >= 2")
        if spec["baseline"] == "batch_loo" and spec["loss"] in BASELINES:
            gpus = max(int(((study.get("resources") or {}).get("tune") or {}).get("gpus", 1)), 1)
            if spec["batch_size"] * gpus < 2:
                raise StudyError(
                    f"{source}: variants.{name}: baseline 'batch_loo' needs at least 2 images "
                    f"in the global batch, but batch_size = {spec['batch_size']} x "
                    f"resources.tune.gpus = {gpus} gives {spec['batch_size'] * gpus}")
        if spec["loss"] in BASELINES and spec["baseline"] not in BASELINES[spec["loss"]]:
            raise StudyError(f"{source}: variants.{name}: loss {spec['loss']!r} takes baseline "
                             f"{' / '.join(BASELINES[spec['loss']])}, not {spec['baseline']!r}")
    return study


DATASET_CLASSES = {"synthetic": (None,), "cityscapes": (None, "cityscapes"),
                   "easyportrait": ("face_parsing", "portrait"),
                   "mapillary": ("cityscapes", "vistas")}


def _check_dataset(dataset: Dict[str, Any], source: str) -> None:
    kind = dataset.get("source", "synthetic")
    if kind not in DATASET_CLASSES:
        raise StudyError(f"{source}: dataset.source {kind!r} is not one of "
                         f"{', '.join(DATASET_CLASSES)}")
    classes = dataset.get("classes", DATASET_CLASSES[kind][0])
    if classes not in DATASET_CLASSES[kind]:
        allowed = [c for c in DATASET_CLASSES[kind] if c]
        raise StudyError(f"{source}: dataset.classes {classes!r} is not valid for source "
                         f"{kind!r} (valid: {', '.join(allowed) or 'leave it out'})")


def released_checkpoints(study: Dict[str, Any]) -> Dict[int, Dict[str, str]]:
    """``baseline.released`` as {iteration: {url, sha256}} (empty when trained here)."""
    released = (study.get("baseline") or {}).get("released") or {}
    return {int(k): dict(v) for k, v in sorted(released.items(), key=lambda kv: int(kv[0]))}


def variant_fields(study: Dict[str, Any], variant: str) -> Dict[str, Any]:
    if variant not in study["variants"]:
        raise StudyError(f"unknown variant {variant!r}; the study has: "
                         f"{', '.join(study['variants'])}")
    own = study["variants"][variant] or {}
    fields = dict(TUNING_DEFAULTS)
    fields.update(study["tuning"])
    fields.update(own)
    # a variant that changes the estimator without naming a baseline gets that
    # estimator's default when the inherited one does not apply to it
    loss = fields.get("loss")
    if "baseline" not in own and loss in BASELINES and fields["baseline"] not in BASELINES[loss]:
        fields["baseline"] = DEFAULT_BASELINE[loss]
    return fields


def experiments(study: Dict[str, Any]) -> Dict[str, List[str]]:
    """Experiment name -> variants shown in its figure (``all`` joins every one)."""
    groups: Dict[str, List[str]] = {}
    everywhere = []
    for name in study["variants"]:
        exp = variant_fields(study, name).get("experiment") or []
        exp = [exp] if isinstance(exp, str) else list(exp)
        if "all" in exp:
            everywhere.append(name)
            continue
        for e in exp:
            groups.setdefault(e, []).append(name)
    return {e: everywhere + v for e, v in groups.items()}


def data_root(study: Dict[str, Any], data_dir: str = "data") -> str:
    return os.path.join(data_dir, study["dataset"]["name"])


def baseline_spec(study: Dict[str, Any], data_dir: str = "data") -> Dict[str, Any]:
    base = dict(batch_size=4, lr=0.01, min_lr=1e-4, seed=0)
    base.update(study["baseline"])
    released = released_checkpoints(study)
    if released:  # nothing is trained: the schedule fields only shape the (val) config
        steps = list(released)
        base.update(iters=max(steps), eval_interval=min(steps), checkpoint_interval=min(steps))
    base.pop("released", None)
    return dict(stage="baseline", study=study["study"], variant="baseline", seed=base["seed"],
                model_config=study["model"]["config"], data_root=data_root(study, data_dir),
                iters=base["iters"], eval_interval=base["eval_interval"],
                checkpoint_interval=base["checkpoint_interval"], batch_size=base["batch_size"],
                lr=base["lr"], min_lr=base["min_lr"], loss="ce", aux_head=True,
                class_weight_smoothing=None, load_from=None,
                released={str(k): v for k, v in released.items()} or None)


def tune_spec(study: Dict[str, Any], variant: str, seed: int, work_dir: str = "work",
              data_dir: str = "data") -> Dict[str, Any]:
    fields = variant_fields(study, variant)
    fields.pop("experiment", None)
    fields.pop("label", None)
    spec = dict(stage="tune", study=study["study"], variant=variant, seed=int(seed),
                model_config=study["model"]["config"], data_root=data_root(study, data_dir),
                checkpoint_interval=fields["eval_interval"], **fields)
    spec["load_from"] = os.path.join(work_dir, study["study"], "baseline",
                                     f"iter_{fields['start']}.pth")
    smoothing = fields.get("class_weight_smoothing")
    spec["class_weight"] = (None if smoothing is None else
                            os.path.join(spec["data_root"], f"class_weights_s{smoothing:g}.json"))
    return spec


# ---------------------------------------------------------------- mmseg config of a run
def _loss_decode(spec: Dict[str, Any]):
    loss = spec["loss"]
    if loss == "ce":
        weight = spec.get("class_weight")
        cfg = dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0)
        if weight:
            from .models.losses import load_class_weight

            cfg["class_weight"] = load_class_weight(weight)
        return "ASPPHead", [cfg]
    if loss == "lovasz":
        return "ASPPHead", [dict(type="LovaszLoss", loss_type="multi_class", per_image=True,
                                 reduction="mean", loss_weight=1.0)]
    cfg = dict(type="RewardLoss", estimator=loss, baseline=spec["baseline"],
               alpha=spec["alpha"], class_weight=spec.get("class_weight"))
    if loss == "reinforce":
        cfg.update(num_samples=spec["num_samples"], sample_at=spec["sample_at"],
                   normalize=spec.get("normalize", "image"),
                   ema_momentum=spec["ema_momentum"], ce_weight=spec["ce_weight"])
    return "RewardASPPHead", [cfg]


def _set_optimizer(cfg, spec: Dict[str, Any]) -> None:
    """``optimizer: sgd`` keeps the model config's SGD (momentum, weight decay);
    ``adamw`` replaces it. ``weight_decay`` overrides either's."""
    name = spec.get("optimizer") or "sgd"
    if name not in OPTIMIZERS:
        raise StudyError(f"optimizer {name!r} is not one of {', '.join(OPTIMIZERS)}")
    decay = spec.get("weight_decay")
    if name == "adamw":
        cfg.optim_wrapper.optimizer = dict(
            type="AdamW", lr=spec["lr"], betas=(0.9, 0.999),
            weight_decay=ADAMW_WEIGHT_DECAY if decay is None else float(decay))
    elif decay is not None:
        cfg.optim_wrapper.optimizer.weight_decay = float(decay)


def _check_num_classes(cfg, spec: Dict[str, Any]) -> None:
    """The prepared dataset (meta.json) and the model must agree on the classes."""
    from .data import load_meta

    classes = load_meta(spec["data_root"]).get("classes") or []
    meta_path = os.path.join(spec["data_root"], "meta.json")
    heads = [cfg.model.get("decode_head"), cfg.model.get("auxiliary_head")]
    for head in heads:
        if isinstance(head, dict) and "num_classes" in head and classes \
                and head["num_classes"] != len(classes):
            raise StudyError(
                f"model.config {spec['model_config']!r} predicts {head['num_classes']} "
                f"classes but {meta_path} lists {len(classes)} (dataset.classes); use a "
                "model config for that class setting")


def build_run_config(spec: Dict[str, Any], record_step: Optional[int] = None):
    """The mmengine Config of one run spec (baseline or tune). Its validations are
    recorded by ``ValMetricsRecorder`` (at ``record_step`` instead of the training
    iteration when given: evaluating a released checkpoint)."""
    from mmengine.config import Config

    import rewardseg  # noqa: F401

    if not os.path.isfile(spec["model_config"]):
        raise StudyError(f"model.config: {spec['model_config']!r} does not exist")
    cfg = Config.fromfile(spec["model_config"])
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        if loader in cfg:
            cfg[loader].dataset.data_root = spec["data_root"]
    cfg.train_dataloader.batch_size = spec["batch_size"]
    iters = spec["iters"]
    cfg.train_cfg = dict(type="IterBasedTrainLoop", max_iters=iters,
                         val_interval=spec["eval_interval"])
    cfg.optim_wrapper.optimizer.lr = spec["lr"]
    _set_optimizer(cfg, spec)
    cfg.param_scheduler = [dict(type="PolyLR", eta_min=spec["min_lr"], power=0.9, begin=0,
                                end=iters, by_epoch=False)]
    # baseline: every start point; tuning: the last two (resume even if the newest is torn)
    keep = None if spec["stage"] == "baseline" else 2
    cfg.default_hooks.checkpoint = dict(type="CheckpointHook", by_epoch=False,
                                        interval=spec["checkpoint_interval"],
                                        max_keep_ckpts=keep if keep else -1, save_last=True)
    cfg.default_hooks.logger = dict(type="LoggerHook", interval=10, log_metric_by_epoch=False)
    cfg.default_hooks.pop("visualization", None)
    if spec.get("load_from") or spec.get("released"):
        # every weight comes from the start checkpoint: no ImageNet download per job
        cfg.model.pretrained = None
        if cfg.model.get("backbone") is not None:
            cfg.model.backbone.init_cfg = None
    _check_num_classes(cfg, spec)
    recorder = dict(type="ValMetricsRecorder")
    if record_step is not None:
        recorder["step"] = int(record_step)
    cfg.custom_hooks = [h for h in cfg.get("custom_hooks") or []
                        if h["type"] != "ValMetricsRecorder"] + [recorder]
    head_type, losses = _loss_decode(spec)
    cfg.model.decode_head.type = head_type
    cfg.model.decode_head.loss_decode = losses
    if not spec.get("aux_head", True):
        cfg.model.auxiliary_head = None
    return cfg


# ---------------------------------------------------------------- running a stage
def run_stage(spec: Dict[str, Any], work_dir: str, launcher: str = "none") -> Dict[str, Any]:
    """Train one run; resumes from ``work_dir``'s last checkpoint when there is one.

    Writes ``work_dir/run.json`` (spec, seed, git commit, package versions, wall time)
    last and atomically: the workflow takes the run as complete only when it exists.
    """
    from mmengine.runner import Runner

    from .train import distributed_rank, init_cpu_process_group, prepare_config

    os.makedirs(work_dir, exist_ok=True)
    record_path = os.path.join(work_dir, "run.json")
    rank = distributed_rank()
    if rank == 0 and os.path.exists(record_path):
        os.remove(record_path)  # being re-run: no stale completion marker
    if spec.get("released"):
        return evaluate_released(spec, work_dir, launcher=launcher)
    resume = os.path.isfile(os.path.join(work_dir, "last_checkpoint"))
    load_from = None if resume else spec.get("load_from")
    if load_from and not os.path.isfile(load_from):
        raise StudyError(f"start checkpoint {load_from!r} does not exist (run the baseline)")
    cfg = prepare_config(build_run_config(spec), work_dir, seed=spec["seed"], resume=resume,
                         load_from=load_from, launcher=launcher)
    if rank == 0:
        cfg.dump(os.path.join(work_dir, "config.py"))
    t0 = time.time()
    init_cpu_process_group(launcher)
    runner = Runner.from_cfg(cfg)
    runner.train()
    return _finish_run(record_path, spec, resume, t0, int(runner.iter))


def _finish_run(record_path: str, spec: Dict[str, Any], resumed: bool, t0: float,
                final_iter: int) -> Dict[str, Any]:
    """``run.json``: spec, provenance, wall time; written last and atomically by rank 0
    (the workflow's completion marker)."""
    from .provenance import git_commit, package_versions
    from .train import distributed_rank

    record = dict(spec=spec, seed=spec["seed"], resumed=resumed, git_commit=git_commit(),
                  world_size=int(os.environ.get("WORLD_SIZE", "1")),
                  versions=package_versions(), wall_time_s=round(time.time() - t0, 2),
                  final_iter=final_iter, finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
    if distributed_rank() == 0:
        write_json_atomic(record_path, record)
    return record


def evaluate_released(spec: Dict[str, Any], work_dir: str, launcher: str = "none"):
    """Baseline from released checkpoints: download each (sha256-verified, resumable) to
    ``iter_<step>.pth`` and evaluate the ones not yet in ``val_metrics.jsonl``."""
    from mmengine.runner import Runner

    from .data.archive import download
    from .train import distributed_rank, init_cpu_process_group, prepare_config

    t0 = time.time()
    rank = distributed_rank()
    done = {rec["step"] for rec in read_val_metrics(work_dir)}
    init_cpu_process_group(launcher)
    for step, ckpt in sorted(spec["released"].items(), key=lambda kv: int(kv[0])):
        path = os.path.join(work_dir, f"iter_{int(step)}.pth")
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
    return _finish_run(os.path.join(work_dir, "run.json"), spec, bool(done), t0,
                       max(int(s) for s in spec["released"]))


def read_val_metrics(work_dir: str) -> List[Dict[str, Any]]:
    """Validation records of a run, one per step (a resumed run's repeat keeps the last)."""
    path = os.path.join(work_dir, "val_metrics.jsonl")
    by_step: Dict[int, Dict[str, Any]] = {}
    if os.path.isfile(path):
        with open(path) as fh:
            for line in fh:
                if line.strip():
                    rec = json.loads(line)
                    by_step[int(rec["step"])] = rec
    return [by_step[s] for s in sorted(by_step)]


def collect_run(work_dir: str, out: str, baseline_dir: Optional[str] = None) -> Dict[str, Any]:
    """Turn a finished run into ``results/.../seed<k>.json``: per-step mIoU and per-class
    IoU, training statistics, provenance. Step 0 is the start checkpoint's evaluation
    from the baseline run."""
    with open(os.path.join(work_dir, "run.json")) as fh:
        record = json.load(fh)
    spec = record["spec"]
    evals = []
    if baseline_dir is not None and spec.get("stage") == "tune":
        for rec in read_val_metrics(baseline_dir):
            if rec["step"] == spec["start"]:
                evals.append(dict(step=0, metrics=rec["metrics"], train={}))
    evals += read_val_metrics(work_dir)
    if len(evals) < (1 if spec.get("released") else 2):
        raise StudyError(f"{work_dir}: no validation results recorded (val_metrics.jsonl)")
    result = dict(study=spec["study"], variant=spec["variant"], seed=spec["seed"],
                  spec=spec, evals=evals, provenance={k: record[k] for k in (
                      "git_commit", "versions", "wall_time_s", "resumed", "finished")})
    write_json_atomic(out, result, indent=1)
    return result
