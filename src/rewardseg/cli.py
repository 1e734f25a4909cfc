"""The ``rewardseg`` command."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import List, Optional


def _cmd_train(ns) -> int:
    from .train import parse_cfg_options, train

    train(ns.config, ns.work_dir, seed=ns.seed, resume=ns.resume, load_from=ns.load_from,
          launcher=ns.launcher, cfg_options=parse_cfg_options(ns.cfg_options))
    return 0


def _cmd_class_weights(ns) -> int:
    from .class_weights import write_class_weights

    out = write_class_weights(ns.label_dir, ns.num_classes, ns.smoothing, out=ns.out,
                              suffix=ns.suffix, ignore_index=ns.ignore_index,
                              progress=not ns.quiet)
    with open(out) as fh:
        record = json.load(fh)
    print(f"wrote {out} (and .npy): {record['num_files']} label maps, weights "
          + ", ".join(f"{w:.4g}" for w in record["weights"]))
    return 0


def _cmd_stage(ns) -> int:
    from .runner import run_stage
    from .train import distributed_rank, torchrun_command

    spec = json.loads(ns.spec)
    if ns.nproc > 1 and "LOCAL_RANK" not in os.environ:
        # one job, several processes: relaunch under torchrun (mmengine's pytorch launcher)
        threads = max(1, (ns.threads or 0) // ns.nproc)
        cmd = torchrun_command(ns.nproc, ["stage", "--spec", ns.spec, "--work-dir",
                                          ns.work_dir, "--threads", str(threads)]
                               + (["--stop-at", str(ns.stop_at)] if ns.stop_at else []))
        return subprocess.call(cmd)
    launcher = "pytorch" if "LOCAL_RANK" in os.environ else "none"
    record = run_stage(spec, ns.work_dir, launcher=launcher, stop_at=ns.stop_at,
                       threads=ns.threads)
    if distributed_rank() != 0:
        return 0
    part = f" (part: up to {ns.stop_at})" if ns.stop_at else ""
    print(f"{spec['stage']} {spec['variant']} seed {spec['seed']}{part}: "
          f"{_stage_summary(record)} in {record['wall_time_s']:.1f}s -> {ns.work_dir}")
    return 0


def _stage_summary(record: dict) -> str:
    """What this job did: the iterations it trained (a resumed run: from where)."""
    spec, final, start = record["spec"], record["final_iter"], record["start_iter"]
    if spec.get("released"):
        steps = ", ".join(str(s) for s in sorted(int(k) for k in spec["released"]))
        return f"released checkpoints (iterations {steps}) evaluated"
    if record["resumed"]:
        return f"resumed at {start}, {final - start} iterations ({start} to {final})"
    return f"{final} iterations"


def _cmd_prepare(ns) -> int:
    from .data import prepare

    try:
        dataset = json.loads(ns.dataset)
    except json.JSONDecodeError as err:
        raise ValueError(f"--dataset: not JSON ({err})") from None
    if not isinstance(dataset, dict):
        raise ValueError("--dataset: expected a JSON object (the study's dataset block)")
    if dataset.setdefault("source", ns.source) != ns.source:
        raise ValueError(f"--dataset names source {dataset['source']!r}, but this command "
                         f"prepares {ns.source!r}")
    meta = prepare(ns.root, dataset, progress=not ns.quiet, workers=ns.workers)
    print(f"{ns.root}: {ns.source}, {len(meta['classes'])} classes, "
          + ", ".join(f"{k} {v} images" for k, v in meta["splits"].items()))
    return 0


def _cmd_download(ns) -> int:
    from .data.archive import download

    download(ns.url, ns.out, md5=ns.md5, sha256=ns.sha256, progress=not ns.quiet)
    print(f"{ns.out}: verified")
    return 0


def _cmd_fetch_pretrained(ns) -> int:
    from .pretrained import fetch_pretrained

    sources = fetch_pretrained(ns.config)
    print(f"{ns.config}: " + (", ".join(sources) + " in the cache" if sources
                              else "no remote pretrained weights"))
    if ns.touch:
        with open(ns.touch, "w") as fh:
            fh.write("\n".join(sources) + "\n")
    return 0


def _cmd_collect(ns) -> int:
    from .results import collect_run

    result = collect_run(ns.work_dir, ns.out, pretrain_dir=ns.pretrain_dir)
    last = result["evals"][-1]
    print(f"{ns.out}: {len(result['evals'])} evaluations, final mIoU "
          f"{last['metrics']['mIoU']:.2f} at step {last['step']}")
    return 0


def _cmd_aggregate(ns) -> int:
    from .results import aggregate

    df = aggregate(ns.runs, ns.pretrain, ns.out, ns.stats)
    print(f"{ns.out}: {len(df)} rows from {len(ns.runs)} runs + the pretraining")
    return 0


def _cmd_overview(ns) -> int:
    from .results import overview

    df = overview(ns.metrics, ns.out)
    print(f"{ns.out}: {len(df)} studies ({', '.join(df['study']) if len(df) else 'none'})")
    return 0


def _cmd_figure(ns) -> int:
    import matplotlib

    matplotlib.use("Agg")  # files only, whatever display the machine has
    from .figures import draw
    from .study import load_resolved

    written = draw(ns.name, load_resolved(ns.study), ns.out, metrics=ns.metrics, stats=ns.stats,
                   predictions=ns.predictions)
    print(f"wrote {', '.join(written)}")
    return 0


def _cmd_predictions(ns) -> int:
    import pandas as pd

    from .figures import qualitative_predictions, save_predictions
    from .study import load_resolved

    data = qualitative_predictions(load_resolved(ns.study), pd.read_csv(ns.metrics),
                                   work_root=ns.work_root, seed=ns.seed)
    save_predictions(data, ns.out)
    print(f"wrote {ns.out}: {', '.join(map(str, data['variants']))} on "
          f"{', '.join(map(str, data['names']))}")
    return 0


def _cmd_record(ns) -> int:
    from .recorded import record

    written = record(ns.study, out_dir=ns.out_dir, work_root=ns.work_root)
    print(f"wrote {', '.join(written)}")
    return 0


def _cmd_reproduction(ns) -> int:
    from .fileio import write_json_atomic, write_text_atomic
    from .recorded import compare, render, runs_machine
    from .study import load_resolved

    study = load_resolved(ns.study)
    found = compare(ns.recorded, ns.metrics, ns.stats,
                    here=runs_machine(ns.work_root, study.name))
    text = render(found)
    if ns.json:
        write_json_atomic(ns.json, found)
    write_text_atomic(ns.out, text)  # last: the rule's first output marks it done
    print(text, end="")
    return 0


def _cmd_tables(ns) -> int:
    import pandas as pd

    from .results import write_tables
    from .study import load_resolved

    resolved = load_resolved(ns.study)
    written = write_tables(pd.read_csv(ns.metrics), ns.out_dir, resolved.labels,
                           resolved.controls, study=resolved)
    print(f"wrote {', '.join(written)}")
    return 0


def _cmd_findings(ns) -> int:
    from .results import update_readme

    changed = update_readme(ns.readme, ns.findings)
    print(f"{ns.readme}: findings block {'rewritten' if changed else 'already current'} "
          f"from {ns.findings}")
    return 0


def _cmd_slides(ns) -> int:
    from .slides import build_slides
    from .study import load_resolved

    out = build_slides(ns.template, load_resolved(ns.study), ns.metrics, ns.out,
                       paper_dir=ns.paper_dir, overview=ns.overview)
    print(f"wrote {out}")
    return 0


def _cmd_embed_images(ns) -> int:
    from .slides import embed_images

    print(f"{ns.html}: {embed_images(ns.html)} images embedded")
    return 0


def _cmd_plan(ns) -> int:
    from .plan import alternatives, format_plan, load_measured, plan
    from .study import load_study, resolve

    study = resolve(load_study(ns.configfile), source=ns.configfile)
    measured = load_measured(ns.measured) if ns.measured else None
    rows = plan(study, work_root=ns.work_root, measured=measured)
    alts = alternatives(study, measured) if measured else None
    print(format_plan(study, rows, alts, measured))
    return 0


def _cmd_env(ns) -> int:
    from .provenance import package_versions

    for name, version in package_versions().items():
        print(f"{name}: {version}")
    return 0


STUDY_HELP = ("the study: results/<study>/study.resolved.json as the workflow writes it, "
              "or a study config (YAML or JSON)")


def _add_training_parsers(sub) -> None:
    """``train`` and ``class-weights``: mmseg training and its class weights."""
    p = sub.add_parser("train", help="train / fine-tune with an mmseg config")
    p.add_argument("config", help="mmseg python config (configs/mmseg/...)")
    p.add_argument("--work-dir", required=True, help="checkpoints and logs go here")
    p.add_argument("--seed", type=int, default=None, help="random seed")
    p.add_argument("--resume", action="store_true",
                   help="resume from the latest checkpoint in --work-dir (or from --load-from)")
    p.add_argument("--load-from", default=None, help="initialise weights from this checkpoint")
    p.add_argument("--launcher", default="none", choices=["none", "pytorch", "slurm", "mpi"],
                   help="distributed launcher (mmengine)")
    p.add_argument("--cfg-options", nargs="+", default=None, metavar="KEY=VALUE",
                   help="override config keys, e.g. model.decode_head.loss_decode.0.alpha=0.2")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("class-weights",
                       help="class weights 1/(n_c + s*N), rescaled to sum to C, "
                            "from a folder of label maps")
    p.add_argument("label_dir", help="folder searched recursively for label maps")
    p.add_argument("--num-classes", type=int, required=True)
    p.add_argument("--smoothing", type=float, default=0.05,
                   help="s in 1/(n_c + s*N) (the report used 0.05 and 0.005)")
    p.add_argument("--out", default=None,
                   help="JSON to write (default: LABEL_DIR/class_weights_s<S>.json); "
                        "a .npy beside it")
    p.add_argument("--suffix", default="_labelTrainIds.png", help="label file suffix")
    p.add_argument("--ignore-index", type=int, default=255)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_class_weights)


def _add_dataset_parsers(sub) -> None:
    """``prepare``, ``download`` and ``fetch-pretrained``: datasets and pretrained weights."""
    from .data import SOURCES

    p = sub.add_parser("prepare", help="build a dataset (generate, or download / verify / "
                                       "convert) in mmseg's layout; ROOT/meta.json, written "
                                       "last, marks it complete")
    p.add_argument("source", choices=SOURCES, help="the dataset source")
    p.add_argument("root", help="dataset folder to build, e.g. data/<dataset name>")
    p.add_argument("--dataset", default="{}",
                   help="the study's dataset block as JSON (its source's options; missing "
                        "keys take their defaults). Credentials are never options: a "
                        "source that needs them reads them from the environment")
    p.add_argument("--workers", type=int, default=0, help="conversion processes (0: auto)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser("download", help="download a file (resumable), verify its checksum, "
                                        "rename it into place")
    p.add_argument("url")
    p.add_argument("out")
    p.add_argument("--sha256", default=None, help="sha256 or a prefix of it")
    p.add_argument("--md5", default=None)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_download)

    p = sub.add_parser("fetch-pretrained",
                       help="download a model config's ImageNet backbone weights into "
                            "mmengine's cache (open-mmlab:// names)")
    p.add_argument("config")
    p.add_argument("--touch", default=None, help="file to write the fetched names to")
    p.set_defaults(func=_cmd_fetch_pretrained)


def _add_stage_parser(sub) -> None:
    """``stage``: one stage of a study from its run spec."""
    p = sub.add_parser("stage", help="run one stage (pretrain or tune) from a run spec; "
                                     "resumes from the work dir's last checkpoint")
    p.add_argument("--spec", required=True, help="run spec as JSON (rewardseg.runconfig)")
    p.add_argument("--work-dir", required=True)
    p.add_argument("--nproc", type=int, default=1,
                   help="processes (one per GPU) for distributed data-parallel training; "
                        "global batch = nproc x batch_size. On a CPU: gloo processes")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads per process (0: torch's default)")
    p.add_argument("--stop-at", type=int, default=None, metavar="ITER",
                   help="train up to this checkpoint step only (same schedule) and write "
                        "part_<ITER>.json instead of run.json: a pretraining in parts")
    p.set_defaults(func=_cmd_stage)


def _add_results_parsers(sub) -> None:
    """``collect``, ``aggregate`` and ``overview``: runs to results and metrics."""
    p = sub.add_parser("collect", help="finished run -> results JSON (per-step IoU)")
    p.add_argument("work_dir")
    p.add_argument("--out", required=True)
    p.add_argument("--pretrain-dir", default=None,
                   help="the pretraining run: its evaluation at the start step becomes step 0")
    p.set_defaults(func=_cmd_collect)

    p = sub.add_parser("aggregate", help="run results -> tidy metrics.csv")
    p.add_argument("runs", nargs="+", help="results/<study>/runs/<variant>/seed<k>.json")
    p.add_argument("--pretrain", required=True, help="results/<study>/runs/pretrain.json")
    p.add_argument("--out", required=True, help="metrics.csv to write")
    p.add_argument("--stats", required=True, help="train_stats.csv to write")
    p.set_defaults(func=_cmd_aggregate)

    p = sub.add_parser("overview", help="one table across every study that has results")
    p.add_argument("metrics", nargs="+", help="results/<study>/metrics.csv files")
    p.add_argument("--out", required=True, help="Markdown table to write")
    p.set_defaults(func=_cmd_overview)


def _add_figure_parsers(sub) -> None:
    """``figure`` and ``predictions``: a study's figures and the qualitative panel's data."""
    from . import paths
    from .figures import FIGURES

    p = sub.add_parser("figure", help="one figure of a study (PNG + a PDF beside it)")
    p.add_argument("name", metavar="NAME",
                   help="a figure registered in rewardseg.figures: " + ", ".join(
                       n.replace("{", "<").replace("}", ">") for n in FIGURES))
    p.add_argument("--study", required=True, help=STUDY_HELP)
    p.add_argument("--metrics", default=None, help="results/<study>/metrics.csv")
    p.add_argument("--stats", default=None, help="results/<study>/train_stats.csv")
    p.add_argument("--predictions", default=None,
                   help="results/<study>/predictions.npz (the qualitative panel)")
    p.add_argument("--out", required=True, help="PNG to write (a PDF beside it)")
    p.set_defaults(func=_cmd_figure)

    p = sub.add_parser("predictions", help="the qualitative panel's data: the control's and "
                       "the best reward-tuned variant's predictions where they differ most")
    p.add_argument("--study", required=True, help=STUDY_HELP)
    p.add_argument("--metrics", required=True, help="results/<study>/metrics.csv")
    p.add_argument("--work-root", default=paths.WORK, help="where the finished runs are")
    p.add_argument("--seed", type=int, default=0, help="whose runs to load")
    p.add_argument("--out", required=True, help="results/<study>/predictions.npz")
    p.set_defaults(func=_cmd_predictions)


def _add_record_parsers(sub) -> None:
    """``record`` and ``reproduction``: recorded results and the comparison with them."""
    from . import paths

    p = sub.add_parser("record", help="copy a finished study's results into "
                       "paper/recorded/<study>/ (figures and deck rebuild from them: "
                       "make figures)")
    p.add_argument("--study", required=True, help="the study's name (results/<study>/)")
    p.add_argument("--out-dir", default=None, help="default: paper/recorded/<study>")
    p.add_argument("--work-root", default=paths.WORK,
                   help="where the runs are (their run.json say which machine)")
    p.set_defaults(func=_cmd_record)

    p = sub.add_parser("reproduction", help="compare a study's results with its recorded "
                       "run (identical, or how far apart)")
    p.add_argument("--recorded", required=True, help="paper/recorded/<study>")
    p.add_argument("--study", required=True, help=STUDY_HELP)
    p.add_argument("--metrics", required=True, help="results/<study>/metrics.csv")
    p.add_argument("--stats", required=True, help="results/<study>/train_stats.csv")
    p.add_argument("--work-root", default=paths.WORK,
                   help="where the runs are (their run.json say which machine)")
    p.add_argument("--out", required=True, help="Markdown to write")
    p.add_argument("--json", default=None, help="also the numbers as JSON")
    p.set_defaults(func=_cmd_reproduction)


def _add_paper_parsers(sub) -> None:
    """``tables``, ``findings``, ``slides`` and ``embed-images``: the paper, README and deck."""
    p = sub.add_parser("tables", help="final mIoU and per-class IoU tables (Markdown, "
                                      "LaTeX, CSV) of a study from metrics.csv")
    p.add_argument("--study", required=True, help=STUDY_HELP)
    p.add_argument("--metrics", required=True, help="results/<study>/metrics.csv")
    p.add_argument("--out-dir", required=True, help="paper/tables/<study>")
    p.set_defaults(func=_cmd_tables)

    p = sub.add_parser("findings", help="rewrite the README's generated findings block from "
                                        "a study's findings.json")
    p.add_argument("--readme", default="README.md")
    p.add_argument("--findings", default="paper/recorded/default/findings.json",
                   help="findings.json (default: the default study's recorded one)")
    p.set_defaults(func=_cmd_findings)

    p = sub.add_parser("slides", help="build a study's Marp deck from paper/slides.md")
    p.add_argument("--template", default="paper/slides.md")
    p.add_argument("--study", required=True)
    p.add_argument("--metrics", required=True)
    p.add_argument("--paper-dir", default="paper")
    p.add_argument("--overview", default=None,
                   help="Markdown table across studies (rewardseg overview) for the last slide")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_slides)

    p = sub.add_parser("embed-images", help="put a rendered deck's local images into the "
                                            "HTML itself (data URIs): one movable file")
    p.add_argument("html")
    p.set_defaults(func=_cmd_embed_images)


def _add_plan_parsers(sub) -> None:
    """``plan`` and ``env``: a study's cost before submitting, and the package versions."""
    from . import paths

    p = sub.add_parser("plan", help="jobs, GPUs and GPU-hours of a study, before submitting")
    p.add_argument("--configfile", default="configs/studies/default.yaml")
    p.add_argument("--work-root", default=paths.WORK,
                   help="where finished runs are looked for to measure seconds per step")
    p.add_argument("--measured", default=None, metavar="FILE",
                   help="seconds per step measured by bench/gpu_check.sh (its JSON): "
                        "preferred to finished runs and to the configured ones; adds the "
                        "tune stage on other layouts and precisions")
    p.set_defaults(func=_cmd_plan)

    p = sub.add_parser("env", help="print the versions of the packages that matter")
    p.set_defaults(func=_cmd_env)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="rewardseg",
        description="Reward-optimisation fine-tuning for semantic segmentation.")
    parser.add_argument("--version", action="version", version=f"rewardseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_training_parsers(sub)
    _add_dataset_parsers(sub)
    _add_stage_parser(sub)
    _add_results_parsers(sub)
    _add_figure_parsers(sub)
    _add_record_parsers(sub)
    _add_paper_parsers(sub)
    _add_plan_parsers(sub)
    return parser

def main(argv: Optional[List[str]] = None) -> int:
    from .data.archive import DataError

    parser = build_parser()
    ns = parser.parse_args(argv)
    try:
        return ns.func(ns)
    except (FileNotFoundError, ValueError, FileExistsError, json.JSONDecodeError,
            DataError) as exc:
        print(f"rewardseg {ns.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
