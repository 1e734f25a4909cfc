"""Gradient scale of each loss term relative to the decode head's cross-entropy.

From a checkpoint of a study's model (default: the default study's CE pretraining at the
tuning start, ``work/default/pretrain/iter_750.pth``), on ``--steps`` real training
batches (the study's train dataloader, ``--batch`` images each, model in train mode),
every loss term's gradient is taken separately from *one* shared forward pass per batch
(same weights, same dropout mask, same features; no update between terms):

* ``decode CE``: the decode head's own ``loss_by_feat`` (upstream ``CrossEntropyLoss``:
  logits upsampled bilinearly to label size, mean over pixels);
* ``aux CE``: the auxiliary head's ``loss_by_feat`` (its configured ``loss_weight``, 0.4);
* ``RewardLoss`` on the decode head's raw logits (called the way ``RewardASPPHead`` calls
  it): ``weighted_ce`` (alpha 0.1, batch_loo) and ``reinforce`` with rloo k=4 at the
  logits' and at the label's resolution, each with ``normalize='image'`` and ``'pixel'``,
  no baseline, second_sample and greedy (image), local_expectation k=1 (image). Every reward term of a batch starts from the same
  torch seed, so the image and pixel variants draw the very same samples.

For each term it prints the L2 norm of the gradient over the backbone's and the decode
head's parameters (the auxiliary head's for ``aux CE``), per batch and averaged, as
ratios to ``decode CE``; the norm of the gradient averaged over the batches next to the
average of the norms (their quotient, ``coherence``, is 1 for a gradient that points the
same way on every batch and about ``1/sqrt(steps)`` for pure noise); and the size of one
optimizer update on the decode head, ``||dtheta|| / ||theta||``, for SGD (first step,
weight decay off: ``lr * g``) and for AdamW (first step: ``lr * g / (|g| + eps)``,
about ``lr * sign(g)``), with the SGD learning rate at which the term's update is as
large as CE's at ``--lr``. Target: the default estimator (reinforce, rloo k=4 at logits,
``normalize='image'``) within 0.1x-10x of CE on the decode head.

Without a checkpoint (none given, or the file does not exist) it first trains the
model with CE itself, like the study's pretraining up to its tuning start, and says so
(``--warmup-iters 0``: the model's random init, backbone init none). A missing synthetic
dataset is generated (a few seconds).

For a study whose data and released checkpoints are not here (Cityscapes), ``--size H W``
measures on synthetic street scenes rendered at that size instead (their eight classes
mapped by name to the model's, e.g. Cityscapes' trainIds; the scene is the crop, no
augmentation), ``--warmup-size`` trains the warm-up on smaller ones, ``--terms
cityscapes`` picks the Cityscapes studies' estimators, and ``--head-only`` takes only the
heads' gradients (the backbone's forward pass without a graph: the decode-head columns
and ``SGD lr ~ CE`` are the same, the backbone's are not printed)::

    python bench/bench_gradients.py --study configs/studies/cityscapes.yaml \
        --size 512 1024 --warmup-iters 0 --terms cityscapes --head-only \
        --batch 2 --steps 3 --json out.json

Usage::

    python bench/bench_gradients.py                      # default study, CPU, 1 thread
    python bench/bench_gradients.py --checkpoint work/default/pretrain/iter_750.pth
    python bench/bench_gradients.py --study configs/studies/mystudy.yaml --device cuda

A user tuning a new dataset runs it with their study to choose a learning rate. This is a
report, not a test: it prints PASS/MISS against the target and exits 0.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from typing import Dict, List, Optional, Sequence

import torch
from _benchutil import select_device

import rewardseg  # noqa: F401  (compat layer first)

warnings.filterwarnings("ignore", category=UserWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_STUDY = os.path.join("configs", "studies", "default.yaml")
GROUPS = ("backbone", "decode", "aux")
REFERENCE = "decode CE"
TARGET_TERM = "reinforce rloo4 logits image"
TARGET_RANGE = (0.1, 10.0)
ADAM_EPS = 1e-8


def _reinforce(**kw):
    return dict(type="RewardLoss", loss="reinforce", **kw)


# name -> None (decode / aux CE: the model's own heads) or a RewardLoss config
TERMS: Dict[str, Optional[dict]] = {
    "decode CE": None,
    "aux CE": None,
    "weighted_ce a=0.1 batch_loo": dict(type="RewardLoss", loss="weighted_ce",
                                        baseline="batch_loo", alpha=0.1),
    "reinforce rloo4 logits image": _reinforce(baseline="rloo", num_samples=4,
                                               sample_at="logits", normalize="image"),
    "reinforce rloo4 logits pixel": _reinforce(baseline="rloo", num_samples=4,
                                               sample_at="logits", normalize="pixel"),
    "reinforce rloo4 label image": _reinforce(baseline="rloo", num_samples=4,
                                              sample_at="label", normalize="image"),
    "reinforce rloo4 label pixel": _reinforce(baseline="rloo", num_samples=4,
                                              sample_at="label", normalize="pixel"),
    "reinforce none image": _reinforce(baseline="none", num_samples=1, normalize="image"),
    "reinforce second_sample image": _reinforce(baseline="second_sample", num_samples=1,
                                                normalize="image"),
    "reinforce greedy image": _reinforce(baseline="greedy", num_samples=1,
                                         normalize="image"),
    "local_expectation k=1 image": dict(type="RewardLoss", loss="local_expectation",
                                        num_samples=1, normalize="image"),
}


def _weighted_ce(alpha: float) -> dict:
    return dict(type="RewardLoss", loss="weighted_ce", baseline="batch_loo", alpha=alpha)


#: the estimators of the Cityscapes studies (configs/studies/cityscapes.yaml,
#: cityscapes-r18.yaml): reinforce with rloo k=2 (their reference) and its other baselines,
#: the local expectation, and weighted CE at each alpha of the baseline slides
CITYSCAPES_TERMS: Dict[str, Optional[dict]] = {
    "decode CE": None,
    "aux CE": None,
    "weighted_ce a=0.1 batch_loo": _weighted_ce(0.1),
    "weighted_ce a=0.15 batch_loo": _weighted_ce(0.15),
    "weighted_ce a=0.2 batch_loo": _weighted_ce(0.2),
    "weighted_ce a=1 batch_loo": _weighted_ce(1.0),
    "reinforce rloo2 logits image": _reinforce(baseline="rloo", num_samples=2,
                                               sample_at="logits", normalize="image"),
    "reinforce none image": TERMS["reinforce none image"],
    "reinforce second_sample image": TERMS["reinforce second_sample image"],
    "reinforce greedy image": TERMS["reinforce greedy image"],
    "reinforce ema image": _reinforce(baseline="ema", num_samples=1, normalize="image"),
    "local_expectation k=1 image": TERMS["local_expectation k=1 image"],
}
#: ``--terms`` names a set, or lists terms of any set separated by commas
TERM_SETS: Dict[str, Dict[str, Optional[dict]]] = {"default": TERMS,
                                                  "cityscapes": CITYSCAPES_TERMS}


def select_terms(spec: str) -> Dict[str, Optional[dict]]:
    """``--terms``: a set's name, or term names (of any set) separated by commas; ``decode
    CE`` (the reference) is always measured, first."""
    if spec in TERM_SETS:
        return dict(TERM_SETS[spec])
    known = {k: v for terms in TERM_SETS.values() for k, v in terms.items()}
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"--terms: unknown {unknown}; sets: {sorted(TERM_SETS)}; terms: "
                         f"{sorted(known)}")
    return {n: known[n] for n in [REFERENCE] + [n for n in names if n != REFERENCE]}


# ------------------------------------------------------------------ measurement core
def param_groups(model) -> Dict[str, List[torch.nn.Parameter]]:
    """Trainable parameters of the backbone, decode head and auxiliary head."""
    groups = {"backbone": [p for p in model.backbone.parameters() if p.requires_grad],
              "decode": [p for p in model.decode_head.parameters() if p.requires_grad],
              "aux": []}
    aux = getattr(model, "auxiliary_head", None)
    if aux is not None:
        heads = aux if isinstance(aux, torch.nn.ModuleList) else [aux]
        groups["aux"] = [p for h in heads for p in h.parameters() if p.requires_grad]
    return groups


def build_losses(terms: Dict[str, Optional[dict]], device) -> Dict[str, torch.nn.Module]:
    from mmseg.registry import MODELS

    import rewardseg.models  # noqa: F401  (registers RewardLoss)

    return {name: MODELS.build(copy.deepcopy(cfg)).to(device).train()
            for name, cfg in terms.items() if cfg is not None}


def _aux_losses(model, feats, data_samples) -> torch.Tensor:
    aux = model.auxiliary_head
    heads = aux if isinstance(aux, torch.nn.ModuleList) else [aux]
    total = 0.0
    for head in heads:
        losses = head.loss_by_feat(head.forward(feats), data_samples)
        total = total + sum(v for k, v in losses.items() if "loss" in k)
    return total


def term_losses(model, data, losses: Dict[str, torch.nn.Module], terms: Sequence[str],
                seed: int, head_only: bool = False):
    """One forward pass; yields ``(term, loss)`` for every term, each a function of the
    same features and decode-head logits. Every reward term starts from ``seed``. With
    ``head_only`` the backbone runs without a graph (its features are constants): only the
    heads' gradients can be taken, at a fraction of the cost. An ``ema`` baseline that has
    not seen a batch yet is first primed with this one (otherwise its first step would be
    the no-baseline estimator's)."""
    inputs, samples = data["inputs"], data["data_samples"]
    if head_only:
        with torch.no_grad():
            feats = model.extract_feat(inputs)
    else:
        feats = model.extract_feat(inputs)
    head = model.decode_head
    logits = head.forward(feats)
    label = head._stack_batch_gt(samples).squeeze(1)
    for name in terms:
        if name == "decode CE":
            out = head.loss_by_feat(logits, samples)
            yield name, sum(v for k, v in out.items() if "loss" in k)
        elif name == "aux CE":
            yield name, _aux_losses(model, feats, samples)
        else:
            loss = losses[name]
            if getattr(loss, "baseline", None) == "ema" and not bool(loss.ema_initialized):
                torch.manual_seed(seed)
                with torch.no_grad():
                    loss(logits.detach(), label, ignore_index=head.ignore_index,
                         align_corners=head.align_corners)
            torch.manual_seed(seed)
            yield name, loss(logits, label, ignore_index=head.ignore_index,
                             align_corners=head.align_corners).loss


def flat(grads, params) -> torch.Tensor:
    return torch.cat([(torch.zeros_like(p) if g is None else g).detach().flatten()
                      for g, p in zip(grads, params)]) if params else torch.zeros(0)


def measure(model, batches, losses, terms: Sequence[str], lr: float, adamw_lr: float,
            seed: int = 0, progress: bool = False, head_only: bool = False) -> Dict[str, dict]:
    """Per term: the gradient norm of every batch over each parameter group, the norm of
    the gradient averaged over the batches (``<group>_signal``), and the decode head's
    (auxiliary head's, for ``aux CE``) relative first-step update ``||dtheta||/||theta||``
    on every batch for SGD at ``lr`` and AdamW at ``adamw_lr``. Nothing is updated (BN's
    running statistics aside). ``head_only``: no backbone gradient (its rows stay empty)."""
    groups = param_groups(model)
    if head_only:
        groups["backbone"] = []
    params = [p for g in GROUPS for p in groups[g]]
    sizes = [len(groups[g]) for g in GROUPS]
    theta = {g: float(torch.cat([p.detach().flatten() for p in groups[g]]).norm())
             if groups[g] else 0.0 for g in GROUPS}
    rows = {t: dict({g: [] for g in GROUPS}, sgd=[], adamw=[]) for t in terms}
    sums: Dict[str, Dict[str, torch.Tensor]] = {t: {} for t in terms}
    model.train()
    for step, data in enumerate(batches):
        t0 = time.perf_counter()
        step_seed = seed * 100003 + step
        torch.manual_seed(step_seed)  # dropout of the shared forward pass
        for name, loss in term_losses(model, data, losses, terms, step_seed, head_only):
            grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
            start = 0
            for g, n in zip(GROUPS, sizes):
                vec = flat(grads[start:start + n], groups[g])
                start += n
                if not groups[g]:
                    continue
                rows[name][g].append(float(vec.norm()))
                sums[name][g] = vec if g not in sums[name] else sums[name][g] + vec
                if g == ("aux" if name == "aux CE" else "decode") and theta[g] > 0:
                    rows[name]["sgd"].append(
                        float(sgd_first_update(vec, lr).norm()) / theta[g])
                    rows[name]["adamw"].append(
                        float(adamw_first_update(vec, adamw_lr).norm()) / theta[g])
        if progress:
            print(f"  batch {step + 1}/{len(batches)}: {len(terms)} gradients in "
                  f"{time.perf_counter() - t0:.1f} s", flush=True)
    for name in terms:
        for g in GROUPS:
            rows[name][g + "_signal"] = (float((sums[name][g] / len(batches)).norm())
                                         if g in sums[name] else 0.0)
    return rows


def sgd_first_update(grad: torch.Tensor, lr: float) -> torch.Tensor:
    """``torch.optim.SGD``'s first step (the momentum buffer starts as the gradient),
    weight decay off: ``-lr * g``."""
    return -lr * grad


def adamw_first_update(grad: torch.Tensor, lr: float, eps: float = ADAM_EPS) -> torch.Tensor:
    """``torch.optim.AdamW``'s first step, weight decay off: the bias-corrected moments
    are ``g`` and ``g**2``, so the step is ``-lr * g / (|g| + eps)`` (about
    ``-lr * sign(g)`` unless ``|g|`` is near ``eps``)."""
    return -lr * grad / (grad.abs() + eps)


# ------------------------------------------------------------------ report
def _mean(values):
    return statistics.fmean(values) if values else float("nan")


def _num(value) -> str:
    """Three significant digits; ``-`` for no value."""
    if value is None or math.isnan(value):
        return "-"
    text = f"{value:#.3g}"
    return text[:-1] if text.endswith(".") else text


def head_key(term: str) -> str:
    """The head whose parameters a term trains."""
    return "aux" if term == "aux CE" else "decode"


def _div(a: float, b: float) -> float:
    """``a / b``; NaN where either is NaN or ``b`` is 0 (a group that was not measured)."""
    return a / b if b and not (math.isnan(a) or math.isnan(b)) else float("nan")


def summarise(rows: Dict[str, dict], lr: float) -> Dict[str, dict]:
    """Means over the batches and ratios to ``decode CE`` (per batch too)."""
    ref = rows[REFERENCE]
    out = {}
    for term, row in rows.items():
        s = {}
        for g in ("backbone", "decode"):
            own = (g == "backbone" or head_key(term) == "decode") and bool(ref[g])
            s[g] = _mean(row[g]) if own else float("nan")
            s[g + "_ratio"] = _div(s[g], _mean(ref[g])) if own else float("nan")
            s[g + "_steps"] = ([_div(a, b) for a, b in zip(row[g], ref[g])] if own else [])
            s[g + "_signal"] = row[g + "_signal"] if own else float("nan")
            s[g + "_signal_ratio"] = (_div(row[g + "_signal"], ref[g + "_signal"])
                                      if own else float("nan"))
            s[g + "_coherence"] = _div(s[g + "_signal"], s[g]) if own else float("nan")
        s["aux"] = _mean(row["aux"]) if term == "aux CE" else float("nan")
        s["sgd"], s["adamw"] = _mean(row["sgd"]), _mean(row["adamw"])
        own_head = head_key(term) == "decode"
        s["sgd_ratio"] = _div(s["sgd"], _mean(ref["sgd"])) if own_head else float("nan")
        s["adamw_ratio"] = _div(s["adamw"], _mean(ref["adamw"])) if own_head else float("nan")
        # SGD learning rate at which this term's decode-head step is as large as CE's at lr
        s["lr_match"] = _div(lr, s["decode_ratio"]) if own_head else float("nan")
        out[term] = s
    return out


def format_report(summary: Dict[str, dict], lr: float, adamw_lr: float) -> List[str]:
    w = max(len(t) for t in summary) + 2
    lines = []
    n = max(max(len(s["backbone_steps"]), len(s["decode_steps"])) for s in summary.values())
    lines.append(f"Gradient L2 norm, mean over {n} batches, and its ratio to {REFERENCE}'s "
                 "(aux CE: its own head in 'aux head')")
    head = (f"{'term':<{w}}{'backbone':>10}{'ratio':>10}{'decode':>10}{'ratio':>10}"
            f"{'aux head':>10}")
    lines += [head, "-" * len(head)]
    for term, s in summary.items():
        lines.append(f"{term:<{w}}{_num(s['backbone']):>10}{_num(s['backbone_ratio']):>10}"
                     f"{_num(s['decode']):>10}{_num(s['decode_ratio']):>10}"
                     f"{_num(s['aux']):>10}")
    for g, title in (("decode", "decode head"), ("backbone", "backbone")):
        lines.append("")
        lines.append(f"Per batch: {title} gradient norm / {REFERENCE}'s on the same batch")
        cols = "".join(f"{'b' + str(i + 1):>9}" for i in range(n))
        head = f"{'term':<{w}}{cols}{'min':>9}{'median':>9}{'max':>9}"
        lines += [head, "-" * len(head)]
        for term, s in summary.items():
            steps = s[g + "_steps"]
            if not steps:
                lines.append(f"{term:<{w}}" + f"{'-':>9}" * (n + 3))
                continue
            lines.append(f"{term:<{w}}" + "".join(f"{_num(v):>9}" for v in steps)
                         + f"{_num(min(steps)):>9}{_num(statistics.median(steps)):>9}"
                         f"{_num(max(steps)):>9}")
    lines.append("")
    lines.append("Signal vs noise: ||mean over batches of g|| (its ratio to CE's), and "
                 "coherence = ||mean g|| / mean ||g||")
    lines.append(f"(1: the same direction on every batch; about 1/sqrt({n}) = "
                 f"{1 / math.sqrt(n):.2f}: pure noise)")
    head = (f"{'term':<{w}}{'bb signal':>10}{'ratio':>10}{'coher.':>8}"
            f"{'dec signal':>11}{'ratio':>10}{'coher.':>8}")
    lines += [head, "-" * len(head)]
    for term, s in summary.items():
        lines.append(f"{term:<{w}}{_num(s['backbone_signal']):>10}"
                     f"{_num(s['backbone_signal_ratio']):>10}{_num(s['backbone_coherence']):>8}"
                     f"{_num(s['decode_signal']):>11}{_num(s['decode_signal_ratio']):>10}"
                     f"{_num(s['decode_coherence']):>8}")
    lines.append("")
    lines.append("One optimizer step on the decode head (aux CE: the aux head), "
                 "||dtheta|| / ||theta||, mean over batches; first step, weight decay off")
    head = (f"{'term':<{w}}{'SGD lr=' + format(lr, 'g'):>14}{'ratio':>10}"
            f"{'AdamW lr=' + format(adamw_lr, 'g'):>16}{'ratio':>10}{'SGD lr ~ CE':>13}")
    lines += [head, "-" * len(head)]
    for term, s in summary.items():
        lines.append(f"{term:<{w}}{_num(s['sgd']):>14}{_num(s['sgd_ratio']):>10}"
                     f"{_num(s['adamw']):>16}{_num(s['adamw_ratio']):>10}"
                     f"{_num(s['lr_match']):>13}")
    lines.append("('SGD lr ~ CE': the SGD learning rate at which the term's decode-head step "
                 f"is as large as {REFERENCE}'s at lr={lr:g})")
    return lines


def target_line(summary: Dict[str, dict]) -> Optional[str]:
    """PASS/MISS of the default estimator; None when it was not measured."""
    if TARGET_TERM not in summary:
        return None
    lo, hi = TARGET_RANGE
    ratio = summary[TARGET_TERM]["decode_ratio"]
    ok = lo <= ratio <= hi
    return (f"target: {TARGET_TERM} decode-head gradient norm within {lo:g}x-{hi:g}x of "
            f"{REFERENCE}'s: {ratio:.3g}x  {'PASS' if ok else 'MISS'}")


# ------------------------------------------------------------------ model and data
def _resolve(path: str) -> str:
    """A path as given if it exists from here, else relative to the repository."""
    if os.path.isabs(path) or os.path.exists(path):
        return path
    alt = os.path.join(REPO, path)
    return alt if os.path.exists(alt) else path


def ensure_dataset(study: dict, root: str) -> bool:
    """Generate a missing synthetic dataset; for a real one, say which command prepares
    it. True when ``root/meta.json`` exists afterwards."""
    if os.path.isfile(os.path.join(root, "meta.json")):
        return True
    from rewardseg.data import prepare

    ds = study["dataset"]
    command = f"rewardseg prepare {ds['source']} {root} --dataset '{json.dumps(ds)}'"
    if ds["source"] != "synthetic":  # a download: the user's decision, not the bench's
        print(f"{root}/meta.json does not exist: prepare the dataset first with `{command}` "
              f"(or `snakemake --configfile <study> {root}/meta.json`)", file=sys.stderr)
        return False
    print(f"dataset {root} missing: generating it ({command}) ...", flush=True)
    t0 = time.perf_counter()
    prepare(root, ds, progress=False)
    print(f"  done in {time.perf_counter() - t0:.1f} s")
    return True


def build_config(study: dict, config: str, data_root: str, batch: int, work_dir: str):
    """The study's pretraining run config (CE decode and aux heads) for ``config`` on
    ``data_root``, ready for building (BN instead of SyncBN, rewardseg.models imported)."""
    from rewardseg.runconfig import build_run_config, pretrain_spec
    from rewardseg.train import prepare_config

    spec = pretrain_spec(study)
    spec.update(model_config=config, data_root=data_root, batch_size=batch)
    cfg = build_run_config(spec)
    cfg.model.pretrained = None
    return prepare_config(cfg, work_dir)


def batches_from(cfg, model, batch: int, count: int, seed: int):
    """``count`` preprocessed training batches of ``batch`` images (the train pipeline,
    augmentation included), seeded."""
    from mmengine.runner import Runner
    from mmengine.runner.utils import set_random_seed

    set_random_seed(seed)
    loader_cfg = copy.deepcopy(cfg.train_dataloader)
    loader_cfg["batch_size"] = batch
    loader = Runner.build_dataloader(loader_cfg, seed=seed)
    out = []
    with torch.no_grad():
        for data in loader:
            out.append(model.data_preprocessor(data, True))
            if len(out) == count:
                break
    return out


def class_map(model_classes: Sequence[str]) -> Dict[int, int]:
    """Synthetic-scene class index -> the model's class index, by name (all eight are
    Cityscapes classes: road 0, sidewalk 1, building 2, sky 10, vegetation 8, car 13,
    person 11, pole 5); ignore stays ignore."""
    from rewardseg.data.synthetic import CLASSES

    missing = [c for c in CLASSES if c not in model_classes]
    if missing:
        raise SystemExit(f"--size: the model's classes lack the synthetic scenes' {missing}")
    return {i: list(model_classes).index(c) for i, c in enumerate(CLASSES)}


def synthetic_batch(model, batch: int, size: Sequence[int], mapping: Dict[int, int],
                    seed: int, index: int) -> dict:
    """``batch`` synthetic street scenes (``rewardseg.data.synthetic.render_scene``, the
    default study's scene options) rendered at ``size`` = (height, width), labels mapped
    to the model's classes, preprocessed as a training batch (no augmentation, no crop:
    the scene is the crop). Scene ``k`` of call ``index`` is seeded by
    ``image_seed(seed, 'train', index * batch + k)``."""
    import numpy as np
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    from rewardseg.data.synthetic import image_seed, render_scene

    h, w = int(size[0]), int(size[1])
    lut = np.full(256, 255, np.uint8)
    for src, dst in mapping.items():
        lut[src] = dst
    inputs, samples = [], []
    for k in range(batch):
        img, label = render_scene(image_seed(seed, "train", index * batch + k), h, w,
                                  dict(persons=1.5, person_size=1.5, poles=1.5,
                                       pole_width=2.0))
        # BGR like mmcv's loader (the preprocessor converts to RGB)
        inputs.append(torch.from_numpy(np.ascontiguousarray(img[..., ::-1].transpose(2, 0, 1))))
        sample = SegDataSample(metainfo=dict(img_shape=(h, w), pad_shape=(h, w),
                                             ori_shape=(h, w)))
        sample.gt_sem_seg = PixelData(data=torch.from_numpy(lut[label].astype(np.int64))[None])
        samples.append(sample)
    pre = model.data_preprocessor
    saved = (pre.size, pre.size_divisor)
    pre.size, pre.size_divisor = (h, w), None  # the images are the crop: no padding
    try:
        with torch.no_grad():
            return pre(dict(inputs=inputs, data_samples=samples), True)
    finally:
        pre.size, pre.size_divisor = saved


def warm_up(model, cfg, iters: int, schedule: int, batch: int, lr: float, min_lr: float,
            seed: int, make_batch=None) -> None:
    """Train with the model's own losses (decode + aux CE) like the study's pretraining:
    the config's SGD (momentum, weight decay), poly LR from ``lr`` to ``min_lr`` over
    ``schedule`` iterations, stopped after ``iters``. ``make_batch(it)``: the
    preprocessed batch of iteration ``it`` (default: the study's train dataloader)."""
    from mmengine.runner import Runner
    from mmengine.runner.utils import set_random_seed

    opt = dict(cfg.optim_wrapper.optimizer)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=opt.get("momentum", 0.9),
                                weight_decay=opt.get("weight_decay", 0.0))
    set_random_seed(seed)
    if make_batch is None:
        loader_cfg = copy.deepcopy(cfg.train_dataloader)
        loader_cfg["batch_size"] = batch
        loader = iter(Runner.build_dataloader(loader_cfg, seed=seed))

        def make_batch(_):
            return model.data_preprocessor(next(loader), True)
    model.train()
    t0 = time.perf_counter()
    for it in range(iters):
        for group in optimizer.param_groups:
            group["lr"] = (lr - min_lr) * (1 - it / schedule) ** 0.9 + min_lr
        data = make_batch(it)
        optimizer.zero_grad(set_to_none=True)
        total, log = model.parse_losses(model(**data, mode="loss"))
        total.backward()
        optimizer.step()
        if (it + 1) % 20 == 0 or it + 1 == iters:
            acc = float(log.get("decode.acc_seg", float("nan")))
            print(f"  warm-up {it + 1}/{iters}: loss {float(total.detach()):.3f}, decode acc "
                  f"{acc:.1f}%, lr {optimizer.param_groups[0]['lr']:.2e}, "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)


def valid_pixels(batches, model) -> tuple:
    """Mean valid pixels per image over ``batches``, at label resolution and at the
    head's (a head pixel counts when any label pixel it is copied to is valid, like
    RewardLoss), and the head's output size."""
    from rewardseg.models.losses import nearest_index

    head = model.decode_head
    model.eval()  # no batch statistics of one image, no running-stat update
    with torch.no_grad():
        h, w = head.forward(model.extract_feat(batches[0]["inputs"][:1])).shape[-2:]
    model.train()
    at_label, at_head = [], []
    for data in batches:
        label = head._stack_batch_gt(data["data_samples"]).squeeze(1)
        valid = label != head.ignore_index
        index = nearest_index((h, w), label.shape[-2:], label.device)
        hits = torch.zeros((label.shape[0], h * w), device=label.device)
        hits.index_add_(1, index, valid.flatten(1).float())
        at_label += valid.flatten(1).sum(1).tolist()
        at_head += (hits > 0).sum(1).tolist()
    return _mean(at_label), _mean(at_head), (h, w)


# ------------------------------------------------------------------ main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", default=DEFAULT_STUDY,
                        help="study config: model, dataset, LR and checkpoint defaults "
                             "(default: %(default)s)")
    parser.add_argument("--checkpoint", default=None,
                        help="mmengine checkpoint of the model (default: the study's "
                             "pretraining at its tuning start, work/<study>/pretrain/"
                             "iter_<start>.pth); missing: a CE warm-up is trained first")
    parser.add_argument("--config", default=None, help="model config (default: the study's)")
    parser.add_argument("--data-root", default=None,
                        help="dataset (default: data/<study dataset name>; a missing "
                             "synthetic one is generated)")
    parser.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="measure on synthetic street scenes rendered at H x W "
                             "(rewardseg.data.synthetic, labels mapped to the model's "
                             "classes by name, no augmentation) instead of the study's "
                             "train dataloader; no dataset is needed")
    parser.add_argument("--warmup-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="with --size: the warm-up's scene size (default: --size)")
    parser.add_argument("--terms", default="default",
                        help="the terms measured: a set (default: %%(default)s; "
                             "'cityscapes': the Cityscapes studies' estimators) or names "
                             "separated by commas")
    parser.add_argument("--head-only", action="store_true",
                        help="gradients of the heads only (the backbone's forward pass "
                             "without a graph): the decode-head columns and 'SGD lr ~ CE' "
                             "at a fraction of the cost; no backbone columns")
    parser.add_argument("--json", default=None, help="also write the summary here")
    parser.add_argument("--batch", type=int, default=8, help="images per measured batch")
    parser.add_argument("--steps", type=int, default=8, help="measured batches")
    parser.add_argument("--lr", type=float, default=None,
                        help="SGD learning rate of the update-size column (default: the "
                             "study's tuning lr)")
    parser.add_argument("--adamw-lr", type=float, default=1e-4)
    parser.add_argument("--warmup-iters", type=int, default=None,
                        help="CE warm-up iterations when there is no checkpoint (default: "
                             "the study's tuning start; 0: the model's random init, "
                             "backbone init none)")
    parser.add_argument("--warmup-batch", type=int, default=None,
                        help="default: the study's pretraining batch size")
    parser.add_argument("--warmup-lr", type=float, default=None,
                        help="default: the study's baseline lr (poly decay over the "
                             "baseline's iterations, as in the study)")
    parser.add_argument("--save-warmup", default=None,
                        help="save the warmed-up weights here (reuse with --checkpoint)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:i]")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch.set_num_threads (default 1; 0 = torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    device = select_device(args.device, args.threads)
    if device is None:
        return 2

    from mmengine.logging import MMLogger
    from mmengine.runner import load_checkpoint
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    from rewardseg.study import load_study

    register_all_modules()
    # mmengine's current logger, quiet: no per-parameter dump from init_weights
    MMLogger.get_instance("bench_gradients", log_level="WARNING")
    study = load_study(_resolve(args.study))
    tuning, base = study["tuning"], study["pretrain"]
    config = _resolve(args.config or study["model"]["config"])
    data_root = args.data_root or os.path.join(REPO, "data", study["dataset"]["name"])
    start = int(tuning.get("start", base.get("iters", 100) // 2))
    checkpoint = args.checkpoint or os.path.join(REPO, "work", study["study"], "pretrain",
                                                 f"iter_{start}.pth")
    lr = args.lr if args.lr is not None else float(tuning["lr"])
    t_all = time.perf_counter()
    if args.size is None and not ensure_dataset(study, data_root):
        return 2

    # nothing is written there: the config only needs a work dir
    work_dir = os.path.join(tempfile.gettempdir(), "rewardseg_bench_gradients")
    cfg = build_config(study, config, data_root, args.batch, work_dir)
    torch.manual_seed(args.seed)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.to(device)

    mapping = None
    if args.size is not None:
        classes = cfg.train_dataloader.dataset.get("metainfo", {}).get("classes")
        if classes is None:  # PreparedDataset reads them from meta.json: the study's source's
            from rewardseg.results import dataset_classes
            classes = dataset_classes(study)
        if classes is None:
            from mmseg.registry import DATASETS
            classes = DATASETS.get(cfg.train_dataloader.dataset.type).METAINFO["classes"]
        mapping = class_map(classes)
        source = (f"synthetic street scenes {args.size[0]}x{args.size[1]} (classes -> "
                  f"model's: {mapping})")
    else:
        source = data_root
    print(f"study {study['study']}: model {os.path.relpath(config, REPO)}, data {source}")
    if os.path.isfile(checkpoint):
        load_checkpoint(model, checkpoint, map_location=device, logger="silent")
        print(f"weights: checkpoint {checkpoint}")
    else:
        iters = args.warmup_iters if args.warmup_iters is not None else start
        wbatch = args.warmup_batch or int(base.get("batch_size", 4))
        wlr = args.warmup_lr if args.warmup_lr is not None else float(base.get("lr", 0.01))
        schedule = max(int(base.get("iters", iters)), iters)
        if iters == 0:
            print("weights: RANDOM (the model's init, backbone init none; --warmup-iters 0): "
                  "near-uniform outputs, the ratios may differ from a trained model's")
        else:
            wsize = args.warmup_size or args.size
            make_batch = None
            if wsize is not None:
                def make_batch(it, wsize=wsize):
                    return synthetic_batch(model, wbatch, wsize, mapping, args.seed + 7, it)
            data_text = (f"synthetic scenes {wsize[0]}x{wsize[1]}" if wsize is not None
                         else "the study's train dataloader")
            print(f"weights: NO CHECKPOINT ({checkpoint} does not exist): training a CE "
                  f"warm-up first, {iters} iterations of batch {wbatch} ({data_text}), SGD lr "
                  f"{wlr:g} poly over {schedule}", flush=True)
            warm_up(model, cfg, iters, schedule, wbatch, wlr, float(base.get("min_lr", 1e-4)),
                    args.seed, make_batch)
            if args.save_warmup:
                torch.save(dict(state_dict=model.state_dict(),
                                meta=dict(warmup_iters=iters, batch=wbatch, lr=wlr,
                                          size=list(wsize) if wsize else None)),
                           args.save_warmup)
                print(f"  saved to {args.save_warmup} (pass it as --checkpoint next time)")

    if args.size is not None:
        batches = [synthetic_batch(model, args.batch, args.size, mapping, args.seed + 1, i)
                   for i in range(args.steps)]
    else:
        batches = batches_from(cfg, model, args.batch, args.steps, args.seed + 1)
    n_label, n_head, head_size = valid_pixels(batches, model)
    size = tuple(batches[0]["inputs"].shape[-2:])
    print(f"measuring {len(batches)} train batches x {args.batch} images {size[0]}x{size[1]} "
          f"(head logits {head_size[0]}x{head_size[1]}; valid pixels per image, mean: "
          f"{n_label:.0f} at label resolution, {n_head:.0f} at the head's); "
          f"{'heads only; ' if args.head_only else ''}"
          f"device {device}, {torch.get_num_threads()} torch thread(s), torch "
          f"{torch.__version__}, {platform.machine()}", flush=True)
    selected = select_terms(args.terms)
    terms = [t for t in selected if t != "aux CE" or model.with_auxiliary_head]
    if len(terms) < len(selected):
        print("the model has no auxiliary head: no 'aux CE' term")
    losses = build_losses(selected, device)
    rows = measure(model, batches, losses, terms, lr, args.adamw_lr, seed=args.seed,
                   progress=True, head_only=args.head_only)
    summary = summarise(rows, lr)
    print()
    for line in format_report(summary, lr, args.adamw_lr):
        print(line)
    print()
    for res in ("logits", "label"):
        img, pix = (f"reinforce rloo4 {res} image", f"reinforce rloo4 {res} pixel")
        if img not in summary or pix not in summary:
            continue
        n = n_head if res == "logits" else n_label
        print(f"image/pixel normalisation, rloo k=4 at {res}: decode-head norm ratio "
              f"{summary[img]['decode'] / summary[pix]['decode']:.0f} (valid pixels per "
              f"image at that resolution: {n:.0f})")
    target = target_line(summary)
    if target:
        print(target)
    if args.json:
        record = dict(study=study["study"], config=os.path.relpath(config, REPO),
                      size=list(size), batch=args.batch, steps=len(batches), lr=lr,
                      head_only=args.head_only, device=str(device),
                      weights=(checkpoint if os.path.isfile(checkpoint) else
                               dict(warmup_iters=iters, warmup_size=args.warmup_size
                                    or args.size)),
                      terms={t: {k: v for k, v in summary[t].items()
                                 if not k.endswith("_steps")} for t in summary})
        with open(args.json, "w") as fh:
            json.dump(record, fh, indent=1, default=str)
        print(f"summary written to {args.json}")
    print(f"total time: {time.perf_counter() - t_all:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
