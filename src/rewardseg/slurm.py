"""Which job-status command works on this SLURM cluster, checked before anything is submitted.

The SLURM executor plugin reads job states with ``sacct`` wherever the ``sacct`` program is
installed (its default), and with ``squeue`` otherwise. ``sacct`` only answers on a cluster
with job accounting (slurmdbd); on one without, the plugin gets no state and waits for its
jobs forever. ``squeue`` works there as long as finished jobs stay visible long enough
(``MinJobAge`` at least 3 x the first status-check delay; the plugin falls back to ``sacct``
below that). :func:`problems` says, for the status command a run will use, whether it works
here and which single flag to add when it does not (``--slurm-status-command squeue``).
The workflow calls it at start (``onstart`` in workflow/rules/train.smk). It also reads the
plugin's efficiency reports (:func:`job_usage`: elapsed time, CPU efficiency and memory of
every job SLURM ran), and names the rule of a job from the comment the plugin gives it
(:func:`plugin_job`).

No snakemake and no torch here: plain subprocess calls to the SLURM clients.
"""
from __future__ import annotations

import csv
import glob
import os
import re
import shutil
import subprocess
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

STATUS_FLAG = "--slurm-status-command"


def _run(cmd: List[str], timeout: float = 30.0) -> Tuple[Optional[int], str, str]:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError) as err:
        return None, "", str(err)
    return proc.returncode, proc.stdout, proc.stderr


def accounting() -> Tuple[bool, str]:
    """``(True, "")`` when ``sacct`` answers on this cluster, else ``(False, why)``."""
    if shutil.which("sacct") is None:
        return False, "sacct is not installed"
    rc, _, err = _run(["sacct", "--noheader", "-X", "--format=JobIDRaw",
                       "--name", "rewardseg-accounting-probe"])
    if rc == 0:
        return True, ""
    why = err.strip().splitlines()[-1] if err.strip() else f"exit status {rc}"
    return False, f"sacct fails: {why}"


def config_value(key: str) -> Optional[str]:
    """A value of ``scontrol show config`` (``AccountingStorageType``, ``MinJobAge``), or
    None when scontrol does not answer."""
    if shutil.which("scontrol") is None:
        return None
    rc, out, _ = _run(["scontrol", "show", "config"])
    if rc != 0:
        return None
    for line in out.splitlines():
        name, _, value = line.partition("=")
        if name.strip() == key:
            return value.strip()
    return None


def min_job_age() -> Optional[int]:
    """``MinJobAge`` in seconds (how long slurmctld, hence squeue, keeps finished jobs)."""
    value = config_value("MinJobAge")
    match = re.match(r"(\d+)\s*([a-z]*)", (value or "").lower())
    if not match:
        return None
    return int(match.group(1)) * (3600 if match.group(2) in ("h", "hour", "hours") else 1)


def problems(status_command: Optional[str], init_seconds: int = 40,
             efficiency_report: bool = False) -> Tuple[Optional[str], List[str]]:
    """(error, warnings) for a run whose SLURM plugin reads job states with
    ``status_command`` (``sacct`` / ``squeue``; None: the plugin's default, sacct where it
    is installed) after ``init_seconds`` (``--slurm-init-seconds-before-status-checks``).
    The error stops the run before anything is submitted and names the flag to set."""
    sacct_installed = shutil.which("sacct") is not None
    command = status_command or ("sacct" if sacct_installed else "squeue")
    ok, why = accounting()
    warnings: List[str] = []
    if efficiency_report and not ok:
        warnings.append(f"--slurm-efficiency-report needs job accounting, which this "
                        f"cluster lacks ({why}, AccountingStorageType="
                        f"{config_value('AccountingStorageType')}): no report will be "
                        "written")
    if ok:
        if command == "squeue":
            warnings.append("job states come from squeue: a failed job's reason is not "
                            "shown; this cluster has accounting, so the plugin's default "
                            f"({STATUS_FLAG} sacct) would show it")
        return None, warnings
    age = min_job_age()
    needed = 3 * int(init_seconds)
    squeue_works = age is not None and age >= needed
    storage = config_value("AccountingStorageType")
    where = f"this cluster keeps no job accounting ({why}; AccountingStorageType={storage})"
    if command == "sacct":
        if squeue_works:
            return (f"{where}: the SLURM plugin reads job states with sacct here and would "
                    f"wait for its jobs forever. Add `{STATUS_FLAG} squeue` to the command "
                    f"(snakemake --profile slurm {STATUS_FLAG} squeue ...): squeue sees "
                    f"finished jobs for MinJobAge = {age} s >= 3 x {init_seconds} s."), warnings
        return (f"{where}, and squeue forgets finished jobs too early (MinJobAge = {age} s "
                f"< 3 x {init_seconds} s, the first status check): no job state can be "
                f"read. Add `{STATUS_FLAG} squeue "
                f"--slurm-init-seconds-before-status-checks {max(1, (age or 0) // 3)}` "
                "or ask the administrators for MinJobAge >= 120 s or accounting."), warnings
    if not squeue_works and sacct_installed:  # the plugin falls back to sacct: no answer
        return (f"{where}, and with MinJobAge = {age} s < 3 x {init_seconds} s the SLURM "
                "plugin falls back from squeue to sacct, which does not answer: add "
                f"`--slurm-init-seconds-before-status-checks {max(1, (age or 0) // 3)}`"
                ), warnings
    return None, warnings


# ---------------------------------------------------------------- a plugin work-around
def _plain_state(state: str) -> str:
    """``CANCELLED by 0`` (sacct's state of a job cancelled by user 0) -> ``CANCELLED``."""
    return state.split(" by ", 1)[0].strip() if isinstance(state, str) else state


def normalize_cancelled_states(plugin_module) -> bool:
    """snakemake-executor-plugin-slurm (2.8.0, the newest release when written) compares
    each job's state to ``CANCELLED`` exactly, but ``sacct`` reports a job cancelled with
    scancel as ``CANCELLED by <uid>``: with sacct as the status command the plugin takes
    the job for running and waits for it forever (squeue says ``CANCELLED``). This wraps
    the plugin's ``query_job_status`` (``plugin_module``: the imported plugin package) so
    that every state it returns is cut before `` by ``; the plugin then reports the job
    failed, with its sacct reason, and snakemake retries it. True when wrapped (now or
    before), False when the plugin has no such function (another version: nothing done)."""
    original = getattr(plugin_module, "query_job_status", None)
    if original is None:
        return False
    if getattr(original, "_rewardseg_plain_states", False):
        return True

    async def query_job_status(*args, **kwargs):
        result = await original(*args, **kwargs)
        try:
            states, duration = result
        except (TypeError, ValueError):
            return result
        if isinstance(states, dict):
            states = {job: _plain_state(state) for job, state in states.items()}
        return states, duration

    query_job_status._rewardseg_plain_states = True
    query_job_status.__wrapped__ = original
    plugin_module.query_job_status = query_job_status
    return True


# ---------------------------------------------------------------- efficiency reports
EFFICIENCY_REPORT = "efficiency_report_*.csv"  # the plugin's file name


def efficiency_reports(root: str, folder: str) -> List[str]:
    """The plugin's efficiency reports (``--slurm-efficiency-report``) of the checkout
    ``root``: the profile writes them to ``folder`` (``slurm-efficiency-report-path``), the
    plugin without one to the working directory."""
    return sorted(glob.glob(os.path.join(root, folder, EFFICIENCY_REPORT))
                  + glob.glob(os.path.join(root, EFFICIENCY_REPORT)))


def plugin_job(comment: str, rules: Iterable[str]) -> Optional[Tuple[str, str]]:
    """``(rule, wildcards)`` of a job the plugin submitted for one of the caller's
    ``rules``, from the comment it gives the job (``rule_<rule>_wildcards_<the wildcard
    values joined by _>``, the report's ``RuleName``), or None (another rule's job)."""
    for rule in rules:
        head = f"rule_{rule}_wildcards_"
        if comment.startswith(head):
            return rule, comment[len(head):]
    return None


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def job_usage(reports: List[str], group_of: Callable[[str], Optional[str]],
              gpus: Dict[str, int]) -> Dict[str, Dict[str, Any]]:
    """Per group (``group_of`` maps a job's ``RuleName`` to its group, None: not counted),
    from the efficiency reports: the SLURM jobs that ran a step for it (every attempt:
    cancelled, failed, requeued and retried ones too), their GPU-hours (elapsed x the
    group's ``gpus``: the report has no GPU column), CPU efficiency (CPU time / (elapsed x
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
        group = group_of(row["RuleName"])
        if group is None:
            continue
        agg = out.setdefault(group, dict(jobs=set(), elapsed_s=0.0, gpu_hours=0.0,
                                         cpu_s=0.0, cpu_capacity_s=0.0, peak_mem_pct=0.0,
                                         peak_mem_mb=0.0, reports=set()))
        elapsed = _number(row.get("Elapsed_sec"))
        agg["jobs"].add(row.get("MainJobID") or row["JobID"].split(".")[0])
        agg["elapsed_s"] += elapsed
        agg["gpu_hours"] += elapsed * gpus[group] / 3600.0
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
