"""`rewardseg plan`: what a study will cost before it is submitted.

Jobs, GPUs and an estimate of GPU-hours per stage, from the number of training steps
times the seconds per step (:mod:`.speeds`: the GPU check's measured file, else finished
runs, else the configured rate), with each stage's layout (GPUs per job x images per GPU,
and the norm layer: SyncBN across several processes, BN in one) and precision.

The tune stage sums its variants, each at its own rate (a reinforce variant may cost more
than CE). With a measured file, :func:`alternatives` also lists the tune stage's global
batch on other layouts (one GPU x the whole batch, ...) in every precision the file has.
After a study (finished runs under ``work/``), the plan also sets, per stage, the GPU-hours
it planned before any run next to the measured ones (:mod:`.costs`: ``run.json`` and the
SLURM plugin's efficiency reports). The README's GPU-hours: :mod:`.readme`
(``python -m rewardseg.plan --readme README.md``).

Nothing here imports torch or mmseg: the Snakefile (``stage_resources``) and the light CLI
read this package.
"""
from __future__ import annotations

import os
from collections import Counter
from typing import Any, Dict, List, Optional, Union

from .. import paths
from ..runconfig import pretrain_spec, tune_spec
from ..study import ResolvedStudy, resolve
from ..vocabulary import FP32, PRECISIONS
from .costs import DEFAULT_RESOURCES, TUNE, done, format_done, stage_resources
from .speeds import (load_measured, match_measured, mean, measured_seconds_per_step,
                     run_rates, step_rate)

__all__ = ["DEFAULT_RESOURCES", "stage_resources", "layout", "load_measured",
           "match_measured", "plan", "alternatives", "format_plan"]
DDP_NOTE = ("measured s/step is one GPU's step at its per-GPU batch: for GPUs/job > 1 "
            "DDP's gradient all-reduce is not included")


def layout(gpus: int, batch_per_gpu: int) -> str:
    """``4x2 SyncBN``: GPUs per job x images per GPU, and the norm layer the run trains
    with (``train.prepare_config`` turns SyncBN into BN in a single process)."""
    gpus = int(gpus)
    return f"{gpus}x{int(batch_per_gpu)} {'SyncBN' if gpus > 1 else 'BN'}"


def _sources(sources: List[str]) -> str:
    """One source, or each with its number of variants."""
    counts = Counter(sources)
    if len(counts) == 1:
        return sources[0]
    return "; ".join(f"{s} ({n})" for s, n in counts.items())


# ---------------------------------------------------------------- the plan
def plan(study: Union[dict, ResolvedStudy], work_root: str = paths.WORK,
         measured: Optional[Dict[str, Any]] = None, runs: bool = True) -> List[dict]:
    """One row per stage: jobs, GPUs per job, layout, precision, steps, s/step, GPU-hours
    and where s/step comes from; the tune row also lists its variants (``by_variant``).
    ``runs=False``: as planned before any run (finished runs not used for s/step).
    After a study, the pretrain and tune rows also have ``done`` (:func:`done`)."""
    study = resolve(study)
    rows = []
    base = stage_resources(study, paths.PRETRAIN)
    pspec = pretrain_spec(study)
    playout = layout(base["gpus"], pspec["batch_size"])
    pprecision = pspec.get("precision") or FP32
    released = study.released
    if released:  # download + evaluation only: bounded by the job's runtime
        rows.append(dict(stage=f"pretrain (eval {len(released)} released)", kind=paths.PRETRAIN,
                         jobs=1,
                         gpus_per_job=base["gpus"], layout=playout, precision=pprecision,
                         steps=0, seconds_per_step=0.0, source="runtime limit",
                         gpu_hours=base["gpus"] * base["runtime"] / 60.0))
    else:
        rate = (measured_seconds_per_step(work_root, study.name, paths.PRETRAIN)
                if runs else None)
        sps, source = step_rate(pspec, base, measured, rate)
        steps = study["pretrain"]["iters"]
        rows.append(dict(stage=paths.PRETRAIN, kind=paths.PRETRAIN, jobs=1,
                         gpus_per_job=base["gpus"],
                         layout=playout, precision=pprecision, steps=steps,
                         seconds_per_step=sps, source=source,
                         gpu_hours=base["gpus"] * steps * sps / 3600.0))

    tune = stage_resources(study, TUNE)
    rates = run_rates(work_root, study.name, TUNE) if runs else {}  # one pass
    all_runs = mean([r for values in rates.values() for r in values])
    by_variant = []
    for v in study.variants:
        spec = tune_spec(study, v, study.seeds[0])
        rate = mean(rates.get(v, [])) or all_runs
        sps, source = step_rate(spec, tune, measured, rate)
        steps = len(study.seeds) * spec["iters"]  # the seed changes nothing else
        by_variant.append(dict(variant=v, jobs=len(study.seeds), steps=steps,
                               iters=spec["iters"], seconds_per_step=sps, source=source,
                               layout=layout(tune["gpus"], spec["batch_size"]),
                               precision=spec.get("precision") or FP32,
                               gpu_hours=tune["gpus"] * steps * sps / 3600.0))
    total_steps = sum(b["steps"] for b in by_variant)
    gpu_hours = sum(b["gpu_hours"] for b in by_variant)
    jobs = len(study.variants) * len(study.seeds)
    rows.append(dict(stage=TUNE, kind=TUNE, jobs=jobs, gpus_per_job=tune["gpus"],
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


def _precision_order(p: str) -> int:
    return PRECISIONS.index(p) if p in PRECISIONS else len(PRECISIONS)


def alternatives(study: Union[dict, ResolvedStudy], measured: Dict[str, Any]) -> List[dict]:
    """The tune stage's global batch on other layouts, from the measured file only: one
    GPU x the global batch (BN), the configured layout, 4 GPUs x global/4 when it
    divides; each in every precision the file has for this model. Rows whose variants
    are not all measured (own row or CE row) have ``gpu_hours`` None."""
    study = resolve(study)
    tune = stage_resources(study, TUNE)
    gpus = int(tune["gpus"])
    specs = {v: tune_spec(study, v, study.seeds[0]) for v in study.variants}
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
    configured = {(gpus, global_batch // gpus, s.get("precision") or FP32,
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
                steps = {v: len(study.seeds) * specs[v]["iters"] for v in specs}
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


def format_plan(study: Union[dict, ResolvedStudy], rows: List[dict],
                alternative_rows: Optional[List[dict]] = None,
                measured: Optional[Dict[str, Any]] = None) -> str:
    study = resolve(study)
    lines = [f"study {study.name}: {len(study.variants)} variants x "
             f"{len(study.seeds)} seeds (layout: GPUs/job x images/GPU, norm layer)",
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
    tune = next((r for r in rows if r["stage"] == TUNE), None)
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
