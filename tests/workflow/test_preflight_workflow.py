"""The workflow's preflight (rewardseg.preflight, run by workflow/rules/common.smk): the
paper studies without what only the user can provide stop before any job, download
included, with one message naming everything; a dry run only warns."""
import os
import subprocess
import sys

from conftest import ENV, copy_workflow

USER, PASSWORD = "CITYSCAPES_USERNAME", "CITYSCAPES_PASSWORD"
# no credentials, no partition: whatever the calling shell has
CLEAN = {k: v for k, v in ENV.items()
         if not k.startswith(("CITYSCAPES_", "REWARDSEG_SLURM_"))}


def run(root, *args, env=CLEAN):
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", *args],
                          cwd=root, env=env, capture_output=True, text=True)
    return proc, proc.stdout + proc.stderr


def preflight_block(out):
    """The lines of the (single) preflight message: its heading and its items."""
    lines = out.splitlines()
    heads = [i for i, l in enumerate(lines) if l.startswith("Preflight")]
    assert len(heads) == 1, out[-3000:]
    block = [lines[heads[0]]]
    for line in lines[heads[0] + 1:]:
        if not line.startswith("  - "):
            break
        block.append(line)
    return block


def nothing_started(root, out):
    for folder in ("work", "logs", "results", os.path.join("data", "raw")):
        path = os.path.join(root, folder)
        assert not os.path.exists(path) or not any(files for _, _, files in os.walk(path)), folder
    for word in ("Execute", "rule released_checkpoint", "rule pretrained_weights",
                 "rule dataset", "localrule", "Job stats"):
        assert word not in out, word


def test_cityscapes_without_credentials_stops_before_any_job(tmp_path):
    root = copy_workflow(tmp_path / "wf")
    proc, out = run(root, "--configfile", "configs/studies/cityscapes.yaml")
    assert proc.returncode != 0
    block = preflight_block(out)
    assert block[0].startswith("Preflight: 2 things missing; nothing was started")
    assert block[1].startswith(f"  - {USER} is not set")
    assert block[2].startswith(f"  - {PASSWORD} is not set")
    assert len(block) == 3
    nothing_started(root, out)


def test_cityscapes_dry_run_warns_and_lists_the_jobs(tmp_path):
    root = copy_workflow(tmp_path / "wf")
    proc, out = run(root, "-n", "--configfile", "configs/studies/cityscapes.yaml")
    assert proc.returncode == 0, out[-3000:]
    block = preflight_block(out)
    assert block[0].startswith("Preflight (dry run, so only a warning): 2 things missing")
    assert [b.split()[1] for b in block[1:]] == [USER, PASSWORD]
    assert "Job stats" in out and "released_checkpoint" in out  # the DAG as without it
    assert not os.path.exists(os.path.join(root, "work"))


def test_prepared_dataset_needs_no_credentials(tmp_path):
    """With data/cityscapes/meta.json the data job does not run: no complaint."""
    from rewardseg.data.meta import write_meta

    root = copy_workflow(tmp_path / "wf")
    write_meta(os.path.join(root, "data", "cityscapes"), "cityscapes",
               [f"c{i}" for i in range(19)], [[i, i, i] for i in range(19)],
               {"train": 1, "val": 1}, "leftImg8bit", "gtFine", "_leftImg8bit.png",
               "_gtFine_labelTrainIds.png", "test")
    proc, out = run(root, "-n", "--configfile", "configs/studies/cityscapes.yaml")
    assert proc.returncode == 0, out[-3000:]
    assert "Preflight" not in out and USER not in out
    assert "Job stats" in out


def test_credentials_set_no_complaint_and_no_value_shown(tmp_path):
    root = copy_workflow(tmp_path / "wf")
    env = dict(CLEAN, **{USER: "alice-7f3a", PASSWORD: "hunter2-s3cr3t"})
    proc, out = run(root, "-n", "--configfile", "configs/studies/cityscapes.yaml", env=env)
    assert proc.returncode == 0, out[-3000:]
    assert "Preflight" not in out
    assert "alice-7f3a" not in out and "hunter2-s3cr3t" not in out


def test_mapillary_without_its_archive_stops_before_any_job(tmp_path):
    root = copy_workflow(tmp_path / "wf")
    proc, out = run(root, "--configfile", "configs/studies/mapillary.yaml")
    assert proc.returncode != 0
    block = preflight_block(out)
    assert block[0].startswith("Preflight: 1 thing missing")
    assert len(block) == 2
    item = block[1]
    assert "data/raw/mapillary" in item and "dataset.raw_dir" in item
    assert "https://www.mapillary.com/dataset/vistas" in item
    assert "mapillary-vistas-dataset_public_v1.2.zip" in item
    nothing_started(root, out)
    proc, out = run(root, "-n", "--configfile", "configs/studies/mapillary.yaml")
    assert proc.returncode == 0, out[-3000:]
    assert preflight_block(out)[0].startswith("Preflight (dry run, so only a warning)")


def test_lint_reads_the_workflow_without_the_preflight(tmp_path):
    """`--lint` runs nothing (snakemake skips its own `envvars:` check there too)."""
    root = copy_workflow(tmp_path / "wf")
    proc, out = run(root, "--lint", "--configfile", "configs/studies/cityscapes.yaml")
    assert "Preflight" not in out and "Lints for rule" in out


def slurm_client_standins(bin_dir):
    """A SLURM login node's commands as far as a dry run meets them: ``sinfo`` lists two
    partitions (what the preflight asks), and ``squeue`` exists. Snakemake imports every
    installed executor plugin at start, and the SLURM plugin (2.x), as soon as ``sinfo`` is
    on PATH, requires ``sacct`` or ``squeue`` there (``which``) or raises at import, before
    the Snakefile is read. Every SLURM installation has ``squeue``; this one fails when
    run, since a dry run must query no job. Without ``sacct`` the plugin falls back to
    squeue and asks ``scontrol`` for MinJobAge, a missing ``scontrol`` reading as unknown."""
    bin_dir.mkdir()
    scripts = {"sinfo": "printf 'gpu*\\ncpu\\n'\n",
               "squeue": "echo 'stand-in squeue: a dry run queries no job' >&2\nexit 1\n"}
    for name, body in scripts.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + body)
        (bin_dir / name).chmod(0o755)


def test_a_bad_partition_joins_the_message_and_stops_a_dry_run_too(tmp_path):
    """REWARDSEG_SLURM_PARTITION that `sinfo` (here a stand-in) does not list: one message
    with the credentials, and even `-n` stops (how a cluster set-up is checked). Runs on a
    machine without SLURM: the stand-ins make it look like a login node."""
    bin_dir = tmp_path / "bin"
    slurm_client_standins(bin_dir)
    env = dict(CLEAN, PATH=str(bin_dir) + os.pathsep + CLEAN["PATH"],
               REWARDSEG_SLURM_PARTITION="no-such-partition")
    root = copy_workflow(tmp_path / "wf")
    proc, out = run(root, "-n", "--configfile", "configs/studies/cityscapes.yaml", env=env)
    assert proc.returncode != 0
    block = preflight_block(out)
    assert block[0].startswith("Preflight: 3 things missing")
    assert [b.split()[1].split("=")[0] for b in block[1:]] == [
        USER, PASSWORD, "REWARDSEG_SLURM_PARTITION"]
    assert "'no-such-partition' is not a partition" in block[3]
    assert "sinfo lists: cpu, gpu" in block[3]
    assert "Job stats" not in out
    assert "stand-in squeue" not in out
