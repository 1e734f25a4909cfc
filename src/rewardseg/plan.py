"""`rewardseg plan`: what a study will cost before it is submitted.

Jobs, GPUs and an estimate of GPU-hours per stage, from the number of training steps
times the seconds per step: measured from finished runs of the study when there are
some (their ``run.json``), otherwise ``resources.<stage>.seconds_per_step``
from the study config.
"""
from __future__ import annotations

import glob
import json
from typing import Dict, List, Optional

from . import paths
from .runconfig import tune_spec
from .study import released_checkpoints

DEFAULT_RESOURCES = {"gpus": 1, "cpus": 4, "mem_mb": 16000, "runtime": 120,
                     "seconds_per_step": 1.0}


def stage_resources(study: dict, stage: str) -> Dict[str, float]:
    res = dict(DEFAULT_RESOURCES)
    res.update((study.get("resources") or {}).get(stage) or {})
    return res


def measured_seconds_per_step(work_root: str, study: str, stage: str) -> Optional[float]:
    pattern = paths.run_record(paths.pretrain_dir(study, work_root) if stage == paths.PRETRAIN
                               else paths.run_dir(study, "*", "*", work_root))
    rates = []
    for path in glob.glob(pattern):
        with open(path) as fh:
            record = json.load(fh)
        iters = record.get("spec", {}).get("iters")
        if iters and record.get("wall_time_s") and not record.get("resumed"):
            rates.append(record["wall_time_s"] / iters)
    return sum(rates) / len(rates) if rates else None


def plan(study: dict, work_root: str = paths.WORK) -> List[dict]:
    rows = []
    base = stage_resources(study, paths.PRETRAIN)
    measured = measured_seconds_per_step(work_root, study["study"], paths.PRETRAIN)
    sps = measured or base["seconds_per_step"]
    released = released_checkpoints(study)
    if released:  # download + evaluation only: bounded by the job's runtime
        rows.append(dict(stage=f"pretrain (eval {len(released)} released)", jobs=1,
                         gpus_per_job=base["gpus"], steps=0, seconds_per_step=0.0,
                         source="runtime limit",
                         gpu_hours=base["gpus"] * base["runtime"] / 60.0))
    else:
        steps = study["pretrain"]["iters"]
        rows.append(dict(stage=paths.PRETRAIN, jobs=1, gpus_per_job=base["gpus"], steps=steps,
                         seconds_per_step=sps, source="measured" if measured else "configured",
                         gpu_hours=base["gpus"] * steps * sps / 3600.0))
    tune = stage_resources(study, "tune")
    measured = measured_seconds_per_step(work_root, study["study"], "tune")
    sps = measured or tune["seconds_per_step"]
    total_steps = sum(tune_spec(study, v, s)["iters"] for v in study["variants"]
                      for s in study["seeds"])
    jobs = len(study["variants"]) * len(study["seeds"])
    rows.append(dict(stage="tune", jobs=jobs, gpus_per_job=tune["gpus"], steps=total_steps,
                     seconds_per_step=sps, source="measured" if measured else "configured",
                     gpu_hours=tune["gpus"] * total_steps * sps / 3600.0))
    rows.append(dict(stage="data + collect + report", jobs=jobs + 10, gpus_per_job=0,
                     steps=0, seconds_per_step=0.0, source="-", gpu_hours=0.0))
    return rows


def format_plan(study: dict, rows: List[dict]) -> str:
    lines = [f"study {study['study']}: {len(study['variants'])} variants x "
             f"{len(study['seeds'])} seeds",
             f"{'stage':<30}{'jobs':>6}{'GPUs/job':>10}{'steps':>10}{'s/step':>9}"
             f"{'GPU-h':>9}  s/step from"]
    for r in rows:
        lines.append(f"{r['stage']:<30}{r['jobs']:>6}{r['gpus_per_job']:>10}{r['steps']:>10}"
                     f"{r['seconds_per_step']:>9.2f}{r['gpu_hours']:>9.2f}  {r['source']}")
    total = sum(r["gpu_hours"] for r in rows)
    gpu_jobs = sum(r["jobs"] for r in rows if r["gpus_per_job"])
    lines.append(f"{'total':<30}{sum(r['jobs'] for r in rows):>6}{'':>10}{'':>10}{'':>9}"
                 f"{total:>9.2f}  ({gpu_jobs} GPU jobs)")
    return "\n".join(lines)
