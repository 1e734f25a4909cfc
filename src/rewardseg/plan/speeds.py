"""Seconds per training step, the plan's rate, best source first.

1. ``--measured FILE``: the JSON of ``bench/gpu_check.sh`` (schema
   ``rewardseg-gpu-check/1``, :func:`load_measured`), the row of the same model config,
   images per GPU, precision and loss (for reinforce also its baseline and samples, where
   the row names them), else that model / batch / precision's CE row ("measured CE")
   (:func:`match_measured`);
2. finished runs of the study (their ``run.json``: wall time / iterations,
   :func:`run_rates`);
3. ``resources.<stage>.seconds_per_step`` in the study config ("configured").

A measured rate is one GPU's step at its per-GPU batch: DDP's all-reduce is not in it.
"""
from __future__ import annotations

import glob
import json
import os
from typing import Any, Dict, List, Optional, Tuple

from .. import paths
from ..vocabulary import BASELINES, FP32, LOSSES, PRECISIONS, SAMPLING

MEASURED_SCHEMA = "rewardseg-gpu-check/1"
# a measured row of a reward estimator may name its baseline; one of an estimator that
# draws samples (a baseline of it needs several: reinforce) also its samples
ROW_FIELDS = {loss: ("baseline", "num_samples", "sample_at") if loss in SAMPLING
              else ("baseline",) for loss in BASELINES}
MEASURED_STEP_KEYS = ("model_config", "batch_per_gpu", "precision", "loss",
                      "seconds_per_step")


# ---------------------------------------------------------------- the GPU check's file
def load_measured(path: str) -> Dict[str, Any]:
    """The JSON of ``bench/gpu_check.sh``, checked: a ``ValueError`` naming the file and
    what was expected otherwise."""
    expect = f"expected a {MEASURED_SCHEMA} JSON file as written by bench/gpu_check.sh"
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--measured {path}: no such file")
    try:
        with open(path) as fh:
            data = json.load(fh)
    except json.JSONDecodeError as err:
        raise ValueError(f"--measured {path}: not JSON ({err}); {expect}") from None
    if not isinstance(data, dict):
        raise ValueError(f"--measured {path}: top level is {type(data).__name__}; {expect}")
    if data.get("schema") != MEASURED_SCHEMA:
        raise ValueError(f"--measured {path}: schema is {data.get('schema')!r}, not "
                         f"{MEASURED_SCHEMA!r}; {expect}")
    if not isinstance(data.get("device"), str) or not data["device"]:
        raise ValueError(f"--measured {path}: no 'device' (the GPU's name); {expect}")
    steps = data.get("steps")
    if not isinstance(steps, list) or not steps:
        raise ValueError(f"--measured {path}: 'steps' must be a non-empty list; {expect}")
    for i, row in enumerate(steps):
        where = f"--measured {path}: steps[{i}]"
        if not isinstance(row, dict):
            raise ValueError(f"{where} is not an object; {expect}")
        # model_config null: a model no study config names (bench_step --model ...)
        missing = [k for k in MEASURED_STEP_KEYS
                   if k not in row or (row[k] is None and k != "model_config")]
        if missing:
            raise ValueError(f"{where} has no {', '.join(map(repr, missing))}; {expect}")
        if row["precision"] not in PRECISIONS:
            raise ValueError(f"{where}: precision {row['precision']!r} is not one of "
                             f"{', '.join(PRECISIONS)}")
        if row["loss"] not in LOSSES:
            raise ValueError(f"{where}: loss {row['loss']!r} is not one of "
                             f"{', '.join(LOSSES)}")
        sps = row["seconds_per_step"]
        if isinstance(sps, bool) or not isinstance(sps, (int, float)) or sps <= 0:
            raise ValueError(f"{where}: seconds_per_step must be a positive number, "
                             f"got {sps!r}")
        if isinstance(row["batch_per_gpu"], bool) or not isinstance(row["batch_per_gpu"], int):
            raise ValueError(f"{where}: batch_per_gpu must be an integer, "
                             f"got {row['batch_per_gpu']!r}")
    return data


def match_measured(measured: Dict[str, Any], spec: Dict[str, Any],
                   batch_per_gpu: Optional[int] = None,
                   precision: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """The measured step of a run spec (``batch_per_gpu`` / ``precision`` override the
    spec's: the alternatives): {seconds_per_step, source, peak_memory_gib, other_format}
    or None.

    Rows of the same model config file (basename), images per GPU and precision; of
    those, the same loss (an estimator's row: also the same baseline, and for reinforce
    num_samples and sample_at, where the row gives them; a row that gives more of them
    first), else the CE row ("measured CE"). Only rows in the spec's memory format
    (``channels_last``, default False) when there are any: it changes the step time more
    than the loss does; a loss measured only in the other format is priced as the CE row
    times its ratio to CE there ("measured CE x ratio"). Equal rows averaged."""
    batch = int(spec["batch_size"] if batch_per_gpu is None else batch_per_gpu)
    precision = precision or spec.get("precision") or FP32
    channels_last = bool(spec.get("channels_last", False))
    model = os.path.basename(spec["model_config"])
    rows = [r for r in measured["steps"]
            if os.path.basename(r["model_config"] or "") == model
            and int(r["batch_per_gpu"]) == batch and r["precision"] == precision]
    in_format = [r for r in rows if bool(r.get("channels_last", False)) == channels_last]
    others = [r for r in rows if bool(r.get("channels_last", False)) != channels_last]
    other_format = bool(rows) and not in_format
    rows = in_format or rows
    loss = spec.get("loss", "ce")

    fields = ROW_FIELDS.get(loss, ())

    def same_loss(row):
        return row["loss"] == loss and all(row.get(k) is None or row[k] == spec.get(k)
                                           for k in fields)

    def unnamed(row):  # the estimator's fields the row leaves open
        return sum(row.get(k) is None for k in fields)

    def pick(candidates, by_fields):
        key = {id(r): unnamed(r) if by_fields else 0 for r in candidates}
        best = min(key.values())
        chosen = [r for r in candidates if key[id(r)] == best]
        peaks = [r["peak_memory_gib"] for r in chosen if r.get("peak_memory_gib") is not None]
        return (sum(r["seconds_per_step"] for r in chosen) / len(chosen),
                max(peaks) if peaks else None)

    device = measured["device"]
    suffix = f", channels_last={not channels_last}" if other_format else ""
    own = [r for r in rows if same_loss(r)]
    ce = [r for r in rows if r["loss"] == "ce"]
    if own:
        sps, peak = pick(own, True)
        return dict(seconds_per_step=sps, source=f"measured, {device}{suffix}",
                    peak_memory_gib=peak, other_format=other_format)
    if not ce:
        return None
    sps, peak = pick(ce, False)
    # the loss measured only in the other memory format: its ratio to CE there
    own_other = [r for r in others if same_loss(r)]
    ce_other = [r for r in others if r["loss"] == "ce"]
    if not other_format and own_other and ce_other and loss != "ce":
        ratio = pick(own_other, True)[0] / pick(ce_other, False)[0]
        return dict(seconds_per_step=sps * ratio, peak_memory_gib=peak, other_format=False,
                    source=f"measured CE x ratio (channels_last={not channels_last}), "
                           f"{device}")
    return dict(seconds_per_step=sps, source=f"measured CE, {device}{suffix}",
                peak_memory_gib=peak, other_format=other_format)


# ---------------------------------------------------------------- finished runs
def mean(values: List[float]) -> Optional[float]:
    return sum(values) / len(values) if values else None


def run_rates(work_root: str, study: str, stage: str) -> Dict[str, List[float]]:
    """Wall time per iteration of each finished (not resumed) run of a stage, from its
    ``run.json``, by its variant (``spec.variant``; the pretraining: under its own name)."""
    pattern = paths.run_record(paths.pretrain_dir(study, work_root) if stage == paths.PRETRAIN
                               else paths.run_dir(study, "*", "*", work_root))
    rates: Dict[str, List[float]] = {}
    for path in glob.glob(pattern):
        with open(path) as fh:
            record = json.load(fh)
        spec = record.get("spec", {})
        iters = spec.get("iters")
        if iters and record.get("wall_time_s") and not record.get("resumed"):
            rates.setdefault(spec.get("variant") if stage != paths.PRETRAIN else stage,
                             []).append(record["wall_time_s"] / iters)
    return rates


def measured_seconds_per_step(work_root: str, study: str, stage: str,
                              variant: Optional[str] = None) -> Optional[float]:
    """Mean wall time per iteration of the finished (not resumed) runs of a stage (tune:
    of ``variant``, default every variant), from their ``run.json``."""
    rates = run_rates(work_root, study, stage)
    if variant is not None:
        return mean(rates.get(variant, []))
    return mean([r for values in rates.values() for r in values])


def step_rate(spec: Dict[str, Any], res: Dict[str, float],
              measured: Optional[Dict[str, Any]], runs: Optional[float]) -> Tuple[float, str]:
    """A run spec's seconds per step and where they come from: the measured file's row,
    else the finished runs' mean (``runs``), else the stage's configured rate (``res``)."""
    if measured is not None:
        hit = match_measured(measured, spec)
        if hit:
            return hit["seconds_per_step"], hit["source"]
    if runs:
        return runs, "runs"
    return float(res["seconds_per_step"]), "configured"
