# The study config, its validation, and the input functions the rule files call.
# Paths come from rewardseg.paths; the science lives in src/rewardseg.
import json
import os
import re
import shlex
import shutil

from rewardseg import figures as figure_registry
from rewardseg import paths
from rewardseg.plan import stage_resources
from rewardseg.runconfig import pretrain_spec, tune_spec
from rewardseg.study import (StudyError, check_study, experiments, released_checkpoints,
                             variant_fields)

# `--config 'seeds=[0,1,2,3,4]'` (on top of --configfile) reaches us as strings
if isinstance(config.get("seeds"), list):
    config["seeds"] = [int(s) if isinstance(s, str) and s.strip().isdigit() else s
                       for s in config["seeds"]]

try:  # the JSON schema (enums from rewardseg.vocabulary), then the cross-field checks
    check_study(config, source="study config")
except StudyError as err:
    raise WorkflowError(str(err)) from None

STUDY = config["study"]
SEEDS = [int(s) for s in config["seeds"]]
VARIANTS = list(config["variants"])
DATASET = config["dataset"]["name"]
EXPERIMENTS = list(experiments(config))
PRETRAIN = paths.PRETRAIN
# released pretraining checkpoints, fetched on the submitting machine (compute nodes may
# have no internet); the pretraining job then only evaluates them
RELEASED = released_checkpoints(config)
RESOURCES = {stage: stage_resources(config, stage) for stage in (PRETRAIN, "tune")}
# Cluster partition / account come from the environment, never from tracked files
# (README, "On a SLURM cluster"); unset means the cluster's defaults.
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


# ---------------------------------------------------------------- input functions
def dataset_json(wildcards):
    """The study's dataset block for `rewardseg prepare --dataset` (no secrets in it:
    credentials are read from the environment by the command itself)."""
    return json.dumps(config["dataset"], sort_keys=True)


def dataset_meta(path):
    """The prepared dataset's meta.json, given its path (a rule input; a missing file
    raises FileNotFoundError, which snakemake takes as "known once the input exists")."""
    with open(path) as fh:
        return json.load(fh)


def pretrained_input(wildcards):
    """A pretraining trained here first fetches its ImageNet backbone on the submitting
    machine (compute nodes may have no internet); released checkpoints need none."""
    # The local pretrained_weights job resolves the model config (mmengine, torch) and
    # fetches what it names, or nothing: resolving it here would cost every DAG build ~4 s.
    return [] if RELEASED else [paths.pretrained_marker(wildcards.study)]


def released_inputs(wildcards):
    return [paths.checkpoint(paths.pretrain_dir(wildcards.study), step) for step in RELEASED]


def class_weight_inputs(wildcards):
    smoothing = variant_fields(config, wildcards.variant)["class_weight_smoothing"]
    if smoothing is None:
        return []
    return [paths.class_weights(paths.data_root(DATASET), smoothing)]


def pretrain_spec_json(wildcards):
    return json.dumps(pretrain_spec(config), sort_keys=True)


def tune_spec_json(wildcards):
    return json.dumps(tune_spec(config, wildcards.variant, int(wildcards.seed)), sort_keys=True)


def run_results(study=STUDY):
    return [paths.run_result(study, v, s) for v in VARIANTS for s in SEEDS]


def first_seed_runs(wildcards):
    """The finished tuning runs of the first seed (the qualitative figure loads them)."""
    return [paths.run_record(paths.run_dir(wildcards.study, v, SEEDS[0])) for v in VARIANTS]


def studies_with_results(wildcards=None):
    """This study's metrics plus those of every other study already run here (their
    files are inputs only: wildcards restrict every rule to this study)."""
    import glob

    ours = paths.study_result(STUDY, "metrics.csv")
    return sorted(set(glob.glob(paths.study_result("*", "metrics.csv"))) | {ours})


# ---------------------------------------------------------------- figures
# What each of a figure's `needs` adds to its rule: inputs, and the command's options.
FIGURE_NEEDS = {
    "metrics": (lambda wc: {"metrics": paths.study_result(wc.study, "metrics.csv")},
                lambda input: ["--metrics", input.metrics]),
    "stats": (lambda wc: {"stats": paths.study_result(wc.study, "train_stats.csv")},
              lambda input: ["--stats", input.stats]),
    "runs": (lambda wc: {"runs": first_seed_runs(wc)},
             lambda input: ["--work-root", paths.WORK, "--seed", str(SEEDS[0])]),
}


# figures.smk makes its rules in a loop: everything that differs between them is bound here,
# at definition time (a rule's shell command is evaluated again when its job runs, when
# the loop variable holds the last figure).
def figure_inputs(spec):
    def inputs(wildcards):
        out = {"study": paths.study_result(wildcards.study, "study.yaml")}
        for need in spec.needs:
            out.update(FIGURE_NEEDS[need][0](wildcards))
        return out

    return inputs


def figure_options(spec):
    def options(wildcards, input):
        opts = [opt for need in spec.needs for opt in FIGURE_NEEDS[need][1](input)]
        return " ".join(shlex.quote(opt) for opt in opts)

    return options


def figure_name(spec):
    return lambda wc: spec.pattern.format(**dict(wc.items()))


def figure_caption(spec):
    return lambda wc: spec.caption_for(**dict(wc.items()))


def one_of(values):
    """A wildcard constraint matching exactly these values (nothing when there are none)."""
    return "|".join(re.escape(v) for v in values) or "(?!)"


# ---- outputs of `rule all`
def figure_outputs(study=STUDY, exts=("png", "pdf")):
    """Every figure of the study (rewardseg.figures' registry, families expanded over the
    study's experiments, ...), each as PNG and PDF."""
    from rewardseg import figures

    return [paths.figure(study, name, ext) for name in figures.names(config) for ext in exts]


def table_outputs(study=STUDY):
    """The tables `rewardseg tables` writes (rewardseg.results.TABLES)."""
    from rewardseg.results import TABLES

    return [paths.table(study, name) for name in TABLES]


def all_outputs():
    """What `rule all` builds. HAVE_NODE comes from paper.smk (Node.js renders the deck);
    the Snakefile's `rule all` calls this after every rule file is included."""
    outputs = run_results() + [paths.study_result(STUDY, "metrics.csv")]
    outputs += figure_outputs() + table_outputs()
    outputs += [paths.study_result(STUDY, "results.html"), paths.build(STUDY, "slides.md")]
    if HAVE_NODE:
        outputs.append(paths.build(STUDY, "slides.html"))
    return outputs
