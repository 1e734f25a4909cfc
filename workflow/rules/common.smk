# Config loading, validation and input functions. The science lives in src/rewardseg.
import json
import os
import shutil

from snakemake.utils import validate

from rewardseg.plan import stage_resources
from rewardseg.study import (StudyError, baseline_spec, check_study, experiments,
                             released_checkpoints, tune_spec, variant_fields)

validate(config, schema="../schemas/study.schema.yaml")
try:
    check_study(config, source="study config")
except StudyError as err:
    raise WorkflowError(str(err)) from None

STUDY = config["study"]
SEEDS = [int(s) for s in config["seeds"]]
VARIANTS = list(config["variants"])
DATASET = config["dataset"]["name"]
SOURCE = config["dataset"]["source"]
# released baseline checkpoints, fetched on the submitting machine (compute nodes may
# have no internet); the baseline job then only evaluates them
RELEASED = released_checkpoints(config)
SMOOTHINGS = sorted({variant_fields(config, v)["class_weight_smoothing"]
                     for v in VARIANTS} - {None})

RESOURCES = {stage: stage_resources(config, stage) for stage in ("baseline", "tune")}
# Cluster partition / account come from the environment, never from tracked files
# (see slurm/README.md); unset means the cluster's defaults.
SLURM = {key: os.environ[var] for key, var in (("slurm_partition", "REWARDSEG_SLURM_PARTITION"),
                                               ("slurm_account", "REWARDSEG_SLURM_ACCOUNT"))
         if os.environ.get(var)}



def check_slurm_partition():
    """A partition named in REWARDSEG_SLURM_PARTITION must exist (checked before any
    job is submitted, where `sinfo` is available)."""
    wanted = SLURM.get("slurm_partition")
    if not wanted or shutil.which("sinfo") is None:
        return
    import subprocess

    out = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True)
    partitions = sorted({p.strip().rstrip("*") for p in out.stdout.split()})
    if out.returncode == 0 and wanted not in partitions:
        raise WorkflowError(
            f"REWARDSEG_SLURM_PARTITION={wanted!r} is not a partition of this cluster "
            f"(sinfo lists: {', '.join(partitions) or 'none'}); set it to one of them or "
            "unset it to use the cluster's default partition")


if workflow.is_main_process:
    check_slurm_partition()


wildcard_constraints:
    study=STUDY,
    variant="|".join(VARIANTS).replace(".", r"\."),
    seed=r"\d+",
    step=r"\d+",
    dataset=DATASET,


def prepare_options(wildcards):
    """`rewardseg prepare` options from the study's dataset block (no secrets here:
    Cityscapes credentials are read from the environment by the command itself)."""
    from shlex import quote

    ds = config["dataset"]
    opts = ["--raw-dir", ds.get("raw_dir", f"data/raw/{SOURCE}")]
    for key in ("local_copy", "classes", "version", "base_url"):
        if ds.get(key):
            opts += [f"--{key.replace('_', '-')}", str(ds[key])]
    for key in ("urls", "sha256"):
        for name, value in (ds.get(key) or {}).items():
            opts += ["--url" if key == "urls" else "--sha256", f"{name}={value}"]
    return " ".join(quote(o) for o in opts)


def dataset_meta(path):
    """The prepared dataset's meta.json, given its path (a rule input; a missing file
    raises FileNotFoundError, which snakemake takes as "known once the input exists")."""
    with open(path) as fh:
        return json.load(fh)


def studies_with_results(wildcards=None):
    """This study's metrics plus those of every other study already run here (their
    files are inputs only: wildcards restrict every rule to this study)."""
    import glob

    return sorted(set(glob.glob("results/*/metrics.csv")) | {f"results/{STUDY}/metrics.csv"})


def pretrained_input(wildcards):
    """A baseline trained here first fetches its ImageNet backbone on the submitting
    machine (compute nodes may have no internet); released baselines need none."""
    if released_checkpoints(config):
        return []
    from mmengine.config import Config

    from rewardseg.pretrained import pretrained_sources

    if not pretrained_sources(Config.fromfile(config["model"]["config"])):
        return []
    return [f"work/{wildcards.study}/pretrained.txt"]


def run_results():
    return expand("results/{study}/runs/{variant}/seed{seed}.json", study=STUDY,
                  variant=VARIANTS, seed=SEEDS)


def class_weight_inputs(wildcards):
    smoothing = variant_fields(config, wildcards.variant)["class_weight_smoothing"]
    if smoothing is None:
        return []
    return [f"data/{DATASET}/class_weights_s{smoothing:g}.json"]


def tune_spec_json(wildcards):
    return json.dumps(tune_spec(config, wildcards.variant, int(wildcards.seed)), sort_keys=True)


def baseline_spec_json(wildcards):
    return json.dumps(baseline_spec(config), sort_keys=True)


MARP_CLI = "@marp-team/marp-cli@4.5.1"
HAVE_NODE = shutil.which("npx") is not None
if not HAVE_NODE:
    logger.warning("Node.js (npx) not found: the slides are built as Marp markdown "
                   f"(paper/build/{STUDY}/slides.md) but not rendered to HTML; install "
                   "Node.js >= 18 and run `snakemake slides` to render them.")


def all_outputs():
    outputs = run_results() + [
        f"results/{STUDY}/metrics.csv",
        f"results/{STUDY}/report.done",
        f"figures/{STUDY}/qualitative.png",
        f"results/{STUDY}/results.html",
        f"paper/build/{STUDY}/slides.md",
    ]
    if HAVE_NODE:
        outputs.append(f"paper/build/{STUDY}/slides.html")
    return outputs


FIGURES = [f"exp_{name}" for name in experiments(config)] + [
    "delta_vs_control", "per_class_iou", "estimator_variance"]
TABLES = [f"{t}.{ext}" for t in ("final_miou", "per_class_iou") for ext in ("md", "tex")]


# Everything but training runs on the submitting machine under `--profile slurm`.
localrules:
    all,
    class_weights,
    collect_run,
    collect_baseline,
    study_config,
    pretrained_weights,
    aggregate,
    overview,
    report,
    qualitative,
    notebook,
    notebook_html,
    slides_markdown,
    slides_html,
    slides,
