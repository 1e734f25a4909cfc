"""`rewardseg plan` with a GPU check's measurements (--measured): which row a run takes,
the layout and precision of each stage, the alternatives, and a bad file."""
import copy
import json
import os
import subprocess
import sys

import pytest

from conftest import ENV, REPO
from rewardseg import paths
from rewardseg.cli import main
from rewardseg.plan import (alternatives, format_plan, load_measured, match_measured, plan)
from rewardseg.runconfig import tune_spec
from rewardseg.study import check_study, load_study

R18 = os.path.join(REPO, "configs", "studies", "cityscapes-r18.yaml")
R50 = os.path.join(REPO, "configs", "studies", "cityscapes.yaml")
R18_MODEL = "configs/mmseg/deeplabv3_r18-d8_4xb2-80k_cityscapes-512x1024.py"
R50_MODEL = "configs/mmseg/deeplabv3_r50-d8_4xb2-80k_cityscapes-512x1024.py"
DEVICE = "NVIDIA H200"
STEPS = 2 * 8000  # two seeds x 8000 iterations per variant


def row(loss, batch, precision, sps, model=R18_MODEL, **extra):
    return dict(model_config=model, model="R-18-D8", batch_per_gpu=batch, height=512,
                width=1024, precision=precision, channels_last=extra.pop("channels_last",
                                                                         False),
                variant=loss, loss=loss, baseline=extra.pop("baseline", None),
                num_samples=extra.pop("num_samples", None), seconds_per_step=sps,
                ratio_to_ce=1.0, peak_memory_gib=extra.pop("peak", 3.0), **extra)


MEASURED = {
    "schema": "rewardseg-gpu-check/1", "device": DEVICE, "torch": "2.11.0+cu130",
    "date": "2026-11-26", "commit": "abc1234",
    "steps": [
        row("ce", 8, "fp32", 1.0, peak=6.0),
        row("ce", 8, "fp32", 0.7, channels_last=True),
        row("ce", 8, "bf16", 0.5, peak=4.0),
        row("ce", 8, "fp16", 0.45),
        row("reinforce", 8, "fp32", 1.2, baseline="rloo", num_samples=2, peak=7.5),
        row("reinforce", 8, "fp32", 1.1, baseline="second_sample", num_samples=1),
        row("reinforce", 8, "fp32", 1.5),  # names no baseline: any reinforce variant
        row("lovasz", 8, "fp32", 0.9),
        row("ce", 2, "fp32", 0.3),
        row("ce", 2, "bf16", 0.2),
        row("reinforce", 2, "fp32", 0.4, baseline="rloo", num_samples=2),
        row("ce", 8, "fp32", 5.0, model=R50_MODEL),  # another model: never taken
        row("ce", 8, "fp32", 9.0, model=None),  # a model no study names (bench_step --model)
        row("reinforce", 8, "fp32", 8.0, baseline="rloo", num_samples=2, sample_at="label"),
    ],
    "reward": {"anything": 1},
}
# variant -> (s/step, source) at 1 x 8 fp32
FP32_1x8 = {"control": (1.0, "measured"), "reference": (1.2, "measured"),
            "rf_second": (1.1, "measured"), "rf_greedy": (1.5, "measured"),
            "wce_a0.1": (1.0, "measured CE"), "lovasz": (0.9, "measured")}


def r18(gpus=1, batch=8, precision="bf16", channels_last=False, **tuning):
    study = copy.deepcopy(load_study(R18))
    study["variants"].pop("local_exp")  # the six variants the numbers below are for
    study["variants"].pop("sched_report", None)  # (the report's LR: reference's cost)
    study["seeds"] = [0, 1]
    study["resources"]["tune"]["gpus"] = gpus
    study["tuning"].update(batch_size=batch, precision=precision, channels_last=channels_last,
                           **tuning)
    return check_study(study)


@pytest.fixture
def measured_file(tmp_path):
    path = tmp_path / "h200.json"
    path.write_text(json.dumps(MEASURED))
    return str(path)


def tune_row(rows):
    return next(r for r in rows if r["stage"] == "tune")


def test_every_variant_takes_its_own_row_else_the_ce_row():
    study = r18(precision="fp32")
    for variant, (sps, kind) in FP32_1x8.items():
        hit = match_measured(MEASURED, tune_spec(study, variant, 0))
        assert hit["seconds_per_step"] == pytest.approx(sps), variant
        assert hit["source"] == f"{kind}, {DEVICE}", variant
    # the row that names rloo k=2 wins over the one that names no baseline; k=4 has none
    spec = tune_spec(study, "reference", 0)
    assert match_measured(MEASURED, dict(spec, num_samples=4))["seconds_per_step"] == 1.5
    # sampling the label map was measured too: not the study's (logits) row
    assert match_measured(MEASURED, dict(spec, sample_at="label"))["seconds_per_step"] == 8.0
    # a batch or precision nobody measured: nothing, not the nearest row
    assert match_measured(MEASURED, spec, batch_per_gpu=4) is None
    assert match_measured(MEASURED, spec, batch_per_gpu=2, precision="fp16") is None
    # another model's rows are never taken
    other = dict(spec, model_config="configs/mmseg/deeplabv3_r50-d8_4xb2-80k_x.py")
    assert match_measured(MEASURED, other) is None


def test_a_weighted_ce_row_must_name_the_same_baseline_if_it_names_one():
    spec = tune_spec(r18(precision="fp32"), "wce_a0.1", 0)  # batch_loo
    other = dict(MEASURED, steps=MEASURED["steps"] + [
        row("weighted_ce", 8, "fp32", 2.0, baseline="none", num_samples=7)])
    assert match_measured(other, spec)["source"] == f"measured CE, {DEVICE}"
    other["steps"].append(row("weighted_ce", 8, "fp32", 3.0, baseline="batch_loo",
                              num_samples=7))  # its num_samples is no weighted-CE field
    hit = match_measured(other, spec)
    assert (hit["seconds_per_step"], hit["source"]) == (3.0, f"measured, {DEVICE}")


def test_channels_last_rows_only_for_a_channels_last_study():
    spec = tune_spec(r18(precision="fp32"), "control", 0)
    assert match_measured(MEASURED, spec)["seconds_per_step"] == 1.0
    assert match_measured(MEASURED, dict(spec, channels_last=True))["seconds_per_step"] == 0.7
    # only the other memory format measured: taken, and said so
    hit = match_measured(MEASURED, dict(spec, channels_last=True), precision="bf16")
    assert hit["seconds_per_step"] == 0.5 and hit["source"].endswith("channels_last=False")


def test_a_loss_measured_only_in_the_other_format_takes_its_ratio_to_ce():
    spec = tune_spec(r18(precision="fp32", channels_last=True), "lovasz", 0)
    hit = match_measured(MEASURED, spec)  # CE channels-last 0.7; lovasz 0.9 / CE 1.0 there
    assert hit["seconds_per_step"] == pytest.approx(0.7 * 0.9 / 1.0)
    assert hit["source"] == f"measured CE x ratio (channels_last=False), {DEVICE}"
    spec = tune_spec(r18(precision="fp32", channels_last=True), "control", 0)
    assert match_measured(MEASURED, spec)["source"] == f"measured, {DEVICE}"


def test_tune_gpu_hours_sum_each_variants_own_rate():
    rows = plan(r18(precision="fp32"), work_root="/nonexistent", measured=MEASURED)
    tune = tune_row(rows)
    expected = sum(STEPS * sps for sps, _ in FP32_1x8.values()) / 3600
    assert tune["gpu_hours"] == pytest.approx(expected)  # 29.78
    assert tune["steps"] == 6 * STEPS
    assert tune["seconds_per_step"] == pytest.approx(6.7 / 6)
    assert (tune["layout"], tune["precision"]) == ("1x8 BN", "fp32")
    assert tune["source"] == f"measured, {DEVICE} (5); measured CE, {DEVICE} (1)"
    by = {b["variant"]: b for b in tune["by_variant"]}
    assert by["rf_greedy"]["gpu_hours"] == pytest.approx(STEPS * 1.5 / 3600)


def test_layouts_and_precisions_give_their_own_gpu_hours():
    one_bf16 = tune_row(plan(r18(), "/nonexistent", MEASURED))
    one_fp32 = tune_row(plan(r18(precision="fp32"), "/nonexistent", MEASURED))
    four_fp32 = tune_row(plan(r18(gpus=4, batch=2, precision="fp32"), "/nonexistent",
                              MEASURED))
    assert (one_bf16["layout"], one_bf16["precision"]) == ("1x8 BN", "bf16")
    assert (four_fp32["layout"], four_fp32["gpus_per_job"]) == ("4x2 SyncBN", 4)
    # bf16: only a CE row at batch 8, so every variant at 0.5 s/step
    assert one_bf16["gpu_hours"] == pytest.approx(6 * STEPS * 0.5 / 3600)  # 13.33
    assert one_fp32["gpu_hours"] == pytest.approx(STEPS * 6.7 / 3600)  # 29.78
    # 4 GPUs x 2: control 0.3, reference 0.4, the others fall back to CE 0.3; x 4 GPUs
    assert four_fp32["gpu_hours"] == pytest.approx(4 * STEPS * (5 * 0.3 + 0.4) / 3600)
    text = format_plan(r18(gpus=4, batch=2, precision="fp32"),
                       plan(r18(gpus=4, batch=2, precision="fp32"), "/nonexistent",
                            MEASURED))
    assert "all-reduce is not included" in text
    assert "all-reduce" not in format_plan(r18(), plan(r18(), "/nonexistent", MEASURED))


def test_without_a_file_runs_then_configured(tmp_path):
    study = r18()
    configured = study["resources"]["tune"]["seconds_per_step"]
    tune = tune_row(plan(study, str(tmp_path)))
    assert tune["source"] == "configured"
    assert tune["seconds_per_step"] == pytest.approx(configured)
    assert tune["gpu_hours"] == pytest.approx(6 * STEPS * configured / 3600)
    run = paths.run_dir(study["study"], "reference", 0, str(tmp_path))
    os.makedirs(run)
    with open(paths.run_record(run), "w") as fh:
        json.dump({"spec": {"variant": "reference", "iters": 100}, "wall_time_s": 50.0}, fh)
    tune = tune_row(plan(study, str(tmp_path)))
    assert tune["source"] == "runs" and tune["seconds_per_step"] == pytest.approx(0.5)
    # a measured row beats the runs; a variant without one keeps the runs
    study["tuning"]["precision"] = "fp32"
    study["tuning"]["batch_size"] = 4
    study["variants"]["control"]["batch_size"] = 8
    by = {b["variant"]: b for b in tune_row(plan(study, str(tmp_path), MEASURED))["by_variant"]}
    assert (by["control"]["seconds_per_step"], by["control"]["source"]) == \
        (1.0, f"measured, {DEVICE}")
    assert (by["lovasz"]["seconds_per_step"], by["lovasz"]["source"]) == (0.5, "runs")


def test_alternatives_same_global_batch_each_layout_and_precision():
    study = r18()  # 1 x 8 bf16 as configured
    alts = {(a["layout"], a["precision"]): a for a in alternatives(study, MEASURED)}
    assert list(alts) == [("1x8 BN", "fp32"), ("1x8 BN", "bf16"), ("1x8 BN", "fp16"),
                          ("1x8 BN", "fp32+CL"), ("4x2 SyncBN", "fp32"),
                          ("4x2 SyncBN", "bf16"), ("4x2 SyncBN", "fp16"),
                          ("4x2 SyncBN", "fp32+CL")]
    # channels-last: CE 0.7 there; each loss at its fp32 ratio to CE (1.0): 0.7 x own
    assert alts[("1x8 BN", "fp32+CL")]["gpu_hours"] == pytest.approx(
        STEPS * 0.7 * 6.7 / 3600)
    assert alts[("4x2 SyncBN", "fp32+CL")]["gpu_hours"] is None  # no row of that format
    assert alts[("1x8 BN", "fp32")]["gpu_hours"] == pytest.approx(STEPS * 6.7 / 3600)
    assert alts[("1x8 BN", "bf16")]["gpu_hours"] == pytest.approx(6 * STEPS * 0.5 / 3600)
    assert alts[("1x8 BN", "fp16")]["gpu_hours"] == pytest.approx(6 * STEPS * 0.45 / 3600)
    assert alts[("4x2 SyncBN", "fp32")]["gpu_hours"] == pytest.approx(
        4 * STEPS * 1.9 / 3600)
    assert alts[("4x2 SyncBN", "bf16")]["gpu_hours"] == pytest.approx(
        4 * 6 * STEPS * 0.2 / 3600)
    assert alts[("4x2 SyncBN", "fp16")]["gpu_hours"] is None  # nothing measured
    assert [k for k, a in alts.items() if a["configured"]] == [("1x8 BN", "bf16")]
    one = alts[("1x8 BN", "fp32")]
    assert one["hours_per_job"] == pytest.approx(8000 * 1.5 / 3600)  # rf_greedy, longest
    assert one["peak_memory_gib"] == 7.5 and one["ce_seconds_per_step"] == 1.0
    assert one["priced_as_ce"] == 1 and alts[("1x8 BN", "bf16")]["priced_as_ce"] == 5
    text = format_plan(study, plan(study, "/nonexistent", MEASURED),
                       alternatives(study, MEASURED), MEASURED)
    block = text[text.index("alternatives for tune"):].splitlines()
    assert f"global batch 8, measured on {DEVICE} at 512x1024," in block[0]
    line = next(l for l in block if l.split()[:3] == ["4x2", "SyncBN", "fp32"])
    # CE s/step, GPU-h, hours per job (reference: 8000 x 0.4 s)
    assert line.split()[3:6] == ["0.300", "33.78", "0.89"] and line.split()[7] == "4/6"
    assert any(l.split()[:3] == ["1x8", "BN", "bf16"] and l.endswith("<- configured")
               for l in block)
    assert "not measured: 4x2 SyncBN fp16" in text
    # a global batch of 8 on 4 GPUs is the configured layout: listed once
    alts4 = alternatives(r18(gpus=4, batch=2), MEASURED)
    assert sorted({a["layout"] for a in alts4}) == ["1x8 BN", "4x2 SyncBN"]


def test_cli_prints_layout_precision_and_source(measured_file, capsys):
    assert main(["plan", "--configfile", R18, "--work-root", "/nonexistent",
                 "--measured", measured_file]) == 0
    out = capsys.readouterr().out.splitlines()
    tune = next(l for l in out if l.startswith("tune "))
    fields = tune.split()
    study = load_study(R18)
    runs = len(study["variants"]) * len(study["seeds"])  # 8 variants x 10 seeds
    assert fields[1:6] == [str(runs), "1", str(runs * 8000), "0.500",
                           f"{runs * 8000 * 0.5 / 3600:.2f}"]
    assert fields[6:9] == ["1x8", "BN", "bf16"]
    # the study trains channels-last; the file has bf16 rows in the other format only
    assert tune.endswith(f"measured, {DEVICE}, channels_last=False (1); "
                         f"measured CE, {DEVICE}, channels_last=False "
                         f"({len(study['variants']) - 1})")
    pre = next(l for l in out if l.startswith("pretrain"))
    assert "1x8 BN" in pre and "fp32" in pre
    assert any(l.startswith("alternatives for tune") for l in out)
    # the R-50 study: 4 x 2 SyncBN, and no row of its model in the file
    assert main(["plan", "--configfile", R50, "--work-root", "/nonexistent",
                 "--measured", measured_file]) == 0
    out = capsys.readouterr().out
    tune = next(l for l in out.splitlines() if l.startswith("tune "))
    assert "4x2 SyncBN" in tune and tune.endswith("configured")
    # its one measured row (CE, 1 x 8 fp32) prices every variant on one GPU
    alt = next(l for l in out.splitlines() if l.split()[:3] == ["1x8", "BN", "fp32"])
    r50 = load_study(R50)
    runs = len(r50["variants"]) * len(r50["seeds"])
    assert alt.split()[3:5] == ["5.000", f"{runs * 40000 * 5.0 / 3600:.2f}"]
    assert "not measured: 4x2 SyncBN fp32" in out


@pytest.mark.parametrize("content, message", [
    ({"schema": "other/1", "device": "x", "steps": []},
     "schema is 'other/1', not 'rewardseg-gpu-check/1'"),
    ({"device": "x", "steps": []}, "schema is None, not 'rewardseg-gpu-check/1'"),
    ({"schema": "rewardseg-gpu-check/1", "steps": [{}]}, "no 'device'"),
    ({"schema": "rewardseg-gpu-check/1", "device": "x"}, "'steps' must be a non-empty list"),
    ({"schema": "rewardseg-gpu-check/1", "device": "x",
      "steps": [{k: v for k, v in row("ce", 8, "fp32", 1.0).items()
                 if k != "seconds_per_step"}]}, "steps[0] has no 'seconds_per_step'"),
    ({"schema": "rewardseg-gpu-check/1", "device": "x",
      "steps": [row("ce", 8, "fp32", 1.0), row("ce", 8, "fp8", 1.0)]},
     "steps[1]: precision 'fp8' is not one of fp32, bf16, fp16"),
    ({"schema": "rewardseg-gpu-check/1", "device": "x", "steps": [row("ce", 8, "fp32", -1)]},
     "seconds_per_step must be a positive number"),
    ([1, 2], "top level is list"),
    ("not json", "not JSON"),
])
def test_a_bad_file_is_one_line_naming_it(tmp_path, capsys, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    assert main(["plan", "--configfile", R18, "--measured", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.rstrip("\n")
    assert "\n" not in err
    assert err.startswith(f"rewardseg plan: error: --measured {path}")
    assert message in err
    with pytest.raises(ValueError):
        load_measured(str(path))


def test_a_missing_file(tmp_path, capsys):
    assert main(["plan", "--configfile", R18, "--measured", str(tmp_path / "no.json")]) == 2
    assert "no.json: no such file" in capsys.readouterr().err


def test_plan_with_a_measured_file_imports_no_torch(measured_file):
    code = ("import sys; from rewardseg.cli import main; "
            f"rc = main(['plan', '--configfile', {R18!r}, '--measured', {measured_file!r}]); "
            "print(rc, sorted(m for m in ('torch', 'mmseg', 'mmengine') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True,
                         text=True, check=True).stdout.splitlines()[-1]
    assert out == "0 []"


# ---------------------------------------------------------------- after the study
SMOKE = os.path.join(REPO, "configs", "studies", "smoke.yaml")
REPORT_COLUMNS = ["", "JobID", "JobName", "RuleName", "Elapsed", "TotalCPU", "NNodes", "NCPUS",
                  "MaxRSS", "ReqMem", "Elapsed_sec", "TotalCPU_sec", "MaxRSS_MB",
                  "RequestedMem_MB", "MainJobID", "CPU Efficiency (%)", "Memory Usage (%)"]


def write_record(run_dir, **record):
    os.makedirs(run_dir, exist_ok=True)
    with open(paths.run_record(run_dir), "w") as fh:
        json.dump(record, fh)


def write_report(path, steps):
    """An efficiency report as the SLURM plugin writes it (pandas' CSV, index first): one
    row per job step: (job id, rule comment, elapsed s, CPU s, CPUs, MaxRSS MB, mem %)."""
    import csv

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(REPORT_COLUMNS)
        for i, (job, rule, elapsed, cpu, ncpus, rss, mem) in enumerate(steps):
            out.writerow([i, f"{job}.0", "python", rule, "", "", 1, ncpus, "", "", elapsed,
                          cpu, rss, 2000.0, job, 100 * cpu / (elapsed * ncpus), mem])


def test_after_a_study_planned_gpu_hours_next_to_measured(tmp_path, capsys):
    study = check_study(copy.deepcopy(load_study(SMOKE)))  # 4 variants x 2 seeds, 1 GPU
    study["resources"]["tune"]["gpus"] = 2
    work = str(tmp_path / "work")
    before = plan(study, work)
    assert not any("done" in r for r in before)  # nothing run yet: no such block
    assert "after the study" not in format_plan(study, before)
    # the pretraining and three tuning runs finished (one resumed), one of another variant
    write_record(paths.pretrain_dir("smoke", work), spec={"iters": 8}, wall_time_s=36.0,
                 world_size=1, final_iter=8)
    write_record(paths.run_dir("smoke", "control", 0, work),
                 spec={"variant": "control", "iters": 4},
                 wall_time_s=18.0, world_size=2, final_iter=4)
    write_record(paths.run_dir("smoke", "control", 1, work),
                 spec={"variant": "control", "iters": 4},
                 wall_time_s=36.0, world_size=2, final_iter=4, resumed=True)
    write_record(paths.run_dir("smoke", "reference", 0, work),
                 spec={"variant": "reference", "iters": 4},
                 wall_time_s=72.0, final_iter=4)  # no world_size: the stage's GPUs
    write_record(paths.run_dir("smoke", "gone", 0, work),
                 spec={"variant": "gone", "iters": 4},
                 wall_time_s=3600.0, world_size=2, final_iter=4)  # no longer in the study
    rows = plan(study, work)
    pre, tune = rows[0]["done"], tune_row(rows)["done"]
    assert (pre["runs"], pre["expected"], pre["resumed"]) == (1, 1, 0)
    assert pre["gpu_hours"] == pytest.approx(36.0 / 3600)
    assert (tune["runs"], tune["expected"], tune["resumed"]) == (3, 8, 1)
    assert tune["gpu_hours"] == pytest.approx((18 + 36 + 72) * 2 / 3600)
    # planned: as before any run (the configured 0.2 s/step), not from these runs
    assert tune["planned_gpu_hours"] == pytest.approx(before[1]["gpu_hours"])
    assert tune_row(rows)["source"] == "runs"  # while the plan itself uses them
    assert pre["slurm"] is None and tune["slurm"] is None
    text = format_plan(study, rows)
    assert "no efficiency report" in text and "1 resumed: their last attempt only" in text
    # an efficiency report next to work/ (logs/slurm/): every SLURM job, retries too
    write_report(str(tmp_path / "logs" / "slurm" / "efficiency_report_abc.csv"), [
        (10, "rule_pretrain_wildcards_smoke", 40.0, 20.0, 1, 500.0, 25.0),
        (11, "rule_tune_wildcards_smoke_control_0", 20.0, 10.0, 1, 600.0, 30.0),
        (12, "rule_tune_wildcards_smoke_control_1", 10.0, 10.0, 1, 600.0, 30.0),  # cancelled
        (13, "rule_tune_wildcards_smoke_control_1", 30.0, 20.0, 1, 700.0, 35.0),  # its retry
        (14, "rule_tune_wildcards_smoke_weights_s0.05_1", 30.0, 30.0, 2, 900.0, 45.0),
        (15, "rule_tune_wildcards_smokey_control_0", 999.0, 1.0, 1, 1.0, 99.0),  # other study
        (16, "rule_tune_wildcards_smoke_gone_0", 999.0, 1.0, 1, 1.0, 99.0),  # not a variant
        (17, "rule_collect_run_wildcards_smoke_control_0", 999.0, 1.0, 1, 1.0, 99.0),
    ])
    rows = plan(study, work)
    slurm_pre, slurm_tune = rows[0]["done"]["slurm"], tune_row(rows)["done"]["slurm"]
    assert (slurm_pre["jobs"], slurm_tune["jobs"]) == (1, 4)
    assert slurm_pre["gpu_hours"] == pytest.approx(40.0 / 3600)  # the pretraining: 1 GPU
    assert slurm_tune["gpu_hours"] == pytest.approx(90.0 * 2 / 3600)
    assert slurm_tune["cpu_efficiency_pct"] == pytest.approx(100 * 70 / (20 + 10 + 30 + 60))
    assert (slurm_tune["peak_mem_pct"], slurm_tune["peak_mem_mb"]) == (45.0, 900.0)
    # the command prints the block, the numbers rounded to 0.001 GPU-h
    assert main(["plan", "--configfile", SMOKE, "--work-root", work]) == 0
    out = capsys.readouterr().out
    block = out[out.index("after the study"):].splitlines()
    table = {line.split()[0]: line.split()[1:] for line in block[2:5]}
    # the smoke config's own 1 GPU per tuning job here (the CLI reads the file), but the
    # runs that say they had 2 processes count 2 GPUs
    assert table["pretrain"] == ["0.000", "1/1", "0.010", "1", "0.011", "50%", "25%"]
    assert table["tune"][1:] == ["3/8", f"{(2 * (18 + 36) + 72) / 3600:.3f}", "4",
                                 f"{90 / 3600:.3f}", "58%", "45%"]
    assert table["total"][1:] == [f"{(36 + 180) / 3600:.3f}", f"{130 / 3600:.3f}"]
    assert "efficiency_report_abc.csv" in block[-1]


def test_a_pretraining_in_parts_counts_every_part(tmp_path):
    """`pretrain: {parts: true}`: the parts' wall times (part_<n>.json) and SLURM jobs
    (rule pretrain_part) count for the pretraining stage."""
    study = check_study(copy.deepcopy(load_study(SMOKE)))
    work = str(tmp_path / "work")
    write_record(paths.pretrain_dir("smoke", work), spec={"iters": 8}, wall_time_s=36.0,
                 world_size=1, final_iter=8, resumed=True)
    with open(paths.pretrain_part("smoke", 4, work), "w") as fh:
        json.dump(dict(spec={"iters": 8}, wall_time_s=18.0, world_size=1, final_iter=4), fh)
    write_report(str(tmp_path / "logs" / "slurm" / "efficiency_report_p.csv"), [
        (20, "rule_pretrain_part_wildcards_smoke_4", 20.0, 10.0, 1, 500.0, 25.0),
        (21, "rule_pretrain_wildcards_smoke", 40.0, 20.0, 1, 500.0, 25.0)])
    pre = plan(study, work)[0]["done"]
    assert pre["runs"] == 1 and pre["gpu_hours"] == pytest.approx((36.0 + 18.0) / 3600)
    assert pre["slurm"]["jobs"] == 2 and pre["slurm"]["gpu_hours"] == pytest.approx(60.0 / 3600)



def test_a_finished_run_counts_for_the_variant_its_record_names(tmp_path):
    """`run_rates` groups by `spec.variant` in run.json, not by the folder's name."""
    from rewardseg.plan.speeds import run_rates

    work = str(tmp_path / "work")
    write_record(os.path.join(work, "smoke", "moved", "seed0"),
                 spec={"variant": "control", "iters": 4}, wall_time_s=2.0)
    write_record(paths.pretrain_dir("smoke", work), spec={"variant": paths.PRETRAIN, "iters": 8},
                 wall_time_s=8.0)
    assert run_rates(work, "smoke", "tune") == {"control": [0.5]}
    assert run_rates(work, "smoke", paths.PRETRAIN) == {paths.PRETRAIN: [1.0]}


def test_the_stage_rules_are_the_workflows_training_rules():
    """The rules whose SLURM jobs count for a stage (`costs.STAGE_RULES`) are rules of
    workflow/rules/train.smk, and a job's comment names its stage."""
    import re

    from rewardseg.plan.costs import STAGE_RULES, stage_of

    with open(os.path.join(REPO, "workflow", "rules", "train.smk")) as fh:
        rules = set(re.findall(r"^\s*rule (\w+):", fh.read(), re.M))
    assert set(STAGE_RULES) <= rules, set(STAGE_RULES) - rules
    study = load_study(SMOKE)
    assert [stage_of(c, study) for c in (
        "rule_pretrain_wildcards_smoke", "rule_pretrain_part_wildcards_smoke_4",
        "rule_tune_wildcards_smoke_control_1", "rule_tune_wildcards_smoke_gone_1",
        "rule_pretrain_wildcards_smokey", "rule_collect_run_wildcards_smoke_control_0")] \
        == [paths.PRETRAIN, paths.PRETRAIN, "tune", None, None, None]

# ---------------------------------------------------------------- the README's GPU-hours
def test_readme_gpu_hours_are_what_rewardseg_plan_prints():
    """The README's GPU-hours (its generated plan block and the `rewardseg plan` column of
    the paper studies' table) are the plan's, with the H200's measurements: they cannot
    drift (a changed config, rate or measurement: `python -m rewardseg.plan --readme
    README.md` rewrites them)."""
    from rewardseg.plan.readme import readme_problems

    with open(os.path.join(REPO, "README.md")) as fh:
        text = fh.read()
    assert readme_problems(text, REPO) == []


def test_readme_gpu_hours_are_rewritten_and_a_drift_is_named(tmp_path):
    from rewardseg.plan import readme as plan_mod

    with open(os.path.join(REPO, "README.md")) as fh:
        text = fh.read()
    # the disagreement the issue found (R-18 tune 7.5 in the README, 8.53 in the plan)
    cell = plan_mod.readme_cell("configs/studies/cityscapes-r18.yaml", REPO,
                                load_measured(os.path.join(REPO, plan_mod.README_MEASURED)))
    import re

    assert re.fullmatch(r"\d+(\.\d)? GPU-h, measured on an H200 \(tune \d+(\.\d)?: 1 × 8 BN, "
                        r"bf16, channels-last\)", cell), cell
    stale = text.replace(cell, "7.5 GPU-h measured on an H200", 1)
    # and an alternative's GPU-hours in the plan block (the README once said 50, not 54)
    line = next(x for x in stale.splitlines() if x.startswith("  1x8 BN      bf16+CL "))
    stale = stale.replace(line, line[:40] + "   50.00" + line[48:], 1)
    assert line in text and line[:40] + "   50.00" + line[48:] != line
    problems = plan_mod.readme_problems(stale, REPO)
    assert len(problems) == 2, problems
    assert problems[0] == "the plan block is not what `rewardseg plan` prints now"
    assert "cityscapes-r18.yaml`: the table says '7.5 GPU-h measured on an H200'" in problems[1]
    readme = tmp_path / "README.md"
    readme.write_text(stale)
    assert plan_mod.main(["--readme", str(readme), "--root", REPO, "--check"]) == 1
    assert plan_mod.main(["--readme", str(readme), "--root", REPO]) == 0
    assert readme.read_text() == text  # only the generated parts change
    assert plan_mod.main(["--readme", str(readme), "--root", REPO, "--check"]) == 0
    no_block = text.replace("<!-- end of plan -->", "")
    assert "no generated plan block" in plan_mod.readme_problems(no_block, REPO)[0]
