"""Where everything lives: the one module that spells the folder and file-name conventions.

The workflow's rules and the library both call these functions, so a convention changes in
one place. Every function takes plain values or snakemake wildcard strings alike:
``run_dir("{study}", "{variant}", "{seed}")`` is the pattern ``work/{study}/{variant}/seed{seed}``.
No torch, no mmseg: the Snakefile imports it.
"""
from __future__ import annotations

import glob
import os
import re
from typing import List, Optional, Tuple

DATA = "data"
WORK = "work"
RESULTS = "results"
LOGS = "logs"
FIGURES = "figures"
TABLES = os.path.join("paper", "tables")
BUILD = os.path.join("paper", "build")
# a study's recorded results, tracked: figures and deck are rebuilt from them (recorded.py)
RECORDED = os.path.join("paper", "recorded")
# the study's CE pretraining run: its folder under work/, its result file and its rows in
# metrics.csv ("variant" column) all use this name; it cannot be a variant's name
PRETRAIN = "pretrain"


def _num(value) -> str:
    """A number as it appears in a file name (``0.05``, ``1e-05``); wildcards unchanged."""
    return value if isinstance(value, str) else f"{value:g}"


# ---------------------------------------------------------------- data
def data_root(dataset: str, root: str = DATA) -> str:
    return os.path.join(root, dataset)


def dataset_meta(dataset: str, root: str = DATA) -> str:
    """``meta.json`` of a prepared dataset: written last, it marks the dataset complete."""
    return os.path.join(data_root(dataset, root), "meta.json")


def raw_dir(source: str, root: str = DATA) -> str:
    """Default folder for a source's downloaded archives."""
    return os.path.join(root, "raw", source)


def _class_weights_name(smoothing) -> str:
    return f"class_weights_s{_num(smoothing)}"


def class_weights(data_root_: str, smoothing, ext: str = "json") -> str:
    return os.path.join(data_root_, f"{_class_weights_name(smoothing)}.{ext}")


# ---------------------------------------------------------------- training runs
def pretrain_dir(study: str, root: str = WORK) -> str:
    return os.path.join(root, study, PRETRAIN)


def part_record(run_dir_: str, step) -> str:
    """Marker of a run that has reached ``step`` (one part of it), its checkpoint saved:
    written last by ``rewardseg stage --stop-at``."""
    return os.path.join(run_dir_, f"part_{_num(step)}.json")


def pretrain_part(study: str, step, root: str = WORK) -> str:
    """The pretraining's :func:`part_record` at ``step`` (a tuning start point)."""
    return part_record(pretrain_dir(study, root), step)


def run_dir(study: str, variant: str, seed, root: str = WORK) -> str:
    return os.path.join(root, study, variant, f"seed{seed}")


def checkpoint(run_dir_: str, step) -> str:
    return os.path.join(run_dir_, f"iter_{step}.pth")


def checkpoint_step(path: str) -> Optional[int]:
    """The step of a file named as :func:`checkpoint` names one (None for any other name)."""
    match = re.fullmatch(r"iter_(\d+)\.pth", os.path.basename(path))
    return int(match.group(1)) if match else None


def checkpoints(run_dir_: str) -> List[Tuple[int, str]]:
    """The run's checkpoints as ``(step, path)``, oldest first."""
    found = ((checkpoint_step(p), p) for p in glob.glob(checkpoint(glob.escape(run_dir_), "*")))
    return sorted((step, p) for step, p in found if step is not None)


def last_checkpoint(run_dir_: str) -> str:
    """mmengine's ``last_checkpoint`` file: the path of the run's newest complete save."""
    return os.path.join(run_dir_, "last_checkpoint")


def run_record(run_dir_: str) -> str:
    """``run.json``: written last by a finished run (the workflow's completion marker)."""
    return os.path.join(run_dir_, "run.json")


def val_metrics(run_dir_: str) -> str:
    return os.path.join(run_dir_, "val_metrics.jsonl")


def pretrained_marker(study: str, root: str = WORK) -> str:
    """Names of the ImageNet weights fetched into mmengine's cache for the pretraining."""
    return os.path.join(root, study, "pretrained.txt")


# ---------------------------------------------------------------- results and report
def run_result(study: str, variant: str, seed, root: str = RESULTS) -> str:
    return os.path.join(root, study, "runs", variant, f"seed{seed}.json")


def pretrain_result(study: str, root: str = RESULTS) -> str:
    return os.path.join(root, study, "runs", f"{PRETRAIN}.json")


def study_result(study: str, name: str, root: str = RESULTS) -> str:
    """A study-level file under ``results/<study>/``: metrics.csv, train_stats.csv, ..."""
    return os.path.join(root, study, name)


def resolved_study(study: str, root: str = RESULTS) -> str:
    """The study as the workflow resolved it, the file its jobs read
    (``rewardseg.study.ResolvedStudy.to_json``)."""
    return study_result(study, "study.resolved.json", root)


def figure(study: str, name: str, ext: str = "png", root: str = FIGURES) -> str:
    return os.path.join(root, study, f"{name}.{ext}")


def table(study: str, name: str, root: str = TABLES) -> str:
    return os.path.join(root, study, name)


def build(study: str, name: str, root: str = BUILD) -> str:
    """The deck and the cross-study overview under ``paper/build/<study>/``."""
    return os.path.join(root, study, name)


def log(study: str, name: str, root: str = LOGS) -> str:
    """The log of a study's job (``logs/<study>/<name>.log``)."""
    return os.path.join(root, study, f"{name}.log")


def pretrain_log(study: str, part=None, root: str = LOGS) -> str:
    """The CE pretraining job's log, or that of its part up to step ``part``."""
    return log(study, PRETRAIN if part is None else f"{PRETRAIN}_part{_num(part)}", root)


def run_log(study: str, variant: str, seed, root: str = LOGS) -> str:
    """A tuning run's job log (``logs/<study>/<variant>/seed<seed>.log``)."""
    return log(study, os.path.join(variant, f"seed{seed}"), root)


def attempts_log(log_: str) -> str:
    """Every attempt of a training job, appended beside its log ``log_``, each after a
    ``=== attempt N ...`` line (``log_`` holds the latest one: snakemake removes a job's
    log before each attempt)."""
    stem = log_[: -len(".log")] if log_.endswith(".log") else log_
    return f"{stem}.attempts.log"


def collect_log(study: str, variant: str, seed=None, root: str = LOGS) -> str:
    """The log of collecting a run's result (the pretraining's when ``seed`` is None)."""
    name = variant if seed is None else f"{variant}_seed{seed}"
    return log(study, os.path.join("collect", name), root)


def dataset_log(dataset: str, root: str = LOGS) -> str:
    """The log of preparing a dataset (``logs/data/<dataset>.log``): datasets are shared
    by studies."""
    return os.path.join(root, "data", f"{dataset}.log")


def class_weights_log(dataset: str, smoothing, root: str = LOGS) -> str:
    return os.path.join(root, "data", f"{dataset}_{_class_weights_name(smoothing)}.log")


def recorded(study: str, name: str = "", root: str = RECORDED) -> str:
    """A study's recorded results (``paper/recorded/<study>/``), or one file of them."""
    return os.path.join(root, study, name) if name else os.path.join(root, study)
