"""Wall time of the workflow: DAG building (`snakemake -n`) per study config, a no-op
re-run of a finished study, optionally a cold run of the default study, and optionally
the start-up of a training job.

    python bench/bench_workflow.py                      # dry-run times of every study config
    python bench/bench_workflow.py --finished DIR       # + no-op re-run time in a finished checkout
    python bench/bench_workflow.py --cold               # + cold default study in a fresh clone
    python bench/bench_workflow.py --figures            # + `make figures` in a fresh clone
    python bench/bench_workflow.py --startup            # + start-up of a smoke tuning job
    python bench/bench_workflow.py --startup --no-dry-run --compare-src OLD/src
                                      # only the start-up, this checkout vs another's src/

Start-up (``--startup``): in a copy of the workflow, snakemake builds the smoke study's
inputs of one tuning job (dataset, pretraining); then that job's command, exactly as the
workflow runs it (``bash workflow/scripts/logged-attempt.sh ... rewardseg stage --spec
...``, taken from ``snakemake -n -p``), runs ``--repeats`` times from a fresh run folder.
A probe (a ``sitecustomize`` on PYTHONPATH, the same for any version of the code) notes
when mmengine's training loop starts its first iteration (its first batch loaded) and
ends it; start-up = that start - the moment the command was started. With
``--compare-src DIR`` the same job also runs with DIR (another checkout's ``src``) first
on PYTHONPATH, alternating with this checkout's, the order swapping every round.

Prints each time next to its target and the ratio time / target (<= 1 meets it); for the
start-up, the median over the repeats (and the min, the end of the first iteration, the
whole job).
"""
import argparse
import contextlib
import glob
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGETS = {"dry-run": 10.0, "no-op": 10.0, "cold": 15 * 60.0, "start-up": 3.0,
           "figures": 60.0}
BIN = os.path.dirname(sys.executable)
ENV = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""))


def timed(cmd, cwd):
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed in {cwd}:\n{proc.stderr[-2000:]}")
    return elapsed, proc.stdout + proc.stderr


def jobs(output):
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "total" and parts[1].isdigit():
            return int(parts[1])
    return 0


def report(name, seconds, extra=""):
    target = TARGETS[name]
    print(f"{name:<28} {seconds:8.2f} s   target {target:6.0f} s   ratio {seconds / target:5.2f}"
          f"  {'PASS' if seconds <= target else 'MISS'} {extra}")


# Written to a temporary folder put first on the job's PYTHONPATH: Python imports it at
# start-up. It patches mmengine's training loops when they are imported (nothing is
# imported for it) and prints the wall-clock time when the first iteration starts / ends.
PROBE = r'''
import importlib.abc, importlib.machinery, sys, time

_NAME = "mmengine.runner.loops"


def _patch(module):
    for cls in (module.IterBasedTrainLoop, module.EpochBasedTrainLoop):
        run_iter = cls.run_iter

        def probed(self, *args, _run_iter=run_iter, **kwargs):
            if getattr(sys, "_rewardseg_probe_done", False):
                return _run_iter(self, *args, **kwargs)
            sys._rewardseg_probe_done = True
            start = time.time()
            try:
                return _run_iter(self, *args, **kwargs)
            finally:
                print(f"REWARDSEG_STARTUP_PROBE first_iteration_start={start:.4f} "
                      f"first_iteration_end={time.time():.4f}", file=sys.stderr, flush=True)

        cls.run_iter = probed


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != _NAME:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None:
            exec_module = spec.loader.exec_module

            def exec_and_patch(module):
                exec_module(module)
                _patch(module)

            spec.loader.exec_module = exec_and_patch
        return spec


if _NAME not in sys.modules:
    sys.meta_path.insert(0, _Finder())
'''
PROBE_LINE = re.compile(r"REWARDSEG_STARTUP_PROBE first_iteration_start=([\d.]+) "
                        r"first_iteration_end=([\d.]+)")
WORKFLOW_FILES = ("Snakefile", "workflow", "configs", "paper", "profiles")


def tune_jobs(dry_run_output):
    """The tuning jobs of a `snakemake -n -p` output: {(variant, seed): job}, a job being
    its input files, log and shell command."""
    found = {}
    for block in dry_run_output.split("\n\n"):
        if not re.search(r"^rule tune:", block, re.M):
            continue
        fields = dict(re.findall(r"^\s*(input|log|wildcards): (.*)$", block, re.M))
        command = re.search(r"^Shell command: (.*)$", block, re.M)
        wildcards = dict(kv.split("=", 1) for kv in fields["wildcards"].split(", "))
        found[(wildcards["variant"], wildcards["seed"])] = dict(
            inputs=fields["input"].split(", "), log=fields["log"].strip(),
            command=command.group(1), work_dir=re.search(r"--work-dir (\S+)",
                                                         command.group(1)).group(1))
    return found


def run_job(job, root, pythonpath):
    """Run the job's command from a fresh run folder; its start-up, first iteration's end
    and whole time (s, from the start of the command)."""
    shutil.rmtree(os.path.join(root, job["work_dir"]), ignore_errors=True)
    for path in glob.glob(os.path.join(root, job["log"][:-len(".log")] + ".*")):
        os.remove(path)
    env = dict(ENV, PYTHONPATH=os.pathsep.join(pythonpath))
    t0 = time.time()
    proc = subprocess.run(["bash", "-c", job["command"]], cwd=root, env=env,
                          capture_output=True, text=True)
    whole = time.time() - t0
    with open(os.path.join(root, job["log"])) as fh:
        log = fh.read()
    match = PROBE_LINE.search(log)
    if proc.returncode != 0 or match is None:
        sys.exit(f"the tuning job failed or printed no probe line (rc {proc.returncode}):\n"
                 f"{log[-3000:]}\n{proc.stderr[-2000:]}")
    return float(match.group(1)) - t0, float(match.group(2)) - t0, whole


def startup(args):
    """Median start-up of a smoke tuning job (this checkout, and --compare-src)."""
    root = tempfile.mkdtemp(prefix="rewardseg-startup-")
    try:
        for name in WORKFLOW_FILES:
            src = os.path.join(REPO, name)
            (shutil.copytree if os.path.isdir(src) else shutil.copy)(src, os.path.join(root, name))
        config = ["--configfile", "configs/studies/smoke.yaml"]
        snake = [sys.executable, "-m", "snakemake"]
        _, out = timed(snake + ["-n", "-p", "--cores", "1"] + config, root)
        jobs_found = tune_jobs(out)
        key = (args.variant, "0")
        if key not in jobs_found:
            sys.exit(f"no tuning job {key} in the smoke study: {sorted(jobs_found)}")
        job = jobs_found[key]
        timed(snake + job["inputs"] + ["--cores", args.cores] + config, root)  # its inputs
        probe_dir = os.path.join(root, ".startup-probe")
        os.makedirs(probe_dir)
        with open(os.path.join(probe_dir, "sitecustomize.py"), "w") as fh:
            fh.write(PROBE)
        versions = {"this checkout": [probe_dir]}
        if args.compare_src:
            versions[f"--compare-src {args.compare_src}"] = [
                probe_dir, os.path.abspath(args.compare_src)]
        names = list(versions)
        times = {name: [] for name in names}
        print(f"start-up of `rewardseg stage` (smoke, tune {args.variant} seed 0), "
              f"{args.repeats} repeats{', alternating' if len(names) > 1 else ''}:")
        run_job(job, root, versions[names[0]])  # warm-up (file cache), not counted
        for r in range(args.repeats):
            order = names if r % 2 == 0 else names[::-1]
            for name in order:
                times[name].append(run_job(job, root, versions[name]))
        for name in names:
            starts, ends, wholes = zip(*times[name])
            report("start-up", statistics.median(starts),
                   f"{name}: min {min(starts):.2f} s, first iteration ends at "
                   f"{statistics.median(ends):.2f} s, whole job {statistics.median(wholes):.2f} s"
                   f" (medians); all: {' '.join(f'{t:.2f}' for t in starts)}")
        if len(names) > 1:
            paired = [a[0] / b[0] for a, b in zip(times[names[0]], times[names[1]])]
            print(f"{'':<28} paired ratio {names[0]} / {names[1]}: median "
                  f"{statistics.median(paired):.2f}")
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def fresh_clone(name):
    """A fresh clone of this checkout in a temporary folder, removed afterwards."""
    tmp = tempfile.mkdtemp(prefix=f"rewardseg-{name}-")
    try:
        subprocess.run(["git", "clone", "-q", REPO, tmp], check=True)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--finished", help="a checkout where the default study has finished")
    parser.add_argument("--cold", action="store_true", help="run the default study cold")
    parser.add_argument("--figures", action="store_true",
                        help="rebuild the default study's figures, tables, deck and notebook "
                             "from its record (make figures) in a fresh clone")
    parser.add_argument("--cores", default="all")
    parser.add_argument("--no-dry-run", action="store_true",
                        help="skip the dry-run times of the study configs")
    parser.add_argument("--startup", action="store_true",
                        help="start-up of a smoke tuning job (process start -> its first "
                             "training iteration)")
    parser.add_argument("--repeats", type=int, default=7, help="start-up: runs (median)")
    parser.add_argument("--variant", default="reference",
                        help="start-up: the smoke study's variant whose seed-0 job runs")
    parser.add_argument("--compare-src", default=None, metavar="DIR",
                        help="start-up: also run the job with DIR (another checkout's src/) "
                             "first on PYTHONPATH, alternating")
    parser.add_argument("--keep", action="store_true", help="start-up: keep its folder")
    args = parser.parse_args()
    snake = [sys.executable, "-m", "snakemake"]
    print(f"{'measurement':<28} {'time':>10}")
    for config in ([] if args.no_dry_run else
                   sorted(glob.glob(os.path.join(REPO, "configs/studies/*.yaml")))):
        name = os.path.basename(config)
        seconds, out = timed(snake + ["-n", "--cores", "1", "--configfile", config], REPO)
        report("dry-run", seconds, f"{name}: {jobs(out)} jobs")
    if args.finished:
        seconds, out = timed(snake + ["--cores", args.cores], args.finished)
        report("no-op", seconds, "(nothing to be done)" if "Nothing to be done" in out else
               "(WARNING: jobs ran)")
    if args.cold:
        with fresh_clone("cold") as tmp:
            seconds, _ = timed(snake + ["--cores", args.cores], tmp)
            report("cold", seconds, f"default study in {tmp}")
            seconds, out = timed(snake + ["--cores", args.cores], tmp)
            report("no-op", seconds)
    if args.figures:
        with fresh_clone("figures") as tmp:
            recorded = os.path.join("paper", "recorded", "default")
            seconds, out = timed(snake + ["--cores", args.cores, "--configfile",
                                          os.path.join(recorded, "study.yaml"), "--config",
                                          f"recorded={recorded}"], tmp)
            built = len(glob.glob(os.path.join(tmp, "figures", "default", "*.png")))
            report("figures", seconds, f"{built} figures, the tables, notebook and deck "
                   f"from {recorded}")
    if args.startup:
        startup(args)


if __name__ == "__main__":
    main()
