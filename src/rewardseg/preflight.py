"""One check before any job: what only the user can provide, all of it in one message.

The workflow (``workflow/rules/common.smk``) calls :func:`check` once, before any job
(downloads included) is started, and a real run stops with every problem listed; a dry
run (``snakemake -n``) prints the same list as a warning and goes on. Each problem says
what is missing and what to do about it. The items:

* the study's dataset, only when it is not prepared yet (``data/<name>/meta.json``, the
  data job's output, is missing): what its source's ``prepare`` would lack, from the
  source's own ``preflight`` in :mod:`rewardseg.data` (Cityscapes: the account variables
  when a package must be downloaded; Mapillary Vistas: the manual download in
  ``dataset.raw_dir``; a ``local_copy`` that lacks its files);
* ``REWARDSEG_SLURM_PARTITION``: a partition that ``sinfo`` lists (where ``sinfo``
  answers). This one stops a dry run too (a dry run of ``--profile slurm`` is how a
  cluster set-up is checked).

Light: no torch, no mmseg (the Snakefile imports it at every DAG build). Values of
environment variables never appear in a message, except the partition's name.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any, List, Mapping, Optional

from . import paths

PARTITION_VAR = "REWARDSEG_SLURM_PARTITION"


@dataclass(frozen=True)
class Problem:
    """Something missing before the workflow can run: ``missing`` (what), ``todo`` (what
    to do about it); ``dry_run_ok``: a dry run only warns about it."""

    missing: str
    todo: str
    dry_run_ok: bool = True

    def __str__(self) -> str:
        return f"{self.missing} — {self.todo}"


@dataclass(frozen=True)
class Report:
    """What :func:`check` found: the problems, and whether the run must stop (a real run
    with any problem; a dry run with one that is not ``dry_run_ok``)."""

    problems: List[Problem]
    dry_run: bool = False

    @property
    def fatal(self) -> bool:
        return any(not (self.dry_run and p.dry_run_ok) for p in self.problems)

    def message(self) -> str:
        """Every problem, one per line, under one heading ('' when there is none)."""
        if not self.problems:
            return ""
        n = len(self.problems)
        things = f"{n} thing{'s' if n > 1 else ''} missing"
        if self.fatal:
            head = (f"Preflight: {things}; nothing was started (no job, no download). "
                    "Fix every line, then run again:")
        else:
            head = (f"Preflight (dry run, so only a warning): {things}; a real run would "
                    "stop here, before any job:")
        return "\n".join([head] + [f"  - {p}" for p in self.problems])


def dataset_prepared(study: Mapping[str, Any], workdir: str = ".") -> bool:
    """The study's dataset is built (its ``meta.json``, written last, exists): the data
    job will not run, so nothing it needs is checked."""
    return os.path.isfile(os.path.join(workdir, paths.dataset_meta(study["dataset"]["name"])))


def dataset_problems(study: Mapping[str, Any], environ: Mapping[str, str],
                     workdir: str = ".") -> List[Problem]:
    """What the data job would lack (its source's ``preflight``), or nothing when the
    dataset is already prepared."""
    if dataset_prepared(study, workdir):
        return []
    from . import data

    dataset = study["dataset"]
    root = paths.data_root(dataset["name"])
    return [Problem(missing, todo)
            for missing, todo in data.preflight(root, dataset, environ, workdir)]


def partitions(environ: Mapping[str, str]) -> Optional[List[str]]:
    """The partitions ``sinfo`` lists, or None when there is no ``sinfo`` (not a
    cluster) or it does not answer."""
    sinfo = shutil.which("sinfo", path=environ.get("PATH"))
    if sinfo is None:
        return None
    try:
        out = subprocess.run([sinfo, "-h", "-o", "%R"], capture_output=True, text=True,
                             env=dict(environ), timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return sorted({p.strip().rstrip("*") for p in out.stdout.split()})


def partition_problems(environ: Mapping[str, str]) -> List[Problem]:
    """``REWARDSEG_SLURM_PARTITION``, when set, names a partition of this cluster."""
    wanted = environ.get(PARTITION_VAR)
    if not wanted:
        return []
    known = partitions(environ)
    if known is None or wanted in known:
        return []
    return [Problem(f"{PARTITION_VAR}={wanted!r} is not a partition of this cluster "
                    f"(sinfo lists: {', '.join(known) or 'none'})",
                    "set it to one of them or unset it to use the cluster's default "
                    "partition", dry_run_ok=False)]


def problems(study: Mapping[str, Any], environ: Optional[Mapping[str, str]] = None,
             workdir: str = ".") -> List[Problem]:
    """Every problem, in a fixed order: the dataset's, then the partition's."""
    environ = os.environ if environ is None else environ
    return dataset_problems(study, environ, workdir) + partition_problems(environ)


def check(study: Mapping[str, Any], environ: Optional[Mapping[str, str]] = None,
          workdir: str = ".", dry_run: bool = False) -> Report:
    """The preflight of a study run from ``workdir`` (where ``data/`` is) with
    ``environ`` (default: this process's environment): ``report.fatal`` → stop with
    ``report.message()``; otherwise a non-empty message is a warning."""
    return Report(problems(study, environ, workdir), dry_run=dry_run)

