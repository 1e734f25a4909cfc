# The study config, its validation, and the input functions the rule files call.
# Paths come from rewardseg.paths; the science lives in src/rewardseg.
import json
import os
import re
import shlex

from rewardseg import figures as figure_registry
from rewardseg import paths, preflight
from rewardseg.runconfig import pretrain_spec, tune_spec
from rewardseg.study import StudyError, resolve

# `--config 'seeds=[0,1,2,3,4]'` (on top of --configfile) reaches us as strings
if isinstance(config.get("seeds"), list):
    config["seeds"] = [int(s) if isinstance(s, str) and s.strip().isdigit() else s
                       for s in config["seeds"]]
# and so do values inside a mapping (`--config 'tuning={iters: 4}'`): numbers, booleans
# and nulls are read back where the schema wants them (rewardseg.study.typed_overrides)
from rewardseg.study import typed_overrides

typed_overrides(config)

# `--config recorded=paper/recorded/<study>`: rebuild figures, tables, deck and notebook
# from a study's recorded results instead of training (rewardseg.recorded; `make figures`)
RECORDED_FROM = config.pop("recorded", None)
from rewardseg.recorded import RESULT_FILES as RECORDED_RESULT_FILES

try:  # the JSON schema (enums from rewardseg.vocabulary), then the cross-field checks; the
    # study resolved once (every variant's run fields, control, experiments, resources)
    RESOLVED_STUDY = resolve(config, source="study config", cached=False)
except StudyError as err:
    raise WorkflowError(str(err)) from None

STUDY = RESOLVED_STUDY.name
# this study's recorded run, when the repository has one: a run here is compared with it
if RECORDED_FROM:
    from rewardseg.recorded import RecordError, check_record, restore_conflict

    try:
        check_record(RECORDED_FROM, config)
        conflict = restore_conflict(RECORDED_FROM, paths.study_result(STUDY, ""))
    except RecordError as err:
        raise WorkflowError(str(err)) from None
    if conflict:
        raise WorkflowError(conflict)
SEEDS = list(RESOLVED_STUDY.seeds)
VARIANTS = list(RESOLVED_STUDY.variants)
DATASET = RESOLVED_STUDY["dataset"]["name"]
EXPERIMENTS = list(RESOLVED_STUDY.experiments)
PRETRAIN = paths.PRETRAIN
# released pretraining checkpoints, fetched on the submitting machine (compute nodes may
# have no internet); the pretraining job then only evaluates them
RELEASED = dict(RESOLVED_STUDY.released)
RESOURCES = {stage: dict(res) for stage, res in RESOLVED_STUDY.resources.items()}
# Cluster partition / account come from the environment, never from tracked files
# (README, "On a SLURM cluster"); unset means the cluster's defaults.
SLURM = {key: os.environ[var] for key, var in (("slurm_partition", "REWARDSEG_SLURM_PARTITION"),
                                               ("slurm_account", "REWARDSEG_SLURM_ACCOUNT"))
         if os.environ.get(var)}


def is_dry_run():
    """`snakemake -n` / `--dry-run`: known while the Snakefile is read from the output
    settings (`workflow.dryrun` asks the executor, which is chosen only after that)."""
    return bool(getattr(workflow.output_settings, "dryrun", False)) or workflow.dryrun


# Preflight (rewardseg.preflight): everything only the user can provide (credentials of
# the data source, a manual download, the SLURM partition), checked before any job or
# download, all of it in one message; a dry run only warns (a bad partition stops it too).
# `--lint` reads the workflow without running it: skipped, as snakemake skips `envvars:`.
if workflow.is_main_process and workflow.check_envvars and not RECORDED_FROM:
    _preflight = preflight.check(config, os.environ, os.getcwd(), dry_run=is_dry_run())
    if _preflight.fatal:
        raise WorkflowError(_preflight.message())
    if _preflight.problems:
        logger.warning(_preflight.message())


onstart:
    check_slurm_status_command()


onsuccess:
    print_reproduction()


def print_reproduction():
    """At the end of a run: how this study's numbers compare with its recorded run."""
    found = paths.study_result(STUDY, "reproduction.md")
    if not RECORDED_FROM and os.path.isfile(found):
        with open(found) as fh:
            logger.info(fh.read().rstrip())


def check_slurm_status_command():
    """Under `--profile slurm`: stop before anything is submitted when the job-status
    command the SLURM plugin will use cannot work on this cluster (sacct without
    accounting), naming the flag to add; and let the plugin see sacct's
    `CANCELLED by <uid>` as CANCELLED (rewardseg.slurm)."""
    plugin = getattr(workflow, "executor_plugin", None)
    if plugin is None or getattr(plugin, "name", None) != "slurm":
        return
    import snakemake_executor_plugin_slurm

    from rewardseg.slurm import normalize_cancelled_states, problems

    if not normalize_cancelled_states(snakemake_executor_plugin_slurm):
        logger.warning("this SLURM plugin has no query_job_status: a job cancelled with "
                        "scancel may not be seen as failed under sacct")

    settings = workflow.executor_settings
    error, warnings = problems(
        getattr(settings, "status_command", None),
        getattr(settings, "init_seconds_before_status_checks", None) or 40,
        bool(getattr(settings, "efficiency_report", False)))
    for warning in warnings:
        logger.warning(warning)
    if error:
        raise WorkflowError(error)


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
    smoothing = RESOLVED_STUDY.variants[wildcards.variant].fields["class_weight_smoothing"]
    if smoothing is None:
        return []
    return [paths.class_weights(paths.data_root(DATASET), smoothing)]


def pretrain_class_weight_inputs(wildcards):
    """The weights file of a class-weighted pretraining (`pretrain.class_weight_smoothing`)."""
    smoothing = RESOLVED_STUDY["pretrain"].get("class_weight_smoothing")
    if smoothing is None:
        return []
    return [paths.class_weights(paths.data_root(DATASET), smoothing)]


# `pretrain: {parts: true}`: a pretraining trained here runs in parts, one job each, that
# stop at the tuning start points (`rewardseg stage --stop-at`): a tuning run starts as
# soon as its start checkpoint exists, beside the rest of the pretraining (same numbers).
PRETRAIN_PARTS = [] if RELEASED or not RESOLVED_STUDY["pretrain"].get("parts") else sorted(
    {int(v.fields["start"]) for v in RESOLVED_STUDY.variants.values()}
    - {int(pretrain_spec(RESOLVED_STUDY)["iters"])})


def pretrain_part_threads(wildcards):
    """The first part runs before any tuning run can: `resources.pretrain.first_part_cpus`
    (default: `cpus`); the later ones share the machine with tuning runs: `cpus`."""
    res = RESOURCES[PRETRAIN]
    first = PRETRAIN_PARTS and int(wildcards.step) == PRETRAIN_PARTS[0]
    return int(res.get("first_part_cpus") or res["cpus"]) if first else int(res["cpus"])


def previous_pretrain_part(wildcards):
    earlier = [s for s in PRETRAIN_PARTS if s < int(wildcards.step)]
    return [paths.pretrain_part(wildcards.study, earlier[-1])] if earlier else []


def last_pretrain_part(wildcards):
    return [paths.pretrain_part(wildcards.study, PRETRAIN_PARTS[-1])] if PRETRAIN_PARTS else []


def tune_start_input(wildcards):
    """A tuning run waits for the pretraining part that ends at its start (else for the
    whole pretraining: released checkpoints, or a start at its last iteration)."""
    start = int(RESOLVED_STUDY.variants[wildcards.variant].fields["start"])
    if start in PRETRAIN_PARTS:
        return paths.pretrain_part(wildcards.study, start)
    return paths.run_record(paths.pretrain_dir(wildcards.study))


def pretrain_spec_json(wildcards):
    return json.dumps(pretrain_spec(RESOLVED_STUDY), sort_keys=True)


def tune_spec_json(wildcards):
    return json.dumps(tune_spec(RESOLVED_STUDY, wildcards.variant, int(wildcards.seed)),
                      sort_keys=True)


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
    "predictions": (lambda wc: {"predictions": paths.study_result(wc.study, "predictions.npz")},
                    lambda input: ["--predictions", input.predictions]),
}


# figures.smk makes its rules in a loop: everything that differs between them is bound here,
# at definition time (a rule's shell command is evaluated again when its job runs, when
# the loop variable holds the last figure).
def figure_inputs(spec):
    def inputs(wildcards):
        out = {"study": paths.resolved_study(wildcards.study)}
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


def notebook_figure_pngs(wildcards):
    """The PNGs the results notebook shows as they are: the figures drawn from the
    predictions of trained models ("predictions"); it draws the others again from the
    tables."""
    from rewardseg import figures

    return [paths.figure(wildcards.study, name, "png") for name in figures.names(config)
            if "predictions" in figures.resolve(name)[0].needs]


def table_outputs(study=STUDY):
    """The tables `rewardseg tables` writes (rewardseg.results.TABLES)."""
    from rewardseg.results import TABLES

    return [paths.table(study, name) for name in TABLES]


def all_outputs():
    """What `rule all` builds. HAVE_NODE comes from paper.smk (Node.js renders the deck);
    the Snakefile's `rule all` calls this after every rule file is included."""
    # study.yaml: the config as run, part of the record (rewardseg record)
    outputs = [paths.study_result(STUDY, name) for name in ("study.yaml", "metrics.csv")]
    if not RECORDED_FROM:  # a rebuild from the record trains nothing
        outputs += run_results()
        if os.path.isfile(paths.recorded(STUDY, "metrics.csv")):
            outputs.append(paths.study_result(STUDY, "reproduction.md"))
    outputs += figure_outputs() + table_outputs()
    outputs += [paths.study_result(STUDY, "results.html"), paths.build(STUDY, "slides.md")]
    if HAVE_NODE:
        outputs.append(paths.build(STUDY, "slides.html"))
    return outputs
