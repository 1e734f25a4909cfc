"""The paper studies (Cityscapes R-50 and R-18, EasyPortrait, Mapillary): their DAGs,
plans and model configs, and a baseline from released checkpoints served on 127.0.0.1."""
import hashlib
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import yaml

from conftest import ENV, REPO, copy_workflow, job_counts, snakemake
from fakeserver import FakeServer

def study_config(study):
    return yaml.safe_load(open(os.path.join(REPO, "configs", "studies", f"{study}.yaml")))


STUDIES = {  # study -> (tune jobs, class-weight jobs)
    "cityscapes": (15 * 3, 2),
    "cityscapes-r18": (8 * 10, 0),
    "easyportrait": (9 * 3, 2),
    "mapillary": (4 * 3, 0),
}


@pytest.mark.parametrize("study", sorted(STUDIES))
def test_paper_study_dry_run_lists_every_job(study, tmp_path):
    tune, weights = STUDIES[study]
    root = copy_workflow(tmp_path / "wf")
    proc = snakemake(root, "-n", "--configfile", f"configs/studies/{study}.yaml")
    counts = job_counts(proc.stdout)
    assert counts["tune"] == tune and counts["collect_run"] == tune
    assert counts["pretrain"] == 1
    assert counts.get("class_weights", 0) == weights
    assert counts["dataset"] == 1  # one data rule, whatever the source
    # released checkpoints are fetched by local jobs; a baseline trained here fetches
    # its ImageNet backbone instead
    released = len(study_config(study)["pretrain"].get("released") or {})
    assert released == {"cityscapes": 2, "cityscapes-r18": 1}.get(study, 0)
    assert counts.get("released_checkpoint", 0) == released
    assert counts.get("pretrained_weights", 0) == (0 if released else 1)


@pytest.mark.parametrize("study", sorted(STUDIES))
def test_plan_prints_gpu_hours(study):
    proc = subprocess.run([sys.executable, "-m", "rewardseg", "plan", "--configfile",
                           os.path.join(REPO, "configs", "studies", f"{study}.yaml"),
                           "--work-root", "/nonexistent"], capture_output=True, text=True,
                          env=ENV, check=True)
    cfg = yaml.safe_load(open(os.path.join(REPO, "configs", "studies", f"{study}.yaml")))
    tune_row = next(l for l in proc.stdout.splitlines() if l.startswith("tune"))
    jobs, gpus, steps, sps, gpu_h = tune_row.split()[1:6]
    res = cfg["resources"]["tune"]
    assert int(jobs) == STUDIES[study][0] and int(gpus) == res["gpus"]
    expected = res["gpus"] * int(steps) * res["seconds_per_step"] / 3600
    assert float(gpu_h) == pytest.approx(expected, abs=0.01)
    # its layout (GPUs x images per GPU, norm layer) and precision
    norm = "SyncBN" if res["gpus"] > 1 else "BN"
    assert tune_row.split()[6:9] == [f"{res['gpus']}x{cfg['tuning']['batch_size']}", norm,
                                     cfg["tuning"].get("precision", "fp32")]
    assert "total" in proc.stdout.splitlines()[-1]


@pytest.mark.parametrize("study", sorted(STUDIES))
def test_paper_model_configs_build(study):
    """Every run of a paper study resolves to an mmseg config whose model, dataset and
    head match the variant (built, not trained: no data here)."""
    from mmseg.registry import DATASETS, MODELS

    import rewardseg.models  # noqa: F401
    from rewardseg.runconfig import build_run_config, tune_spec
    from rewardseg.study import load_study

    cfg_path = os.path.join(REPO, "configs", "studies", f"{study}.yaml")
    st = load_study(cfg_path)
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        for variant in ("control", "reference"):
            cfg = build_run_config(tune_spec(st, variant, 0))
            assert cfg.train_dataloader.dataset.data_root == f"data/{st['dataset']['name']}"
            assert cfg.train_cfg.max_iters == st["tuning"]["iters"]
            assert cfg.train_cfg.val_interval == st["tuning"]["eval_interval"]
            assert DATASETS.get(cfg.train_dataloader.dataset.type) is not None
            head = cfg.model.decode_head
            assert head.type == ("ASPPHead" if variant == "control" else "RewardASPPHead")
        assert "ValMetricsRecorder" in [h["type"] for h in cfg.custom_hooks]
        assert cfg.val_evaluator.type == "PerClassIoUMetric"
        n_classes = {"cityscapes": 19, "cityscapes-r18": 19, "easyportrait": 8,
                     "mapillary": 19}[study]
        assert head.num_classes == n_classes
        # the released checkpoint's architecture: upstream R-18-D8's narrower heads
        widths = (cfg.model.backbone.depth, head.in_channels, head.channels,
                  cfg.model.auxiliary_head.in_channels, cfg.model.auxiliary_head.channels)
        assert widths == ((18, 512, 128, 256, 64) if study == "cityscapes-r18"
                          else (50, 2048, 512, 1024, 256))
        assert MODELS.get(head.type) is not None
    finally:
        os.chdir(cwd)


def test_study_rejects_a_start_without_released_checkpoint():
    from rewardseg.study import StudyError, check_study, load_study

    st = load_study(os.path.join(REPO, "configs", "studies", "cityscapes.yaml"))
    st["variants"]["late"] = {"start": 60000}
    with pytest.raises(StudyError, match=r"variants.late.start = 60000 is not one of "
                                         r"pretrain.released \(40000, 80000\)"):
        check_study(st)
    st = load_study(os.path.join(REPO, "configs", "studies", "easyportrait.yaml"))
    st["dataset"]["classes"] = "vistas"
    with pytest.raises(StudyError, match="dataset.classes 'vistas' is not valid for source "
                                         "'easyportrait'"):
        check_study(st)


def test_released_baseline_is_downloaded_verified_and_evaluated(smoke, tmp_path):
    """The smoke baseline's iter_4 checkpoint, served as a 'released' checkpoint: the
    baseline job downloads it, checks its sha256 and evaluates it to the same mIoU the
    training run recorded; tuning then starts from it. A wrong digest fails the job with
    the file named and leaves no run.json."""
    ckpt = os.path.join(smoke, "work", "smoke", "pretrain", "iter_4.pth")
    blob = open(ckpt, "rb").read()
    digest = hashlib.sha256(blob).hexdigest()
    trained = {json.loads(l)["step"]: json.loads(l)["metrics"]["mIoU"] for l in
               open(os.path.join(smoke, "work", "smoke", "pretrain", "val_metrics.jsonl"))}
    server = FakeServer()
    server.files["/ckpt/smoke_iter4-" + digest[:8] + ".pth"] = blob
    server.start()
    try:
        root = copy_workflow(tmp_path / "wf")
        os.symlink(os.path.join(smoke, "data"), os.path.join(root, "data"))
        study = yaml.safe_load(open(os.path.join(root, "configs", "studies", "smoke.yaml")))
        study["study"] = "released"
        study["seeds"] = [0]
        study["pretrain"] = {"batch_size": 2, "seed": 0, "released": {4: {
            "url": f"{server.url}/ckpt/smoke_iter4-{digest[:8]}.pth", "sha256": digest[:8]}}}
        study["variants"] = {"control": study["variants"]["control"]}
        cfg = os.path.join(root, "released.yaml")
        yaml.safe_dump(study, open(cfg, "w"))
        proc = snakemake(root, "figures/released/delta_vs_control.png",
                         "paper/tables/released/final_miou.md",
                         "paper/build/released/slides.md", "results/released/results.html",
                         "--configfile", cfg)
        assert "rule released_checkpoint" in proc.stdout + proc.stderr  # a local job
        base = os.path.join(root, "work", "released", "pretrain")
        assert hashlib.sha256(open(os.path.join(base, "iter_4.pth"), "rb").read()
                              ).hexdigest() == digest
        evals = [json.loads(l) for l in open(os.path.join(base, "val_metrics.jsonl"))]
        assert [e["step"] for e in evals] == [4]
        assert evals[0]["metrics"]["mIoU"] == pytest.approx(trained[4], abs=1e-6)
        result = json.load(open(os.path.join(root, "results", "released", "runs", "control",
                                             "seed0.json")))
        assert result["evals"][0]["metrics"]["mIoU"] == pytest.approx(trained[4], abs=1e-6)
        assert [e["step"] for e in result["evals"]] == [0, 2, 4]
        # the report pipeline takes the released pretraining: its point is in metrics.csv,
        # the deck describes it
        import pandas as pd

        metrics = pd.read_csv(os.path.join(root, "results", "released", "metrics.csv"))
        base_rows = metrics[(metrics["variant"] == "pretrain") & (metrics["class"] == "mIoU")]
        assert list(base_rows["step"]) == [4]
        assert base_rows["IoU"].iloc[0] == pytest.approx(trained[4], abs=1e-4)
        slides = open(os.path.join(root, "paper", "build", "released", "slides.md")).read()
        assert "released CE checkpoints at iterations 4" in slides

        # a wrong digest: the job fails naming the file, nothing is left as complete
        study["study"] = "badsum"
        study["pretrain"]["released"][4]["sha256"] = "deadbeef"
        yaml.safe_dump(study, open(cfg, "w"))
        proc = snakemake(root, "work/badsum/pretrain/run.json", "--configfile", cfg,
                         check=False)
        assert proc.returncode != 0
        log = open(os.path.join(root, "logs", "badsum", "released_iter_4.log")).read()
        assert "iter_4.pth" in log and "sha256 checksum mismatch" in log
        bad = os.path.join(root, "work", "badsum", "pretrain")
        left = os.listdir(bad) if os.path.isdir(bad) else []  # snakemake drops empty dirs
        assert "run.json" not in left
        assert not [f for f in left if f.endswith((".pth", ".part"))]
    finally:
        server.stop()


def _snakemake_env(root, target, study_cfg, env):
    return subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", target,
                           "--configfile", study_cfg], cwd=root, env=env,
                          capture_output=True, text=True)


def _all_text(root):
    """Every file the workflow wrote (logs, snakemake metadata, data meta) as text."""
    chunks = []
    for sub in ("logs", ".snakemake", "data"):
        for dirpath, _, files in os.walk(os.path.join(root, sub)):
            for name in files:
                if name.endswith((".png", ".zip", ".jpg")):
                    continue
                try:
                    chunks.append(open(os.path.join(dirpath, name), errors="ignore").read())
                except OSError:
                    pass
    return "\n".join(chunks)


def test_cityscapes_data_rule_keeps_credentials_secret(tmp_path):
    """The DAG's data rule against a fake Cityscapes site: without credentials the
    preflight stops the run before any job with one message naming both variables, and
    nothing is downloaded; with them the dataset is built and the password appears in no
    log, command line or snakemake record."""
    from test_data_cityscapes import SECRET, check_labels, make_archives

    server = FakeServer()
    for i, (name, blob) in enumerate(make_archives(None).items()):
        server.add_package(name, blob, package_id=i + 1)
    server.users["alice"] = SECRET
    server.start()
    try:
        root = copy_workflow(tmp_path / "wf")
        study = yaml.safe_load(open(os.path.join(root, "configs", "studies", "cityscapes.yaml")))
        study["dataset"]["base_url"] = server.url
        cfg = os.path.join(root, "cs.yaml")
        yaml.safe_dump(study, open(cfg, "w"))
        env = {k: v for k, v in ENV.items() if not k.startswith("CITYSCAPES_")}
        proc = _snakemake_env(root, "data/cityscapes/meta.json", cfg, env)
        assert proc.returncode != 0
        out = proc.stdout + proc.stderr
        assert "Preflight: 2 things missing" in out
        assert "CITYSCAPES_USERNAME is not set" in out and "CITYSCAPES_PASSWORD is not set" in out
        assert not os.path.exists(os.path.join(root, "logs", "data", "cityscapes.log"))
        assert server.requests == []
        raw = os.path.join(root, "data", "raw", "cityscapes")
        assert not os.path.isdir(raw) or not os.listdir(raw)

        env.update(CITYSCAPES_USERNAME="alice", CITYSCAPES_PASSWORD=SECRET)
        proc = _snakemake_env(root, "data/cityscapes/meta.json", cfg, env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        check_labels(os.path.join(root, "data", "cityscapes"))
        assert SECRET not in proc.stdout + proc.stderr
        assert SECRET not in _all_text(root)
    finally:
        server.stop()


def test_mapillary_data_rule_says_what_to_do(tmp_path):
    """Without the manual download the preflight stops the run before the data job."""
    root = copy_workflow(tmp_path / "wf")
    proc = _snakemake_env(root, "data/mapillary/meta.json", "configs/studies/mapillary.yaml",
                          ENV)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "mapillary.com" in out and os.path.join("data", "raw", "mapillary") in out
    assert not os.path.exists(os.path.join(root, "logs", "data", "mapillary.log"))
    assert not os.path.exists(os.path.join(root, "data", "mapillary", "meta.json"))


def test_overview_has_a_row_per_study_with_results(tmp_path):
    import pandas as pd

    from rewardseg.results import overview

    paths = []
    # a: +1 (tested: better); b: -2 (worse); c: +0.5 on every seed (no spread: untestable)
    for study, gain, noise in (("a", 1.0, (0.1, -0.1, 0.0)), ("b", -2.0, (0.1, -0.1, 0.0)),
                               ("c", 0.5, (0.0, 0.0, 0.0))):
        rows = []
        for seed in range(3):
            for variant, value in (("control", 50.0 + seed),
                                   ("better", 50.0 + seed + gain + noise[seed])):
                rows.append(dict(study=study, variant=variant, seed=seed, step=10,
                                 **{"class": "mIoU"}, IoU=value))
        path = tmp_path / study / "metrics.csv"
        path.parent.mkdir()
        pd.DataFrame(rows).to_csv(path, index=False)
        paths.append(str(path))
    out = tmp_path / "overview.md"
    df = overview(paths, str(out))
    assert list(df["study"]) == ["a", "b", "c"]
    rows = df.set_index("study")
    assert rows.loc["a", "delta"] == pytest.approx(1.0) and rows.loc["a", "best"] == "better"
    assert (rows.loc["a", "above"], rows.loc["b", "below"]) == (1, 1)
    assert rows.loc["b", "best"] == "none"  # only a variant that beats its control
    assert rows.loc["c", "best"] == "none" and rows.loc["c", "above"] == 0
    assert out.read_text().count("\n") == 5


def _prepare_fake(study, tmp_path):
    """A tiny prepared tree of the study's dataset, in the real source layout."""
    from rewardseg.data import prepare

    dataset = study_config(study)["dataset"]
    root = str(tmp_path / "data" / dataset["name"])
    if dataset["source"] == "cityscapes":
        from test_data_cityscapes import make_archives

        local = tmp_path / "local"
        local.mkdir()
        make_archives(str(local))
        prepare(root, dict(source="cityscapes", raw_dir=str(tmp_path / "raw"),
                           local_copy=str(local), base_url="http://127.0.0.1:9"),
                workers=1, progress=False)
    elif dataset["source"] == "easyportrait":
        from test_data_easyportrait import make_dataset, write_tree

        write_tree(str(tmp_path / "local"), make_dataset())
        prepare(root, dict(source="easyportrait", raw_dir=str(tmp_path / "raw"),
                           local_copy=str(tmp_path / "local")), progress=False)
    else:
        from test_data_mapillary import make_files, write_tree

        write_tree(str(tmp_path / "raw"), make_files("v1.2")[0])
        prepare(root, dict(source="mapillary", raw_dir=str(tmp_path / "raw")), progress=False)
    return root


@pytest.mark.parametrize("study", sorted(STUDIES))
def test_prepared_data_loads_through_the_study_config(study, tmp_path):
    """What `rewardseg prepare` writes is what the study's mmseg config reads: every
    train / val image is found with its label map, and after the training pipeline the
    labels hold only the config's class ids and ignore."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS

    import rewardseg.models  # noqa: F401
    from rewardseg.runconfig import build_run_config, tune_spec
    from rewardseg.study import load_study

    init_default_scope("mmseg")
    root = _prepare_fake(study, tmp_path)
    meta = json.load(open(os.path.join(root, "meta.json")))
    st = load_study(os.path.join(REPO, "configs", "studies", f"{study}.yaml"))
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        cfg = build_run_config(tune_spec(st, "reference", 0, data_dir=str(tmp_path / "data")))
    finally:
        os.chdir(cwd)
    from rewardseg.figures import val_pairs

    pairs = val_pairs(cfg)  # what the qualitative panel shows
    assert len(pairs) == meta["splits"]["val"]
    assert all(os.path.isfile(img) and os.path.isfile(gt) for img, gt in pairs)
    for loader, split in (("train_dataloader", "train"), ("val_dataloader", "val")):
        ds = DATASETS.build(cfg[loader].dataset)
        assert len(ds) == meta["splits"][split] > 0
        assert list(ds.metainfo["classes"]) == list(meta["classes"])
        for i in range(len(ds)):
            sample = ds[i]["data_samples"]
            labels = set(np.unique(sample.gt_sem_seg.data.numpy()).tolist())
            assert labels <= set(range(len(meta["classes"]))) | {255}, labels
            assert len(labels - {255}) >= 2


def test_imagenet_weights_only_where_a_baseline_is_trained(tmp_path):
    """Tuning and released baselines load every weight from their start checkpoint, so
    their configs drop the ImageNet init (no download per job); a baseline trained here
    keeps upstream's open-mmlab://resnet50_v1c (resnet18_v1c for the R-18 model)."""
    from mmengine.config import Config

    from rewardseg.pretrained import pretrained_sources
    from rewardseg.runconfig import build_run_config, pretrain_spec, tune_spec
    from rewardseg.study import load_study

    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        for study in STUDIES:
            st = load_study(os.path.join("configs", "studies", f"{study}.yaml"))
            imagenet = ("open-mmlab://resnet18_v1c" if study == "cityscapes-r18"
                        else "open-mmlab://resnet50_v1c")
            assert pretrained_sources(Config.fromfile(st["model"]["config"])) == [imagenet]
            assert pretrained_sources(build_run_config(tune_spec(st, "control", 0))) == []
            base = pretrained_sources(build_run_config(pretrain_spec(st)))
            assert base == ([] if st["pretrain"].get("released") else [imagenet])
    finally:
        os.chdir(cwd)


def test_fetch_pretrained_goes_through_mmengines_open_mmlab_table(tmp_path):
    """`rewardseg fetch-pretrained` resolves open-mmlab:// with mmengine's own table
    (here extended by $MMENGINE_HOME/open_mmlab.json to a server on 127.0.0.1) and leaves
    the file in torch's hub cache, where training finds it offline."""
    import torch

    blob_path = tmp_path / "w.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(2)}}, blob_path)
    blob = blob_path.read_bytes()
    server = FakeServer()
    server.files["/resnet50_v1c-2cccc1ad.pth"] = blob
    server.start()
    try:
        home = tmp_path / "mmengine"
        home.mkdir()
        (home / "open_mmlab.json").write_text(json.dumps(
            {"resnet50_v1c": f"{server.url}/resnet50_v1c-2cccc1ad.pth"}))
        env = dict(ENV, MMENGINE_HOME=str(home), TORCH_HOME=str(tmp_path / "torch"))
        config = os.path.join(REPO, "configs", "mmseg",
                              "deeplabv3_r50-d8_4xb4-20k_easyportrait-512x512.py")
        out = tmp_path / "fetched.txt"
        proc = subprocess.run([sys.executable, "-m", "rewardseg", "fetch-pretrained", config,
                               "--touch", str(out)], env=env, capture_output=True, text=True,
                              cwd=REPO)
        assert proc.returncode == 0, proc.stderr[-2000:]
        cached = tmp_path / "torch" / "hub" / "checkpoints" / "resnet50_v1c-2cccc1ad.pth"
        assert cached.read_bytes() == blob
        assert out.read_text().split() == ["open-mmlab://resnet50_v1c"]
        n = len(server.requests)
        subprocess.run([sys.executable, "-m", "rewardseg", "fetch-pretrained", config],
                       env=env, check=True, capture_output=True, cwd=REPO)
        assert len(server.requests) == n  # served from the cache
    finally:
        server.stop()


def test_class_setting_and_model_must_agree(tmp_path):
    from rewardseg.runconfig import build_run_config, tune_spec
    from rewardseg.study import StudyError, load_study

    data = tmp_path / "data" / "mapillary"
    data.mkdir(parents=True)
    (data / "meta.json").write_text(json.dumps({"classes": [f"c{i}" for i in range(66)]}))
    st = load_study(os.path.join(REPO, "configs", "studies", "mapillary.yaml"))
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        with pytest.raises(StudyError, match="predicts 19 classes but .*meta.json lists 66"):
            build_run_config(tune_spec(st, "control", 0, data_dir=str(tmp_path / "data")))
        st["model"]["config"] = "configs/mmseg/deeplabv3_r50-d8_4xb2-80k_mapillary-v1-512x1024.py"
        cfg = build_run_config(tune_spec(st, "control", 0, data_dir=str(tmp_path / "data")))
        assert cfg.model.decode_head.num_classes == 66
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize("study", ["default"] + sorted(STUDIES))
def test_lint_has_only_the_software_deployment_reminder(study, tmp_path):
    """`snakemake --lint` flags every rule without a conda env or container (the software
    is the pip-installed package) and must flag nothing else."""
    root = copy_workflow(tmp_path / "wf")
    proc = snakemake(root, "--lint", "--configfile", f"configs/studies/{study}.yaml",
                     check=False)
    text = proc.stdout + proc.stderr
    rules = text.count("Lints for rule")
    reminders = text.count("Specify a conda environment or container for each rule.")
    items = text.count("\n    * ")
    assert rules >= 5 and reminders == rules == items, text[-3000:]
    assert "Lints for snakefile" not in text and "localrules directive" not in text


def test_more_seeds_from_the_command_line(tmp_path):
    """The README's 7-seed run: --config seeds=[...] on top of the study's config file."""
    root = copy_workflow(tmp_path / "wf")
    study = study_config("default")
    proc = snakemake(root, "-n", "--configfile", "configs/studies/default.yaml",
                     "--config", "seeds=[0,1,2,3,4,5,6]")
    assert job_counts(proc.stdout)["tune"] == 7 * len(study["variants"])
    bad = snakemake(root, "-n", "--configfile", "configs/studies/default.yaml",
                    "--config", "seeds=[0,x]", check=False)
    assert bad.returncode != 0 and "seeds.1" in bad.stdout + bad.stderr


def test_default_pretraining_parts_and_their_threads(tmp_path):
    """The default study pretrains in parts: to 500 alone on `first_part_cpus` (2), then to
    1000 and to the end on `cpus` (1) beside the tuning runs that start there."""
    root = copy_workflow(tmp_path / "wf")
    out = snakemake(root, "-n", "-p", "work/default/pretrain/run.json").stdout
    commands = [line for line in out.splitlines() if "rewardseg stage" in line]
    threads = {(re.search(r"--stop-at (\d+)", c) or [None, "end"])[1]:
               re.search(r"--threads (\d+)", c)[1] for c in commands}
    assert threads == {"500": "2", "1000": "1", "end": "1"}, commands
