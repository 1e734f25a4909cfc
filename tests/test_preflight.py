"""rewardseg.preflight: what only the user can provide, checked before any job, all of it
in one message (credentials, a manual download, a local copy, the SLURM partition)."""
import json
import os
import stat
import subprocess
import sys
import types

import pytest

import rewardseg.data as data
from conftest import ENV, REPO
from rewardseg import preflight
from rewardseg.study import load_study

USER, PASSWORD = "CITYSCAPES_USERNAME", "CITYSCAPES_PASSWORD"
CS_ZIPS = ("leftImg8bit_trainvaltest.zip", "gtFine_trainvaltest.zip")


def study(name):
    return load_study(os.path.join(REPO, "configs", "studies", f"{name}.yaml"))


def touch(path, text=""):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(text)


def fake_sinfo(tmp_path, listing="gpu*\ncpu\n", code=0):
    """A `sinfo` that prints ``listing`` (what `sinfo -h -o %R` prints) and exits ``code``;
    returns a PATH holding only it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "sinfo"
    script.write_text(f"#!/bin/sh\nprintf '{listing}'\nexit {code}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(bin_dir)


# ---------------------------------------------------------------- Cityscapes
def test_cityscapes_without_credentials_names_both_variables(tmp_path):
    report = preflight.check(study("cityscapes"), {}, str(tmp_path))
    assert report.fatal
    assert [p.missing.split()[0] for p in report.problems] == [USER, PASSWORD]
    msg = report.message()
    lines = msg.splitlines()
    assert lines[0].startswith("Preflight: 2 things missing; nothing was started")
    assert lines[1].startswith(f"  - {USER} is not set") and f"export {USER}=" in lines[1]
    assert lines[2].startswith(f"  - {PASSWORD} is not set") and f"export {PASSWORD}=" in lines[2]
    for line in lines[1:]:  # each says what to do, the alternative included
        assert " — " in line and "never put it in a config" in line
        assert "dataset.local_copy" in line and "cityscapes-dataset.com" in line
    assert len(lines) == 3


def test_credentials_never_appear_in_the_message(tmp_path):
    secret_user, secret_pw = "alice-7f3a", "hunter2-s3cr3t"
    report = preflight.check(study("cityscapes"), {USER: secret_user}, str(tmp_path))
    assert [p.missing.split()[0] for p in report.problems] == [PASSWORD]
    assert secret_user not in report.message()
    report = preflight.check(study("cityscapes"), {PASSWORD: secret_pw}, str(tmp_path))
    assert [p.missing.split()[0] for p in report.problems] == [USER]
    assert secret_pw not in report.message()
    both = preflight.check(study("cityscapes"), {USER: secret_user, PASSWORD: secret_pw},
                           str(tmp_path))
    assert both.problems == [] and both.message() == "" and not both.fatal


def test_an_empty_variable_counts_as_missing(tmp_path):
    report = preflight.check(study("cityscapes"), {USER: "", PASSWORD: "x"}, str(tmp_path))
    assert [p.missing.split()[0] for p in report.problems] == [USER]


def test_a_prepared_dataset_needs_nothing(tmp_path):
    st = study("cityscapes")
    assert len(preflight.check(st, {}, str(tmp_path)).problems) == 2
    touch(os.path.join(tmp_path, "data", "cityscapes", "meta.json"), "{}")
    report = preflight.check(st, {}, str(tmp_path))
    assert report.problems == [] and not report.fatal
    # likewise Mapillary without its archive
    st = study("mapillary")
    assert len(preflight.check(st, {}, str(tmp_path)).problems) == 1
    touch(os.path.join(tmp_path, "data", st["dataset"]["name"], "meta.json"), "{}")
    assert preflight.check(st, {}, str(tmp_path)).problems == []


def test_cityscapes_archives_already_downloaded_or_extracted_need_no_account(tmp_path):
    st = study("cityscapes")
    raw = os.path.join(tmp_path, st["dataset"]["raw_dir"])
    touch(os.path.join(raw, CS_ZIPS[0]))
    report = preflight.check(st, {}, str(tmp_path))
    assert len(report.problems) == 2  # gtFine still to download
    assert all(CS_ZIPS[1] in p.missing and CS_ZIPS[0] not in p.missing
               for p in report.problems)
    touch(os.path.join(raw, CS_ZIPS[1]))
    assert preflight.check(st, {}, str(tmp_path)).problems == []
    # an extracted tree in data/cityscapes (an interrupted preparation) is not fetched again
    other = tmp_path / "other"
    for top in ("leftImg8bit", "gtFine"):
        os.makedirs(other / "data" / "cityscapes" / top)
    assert preflight.check(st, {}, str(other)).problems == []


def test_cityscapes_local_copy_must_hold_the_packages(tmp_path):
    st = study("cityscapes")
    st["dataset"]["local_copy"] = "copy"
    os.makedirs(tmp_path / "copy")
    report = preflight.check(st, {}, str(tmp_path))
    # no account needed with a local copy, but both packages are missing from it
    assert [p.missing for p in report.problems] == [
        "dataset.local_copy copy has neither leftImg8bit/ nor leftImg8bit_trainvaltest.zip",
        "dataset.local_copy copy has neither gtFine/ nor gtFine_trainvaltest.zip"]
    assert all(USER not in str(p) for p in report.problems)
    touch(os.path.join(tmp_path, "copy", CS_ZIPS[0]))
    os.makedirs(tmp_path / "copy" / "gtFine")
    assert preflight.check(st, {}, str(tmp_path)).problems == []


# ---------------------------------------------------------------- other sources
def test_mapillary_archive_placed_by_hand(tmp_path):
    st = study("mapillary")
    raw = st["dataset"]["raw_dir"]
    report = preflight.check(st, {}, str(tmp_path))
    assert report.fatal and len(report.problems) == 1
    problem = report.problems[0]
    assert raw in problem.missing and "dataset.raw_dir" in problem.missing
    assert "https://www.mapillary.com/dataset/vistas" in problem.todo
    assert os.path.join(raw, "mapillary-vistas-dataset_public_v1.2.zip") in problem.todo
    assert "\n" not in str(problem)
    # the zip (v1.2's, or v2.0's which holds v1.2 too) or the extracted tree is enough
    zip_path = os.path.join(tmp_path, raw, "mapillary-vistas-dataset_public_v2.0.zip")
    touch(zip_path)
    assert preflight.check(st, {}, str(tmp_path)).problems == []
    os.remove(zip_path)
    os.makedirs(os.path.join(tmp_path, raw, "vistas", "training", "images"))
    assert len(preflight.check(st, {}, str(tmp_path)).problems) == 1
    touch(os.path.join(tmp_path, raw, "vistas", "config_v1.2.json"), "{}")
    assert preflight.check(st, {}, str(tmp_path)).problems == []


def test_mapillary_v2_names_its_own_archive(tmp_path):
    st = study("mapillary")
    st["dataset"]["version"] = "v2.0"
    st["dataset"]["raw_dir"] = str(tmp_path / "elsewhere")  # absolute: kept as is
    (problem,) = preflight.check(st, {}, "/nonexistent").problems
    assert str(tmp_path / "elsewhere") in problem.missing and "v2.0" in problem.missing
    assert "mapillary-vistas-dataset_public_v2.0.zip" in problem.todo
    assert "v1.2.zip" not in problem.todo


def test_easyportrait_local_copy(tmp_path):
    st = study("easyportrait")
    assert preflight.check(st, {}, str(tmp_path)).problems == []  # a public download
    st["dataset"]["local_copy"] = "ep"
    (problem,) = preflight.check(st, {}, str(tmp_path)).problems
    assert problem.missing.startswith("dataset.local_copy ep holds neither")
    for name in ("images.zip", "annotations.zip"):
        touch(os.path.join(tmp_path, "ep", name))
    assert preflight.check(st, {}, str(tmp_path)).problems == []


def test_synthetic_study_needs_nothing(tmp_path):
    assert preflight.check(study("default"), {}, str(tmp_path)).problems == []


def test_a_source_without_its_own_check_needs_its_secrets(monkeypatch):
    """The default for a source module without ``preflight``: each SECRETS variable."""
    module = types.SimpleNamespace(SECRETS=("TOKEN_A", "TOKEN_B"))
    monkeypatch.setitem(data._TABLE, "vault", module)
    problems = data.preflight("data/v", {"name": "v", "source": "vault"},
                              {"TOKEN_B": "value-b"})
    assert [m.split()[0] for m, _ in problems] == ["TOKEN_A"]
    assert all("value-b" not in m + t for m, t in problems)
    assert "export TOKEN_A" in problems[0][1]


def test_every_source_check_is_callable():
    for source in data.SOURCES:
        hook = getattr(data.source_module(source), "preflight", None)
        assert hook is None or callable(hook)
    assert callable(data.source_module("cityscapes").preflight)
    assert callable(data.source_module("mapillary").preflight)


# ---------------------------------------------------------------- partition
def test_partition_not_listed_by_sinfo(tmp_path):
    path = fake_sinfo(tmp_path)
    env = {"PATH": path, "REWARDSEG_SLURM_PARTITION": "no-such-partition"}
    report = preflight.check(study("default"), env, str(tmp_path))
    (problem,) = report.problems
    assert "REWARDSEG_SLURM_PARTITION='no-such-partition' is not a partition" in problem.missing
    assert "sinfo lists: cpu, gpu" in problem.missing  # the default's '*' dropped
    assert "unset it" in problem.todo
    # it stops a dry run too (the data items only warn there)
    assert preflight.check(study("default"), env, str(tmp_path), dry_run=True).fatal


@pytest.mark.parametrize("wanted", ["gpu", "cpu"])
def test_partition_listed_by_sinfo(tmp_path, wanted):
    env = {"PATH": fake_sinfo(tmp_path), "REWARDSEG_SLURM_PARTITION": wanted}
    assert preflight.check(study("default"), env, str(tmp_path)).problems == []


def test_partition_unchecked_without_a_working_sinfo(tmp_path):
    env = {"PATH": str(tmp_path / "empty"), "REWARDSEG_SLURM_PARTITION": "x"}
    assert preflight.check(study("default"), env, str(tmp_path)).problems == []
    env["PATH"] = fake_sinfo(tmp_path, listing="", code=1)  # no controller answering
    assert preflight.check(study("default"), env, str(tmp_path)).problems == []
    # unset: nothing asked
    env = {"PATH": fake_sinfo(tmp_path)}
    assert preflight.check(study("default"), env, str(tmp_path)).problems == []


# ---------------------------------------------------------------- one message
def test_everything_in_one_message(tmp_path):
    env = {"PATH": fake_sinfo(tmp_path), "REWARDSEG_SLURM_PARTITION": "nope"}
    report = preflight.check(study("cityscapes"), env, str(tmp_path))
    msg = report.message()
    assert report.fatal and msg.startswith("Preflight: 3 things missing")
    items = [l for l in msg.splitlines() if l.startswith("  - ")]
    assert [i.split()[1].split("=")[0] for i in items] == [USER, PASSWORD,
                                                           "REWARDSEG_SLURM_PARTITION"]
    assert len(msg.splitlines()) == 4


def test_a_dry_run_only_warns_about_data(tmp_path):
    report = preflight.check(study("cityscapes"), {}, str(tmp_path), dry_run=True)
    assert not report.fatal and len(report.problems) == 2
    msg = report.message()
    assert msg.startswith("Preflight (dry run, so only a warning): 2 things missing")
    assert USER in msg and PASSWORD in msg
    real = preflight.check(study("cityscapes"), {}, str(tmp_path), dry_run=False)
    assert real.fatal and real.message().splitlines()[1:] == msg.splitlines()[1:]


def test_the_module_is_light(tmp_path):
    """The Snakefile imports it at every DAG build: no torch, mmseg or mmengine."""
    code = ("import sys, json; from rewardseg import preflight, study; "
            "st = study.load_study(sys.argv[1]); "
            "r = preflight.check(st, {}, sys.argv[2]); "
            "print(json.dumps([len(r.problems), "
            "[m for m in ('torch', 'mmseg', 'mmengine', 'mmcv') if m in sys.modules]]))")
    out = subprocess.run([sys.executable, "-c", code,
                          os.path.join(REPO, "configs", "studies", "cityscapes.yaml"),
                          str(tmp_path)], env=ENV, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [2, []]
