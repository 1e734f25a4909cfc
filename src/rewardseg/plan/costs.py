"""What a study's stages request and, after the study, what they cost.

:func:`stage_resources` is a stage's SLURM request (GPUs, CPUs, memory, runtime) and its
configured seconds per step (the Snakefile reads it). After a study (finished runs under
``work/``), :func:`done` gives per stage the GPU-hours measured by each finished run's
``run.json`` (wall time x its GPUs) and, where the SLURM plugin wrote an efficiency report
(``--slurm-efficiency-report``: ``logs/slurm/efficiency_report_<id>.csv``, needs job
accounting), the jobs SLURM ran for the stage (every attempt), their elapsed time x GPUs,
CPU efficiency and peak memory; :func:`format_done` writes them next to the planned ones.
"""
from __future__ import annotations

import glob
import json
import os
from typing import Any, Dict, List, Optional, Union

from .. import paths, slurm
from ..study import DEFAULT_RESOURCES, ResolvedStudy, resolve, stage_resources  # noqa: F401

TUNE = "tune"  # the tuning stage (its rows, its rule)
# the workflow's training rules (workflow/rules/train.smk) and the stage each trains
STAGE_RULES = {"pretrain": paths.PRETRAIN, "pretrain_part": paths.PRETRAIN, "tune": TUNE}


def _gpu_hours(record: dict, configured: int) -> float:
    """A run record's wall time x its GPUs (``world_size``, else the stage's; none for a
    stage configured with no GPU)."""
    gpus = int(record.get("world_size") or configured) if configured > 0 else 0
    return float(record.get("wall_time_s") or 0.0) * gpus / 3600.0


def run_hours(study: Union[dict, ResolvedStudy], work_root: str = paths.WORK) -> Dict[str, Dict[str, Any]]:
    """Per stage (``pretrain``, ``tune``): the finished runs of the study's variants and
    seeds, and their GPU-hours, each run's ``run.json`` ``wall_time_s`` x its GPUs
    (``world_size``: the processes, one per GPU; 0 for a stage configured with no GPU).
    A resumed run's wall time is its last attempt's only (``resumed``); a pretraining in
    parts adds each part's (``part_<n>.json``)."""
    study = resolve(study)
    name = study.name
    records = {paths.PRETRAIN: [paths.run_record(paths.pretrain_dir(name, work_root))],
               TUNE: [paths.run_record(paths.run_dir(name, v, s, work_root))
                      for v in study.variants for s in study.seeds]}
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
    """The SLURM plugin's efficiency reports of the checkout that holds ``work_root``
    (``logs/slurm/``, where the profile has them written, or the checkout itself)."""
    return slurm.efficiency_reports(os.path.dirname(os.path.abspath(work_root)),
                                    os.path.join(paths.LOGS, "slurm"))


def stage_of(comment: str, study: Union[dict, ResolvedStudy]) -> Optional[str]:
    """The stage of a SLURM job of this study, from the job's comment (its rule, one of
    :data:`STAGE_RULES`, and wildcards: the study[, variant, seed]), or None."""
    job = slurm.plugin_job(comment, STAGE_RULES)
    if job is None:
        return None
    rule, wildcards = job
    study = resolve(study)
    name = study.name
    if rule == "pretrain":
        return paths.PRETRAIN if wildcards == name else None
    if not wildcards.startswith(f"{name}_"):
        return None
    if rule == "pretrain_part":
        return paths.PRETRAIN
    variant, _, seed = wildcards[len(name) + 1:].rpartition("_")
    return TUNE if variant in study.variants and seed.isdigit() else None


def slurm_hours(study: Union[dict, ResolvedStudy], reports: List[str]) -> Dict[str, Dict[str, Any]]:
    """Per stage, from the efficiency reports (:func:`rewardseg.slurm.job_usage`): the
    jobs SLURM ran for it, their GPU-hours (elapsed x the stage's GPUs), CPU efficiency
    and largest memory use."""
    study = resolve(study)
    gpus = {stage: int(stage_resources(study, stage)["gpus"]) for stage in (paths.PRETRAIN, TUNE)}
    return slurm.job_usage(reports, lambda comment: stage_of(comment, study), gpus)


def done(study: Union[dict, ResolvedStudy], work_root: str = paths.WORK) -> Dict[str, Dict[str, Any]]:
    """Per stage: :func:`run_hours`, and ``slurm`` (:func:`slurm_hours`, None without an
    efficiency report that names the stage's jobs)."""
    study = resolve(study)
    slurm_ = slurm_hours(study, efficiency_reports(work_root))
    return {stage: dict(hours, slurm=slurm_.get(stage))
            for stage, hours in run_hours(study, work_root).items()}


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
