"""A study's recorded results: the small tidy files a finished study leaves, kept in the
repository under ``paper/recorded/<study>/`` (kilobytes, no checkpoints).

- ``rewardseg record --study NAME`` copies them from a finished study (``results/<study>/``,
  on this machine or fetched from a cluster) and writes ``machine.json`` (which CPU, how
  many threads, which device the runs used).
- ``make figures`` rebuilds every figure, table, the deck and the notebook from them with
  no training: the workflow with ``--config recorded=paper/recorded/<study>`` restores them
  into ``results/<study>/`` instead of training (``workflow/rules/evaluate.smk``).
- A study run here compares its own numbers with them (``rewardseg reproduction``, the
  workflow's ``reproduction`` rule): identical on the same CPU kind and thread count,
  otherwise it says how far apart they are.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
from typing import Any, Dict, List, Optional

from . import paths
from .fileio import write_json_atomic

# from results/<study>/: what every figure, table, the deck and the notebook are made of
RESULT_FILES = ("study.yaml", "metrics.csv", "train_stats.csv", "predictions.npz")
# from paper/tables/<study>/: the findings the README quotes (tests check them)
TABLE_FILES = ("findings.json", "findings.md", "final_miou.md", "per_class_iou.md")
MACHINE = "machine.json"
# the columns that name one number of metrics.csv / train_stats.csv
METRIC_KEYS = ["variant", "seed", "step", "class"]
STAT_KEYS = ["variant", "seed", "step", "stat"]


class RecordError(ValueError):
    """A record that is missing a file or does not match the study (one line)."""


def runs_machine(work_root: str, study: str) -> Dict[str, Any]:
    """What the study's finished runs say about where they ran (``run.json``'s
    ``machine``): the distinct CPU models, torch thread counts and devices."""
    found: Dict[str, set] = {"cpu": set(), "torch_threads": set(), "device": set()}
    records = glob.glob(paths.run_record(paths.run_dir(study, "*", "*", work_root)))
    records += glob.glob(paths.run_record(paths.pretrain_dir(study, work_root)))
    for path in records:
        with open(path) as fh:
            machine = json.load(fh).get("machine") or {}
        for key in found:
            if machine.get(key) is not None:
                found[key].add(machine[key])
    out: Dict[str, Any] = {key: sorted(values) for key, values in found.items()}
    out["runs"] = len(records)
    return out


def record(study: str, out_dir: Optional[str] = None, results_root: str = paths.RESULTS,
           tables_root: str = paths.TABLES, work_root: str = paths.WORK) -> List[str]:
    """Copy a finished study's result files (and its findings tables, where written) into
    ``out_dir`` (default ``paper/recorded/<study>``) with ``machine.json``; every source is
    checked before anything is written."""
    out_dir = out_dir or paths.recorded(study)
    sources = [paths.study_result(study, name, results_root) for name in RESULT_FILES]
    missing = [path for path in sources if not os.path.isfile(path)]
    if missing:
        raise RecordError(f"{missing[0]}: missing; record a study after it has finished "
                          f"(make study, or its results folder copied from the cluster)")
    tables = [path for path in (paths.table(study, name, tables_root) for name in TABLE_FILES)
              if os.path.isfile(path)]
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for path in sources + tables:
        target = os.path.join(out_dir, os.path.basename(path))
        shutil.copyfile(path, target + ".tmp")
        os.replace(target + ".tmp", target)
        written.append(target)
    machine = runs_machine(work_root, study)
    write_json_atomic(os.path.join(out_dir, MACHINE), machine)
    return written + [os.path.join(out_dir, MACHINE)]


def check_record(recorded_dir: str, study: dict) -> None:
    """Raise :class:`RecordError` unless ``recorded_dir`` holds every result file and its
    ``study.yaml`` is ``study`` (the config the rebuild runs with)."""
    import yaml

    for name in RESULT_FILES:
        if not os.path.isfile(os.path.join(recorded_dir, name)):
            raise RecordError(f"{os.path.join(recorded_dir, name)}: missing; a record holds "
                              f"{', '.join(RESULT_FILES)} (rewardseg record)")
    with open(os.path.join(recorded_dir, "study.yaml")) as fh:
        recorded_study = yaml.safe_load(fh)
    if recorded_study != study:
        differ = sorted(k for k in set(recorded_study) | set(study)
                        if recorded_study.get(k) != study.get(k))
        raise RecordError(f"{os.path.join(recorded_dir, 'study.yaml')}: the study as recorded "
                          f"differs from this config in {', '.join(differ)}; rebuild with "
                          f"--configfile {os.path.join(recorded_dir, 'study.yaml')}")


def restore_conflict(recorded_dir: str, results_dir: str) -> Optional[str]:
    """Why restoring the record into ``results_dir`` would replace results of a run made
    here (a file there that differs from the record's), or None."""
    import filecmp

    for name in RESULT_FILES:
        ours = os.path.join(results_dir, name)
        if os.path.isfile(ours) and not filecmp.cmp(ours, os.path.join(recorded_dir, name),
                                                    shallow=False):
            return (f"{ours}: differs from {os.path.join(recorded_dir, name)} (a run of this "
                    f"study made here?); rebuilding from the record would replace it: move "
                    f"{results_dir.rstrip(os.sep)} away first (the runs in "
                    f"{paths.WORK}/ stay)")
    return None


def _differences(ours, theirs, keys: List[str], value: str) -> Dict[str, Any]:
    """Rows in one table only, and the largest absolute difference of ``value`` between
    the rows both have (with the row's keys); ``identical``: same rows, same numbers."""
    import numpy as np

    merged = ours.merge(theirs, on=keys, how="outer", suffixes=("_here", "_recorded"),
                        indicator=True)
    both = merged[merged["_merge"] == "both"]
    a, b = both[f"{value}_here"].to_numpy(float), both[f"{value}_recorded"].to_numpy(float)
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    diff = np.where(same, 0.0, np.abs(a - b))
    diff = np.where(np.isnan(diff), np.inf, diff)  # a number on one side, NaN on the other
    out: Dict[str, Any] = {
        "only_here": int((merged["_merge"] == "left_only").sum()),
        "only_recorded": int((merged["_merge"] == "right_only").sum()),
        "differing": int((~same).sum()), "compared": int(len(both)),
    }
    out["identical"] = out["only_here"] == out["only_recorded"] == out["differing"] == 0
    if len(both) and diff.max() > 0:
        row = both.iloc[int(diff.argmax())]
        out["largest"] = float(diff.max())
        out["at"] = {k: (row[k].item() if hasattr(row[k], "item") else row[k]) for k in keys}
    return out


def final_miou(metrics):
    """Final-step mIoU (%) of every run of a metrics table: its ``mIoU`` rows where the
    table has them (what the study reports), else the mean over the classes."""
    last = metrics.groupby(["variant", "seed"])["step"].transform("max")
    final = metrics[metrics["step"] == last]
    if (final["class"] == "mIoU").any():
        return final[final["class"] == "mIoU"][["variant", "seed", "IoU"]].reset_index(drop=True)
    final = final.sort_values(METRIC_KEYS)  # sums in one order
    return final.groupby(["variant", "seed"], as_index=False)["IoU"].mean()


def compare(recorded_dir: str, metrics, stats, here: Optional[Dict[str, Any]] = None
            ) -> Dict[str, Any]:
    """How far this study's ``metrics`` / ``stats`` (paths or DataFrames) are from the
    record's: per number (IoU, training statistics) and per run (final mIoU), with both
    machines (``here``: :func:`runs_machine` of this study's runs)."""
    import pandas as pd

    def table(value):
        return pd.read_csv(value) if isinstance(value, (str, os.PathLike)) else value

    ours_m, ours_s = table(metrics), table(stats)
    theirs_m = pd.read_csv(os.path.join(recorded_dir, "metrics.csv"))
    theirs_s = pd.read_csv(os.path.join(recorded_dir, "train_stats.csv"))
    machine_path = os.path.join(recorded_dir, MACHINE)
    recorded_machine = {}
    if os.path.isfile(machine_path):
        with open(machine_path) as fh:
            recorded_machine = json.load(fh)
    found = {
        "recorded": recorded_dir,
        "metrics": _differences(ours_m[METRIC_KEYS + ["IoU"]], theirs_m[METRIC_KEYS + ["IoU"]],
                                METRIC_KEYS, "IoU"),
        "stats": _differences(ours_s[STAT_KEYS + ["value"]], theirs_s[STAT_KEYS + ["value"]],
                              STAT_KEYS, "value"),
        "runs": _differences(final_miou(ours_m), final_miou(theirs_m), ["variant", "seed"],
                             "IoU"),
        "machine_recorded": recorded_machine, "machine_here": here or {},
    }
    found["identical"] = found["metrics"]["identical"] and found["stats"]["identical"]
    return found


def _machine(machine: Dict[str, Any]) -> str:
    if not machine:
        return "unknown"
    parts = ["; ".join(map(str, machine.get("cpu") or ["CPU unknown"]))]
    threads = machine.get("torch_threads") or []
    if threads:
        parts.append(f"torch threads: {', '.join(map(str, threads))}")
    devices = [d for d in machine.get("device") or [] if d != "cpu"]
    if devices:
        parts.append(", ".join(devices))
    return ", ".join(parts)


def render(found: Dict[str, Any]) -> str:
    """The comparison in a few lines of Markdown (the workflow prints it at the end)."""
    runs, metrics, stats = found["runs"], found["metrics"], found["stats"]
    where = (f"recorded on {_machine(found['machine_recorded'])}; "
             f"this run on {_machine(found['machine_here'])}")
    lines = [f"# Reproduction of the recorded run `{found['recorded']}`", ""]
    if found["identical"]:
        lines.append(f"**Identical**: all {runs['compared']} runs' metrics "
                     f"({metrics['compared']} numbers) and training statistics "
                     f"({stats['compared']}) equal the record to the last digit ({where}).")
        return "\n".join(lines) + "\n"
    lines.append("**Not identical** to the record. Expected only on the same CPU kind and "
                 f"thread count ({where}).")
    lines.append("")
    if runs.get("largest") is not None:
        at = runs["at"]
        lines.append(f"- Final mIoU: {runs['differing']} of {runs['compared']} runs differ; "
                     f"the largest per-run difference is {runs['largest']:.4g} points "
                     f"(`{at['variant']}`, seed {at['seed']}).")
    else:
        lines.append(f"- Final mIoU: equal in all {runs['compared']} runs both have.")
    for name, part, unit in (("metrics.csv (per-class IoU)", metrics, " points"),
                             ("train_stats.csv", stats, "")):
        text = f"- {name}: {part['differing']} of {part['compared']} numbers differ"
        if part.get("largest") is not None:
            text += f", at most by {part['largest']:.4g}{unit}"
        lines.append(text + ".")
    missing = {k: runs[k] for k in ("only_here", "only_recorded") if runs[k]}
    if missing:
        lines.append(f"- Runs only here: {runs['only_here']}; only in the record: "
                     f"{runs['only_recorded']} (another seed or variant set).")
    return "\n".join(lines) + "\n"
