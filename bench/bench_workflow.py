"""Wall time of the workflow: DAG building (`snakemake -n`) per study config, a no-op
re-run of a finished study, and optionally a cold run of the default study.

    python bench/bench_workflow.py                      # dry-run times of every study config
    python bench/bench_workflow.py --finished DIR       # + no-op re-run time in a finished checkout
    python bench/bench_workflow.py --cold               # + cold default study in a fresh clone

Prints each time next to its target and the ratio time / target (<= 1 meets it).
"""
import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGETS = {"dry-run": 10.0, "no-op": 10.0, "cold": 15 * 60.0}
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
    print(f"{name:<28} {seconds:8.1f} s   target {target:6.0f} s   ratio {seconds / target:5.2f}"
          f"  {'PASS' if seconds <= target else 'MISS'} {extra}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--finished", help="a checkout where the default study has finished")
    parser.add_argument("--cold", action="store_true", help="run the default study cold")
    parser.add_argument("--cores", default="all")
    args = parser.parse_args()
    snake = [sys.executable, "-m", "snakemake"]
    print(f"{'measurement':<28} {'time':>10}")
    for config in sorted(glob.glob(os.path.join(REPO, "configs/studies/*.yaml"))):
        name = os.path.basename(config)
        seconds, out = timed(snake + ["-n", "--cores", "1", "--configfile", config], REPO)
        report("dry-run", seconds, f"{name}: {jobs(out)} jobs")
    if args.finished:
        seconds, out = timed(snake + ["--cores", args.cores], args.finished)
        report("no-op", seconds, "(nothing to be done)" if "Nothing to be done" in out else
               "(WARNING: jobs ran)")
    if args.cold:
        tmp = tempfile.mkdtemp(prefix="rewardseg-cold-")
        try:
            subprocess.run(["git", "clone", "-q", REPO, tmp], check=True)
            seconds, _ = timed(snake + ["--cores", args.cores], tmp)
            report("cold", seconds, f"default study in {tmp}")
            seconds, out = timed(snake + ["--cores", args.cores], tmp)
            report("no-op", seconds)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
