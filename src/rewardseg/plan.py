"""`rewardseg plan`: what a study will cost before it is submitted.

Jobs, GPUs and an estimate of GPU-hours per stage, from the number of training steps
times the seconds per step, with each stage's layout (GPUs per job x images per GPU, and
the norm layer: SyncBN across several processes, BN in one) and precision. The seconds
per step of a run, best source first:

1. ``--measured FILE``: the JSON of ``bench/gpu_check.sh`` (schema
   ``rewardseg-gpu-check/1``), the row of the same model config, images per GPU,
   precision and loss (for reinforce also its baseline and samples, where the row names
   them), else that model / batch / precision's CE row ("measured CE");
2. finished runs of the study (their ``run.json``: wall time / iterations);
3. ``resources.<stage>.seconds_per_step`` in the study config ("configured").

The tune stage sums its variants, each at its own rate (a reinforce variant may cost more
than CE). A measured rate is one GPU's step at its per-GPU batch: DDP's all-reduce is not
in it. With a measured file, ``alternatives`` also lists the tune stage's global batch on
other layouts (one GPU x the whole batch, ...) in every precision the file has.

After a study (finished runs under ``work/``), the plan also sets, per stage, the GPU-hours
it planned before any run (the measured file or the configured rate) next to the measured
ones: each finished run's ``run.json`` (wall time x its GPUs) and, where the SLURM plugin
wrote an efficiency report (``--slurm-efficiency-report``: ``logs/slurm/
efficiency_report_<id>.csv``, needs job accounting), the jobs SLURM ran for the stage (every
attempt), their elapsed time x GPUs, CPU efficiency and peak memory.

Nothing here imports torch or mmseg: the Snakefile and the light CLI read this module.
"""
from __future__ import annotations

import csv
import glob
import json
import os
from collections import Counter
from typing import Any, Dict, List, Optional, Tuple

from . import paths
from .runconfig import pretrain_spec, tune_spec
from .study import released_checkpoints
from .vocabulary import BASELINES, LOSSES, SAMPLING

try:
    from .vocabulary import PRECISIONS
except ImportError:  # pragma: no cover  (older vocabulary)
    PRECISIONS = ("fp32", "bf16", "fp16")

DEFAULT_RESOURCES = {"gpus": 1, "cpus": 4, "mem_mb": 16000, "runtime": 120,
                     "seconds_per_step": 1.0}
MEASURED_SCHEMA = "rewardseg-gpu-check/1"
# a measured row of a reward estimator may name its baseline; one of an estimator that
# draws samples (a baseline of it needs several: reinforce) also its samples
ROW_FIELDS = {loss: ("baseline", "num_samples", "sample_at") if loss in SAMPLING
              else ("baseline",) for loss in BASELINES}
MEASURED_STEP_KEYS = ("model_config", "batch_per_gpu", "precision", "loss",
                      "seconds_per_step")
DDP_NOTE = ("measured s/step is one GPU's step at its per-GPU batch: for GPUs/job > 1 "
            "DDP's gradient all-reduce is not included")


def stage_resources(study: dict, stage: str) -> Dict[str, float]:
    res = dict(DEFAULT_RESOURCES)
    res.update((study.get("resources") or {}).get(stage) or {})
    return res


def layout(gpus: int, batch_per_gpu: int) -> str:
    """``4x2 SyncBN``: GPUs per job x images per GPU, and the norm layer the run trains
    with (``train.prepare_config`` turns SyncBN into BN in a single process)."""
    gpus = int(gpus)
    return f"{gpus}x{int(batch_per_gpu)} {'SyncBN' if gpus > 1 else 'BN'}"


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
    precision = precision or spec.get("precision") or "fp32"
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
def _mean(values: List[float]) -> Optional[float]:
    return sum(values) / len(values) if values else None


def run_rates(work_root: str, study: str, stage: str) -> Dict[str, List[float]]:
    """Wall time per iteration of each finished (not resumed) run of a stage, from its
    ``run.json``, by variant (the pretraining: under its own name)."""
    pattern = paths.run_record(paths.pretrain_dir(study, work_root) if stage == paths.PRETRAIN
                               else paths.run_dir(study, "*", "*", work_root))
    rates: Dict[str, List[float]] = {}
    for path in glob.glob(pattern):
        with open(path) as fh:
            record = json.load(fh)
        iters = record.get("spec", {}).get("iters")
        if iters and record.get("wall_time_s") and not record.get("resumed"):
            # work/<study>/<variant>/seed<k>/run.json (the pretraining: its own folder)
            variant = os.path.basename(os.path.dirname(os.path.dirname(path)))
            rates.setdefault(variant if stage != paths.PRETRAIN else stage, []).append(
                record["wall_time_s"] / iters)
    return rates


def measured_seconds_per_step(work_root: str, study: str, stage: str,
                              variant: Optional[str] = None) -> Optional[float]:
    """Mean wall time per iteration of the finished (not resumed) runs of a stage (tune:
    of ``variant``, default every variant), from their ``run.json``."""
    rates = run_rates(work_root, study, stage)
    if variant is not None:
        return _mean(rates.get(variant, []))
    return _mean([r for values in rates.values() for r in values])


def _rate(spec: Dict[str, Any], res: Dict[str, float], measured: Optional[Dict[str, Any]],
          runs: Optional[float]) -> Tuple[float, str]:
    if measured is not None:
        hit = match_measured(measured, spec)
        if hit:
            return hit["seconds_per_step"], hit["source"]
    if runs:
        return runs, "runs"
    return float(res["seconds_per_step"]), "configured"


def _sources(sources: List[str]) -> str:
    """One source, or each with its number of variants."""
    counts = Counter(sources)
    if len(counts) == 1:
        return sources[0]
    return "; ".join(f"{s} ({n})" for s, n in counts.items())


# ---------------------------------------------------------------- the plan
def plan(study: dict, work_root: str = paths.WORK,
         measured: Optional[Dict[str, Any]] = None, runs: bool = True) -> List[dict]:
    """One row per stage: jobs, GPUs per job, layout, precision, steps, s/step, GPU-hours
    and where s/step comes from; the tune row also lists its variants (``by_variant``).
    ``runs=False``: as planned before any run (finished runs not used for s/step).
    After a study, the pretrain and tune rows also have ``done`` (:func:`done`)."""
    rows = []
    base = stage_resources(study, paths.PRETRAIN)
    pspec = pretrain_spec(study)
    playout = layout(base["gpus"], pspec["batch_size"])
    pprecision = pspec.get("precision") or "fp32"
    released = released_checkpoints(study)
    if released:  # download + evaluation only: bounded by the job's runtime
        rows.append(dict(stage=f"pretrain (eval {len(released)} released)", kind=paths.PRETRAIN,
                         jobs=1,
                         gpus_per_job=base["gpus"], layout=playout, precision=pprecision,
                         steps=0, seconds_per_step=0.0, source="runtime limit",
                         gpu_hours=base["gpus"] * base["runtime"] / 60.0))
    else:
        rate = (measured_seconds_per_step(work_root, study["study"], paths.PRETRAIN)
                if runs else None)
        sps, source = _rate(pspec, base, measured, rate)
        steps = study["pretrain"]["iters"]
        rows.append(dict(stage=paths.PRETRAIN, kind=paths.PRETRAIN, jobs=1,
                         gpus_per_job=base["gpus"],
                         layout=playout, precision=pprecision, steps=steps,
                         seconds_per_step=sps, source=source,
                         gpu_hours=base["gpus"] * steps * sps / 3600.0))

    tune = stage_resources(study, "tune")
    rates = run_rates(work_root, study["study"], "tune") if runs else {}  # one pass
    all_runs = _mean([r for values in rates.values() for r in values])
    by_variant = []
    for v in study["variants"]:
        spec = tune_spec(study, v, study["seeds"][0])
        rate = _mean(rates.get(v, [])) or all_runs
        sps, source = _rate(spec, tune, measured, rate)
        steps = len(study["seeds"]) * spec["iters"]  # the seed changes nothing else
        by_variant.append(dict(variant=v, jobs=len(study["seeds"]), steps=steps,
                               iters=spec["iters"], seconds_per_step=sps, source=source,
                               layout=layout(tune["gpus"], spec["batch_size"]),
                               precision=spec.get("precision") or "fp32",
                               gpu_hours=tune["gpus"] * steps * sps / 3600.0))
    total_steps = sum(b["steps"] for b in by_variant)
    gpu_hours = sum(b["gpu_hours"] for b in by_variant)
    jobs = len(study["variants"]) * len(study["seeds"])
    rows.append(dict(stage="tune", kind="tune", jobs=jobs, gpus_per_job=tune["gpus"],
                     layout=_sources([b["layout"] for b in by_variant]),
                     precision=_sources([b["precision"] for b in by_variant]),
                     steps=total_steps,
                     # the steps-weighted mean: GPU-h = GPUs x steps x this
                     seconds_per_step=gpu_hours * 3600.0 / (tune["gpus"] * total_steps)
                     if total_steps else 0.0,
                     source=_sources([b["source"] for b in by_variant]),
                     gpu_hours=gpu_hours, by_variant=by_variant))
    rows.append(dict(stage="data + collect + report", kind="local", jobs=jobs + 10,
                     gpus_per_job=0, layout="-", precision="-", steps=0,
                     seconds_per_step=0.0, source="-", gpu_hours=0.0))
    if runs:
        after = done(study, work_root)
        if any(d["runs"] or d["slurm"] for d in after.values()):
            before = {r["kind"]: r["gpu_hours"]
                      for r in plan(study, work_root, measured, runs=False)}
            for r in rows:
                if r["kind"] in after:
                    r["done"] = dict(after[r["kind"]], planned_gpu_hours=before[r["kind"]])
    return rows


# ---------------------------------------------------------------- after the study
EFFICIENCY_REPORT = "efficiency_report_*.csv"  # the SLURM plugin's file name


def _gpu_hours(record: dict, configured: int) -> float:
    """A run record's wall time x its GPUs (``world_size``, else the stage's; none for a
    stage configured with no GPU)."""
    gpus = int(record.get("world_size") or configured) if configured > 0 else 0
    return float(record.get("wall_time_s") or 0.0) * gpus / 3600.0


def run_hours(study: dict, work_root: str = paths.WORK) -> Dict[str, Dict[str, Any]]:
    """Per stage (``pretrain``, ``tune``): the finished runs of the study's variants and
    seeds, and their GPU-hours, each run's ``run.json`` ``wall_time_s`` x its GPUs
    (``world_size``: the processes, one per GPU; 0 for a stage configured with no GPU).
    A resumed run's wall time is its last attempt's only (``resumed``); a pretraining in
    parts adds each part's (``part_<n>.json``)."""
    name = study["study"]
    records = {paths.PRETRAIN: [paths.run_record(paths.pretrain_dir(name, work_root))],
               "tune": [paths.run_record(paths.run_dir(name, v, s, work_root))
                        for v in study["variants"] for s in study["seeds"]]}
    out = {}
    for stage, files in records.items():
        configured = int(stage_resources(study, stage)["gpus"])
        runs = resumed = 0
        hours = 0.0
        for path in files:
            if not os.path.isfile(path):
                continue
            with open(path) as fh:
                record = json.load(fh)
            if record.get("wall_time_s") is None:
                continue
            hours += _gpu_hours(record, configured)
            runs += 1
            resumed += bool(record.get("resumed"))
        if stage == paths.PRETRAIN:  # the parts of a pretraining in parts
            for part in glob.glob(paths.pretrain_part(name, "*", work_root)):
                with open(part) as fh:
                    hours += _gpu_hours(json.load(fh), configured)
        out[stage] = dict(runs=runs, expected=len(files), resumed=resumed, gpu_hours=hours)
    return out


def efficiency_reports(work_root: str = paths.WORK) -> List[str]:
    """The SLURM plugin's efficiency reports of the checkout that holds ``work_root``: the
    profile writes them to ``logs/slurm/`` (``slurm-efficiency-report-path``), the plugin
    without one to the working directory."""
    root = os.path.dirname(os.path.abspath(work_root))
    return sorted(glob.glob(os.path.join(root, paths.LOGS, "slurm", EFFICIENCY_REPORT))
                  + glob.glob(os.path.join(root, EFFICIENCY_REPORT)))


def _stage_of(rule: str, study: dict) -> Optional[str]:
    """The stage of a SLURM job of this study, from its comment (the plugin's
    ``rule_<rule>_wildcards_<study>[_<variant>_<seed>]``), or None."""
    name = study["study"]
    if rule == f"rule_pretrain_wildcards_{name}" or \
            rule.startswith(f"rule_pretrain_part_wildcards_{name}_"):
        return paths.PRETRAIN
    prefix = f"rule_tune_wildcards_{name}_"
    if rule.startswith(prefix):
        variant, _, seed = rule[len(prefix):].rpartition("_")
        if variant in study["variants"] and seed.isdigit():
            return "tune"
    return None


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def slurm_hours(study: dict, reports: List[str]) -> Dict[str, Dict[str, Any]]:
    """Per stage, from the efficiency reports: the SLURM jobs that ran a step for it (every
    attempt: cancelled, failed, requeued and retried ones too), their GPU-hours (elapsed x
    the stage's GPUs: the report has no GPU column), CPU efficiency (CPU time / (elapsed x
    CPUs), over all its steps), the largest memory use (% of the request, and MiB).
    A report without rule names (the cluster stores no job comments) is not attributed."""
    steps: Dict[str, Dict[str, str]] = {}
    for report in reports:
        with open(report, newline="") as fh:
            for row in csv.DictReader(fh):
                if row.get("RuleName") and row.get("JobID"):
                    steps[row["JobID"]] = dict(row, report=report)  # a job once
    out: Dict[str, Dict[str, Any]] = {}
    for row in steps.values():
        stage = _stage_of(row["RuleName"], study)
        if stage is None:
            continue
        gpus = int(stage_resources(study, stage)["gpus"])
        agg = out.setdefault(stage, dict(jobs=set(), elapsed_s=0.0, gpu_hours=0.0,
                                         cpu_s=0.0, cpu_capacity_s=0.0, peak_mem_pct=0.0,
                                         peak_mem_mb=0.0, reports=set()))
        elapsed = _number(row.get("Elapsed_sec"))
        agg["jobs"].add(row.get("MainJobID") or row["JobID"].split(".")[0])
        agg["elapsed_s"] += elapsed
        agg["gpu_hours"] += elapsed * gpus / 3600.0
        agg["cpu_s"] += _number(row.get("TotalCPU_sec"))
        agg["cpu_capacity_s"] += max(elapsed, 1.0) * max(_number(row.get("NCPUS")), 1.0)
        agg["peak_mem_pct"] = max(agg["peak_mem_pct"], _number(row.get("Memory Usage (%)")))
        agg["peak_mem_mb"] = max(agg["peak_mem_mb"], _number(row.get("MaxRSS_MB")))
        agg["reports"].add(row["report"])
    for agg in out.values():
        agg["jobs"] = len(agg["jobs"])
        agg["reports"] = sorted(agg["reports"])
        agg["cpu_efficiency_pct"] = 100.0 * agg.pop("cpu_s") / agg.pop("cpu_capacity_s")
    return out


def done(study: dict, work_root: str = paths.WORK) -> Dict[str, Dict[str, Any]]:
    """Per stage: :func:`run_hours`, and ``slurm`` (:func:`slurm_hours`, None without an
    efficiency report that names the stage's jobs)."""
    slurm = slurm_hours(study, efficiency_reports(work_root))
    return {stage: dict(hours, slurm=slurm.get(stage))
            for stage, hours in run_hours(study, work_root).items()}


def _precision_order(p: str) -> int:
    return PRECISIONS.index(p) if p in PRECISIONS else len(PRECISIONS)


def alternatives(study: dict, measured: Dict[str, Any]) -> List[dict]:
    """The tune stage's global batch on other layouts, from the measured file only: one
    GPU x the global batch (BN), the configured layout, 4 GPUs x global/4 when it
    divides; each in every precision the file has for this model. Rows whose variants
    are not all measured (own row or CE row) have ``gpu_hours`` None."""
    tune = stage_resources(study, "tune")
    gpus = int(tune["gpus"])
    specs = {v: tune_spec(study, v, study["seeds"][0]) for v in study["variants"]}
    per_gpu = {s["batch_size"] for s in specs.values()}
    if len(per_gpu) != 1:  # variants with their own batch: no single global batch
        return []
    global_batch = gpus * per_gpu.pop()
    layouts = [(1, global_batch), (gpus, global_batch // gpus)]
    if global_batch % 4 == 0:
        layouts.append((4, global_batch // 4))
    layouts = sorted(set(layouts))
    model = os.path.basename(study["model"]["config"])
    formats = sorted({(r["precision"], bool(r.get("channels_last", False)))
                      for r in measured["steps"]
                      if os.path.basename(r["model_config"] or "") == model},
                     key=lambda pc: (pc[1], _precision_order(pc[0])))
    configured = {(gpus, global_batch // gpus, s.get("precision") or "fp32",
                   bool(s.get("channels_last", False))) for s in specs.values()}
    out = []
    for g, b in layouts:
        for p, cl in formats:
            hits = {v: match_measured(measured, dict(s, channels_last=cl), batch_per_gpu=b,
                                      precision=p)
                    for v, s in specs.items()}
            # only rows of this memory format price it
            if any(h and h["other_format"] for h in hits.values()):
                hits = {v: None for v in hits}
            row = dict(layout=layout(g, b), gpus=g, batch_per_gpu=b,
                       precision=p + ("+CL" if cl else ""), channels_last=cl,
                       configured=(g, b, p, cl) in configured, gpu_hours=None,
                       hours_per_job=None, ce_seconds_per_step=None, peak_memory_gib=None,
                       priced_as_ce=None, variants=len(specs))
            if all(hits.values()):
                steps = {v: len(study["seeds"]) * specs[v]["iters"] for v in specs}
                row["gpu_hours"] = sum(g * steps[v] * hits[v]["seconds_per_step"]
                                       for v in specs) / 3600.0
                row["hours_per_job"] = max(specs[v]["iters"] * hits[v]["seconds_per_step"]
                                           for v in specs) / 3600.0
                peaks = [h["peak_memory_gib"] for h in hits.values()
                         if h["peak_memory_gib"] is not None]
                row["peak_memory_gib"] = max(peaks) if peaks else None
                row["priced_as_ce"] = sum(h["source"].startswith("measured CE")
                                          for h in hits.values())
                ce = match_measured(measured, dict(next(iter(specs.values())), loss="ce",
                                                   channels_last=cl),
                                    batch_per_gpu=b, precision=p)
                row["ce_seconds_per_step"] = ce["seconds_per_step"] if ce else None
            out.append(row)
    sizes = sorted({f"{r['height']}x{r['width']}" for r in measured["steps"]
                    if os.path.basename(r["model_config"] or "") == model
                    and r.get("height") and r.get("width")})
    for row in out:
        row["sizes"] = sizes
    return out


def format_plan(study: dict, rows: List[dict],
                alternative_rows: Optional[List[dict]] = None,
                measured: Optional[Dict[str, Any]] = None) -> str:
    lines = [f"study {study['study']}: {len(study['variants'])} variants x "
             f"{len(study['seeds'])} seeds (layout: GPUs/job x images/GPU, norm layer)",
             f"{'stage':<30}{'jobs':>6}{'GPUs/job':>10}{'steps':>10}{'s/step':>9}"
             f"{'GPU-h':>9}  {'layout':<12}{'precision':<11}s/step from"]
    for r in rows:
        lines.append(f"{r['stage']:<30}{r['jobs']:>6}{r['gpus_per_job']:>10}{r['steps']:>10}"
                     f"{r['seconds_per_step']:>9.3f}{r['gpu_hours']:>9.2f}  "
                     f"{r['layout']:<12}{r['precision']:<11}{r['source']}")
    total = sum(r["gpu_hours"] for r in rows)
    gpu_jobs = sum(r["jobs"] for r in rows if r["gpus_per_job"])
    lines.append(f"{'total':<30}{sum(r['jobs'] for r in rows):>6}{'':>10}{'':>10}{'':>9}"
                 f"{total:>9.2f}  ({gpu_jobs} GPU jobs)")
    tune = next((r for r in rows if r["stage"] == "tune"), None)
    variants = (tune or {}).get("by_variant") or []
    if len({(b["seconds_per_step"], b["source"]) for b in variants}) > 1:
        lines.append("")
        lines.append("tune by variant:")
        lines.append(f"  {'variant':<22}{'jobs':>5}{'steps':>10}{'s/step':>9}{'GPU-h':>9}"
                     "  s/step from")
        for b in variants:
            lines.append(f"  {b['variant']:<22}{b['jobs']:>5}{b['steps']:>10}"
                         f"{b['seconds_per_step']:>9.3f}{b['gpu_hours']:>9.2f}  {b['source']}")
    if any(r["gpus_per_job"] > 1 and "measured" in r["source"] for r in rows):
        lines.append(DDP_NOTE)
    lines.extend(format_done(rows))
    if alternative_rows is not None:
        lines.append("")
        device = f", measured on {measured['device']}" if measured else ""
        if not alternative_rows:
            lines.append(f"alternatives for tune{device}: none (the variants differ in "
                         "batch size, or the file has no row for this model)")
        else:
            g0 = alternative_rows[0]
            glob_batch = g0["gpus"] * g0["batch_per_gpu"]
            sizes = f" at {' / '.join(g0['sizes'])}" if g0.get("sizes") else ""
            lines.append(f"alternatives for tune: global batch {glob_batch}{device}{sizes}, "
                         "each variant at its own measured s/step")
            lines.append(f"  {'layout':<12}{'precision':<11}{'CE s/step':>10}{'GPU-h':>9}"
                         f"{'h/job':>8}{'peak GiB':>10}{'at CE rate':>12}")
            missing = []
            for a in alternative_rows:
                if a["gpu_hours"] is None:
                    missing.append(f"{a['layout']} {a['precision']}")
                    continue
                ce = ("-" if a["ce_seconds_per_step"] is None
                      else f"{a['ce_seconds_per_step']:.3f}")
                peak = "-" if a["peak_memory_gib"] is None else f"{a['peak_memory_gib']:.1f}"
                mark = "  <- configured" if a["configured"] else ""
                lines.append(f"  {a['layout']:<12}{a['precision']:<11}{ce:>10}"
                             f"{a['gpu_hours']:>9.2f}{a['hours_per_job']:>8.2f}{peak:>10}"
                             f"{str(a['priced_as_ce']) + '/' + str(a['variants']):>12}{mark}")
            if missing:
                lines.append(f"  not measured: {', '.join(missing)}")
            lines.append("  h/job: the longest variant's steps x s/step; GPUs/job > 1 "
                         "without DDP's all-reduce; at CE rate: variants with no row of "
                         "their own, priced by the CE row; +CL: channels_last")
    return "\n".join(lines)


def format_done(rows: List[dict]) -> List[str]:
    """The after-the-study block: planned GPU-hours next to the measured ones."""
    stages = [r for r in rows if r.get("done")]
    if not stages:
        return []
    lines = ["", "after the study: GPU-hours planned (before any run) vs measured",
             f"  {'stage':<28}{'planned':>9}{'runs':>8}{'run.json':>10}"
             f"{'SLURM jobs':>12}{'SLURM':>9}{'CPU eff':>9}{'peak mem':>10}"]
    total = dict(planned=0.0, runs=0.0, slurm=0.0)
    reports = set()
    resumed = 0
    for r in stages:
        d = r["done"]
        s = d["slurm"]
        total["planned"] += d["planned_gpu_hours"]
        total["runs"] += d["gpu_hours"]
        resumed += d["resumed"]
        if s:
            total["slurm"] += s["gpu_hours"]
            reports.update(s["reports"])
            slurm = (f"{s['jobs']:>12}{s['gpu_hours']:>9.3f}{s['cpu_efficiency_pct']:>8.0f}%"
                     f"{s['peak_mem_pct']:>9.0f}%")
        else:
            slurm = f"{'-':>12}{'-':>9}{'-':>9}{'-':>10}"
        lines.append(f"  {r['stage']:<28}{d['planned_gpu_hours']:>9.3f}"
                     f"{str(d['runs']) + '/' + str(d['expected']):>8}{d['gpu_hours']:>10.3f}"
                     + slurm)
    slurm_total = f"{total['slurm']:>9.3f}" if reports else f"{'-':>9}"
    lines.append(f"  {'total':<28}{total['planned']:>9.3f}{'':>8}{total['runs']:>10.3f}"
                 f"{'':>12}{slurm_total}")
    lines.append("  planned: the plan without finished runs (measured file or configured "
                 "s/step); runs: finished/planned; run.json: wall time x GPUs of each "
                 "finished run"
                 + (f" ({resumed} resumed: their last attempt only)" if resumed else ""))
    if reports:
        lines.append("  SLURM: every job SLURM ran for the stage (retries too), elapsed x "
                     "GPUs; CPU eff = CPU time / (elapsed x CPUs); peak mem = largest "
                     "MaxRSS / requested memory; from " + ", ".join(
                         os.path.relpath(p) for p in sorted(reports)))
    else:
        lines.append("  SLURM: no efficiency report (snakemake --profile slurm "
                     "--slurm-efficiency-report, on a cluster with job accounting)")
    return lines


# ---------------------------------------------------------------- the README's GPU-hours
#: The paper studies whose GPU-hours the README states, and the GPU check's measurements
#: it prices them with (``python -m rewardseg.plan --readme README.md`` rewrites them).
README_STUDIES = ("configs/studies/cityscapes.yaml", "configs/studies/cityscapes-r18.yaml",
                  "configs/studies/easyportrait.yaml", "configs/studies/mapillary.yaml")
README_PLANNED = ("configs/studies/cityscapes.yaml", "configs/studies/cityscapes-r18.yaml")
README_MEASURED = "bench/measured/nvidia-h200.json"
README_BLOCK = ("<!-- plan: generated by `python -m rewardseg.plan --readme README.md` from "
                "{measured} and the study configs; do not edit by hand -->",
                "<!-- end of plan -->")
_NOWHERE = os.path.join(os.sep, "nonexistent", "rewardseg-plan-work")  # no finished runs


def _hours(value: float) -> str:
    """GPU-hours as the README writes them: whole hours from 20 on, else one decimal."""
    return f"{value:.0f}" if value >= 20 else f"{value:.1f}"


def _planned(path: str, root: str, measured: Optional[Dict[str, Any]]):
    from .study import load_study

    study = load_study(os.path.join(root, path))
    # as planned before any run: a checkout's own work/ folder does not change it
    return study, plan(study, work_root=_NOWHERE, measured=measured, runs=False)


def _row(rows: List[dict], kind: str) -> dict:
    return next(r for r in rows if r["kind"] == kind)


def _alternative(alts: List[dict]) -> Optional[dict]:
    """The cheapest priced alternative layout of the tune stage, or None."""
    priced = [a for a in alts if a["gpu_hours"] is not None]
    return min(priced, key=lambda a: a["gpu_hours"]) if priced else None


def _alt_text(alt: dict) -> str:
    g, b = alt["gpus"], alt["batch_per_gpu"]
    fmt = alt["precision"].replace("+CL", " channels-last")
    return f"{g} × {b} {fmt}"


def readme_cell(path: str, root: str, measured: Dict[str, Any]) -> str:
    """The README table's ``rewardseg plan`` cell of one study: the total GPU-hours with
    the GPU check's measurements (the configured s/step where the file has no row), the
    tune stage's layout, and the cheapest measured layout of the tune stage when it is
    not the configured one."""
    study, rows = _planned(path, root, measured)
    tune = _row(rows, "tune")
    total = sum(r["gpu_hours"] for r in rows)
    tune_layout = tune["layout"].replace("x", " × ", 1)
    how = ("measured on an " + measured["device"].replace("NVIDIA ", "")
           if "measured" in tune["source"] else "configured s/step")
    text = (f"{_hours(total)} GPU-h, {how} (tune {_hours(tune['gpu_hours'])}: "
            f"{tune_layout}, {tune['precision']}{', channels-last' if _channels_last(study) else ''})")
    alt = _alternative(alternatives(study, measured)) if "measured" in tune["source"] else None
    if alt is not None and not alt["configured"]:
        text += f"; tune as {_alt_text(alt)}: {_hours(alt['gpu_hours'])}"
    return text


def _channels_last(study: dict) -> bool:
    return bool(tune_spec(study, next(iter(study["variants"])), study["seeds"][0])
                .get("channels_last"))


def _plan_excerpt(text: str) -> str:
    """``format_plan``'s output without its per-variant table (the stage rows and the
    alternatives: what the README shows)."""
    out, skipping = [], False
    for line in text.splitlines():
        if line == "tune by variant:":
            skipping = True
            continue
        if skipping:
            if line.startswith("  ") or not line:
                if not line:
                    skipping = False
                    out.append(line)
                continue
            skipping = False
        out.append(line)
    return "\n".join(out).rstrip("\n").replace("\n\n\n", "\n\n")


def readme_block(root: str = ".", measured_path: str = README_MEASURED) -> str:
    """The README's generated block (between ``README_BLOCK``'s markers): ``rewardseg plan
    --measured`` of the Cityscapes studies (without the per-variant tables) and a table of
    the tune stages' GPU-hours: as configured with the measurements, the cheapest measured
    layout, and with the configs' own s/step (no ``--measured``)."""
    measured = load_measured(os.path.join(root, measured_path))
    lines = ["```text"]
    summary = []
    for i, path in enumerate(README_PLANNED):
        study, rows = _planned(path, root, measured)
        alts = alternatives(study, measured)
        if i:
            lines.append("")
        lines.append(_plan_excerpt(format_plan(study, rows, alts, measured)))
        _, configured = _planned(path, root, None)
        tune = _row(rows, "tune")
        alt = _alternative(alts)
        cl = "+CL" if _channels_last(study) else ""
        summary.append(
            f"| `{path}` | {_hours(tune['gpu_hours'])} ({tune['layout']}, {tune['precision']}{cl}) "
            f"| {_hours(alt['gpu_hours']) + ' (' + alt['layout'] + ', ' + alt['precision'] + ')' if alt else '–'} "
            f"| {_hours(_row(configured, 'tune')['gpu_hours'])} |")
    lines.append("```")
    lines += ["",
              f"The tune stages in GPU-hours (`rewardseg plan`, before any run; +CL: "
              f"channels-last):",
              "",
              f"| study | as configured, {measured['device']} s/step | cheapest measured "
              "layout | the config's `seconds_per_step` (no `--measured`) |",
              "|---|---|---|---|"] + summary
    return "\n".join(lines) + "\n"


def _block_span(text: str) -> Optional[Tuple[int, int]]:
    head = README_BLOCK[0].split("{")[0]
    start = text.find(head)
    end = text.find(README_BLOCK[1])
    if start < 0 or end < start:
        return None
    return start, end


def _cell_lines(text: str) -> Dict[str, Tuple[int, int]]:
    """Per study of :data:`README_STUDIES`: the span of the last cell of its row in the
    paper studies' table (the line starting ``| `configs/studies/<name>.yaml` |``)."""
    spans = {}
    for path in README_STUDIES:
        start = text.find(f"\n| `{path}` |")
        if start < 0:
            continue
        end = text.find("\n", start + 1)
        line = text[start + 1:end]
        cut = line.rstrip().rstrip("|").rstrip().rfind(" | ")
        spans[path] = (start + 1 + cut + 3, start + 1 + len(line.rstrip().rstrip("|").rstrip()))
    return spans


def readme_problems(text: str, root: str = ".", measured_path: str = README_MEASURED
                    ) -> List[str]:
    """How the README's GPU-hours differ from ``rewardseg plan``'s (empty: they agree)."""
    problems = []
    span = _block_span(text)
    if span is None:
        problems.append(f"no generated plan block ({README_BLOCK[0].split('{')[0]!r} ... "
                        f"{README_BLOCK[1]!r})")
    else:
        have = text[text.index("\n", span[0]) + 1:span[1]]
        want = readme_block(root, measured_path)
        if have != want:
            problems.append("the plan block is not what `rewardseg plan` prints now")
    measured = load_measured(os.path.join(root, measured_path))
    cells = _cell_lines(text)
    for path in README_STUDIES:
        if path not in cells:
            problems.append(f"no row for `{path}` in the paper studies' table")
            continue
        have = text[cells[path][0]:cells[path][1]]
        want = readme_cell(path, root, measured)
        if have != want:
            problems.append(f"`{path}`: the table says {have!r}, the plan {want!r}")
    return problems


def update_readme(readme: str, root: str = ".", measured_path: str = README_MEASURED) -> bool:
    """Rewrite the README's generated plan block and the ``rewardseg plan`` cells of the
    paper studies' table (nothing else); True when it changed."""
    from .fileio import write_text_atomic

    with open(readme) as fh:
        text = fh.read()
    span = _block_span(text)
    if span is None:
        raise ValueError(f"{readme}: no generated plan block (a line starting "
                         f"{README_BLOCK[0].split('{')[0]!r} and a line {README_BLOCK[1]!r})")
    head = README_BLOCK[0].format(measured=measured_path)
    updated = text[:span[0]] + head + "\n" + readme_block(root, measured_path) + text[span[1]:]
    measured = load_measured(os.path.join(root, measured_path))
    for path, (a, b) in sorted(_cell_lines(updated).items(), key=lambda kv: -kv[1][0]):
        updated = updated[:a] + readme_cell(path, root, measured) + updated[b:]
    if updated != text:
        write_text_atomic(readme, updated)
    return updated != text


def main(argv=None) -> int:
    """``python -m rewardseg.plan --readme README.md [--check]``: rewrite (or check) the
    README's GPU-hours from the study configs and the GPU check's measurements."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__.split("\n\n")[0])
    parser.add_argument("--readme", default="README.md")
    parser.add_argument("--measured", default=README_MEASURED)
    parser.add_argument("--root", default=".", help="the checkout (study configs, measured)")
    parser.add_argument("--check", action="store_true",
                        help="only say how the README differs (exit 1 when it does)")
    ns = parser.parse_args(argv)
    if ns.check:
        with open(ns.readme) as fh:
            problems = readme_problems(fh.read(), ns.root, ns.measured)
        for p in problems:
            print(f"{ns.readme}: {p}")
        return 1 if problems else 0
    changed = update_readme(ns.readme, ns.root, ns.measured)
    print(f"{ns.readme}: GPU-hours {'rewritten' if changed else 'already current'} "
          f"(rewardseg plan, {ns.measured})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
