"""A finished run's evaluations -> its result JSON; every run's -> the tidy ``metrics.csv``
and ``train_stats.csv``."""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterable, List, Optional, Sequence

import pandas as pd

from .. import paths
from ..fileio import write_json_atomic


def read_val_metrics(work_dir: str) -> List[Dict[str, Any]]:
    """Validation records of a run, one per step (a resumed run's repeat keeps the last)."""
    path = paths.val_metrics(work_dir)
    by_step: Dict[int, Dict[str, Any]] = {}
    if os.path.isfile(path):
        with open(path) as fh:
            for line in fh:
                if line.strip():
                    rec = json.loads(line)
                    by_step[int(rec["step"])] = rec
    return [by_step[s] for s in sorted(by_step)]


def collect_run(work_dir: str, out: str, pretrain_dir: Optional[str] = None) -> Dict[str, Any]:
    """Turn a finished run into ``results/.../seed<k>.json``: per-step mIoU and per-class
    IoU, training statistics, provenance. Step 0 is the start checkpoint's evaluation
    from the pretraining run."""
    with open(paths.run_record(work_dir)) as fh:
        record = json.load(fh)
    spec = record["spec"]
    evals = []
    if pretrain_dir is not None and spec.get("stage") == "tune":
        for rec in read_val_metrics(pretrain_dir):
            if rec["step"] == spec["start"]:
                evals.append(dict(step=0, metrics=rec["metrics"], train={}))
    evals += read_val_metrics(work_dir)
    if len(evals) < (1 if spec.get("released") else 2):
        raise ValueError(f"{work_dir}: no validation results recorded (val_metrics.jsonl)")
    result = dict(study=spec["study"], variant=spec["variant"], seed=spec["seed"],
                  spec=spec, evals=evals, weight_change=record.get("weight_change"),
                  provenance={k: record[k] for k in (
                      "git_commit", "versions", "wall_time_s", "resumed", "finished")})
    write_json_atomic(out, result, indent=1)
    return result


def _rows_from_run(result: dict, step_offset: int = 0) -> Iterable[dict]:
    for ev in result["evals"]:
        step = int(ev["step"]) + step_offset
        metrics = ev["metrics"]
        base = dict(study=result["study"], variant=result["variant"], seed=result["seed"],
                    step=step)
        yield dict(base, **{"class": "mIoU", "IoU": metrics["mIoU"]})
        for key, value in metrics.items():
            if key.startswith("IoU."):
                yield dict(base, **{"class": key[4:], "IoU": value})


def aggregate(run_files: Sequence[str], pretrain_file: str, out_csv: str,
              stats_csv: str) -> pd.DataFrame:
    """All run JSONs -> ``metrics.csv`` (study, variant, seed, step, class, IoU) and the
    training statistics per evaluation interval -> ``train_stats.csv``. Within an
    evaluation the rows keep the run's order: mIoU, then the classes in the dataset's
    order (``class_order`` reads it back)."""
    rows: List[dict] = []
    stats: List[dict] = []
    for path in run_files:
        with open(path) as fh:
            result = json.load(fh)
        rows.extend(_rows_from_run(result))
        for ev in result["evals"]:
            for key, value in (ev.get("train") or {}).items():
                stats.append(dict(study=result["study"], variant=result["variant"],
                                  seed=result["seed"], step=int(ev["step"]), stat=key,
                                  value=value))
        last = max(int(ev["step"]) for ev in result["evals"])
        for group, value in (result.get("weight_change") or {}).items():  # at the last step
            stats.append(dict(study=result["study"], variant=result["variant"],
                              seed=result["seed"], step=last, stat=f"weight_change.{group}",
                              value=value))
    with open(pretrain_file) as fh:
        rows.extend(_rows_from_run(json.load(fh)))
    df = pd.DataFrame(rows, columns=["study", "variant", "seed", "step", "class", "IoU"])
    df = df.sort_values(["variant", "seed", "step"], kind="mergesort").reset_index(drop=True)
    _atomic_csv(df, out_csv)
    _atomic_csv(pd.DataFrame(stats, columns=["study", "variant", "seed", "step", "stat",
                                             "value"]), stats_csv)
    return df


def _atomic_csv(df: pd.DataFrame, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)
