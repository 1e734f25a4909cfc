"""Run specs and their mmseg configs.

A *run spec* is the fully resolved dict of one job (the CE pretraining or one variant x
seed of the tuning): what ``rewardseg stage --spec`` consumes and what the run directory
records. ``build_run_config`` turns a spec into the mmengine Config that trains it; the
decode head's loss comes from ``models.losses.decode_loss_config``, next to the loss.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Union

from . import paths
from .study import (PRETRAIN_DEFAULTS, ResolvedStudy, StudyError,
                    as_resolved as resolve)
from .vocabulary import FP32, OPTIMIZERS

ADAMW_WEIGHT_DECAY = 0.01


def data_root(study: Dict[str, Any], data_dir: str = paths.DATA) -> str:
    return paths.data_root(study["dataset"]["name"], data_dir)


def pretrain_spec(study: Union[Dict[str, Any], ResolvedStudy],
                  data_dir: str = paths.DATA) -> Dict[str, Any]:
    study = resolve(study)
    base = dict(PRETRAIN_DEFAULTS)
    base.update(study.raw()["pretrain"])
    released = {k: dict(v) for k, v in study.released.items()}
    if released:  # nothing is trained: the schedule fields only shape the (val) config
        steps = list(released)
        base.update(iters=max(steps), eval_interval=min(steps), checkpoint_interval=min(steps))
    base.pop("released", None)
    smoothing = base["class_weight_smoothing"]
    spec = dict(stage=paths.PRETRAIN, study=study["study"], variant=paths.PRETRAIN,
                seed=base["seed"], model_config=study["model"]["config"],
                data_root=data_root(study, data_dir), iters=base["iters"],
                eval_interval=base["eval_interval"],
                checkpoint_interval=base["checkpoint_interval"], batch_size=base["batch_size"],
                lr=base["lr"], min_lr=base["min_lr"], loss="ce", aux_head=True,
                class_weight_smoothing=smoothing, load_from=None, precision=base["precision"],
                channels_last=bool(base["channels_last"]),
                released={str(k): v for k, v in released.items()} or None)
    if smoothing is not None:  # absent: the spec (and its JSON) is what it always was
        spec["class_weight"] = paths.class_weights(spec["data_root"], smoothing)
    return spec


def tune_spec(study: Union[Dict[str, Any], ResolvedStudy], variant: str, seed: int,
              work_dir: str = paths.WORK, data_dir: str = paths.DATA) -> Dict[str, Any]:
    """One variant x seed's run spec, from the study resolved (``study.resolve``)."""
    study = resolve(study)
    fields = study.fields(variant)
    for key in ("experiment", "label", "control"):  # how the run is reported, not trained
        fields.pop(key, None)
    spec = dict(stage="tune", study=study["study"], variant=variant, seed=int(seed),
                model_config=study["model"]["config"], data_root=data_root(study, data_dir),
                checkpoint_interval=fields["eval_interval"], **fields)
    spec["load_from"] = paths.checkpoint(paths.pretrain_dir(study["study"], work_dir),
                                         fields["start"])
    smoothing = fields.get("class_weight_smoothing")
    spec["class_weight"] = (None if smoothing is None else
                            paths.class_weights(spec["data_root"], smoothing))
    return spec


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
    heads = [cfg.model.get("decode_head"), cfg.model.get("auxiliary_head")]
    for head in heads:
        if isinstance(head, dict) and "num_classes" in head and classes \
                and head["num_classes"] != len(classes):
            raise StudyError(
                f"model.config {spec['model_config']!r} predicts {head['num_classes']} "
                f"classes but {os.path.join(spec['data_root'], 'meta.json')} lists "
                f"{len(classes)} (dataset.classes); use a model config for that class setting")


def build_run_config(spec: Dict[str, Any], record_step: Optional[int] = None):
    """The mmengine Config of one run spec (pretraining or tuning). Its validations are
    recorded by ``ValMetricsRecorder`` (at ``record_step`` instead of the training
    iteration when given: evaluating a released checkpoint)."""
    from mmengine.config import Config

    import rewardseg  # noqa: F401  (compat layer first)
    from .models.amp import precision_config
    from .models.losses import decode_loss_config

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
    # pretraining: every start point; tuning: the last two (resume even if the newest is torn)
    keep = -1 if spec["stage"] == paths.PRETRAIN else 2
    cfg.default_hooks.checkpoint = dict(type="CheckpointHook", by_epoch=False,
                                        interval=spec["checkpoint_interval"],
                                        max_keep_ckpts=keep, save_last=True)
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
    head_type, losses = decode_loss_config(spec)
    cfg.model.decode_head.type = head_type
    cfg.model.decode_head.loss_decode = losses
    if not spec.get("aux_head", True):
        cfg.model.auxiliary_head = None
    precision_config(cfg, spec.get("precision") or FP32, bool(spec.get("channels_last")))
    return cfg
