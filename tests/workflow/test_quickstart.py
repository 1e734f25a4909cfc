"""The README's quick start, as a new user runs it: `make study` in a fresh copy of this
checkout (committed and uncommitted files, nothing ignored: no .venv, no outputs), with
no venv activated and no `rewardseg` / `snakemake` on PATH. The Makefile creates the
venv, installs everything and runs the smoke study.

Also: a job that fails prints its log (the real error), not only its exit status.
"""
import os
import shutil
import subprocess
import sys
import time

import pytest
import yaml

from conftest import REPO, copy_workflow, snakemake

SMOKE = "configs/studies/smoke.yaml"
INSTALL_AND_RUN_TIMEOUT_S = 3600  # fresh venv (torch, mmseg, snakemake, ...) + smoke study
OUR_EXECUTABLES = ("rewardseg", "snakemake")
# what pip needs to reach its index from this machine (cache, index / find-links, proxies,
# certificates); nothing else of the calling environment is passed on
PASSED_ON = ("XDG_CACHE_HOME", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy",
             "https_proxy", "no_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE")


def clean_path():
    """The current PATH without this venv's bin and without any folder that holds a
    `rewardseg` or `snakemake` executable."""
    ours = {os.path.abspath(os.path.dirname(sys.executable)),
            os.path.abspath(os.path.join(sys.prefix, "bin"))}
    if os.environ.get("VIRTUAL_ENV"):
        ours.add(os.path.abspath(os.path.join(os.environ["VIRTUAL_ENV"], "bin")))
    keep = []
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        if not folder or os.path.abspath(folder) in ours:
            continue
        if any(os.path.exists(os.path.join(folder, exe)) for exe in OUR_EXECUTABLES):
            continue
        keep.append(folder)
    return os.pathsep.join(keep)


def clean_env():
    env = {"HOME": os.environ.get("HOME", os.path.expanduser("~")), "PATH": clean_path()}
    if "LANG" in os.environ:
        env["LANG"] = os.environ["LANG"]
    for key, value in os.environ.items():
        if key.startswith("PIP_") or key in PASSED_ON:
            env[key] = value
    return env


def copy_checkout(dest):
    """Tracked and untracked-but-not-ignored files, as they are in the working tree."""
    listed = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=REPO,
                            check=True, capture_output=True, text=True).stdout
    for rel in sorted(set(filter(None, listed.split("\0")))):
        src = os.path.join(REPO, rel)
        if not os.path.lexists(src):  # deleted in the working tree
            continue
        target = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(src, target, follow_symlinks=False)
    return dest


def broken_study(path, name="broken"):
    """The smoke study with an image width that passes the schema but that no machine can
    allocate: its data job fails at once, with a MemoryError in its log."""
    with open(os.path.join(REPO, SMOKE)) as fh:
        study = yaml.safe_load(fh)
    study["study"] = name
    study["dataset"].update(name=f"synth{name}", width=10 ** 15)
    with open(path, "w") as fh:
        yaml.safe_dump(study, fh, sort_keys=False)
    return study


def log_tail(path, lines=3):
    with open(path) as fh:
        return [line.strip() for line in fh.read().splitlines() if line.strip()][-lines:]


def expected_outputs(root, study_file):
    """What `all_outputs()` in workflow/rules/common.smk asks of the study."""
    with open(os.path.join(root, study_file)) as fh:
        study = yaml.safe_load(fh)
    name = study["study"]
    outputs = [f"results/{name}/runs/{variant}/seed{seed}.json"
               for variant in study["variants"] for seed in study["seeds"]]
    outputs += [f"results/{name}/metrics.csv", f"figures/{name}/delta_vs_control.pdf",
                f"paper/tables/{name}/final_miou.md",
                f"figures/{name}/qualitative.png", f"results/{name}/results.html",
                f"paper/build/{name}/slides.md"]
    if shutil.which("npx", path=clean_env()["PATH"]):
        outputs.append(f"paper/build/{name}/slides.html")
    return outputs


def make(root, *args, log, timeout):
    """`make ARGS` in ``root`` with the clean environment; the console goes to ``log``
    (next to ``root``)."""
    log = os.path.join(os.path.dirname(root), log)
    t0 = time.perf_counter()
    with open(log, "w") as out:
        try:
            proc = subprocess.run(["make", *args], cwd=root, env=clean_env(), stdout=out,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  timeout=timeout)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = None
    with open(log) as fh:
        console = fh.read()
    return rc, console, time.perf_counter() - t0


@pytest.fixture(scope="module")
def fresh_study(tmp_path_factory):
    """`make study STUDY=configs/studies/smoke.yaml CORES=2` in a fresh copy."""
    python = shutil.which("python3", path=clean_path())
    if python is None or subprocess.run([python, "-c", "import venv, ensurepip"],
                                        capture_output=True).returncode != 0:
        pytest.skip(f"`python3 -m venv` is unavailable ({python or 'no python3 on PATH'}): "
                    "the quick start needs Python >= 3.9 with venv")
    root = copy_checkout(str(tmp_path_factory.mktemp("quickstart") / "rewardseg"))
    rc, console, seconds = make(root, "study", f"STUDY={SMOKE}", "CORES=2",
                                log="make-study.log", timeout=INSTALL_AND_RUN_TIMEOUT_S)
    print(f"fresh copy: make study (venv, install, smoke study) took {seconds:.0f}s")
    yield root, rc, console
    t0 = time.perf_counter()
    shutil.rmtree(os.path.join(root, ".venv"), ignore_errors=True)  # ~2 GB
    print(f"fresh copy: removing its venv took {time.perf_counter() - t0:.0f}s")


def test_make_study_on_a_fresh_copy(fresh_study):
    root, rc, console = fresh_study
    assert rc is not None, f"make study took over {INSTALL_AND_RUN_TIMEOUT_S}s:\n{console[-6000:]}"
    assert rc == 0, f"make study exited {rc}:\n{console[-6000:]}"
    assert os.path.isfile(os.path.join(root, ".venv", "bin", "rewardseg"))
    missing = [p for p in expected_outputs(root, SMOKE) if not os.path.exists(os.path.join(root, p))]
    assert not missing, f"missing after make study: {missing}\n{console[-3000:]}"
    # a quiet console: no warning about the compiled op mmcv-lite does not ship
    assert "MultiScaleDeformableAttention" not in console


def test_make_study_shows_a_failing_jobs_log(fresh_study):
    """Through the Makefile (STUDY=...): the failing job's error is on the console."""
    root, rc, _ = fresh_study
    if rc != 0:
        pytest.fail("needs the fresh copy's venv, and `make study` failed there (see above)")
    broken_study(os.path.join(root, "broken.yaml"))
    rc, console, _ = make(root, "study", "STUDY=broken.yaml", "CORES=2",
                            log="make-study-broken.log", timeout=600)
    assert rc not in (0, None), console[-3000:]
    assert "Logfile logs/data/synthbroken.log:" in console, console[-3000:]
    error = console[console.index("Error in rule dataset"):]
    for line in log_tail(os.path.join(root, "logs/data/synthbroken.log")):
        assert line in error, (line, console[-3000:])


def test_failing_job_shows_its_log(tmp_path):
    """snakemake itself (profiles/default): a job's log is printed when it fails, so the
    error (here a MemoryError in the data job) is on the console."""
    root = copy_workflow(tmp_path / "wf")
    broken_study(os.path.join(root, "broken.yaml"))
    proc = snakemake(root, "data/synthbroken/meta.json", "--configfile", "broken.yaml",
                     check=False)
    console = proc.stdout + proc.stderr
    assert proc.returncode != 0, console[-3000:]
    assert "Logfile logs/data/synthbroken.log:" in console, console[-3000:]
    tail = log_tail(os.path.join(root, "logs/data/synthbroken.log"))
    assert any("Unable to allocate" in line for line in tail), tail
    error = console[console.index("Error in rule dataset"):]
    for line in tail:
        assert line in error, (line, console[-3000:])
