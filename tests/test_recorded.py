"""rewardseg.recorded: recording a finished study, checking a record, comparing a run with it."""
import json
import os

import pandas as pd
import pytest
import yaml

from rewardseg import paths
from rewardseg.recorded import (RESULT_FILES, RecordError, check_record, compare, record,
                                render, restore_conflict, runs_machine)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT = os.path.join(REPO, "paper", "recorded", "default")


def metrics_table(shift=0.0, at=("reference", 1)):
    rows = []
    for variant in ("control", "reference"):
        for seed in (0, 1):
            for step in (0, 10):
                for cls, iou in (("road", 80.0), ("person", 10.0 + seed)):
                    value = iou + step / 10
                    if (variant, seed) == at and step == 10 and cls == "person":
                        value += shift
                    rows.append(dict(study="s", variant=variant, seed=seed, step=step,
                                     **{"class": cls}, IoU=value))
    return pd.DataFrame(rows)


def stats_table(shift=0.0):
    return pd.DataFrame([dict(study="s", variant="reference", seed=0, step=5, stat="loss",
                              value=0.5 + shift)])


@pytest.fixture
def finished(tmp_path):
    """A finished study's results and tables under tmp_path, and one run's run.json."""
    results, tables, work = (str(tmp_path / d) for d in ("results", "tables", "work"))
    os.makedirs(paths.study_result("s", "", results))
    os.makedirs(paths.table("s", "", tables))
    with open(paths.study_result("s", "study.yaml", results), "w") as fh:
        yaml.safe_dump({"study": "s", "seeds": [0, 1]}, fh)
    metrics_table().to_csv(paths.study_result("s", "metrics.csv", results), index=False)
    stats_table().to_csv(paths.study_result("s", "train_stats.csv", results), index=False)
    with open(paths.study_result("s", "predictions.npz", results), "wb") as fh:
        fh.write(b"npz")
    with open(paths.table("s", "findings.json", tables), "w") as fh:
        fh.write("{}")
    run = paths.run_dir("s", "control", 0, work)
    os.makedirs(run)
    with open(paths.run_record(run), "w") as fh:
        json.dump({"machine": {"cpu": "Some CPU", "torch_threads": 2, "device": "cpu"}}, fh)
    return dict(results=results, tables=tables, work=work, out=str(tmp_path / "recorded"))


def test_record_copies_the_results_and_says_where_the_runs_ran(finished):
    written = record("s", finished["out"], finished["results"], finished["tables"],
                     finished["work"])
    names = {os.path.basename(p) for p in written}
    assert set(RESULT_FILES) | {"findings.json", "machine.json"} == names
    with open(os.path.join(finished["out"], "machine.json")) as fh:
        machine = json.load(fh)
    assert machine["cpu"] == ["Some CPU"] and machine["torch_threads"] == [2]
    assert machine["runs"] == 1
    check_record(finished["out"], {"study": "s", "seeds": [0, 1]})


def test_record_of_an_unfinished_study_names_the_missing_file_and_writes_nothing(finished):
    os.remove(paths.study_result("s", "predictions.npz", finished["results"]))
    with pytest.raises(RecordError, match=r"predictions\.npz: missing"):
        record("s", finished["out"], finished["results"], finished["tables"], finished["work"])
    assert not os.path.exists(finished["out"])


def test_a_record_of_another_study_config_is_refused_naming_the_keys(finished):
    record("s", finished["out"], finished["results"], finished["tables"], finished["work"])
    with pytest.raises(RecordError, match=r"study\.yaml: .* differs .* in seeds; rebuild with "
                                          r"--configfile"):
        check_record(finished["out"], {"study": "s", "seeds": [0, 1, 2]})
    os.remove(os.path.join(finished["out"], "train_stats.csv"))
    with pytest.raises(RecordError, match=r"train_stats\.csv: missing"):
        check_record(finished["out"], {"study": "s", "seeds": [0, 1]})


def test_restoring_over_a_different_run_here_is_refused(finished):
    record("s", finished["out"], finished["results"], finished["tables"], finished["work"])
    here = paths.study_result("s", "", finished["results"])
    assert restore_conflict(finished["out"], here) is None  # the same files: nothing lost
    metrics_table(shift=0.5).to_csv(os.path.join(here, "metrics.csv"), index=False)
    message = restore_conflict(finished["out"], here)
    assert message and "metrics.csv: differs" in message and "move" in message
    assert restore_conflict(finished["out"], os.path.join(here, "nothing-here")) is None


def test_an_identical_run_reads_identical(finished):
    record("s", finished["out"], finished["results"], finished["tables"], finished["work"])
    found = compare(finished["out"], metrics_table(), stats_table(),
                    here=runs_machine(finished["work"], "s"))
    assert found["identical"] and found["runs"]["compared"] == 4
    text = render(found)
    assert "**Identical**" in text and "Some CPU, torch threads: 2" in text


def test_a_different_run_reports_its_largest_per_run_difference(finished):
    record("s", finished["out"], finished["results"], finished["tables"], finished["work"])
    found = compare(finished["out"], metrics_table(shift=0.3), stats_table(shift=1e-6))
    assert not found["identical"]
    runs = found["runs"]
    # one class of two moved by 0.3 points: that run's final mIoU by 0.15
    assert runs["differing"] == 1 and runs["largest"] == pytest.approx(0.15)
    assert runs["at"] == {"variant": "reference", "seed": 1}
    assert found["metrics"]["largest"] == pytest.approx(0.3)
    assert found["stats"]["differing"] == 1
    text = render(found)
    assert "**Not identical**" in text and "0.15 points (`reference`, seed 1)" in text


def test_a_runs_final_miou_is_its_miou_row_where_the_table_has_one():
    from rewardseg.recorded import final_miou

    table = metrics_table()
    rows = [dict(r, **{"class": "mIoU", "IoU": 50.0 + i}) for i, r in
            enumerate(table.drop_duplicates(["variant", "seed", "step"]).to_dict("records"))]
    found = final_miou(pd.concat([table, pd.DataFrame(rows)], ignore_index=True))
    assert len(found) == 4 and set(found["IoU"]) == {51.0, 53.0, 55.0, 57.0}


def test_runs_missing_on_one_side_are_counted_not_compared(finished):
    record("s", finished["out"], finished["results"], finished["tables"], finished["work"])
    fewer = metrics_table()
    fewer = fewer[fewer["seed"] == 0]
    found = compare(finished["out"], fewer, stats_table())
    assert not found["identical"]
    assert (found["runs"]["only_here"], found["runs"]["only_recorded"]) == (0, 2)
    assert "only in the record: 2" in render(found)


def test_the_default_study_record_is_complete_and_matches_its_config():
    """`make figures` rebuilds from this record: every result file is tracked, and the
    study as recorded is the default study's config."""
    with open(os.path.join(REPO, "configs", "studies", "default.yaml")) as fh:
        config = yaml.safe_load(fh)
    check_record(DEFAULT, config)
    found = compare(DEFAULT, os.path.join(DEFAULT, "metrics.csv"),
                    os.path.join(DEFAULT, "train_stats.csv"))
    assert found["identical"] and found["runs"]["compared"] == len(config["seeds"]) * (
        len(config["variants"])) + 1  # + the pretraining
    # a record's keys name one number each (the comparison joins on them)
    metrics = pd.read_csv(os.path.join(DEFAULT, "metrics.csv"))
    assert not metrics.duplicated(["variant", "seed", "step", "class"]).any()
    stats = pd.read_csv(os.path.join(DEFAULT, "train_stats.csv"))
    assert not stats.duplicated(["variant", "seed", "step", "stat"]).any()

