"""Figures of a study: a registry with one function per figure (or per family of figures).

A figure is a function decorated with :func:`figure`. It takes the study (a dict) and the
inputs its ``needs`` names, and returns a matplotlib Figure; :func:`save` writes that
Figure as PNG + PDF. The notebook calls :func:`build` and shows the Figure inline; the
command ``rewardseg figure NAME`` calls :func:`draw` (build + save).

The workflow reads the registry: ``workflow/rules/figures.smk`` makes one rule per entry
and ``rule all`` asks for every figure of the study (``figure_outputs`` in common.smk), so
a new figure is one registered function here and nothing else. Its caption in the
snakemake report is the registered sentence.

A pattern with a ``{field}`` is a family: one figure per value of ``each(study)``, the
value handed to the function as the keyword ``field`` (``exp_{experiment}``: one figure
per experiment of the study).

Importing this module is cheap (the Snakefile imports it): matplotlib, seaborn, pandas and
mmseg are imported inside the functions.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import paths
from .study import controls, experiments, labels as variant_labels, variant_fields
from .vocabulary import LOGGED_ADVANTAGE

# What a figure may need: the study's metrics.csv, its train_stats.csv, and the finished
# tuning runs of one seed (under ``work_root``; the qualitative panel loads their models).
NEEDS = ("metrics", "stats", "runs")
_FIELD = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class FigureSpec:
    pattern: str                    # file stem: "delta_vs_control", "exp_{experiment}"
    fn: Callable[..., Any]          # (study, <needs>, [<field>=value]) -> Figure
    needs: Tuple[str, ...]
    caption: str                    # one sentence; a family's ``{field}`` is filled in
    each: Optional[Callable[[dict], List[str]]] = None  # a family's values for a study
    dpi: int = 130

    @property
    def field(self) -> Optional[str]:
        found = _FIELD.findall(self.pattern)
        return found[0] if found else None

    @property
    def rule(self) -> str:
        """The workflow rule that draws it: ``figure_delta_vs_control``,
        ``figure_exp_experiment``."""
        return "figure_" + re.sub(r"\W", "", self.pattern)

    def names(self, study: dict) -> List[str]:
        """The figure names this entry gives for a study."""
        if self.field is None:
            return [self.pattern]
        return [self.pattern.format(**{self.field: value}) for value in self.each(study)]

    def match(self, name: str) -> Optional[Dict[str, str]]:
        """The family's keyword for ``name`` ({} for a plain figure), or None."""
        if self.field is None:
            return {} if name == self.pattern else None
        head, tail = self.pattern.split("{" + self.field + "}")
        found = re.fullmatch(re.escape(head) + r"(?P<v>.+)" + re.escape(tail), name)
        return {self.field: found.group("v")} if found else None

    def caption_for(self, study: str, **values: str) -> str:
        return self.caption.format(study=study, **values)


FIGURES: Dict[str, FigureSpec] = {}


def figure(pattern: str, needs: Tuple[str, ...] = ("metrics",), caption: str = "",
           each: Optional[Callable[[dict], List[str]]] = None, dpi: int = 130):
    """Register a figure function under ``pattern`` (the file stem under
    ``figures/<study>/``). ``caption``: one sentence for the snakemake report (``{study}``
    and a family's ``{field}`` are filled in)."""
    unknown = set(needs) - set(NEEDS)
    if unknown:
        raise ValueError(f"figure {pattern!r}: unknown needs {sorted(unknown)}; "
                         f"choose from {NEEDS}")
    fields = _FIELD.findall(pattern)
    if len(fields) > 1 or (fields and each is None) or (each is not None and not fields):
        raise ValueError(f"figure {pattern!r}: a family has exactly one {{field}} and an "
                         "`each`; a plain figure has neither")
    if not re.fullmatch(r"[A-Za-z0-9_]+", _FIELD.sub("x", pattern)):
        raise ValueError(f"figure {pattern!r}: letters, digits and _ only")
    if not caption.strip():
        raise ValueError(f"figure {pattern!r}: give a one-sentence caption")

    def register(fn):
        if pattern in FIGURES and FIGURES[pattern].fn is not fn:
            raise ValueError(f"figure {pattern!r} is registered twice")
        FIGURES[pattern] = FigureSpec(pattern, fn, tuple(needs), caption.strip(), each, dpi)
        return fn

    return register


def names(study: dict) -> List[str]:
    """Every figure name of a study (families expanded)."""
    return [name for spec in FIGURES.values() for name in spec.names(study)]


def resolve(name: str) -> Tuple[FigureSpec, Dict[str, str]]:
    """The registry entry of a figure name and the family keyword it carries."""
    for spec in FIGURES.values():
        values = spec.match(name)
        if values is not None:
            return spec, values
    raise ValueError(f"unknown figure {name!r}; registered: {', '.join(FIGURES)}")


def build(name: str, study: dict, metrics=None, stats=None, work_root: str = paths.WORK,
          seed: int = 0):
    """The Figure ``name`` of a study. ``metrics`` / ``stats``: a path to metrics.csv /
    train_stats.csv or the DataFrame read from it; ``work_root`` and ``seed``: where the
    finished runs are, for figures that need them."""
    import pandas as pd

    spec, values = resolve(name)
    given = dict(metrics=metrics, stats=stats)
    kwargs: Dict[str, Any] = {}
    for need in spec.needs:
        if need == "runs":
            kwargs.update(work_root=work_root, seed=int(seed))
            continue
        if given[need] is None:
            raise ValueError(f"figure {name!r} needs {need} (the study's "
                             f"{'metrics.csv' if need == 'metrics' else 'train_stats.csv'})")
        value = given[need]
        kwargs[need] = pd.read_csv(value) if isinstance(value, (str, os.PathLike)) else value
    return spec.fn(study, **kwargs, **values)


def save(fig, out_png: str, dpi: int = 130) -> List[str]:
    """Write ``fig`` as ``out_png`` and a PDF beside it, then close it."""
    import matplotlib.pyplot as plt

    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    fig.savefig(out_png, dpi=dpi)
    pdf = os.path.splitext(out_png)[0] + ".pdf"
    fig.savefig(pdf)
    plt.close(fig)
    return [out_png, pdf]


def draw(name: str, study: dict, out_png: str, metrics=None, stats=None,
         work_root: str = paths.WORK, seed: int = 0) -> List[str]:
    """Build figure ``name`` and write it (PNG + PDF); returns the paths written."""
    spec, _ = resolve(name)
    fig = build(name, study, metrics=metrics, stats=stats, work_root=work_root, seed=seed)
    return save(fig, out_png, dpi=spec.dpi)


# ---------------------------------------------------------------- the figures
def _lines_per_variant(ax, data, labels: Dict[str, str], x: str = "step", y: str = "value",
                       **style) -> None:
    """One line per variant (its label), mean and 95 % band over seeds."""
    import seaborn as sns

    data = data.assign(label=data["variant"].map(lambda v: labels.get(v, v)))
    sns.lineplot(data=data, x=x, y=y, hue="label", errorbar=("ci", 95), n_boot=500, seed=0,
                 ax=ax, **style)


@figure("exp_{experiment}", needs=("metrics",), each=lambda study: list(experiments(study)),
        caption="Study ``{study}``, experiment ``{experiment}``: validation mIoU of its "
                "variants over the fine-tuning steps (mean and 95 % band over seeds) next "
                "to the CE control, the CE pretraining continuing its own schedule "
                "(dash-dotted) and its level at the start checkpoint (dotted).")
def experiment_figure(study: dict, metrics, experiment: str):
    """mIoU vs tuning step per variant of an experiment: mean and 95 % band over seeds;
    the CE pretraining's own trend over the same steps (dash-dotted) and its level at the
    start."""
    import matplotlib.pyplot as plt

    groups = experiments(study)
    if experiment not in groups:
        raise ValueError(f"study {study['study']!r} has no experiment {experiment!r}; "
                         f"it has: {', '.join(groups)}")
    variants = groups[experiment]
    labels = variant_labels(study)
    start_of = {v: variant_fields(study, v)["start"] for v in variants}
    starts = sorted(set(start_of.values()))
    title = f"{study['study']}: {experiment.replace('_', ' ')} (mean, 95 % CI over seeds)"
    miou = metrics[metrics["class"] == "mIoU"]
    sub = miou[miou["variant"].isin(variants)].copy()
    pre = miou[miou["variant"] == paths.PRETRAIN].sort_values("step")
    # one start: steps from it; several: pretraining iterations, each curve at its own start
    offset = 0 if len(starts) > 1 else starts[0]
    sub["x"] = sub["step"] + (sub["variant"].map(start_of) if offset == 0 else 0)
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    _lines_per_variant(ax, sub, labels, x="x", y="IoU", marker="o", markersize=3)
    trend = pre[pre["step"] >= min(starts)]
    if len(trend):
        ax.plot(trend["step"] - offset, trend["IoU"], "k-.", lw=1.2,
                label="CE pretraining, own schedule (trend)")
    for start in starts:
        level = pre[pre["step"] == start]["IoU"]
        if len(level):
            ax.axhline(float(level.iloc[0]), color="grey", ls=":", lw=1,
                       label=f"pretraining at step {start}")
    ax.set_xlabel(f"fine-tuning step (from CE checkpoint at iteration {offset})" if offset
                  else "iteration (each variant's curve starts at its own start checkpoint)")
    ax.set_ylabel("validation mIoU (%)")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


@figure("delta_vs_control", needs=("metrics",),
        caption="Study ``{study}``: final mIoU of each variant minus the CE control's, "
                "paired by seed, with 95 % confidence intervals.")
def delta_figure(study: dict, metrics):
    import matplotlib.pyplot as plt
    import numpy as np

    from .results import final_table

    labels = variant_labels(study)
    table = final_table(metrics, controls(study))
    table = table[table["control"] != table["variant"]].sort_values("delta")
    fig, ax = plt.subplots(figsize=(7.5, 0.35 * len(table) + 1.7))
    y = np.arange(len(table))
    err = np.vstack([table["delta"] - table["ci_low"], table["ci_high"] - table["delta"]])
    kinds = (("better than its control", "C2", "o"), ("worse than its control", "C3", "o"),
             ("no difference detected", "C0", "o"), ("same Δ on every seed", "grey", "x"))
    for text, colour, marker in kinds:
        sel = np.array([v.startswith(text) for v in table["verdict"]])
        if sel.any():
            ax.errorbar(table["delta"][sel], y[sel], xerr=np.nan_to_num(err[:, sel]),
                        fmt=marker, color=colour, capsize=3,
                        label=text + (" (no spread: not testable)" if colour == "grey" else ""))
    ax.axvline(0, color="k", lw=1)
    ax.set_yticks(y)
    ax.set_yticklabels([labels.get(v, v) for v in table["variant"]], fontsize=8)
    ax.set_xlabel("final Δ mIoU vs its CE control (points, paired by seed, 95 % CI); "
                  "verdict: paired t-test, Holm-adjusted", fontsize=8)
    ax.set_title("Final mIoU difference to the control")
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig


@figure("per_class_iou", needs=("metrics",),
        caption="Study ``{study}``: per-class IoU of each variant at the end of tuning, "
                "mean over seeds.")
def per_class_figure(study: dict, metrics):
    import matplotlib.pyplot as plt
    import seaborn as sns

    from .results import per_class_table

    labels = variant_labels(study)
    classes = [c for c in metrics["class"].unique() if c != "mIoU"]
    table = per_class_table(metrics)
    cols = [c for c in classes if c in table.columns] + (["mIoU"] if "mIoU" in table.columns else [])
    table = table[cols].rename(index=lambda v: labels.get(v, v))
    fig, ax = plt.subplots(figsize=(1.0 * len(cols) + 3, 0.35 * len(table) + 1.5))
    sns.heatmap(table, annot=True, fmt=".1f", cmap="viridis", ax=ax,
                cbar_kws={"label": "IoU (%)"}, annot_kws={"fontsize": 7})
    ax.set_xlabel("class")
    ax.set_ylabel("variant")
    ax.set_title("Final per-class IoU (%), mean over seeds")
    fig.tight_layout()
    return fig


@figure("estimator_variance", needs=("stats",),
        caption="Study ``{study}``: the estimators' variance measure E[(R - b)^2] per "
                "fine-tuning step, averaged over each evaluation interval, one panel per "
                "estimator (weighted CE's advantage is on the cost 1 - mIoU, REINFORCE's on "
                "the sampled reward, the local expectation's is its per-image expected gain "
                "sum_j sum_c p_j(c) (R(y_-j, c) - R(y)): different scales; the variance of "
                "the gradients themselves is measured by bench/bench_variance.py), mean and "
                "95 % band over seeds.")
def variance_figure(study: dict, stats):
    import matplotlib.pyplot as plt

    labels = variant_labels(study)
    sub = stats[stats["stat"] == "decode.reward_adv_sq"].copy()
    loss = {v: variant_fields(study, v)["loss"] for v in study["variants"]}
    sub["estimator"] = sub["variant"].map(loss)
    estimators = sorted(sub["estimator"].dropna().unique())
    fig, axes = plt.subplots(1, max(1, len(estimators)), squeeze=False,
                             figsize=(5.2 * max(1, len(estimators)), 4.5))
    for ax, estimator in zip(axes[0], estimators):
        _lines_per_variant(ax, sub[sub["estimator"] == estimator], labels, palette="tab20")
        ax.set_yscale("log")
        ax.legend(fontsize=6)
        ax.set_title(f"{estimator}", fontsize=10)
        ax.set_xlabel("fine-tuning step")
        advantage = LOGGED_ADVANTAGE.get(estimator, "R − b")
        ax.set_ylabel(f"E[({advantage})²] per step (log scale)",
                      fontsize=10 if len(advantage) < 20 else 8)
        ax.grid(alpha=0.3)
    if not estimators:
        axes[0][0].text(0.5, 0.5, "no reward-loss runs", ha="center",
                        transform=axes[0][0].transAxes)
    fig.suptitle("Estimator variance measure by baseline (mean over each interval)")
    fig.tight_layout()
    return fig


@figure("training_reward", needs=("stats",),
        caption="Study ``{study}``: the objective during fine-tuning, the per-image mIoU of "
                "the training batches' label maps (sampled for REINFORCE and the local "
                "expectation, argmax for weighted CE), averaged over each evaluation interval, mean and 95 % band over seeds: "
                "whether the reward is being optimised.")
def training_reward_figure(study: dict, stats):
    import matplotlib.pyplot as plt

    labels = variant_labels(study)
    sub = stats[stats["stat"] == "decode.reward_miou_train"].copy()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    if len(sub):
        _lines_per_variant(ax, sub, labels, palette="tab20")
        ax.legend(fontsize=6, ncol=2)
    else:
        ax.text(0.5, 0.5, "no reward-loss runs", ha="center", transform=ax.transAxes)
    ax.set_xlabel("fine-tuning step")
    ax.set_ylabel("training per-image mIoU (the reward)")
    ax.set_title("Training reward per variant")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


@figure("weight_change", needs=("stats",),
        caption="Study ``{study}``: how far each run moved from its start checkpoint, "
                "‖θ − θ₀‖ / ‖θ₀‖ per part of the model (and for the BatchNorm running "
                "statistics), mean over seeds (log scale); runs that did not move cannot "
                "show an effect.")
def weight_change_figure(study: dict, stats):
    import matplotlib.pyplot as plt
    import numpy as np

    labels = variant_labels(study)
    sub = stats[stats["stat"].str.startswith("weight_change.")].copy()
    fig, ax = plt.subplots(figsize=(8.0, 0.32 * max(1, sub["variant"].nunique()) * 2 + 1.8))
    if len(sub):
        sub["part"] = sub["stat"].str.slice(len("weight_change."))
        table = sub.pivot_table(index="variant", columns="part", values="value", aggfunc="mean")
        parts = [p for p in ("decode_head.conv_seg", "decode_head", "auxiliary_head",
                             "backbone", "bn_statistics") if p in table.columns]
        y = np.arange(len(table))
        height = 0.8 / max(1, len(parts))
        for i, part in enumerate(parts):
            ax.barh(y + i * height, table[part], height=height, label=part)
        ax.set_yticks(y + 0.4 - height / 2)
        ax.set_yticklabels([labels.get(v, v) for v in table.index], fontsize=7)
        ax.set_xscale("log")
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no weight changes recorded", ha="center", transform=ax.transAxes)
    ax.set_xlabel("relative change from the start checkpoint, ‖θ − θ₀‖ / ‖θ₀‖ (log scale)")
    ax.set_title("Did the runs move?")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig


def _last_checkpoint(run_dir: str) -> str:
    marker = os.path.join(run_dir, "last_checkpoint")
    if not os.path.isfile(marker):
        raise FileNotFoundError(f"{run_dir}: no last_checkpoint (has the run finished?)")
    with open(marker) as fh:
        path = fh.read().strip()
    if not os.path.isabs(path) and not os.path.isfile(path):
        path = os.path.join(run_dir, os.path.basename(path))
    return path


def val_pairs(cfg) -> List[tuple]:
    """(image, label map) paths of a run config's validation set, sorted. Suffixes come
    from the prepared dataset's meta.json (every data rule writes them), else from the
    config, else Cityscapes'."""
    import glob

    from .data import load_meta

    ds = cfg.val_dataloader.dataset
    data_root, prefix = ds.data_root, ds.data_prefix
    meta = load_meta(data_root)
    img_suffix = meta.get("img_suffix") or ds.get("img_suffix", "_leftImg8bit.png")
    seg_suffix = meta.get("label_suffix") or ds.get("seg_map_suffix", "_gtFine_labelTrainIds.png")
    img_dir = os.path.join(data_root, prefix["img_path"])
    images = sorted(glob.glob(os.path.join(img_dir, "**", f"*{img_suffix}"), recursive=True))
    if not images:
        raise FileNotFoundError(f"no validation images *{img_suffix} under {img_dir}")
    return [(p, os.path.join(data_root, prefix["seg_map_path"],
                             os.path.relpath(p, img_dir)[: -len(img_suffix)] + seg_suffix))
            for p in images]


@figure("qualitative", needs=("metrics", "runs"), dpi=110,
        caption="Study ``{study}``: a few validation images (first seed): input, ground "
                "truth, the CE control's prediction and that of the variant with the best "
                "final mean mIoU, in the class palette (black: ignored pixels).")
def qualitative_figure(study: dict, metrics, work_root: str = paths.WORK, seed: int = 0,
                       num_images: int = 3, control: str = "control"):
    """A few val images: input, ground truth, the control's and the best variant's
    predictions (seed ``seed``), in the class palette."""
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Patch
    from mmseg.apis import inference_model, init_model
    from PIL import Image

    import rewardseg.models  # noqa: F401

    from .results import best_variant, final_table

    table = final_table(metrics, controls(study))
    best = best_variant(table)
    # no variant beats its control: show the highest final mIoU, and say so
    others = table[table["variant"] != control]
    top = best or (others.iloc[0]["variant"] if len(others) else None)
    shown = [control] + ([top] if top else [])
    labels = variant_labels(study)
    models = {}
    for variant in shown:
        run_dir = paths.run_dir(study["study"], variant, seed, root=work_root)
        cfg = os.path.join(run_dir, "config.py")
        models[variant] = init_model(cfg, _last_checkpoint(run_dir), device="cpu")
    model = models[control]
    meta = model.dataset_meta or {}
    classes = list(meta.get("classes", []))
    palette = np.array(meta.get("palette", []), dtype=np.uint8)
    pairs = val_pairs(model.cfg)[:num_images]

    def colour(label):
        out = np.zeros(label.shape + (3,), dtype=np.uint8)
        valid = label < len(palette)
        out[valid] = palette[label[valid]]
        return out

    cols = 2 + len(shown)
    fig, axes = plt.subplots(len(pairs), cols, figsize=(3 * cols, 2.2 * len(pairs) + 0.8),
                             squeeze=False)
    titles = ["input", "ground truth", labels.get(control, control)]
    if top:
        titles.append(f"best: {labels.get(top, top)}" if best else
                      f"highest mIoU, not better than\nits control: {labels.get(top, top)}")
    for row, (path, gt_path) in enumerate(pairs):
        img = np.asarray(Image.open(path).convert("RGB"))
        gt = np.asarray(Image.open(gt_path))
        preds = [inference_model(models[v], path).pred_sem_seg.data[0].cpu().numpy()
                 for v in shown]
        for col, panel in enumerate([img, colour(gt)] + [colour(p) for p in preds]):
            ax = axes[row, col]
            ax.imshow(panel)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(titles[col], fontsize=9)
    handles = [Patch(color=np.array(palette[i]) / 255.0, label=name) for i, name in enumerate(classes)]
    fig.legend(handles=handles, loc="lower center", ncol=min(8, len(handles)), fontsize=8,
               frameon=False)
    fig.suptitle(f"{study['study']}: validation predictions (seed {seed}); black = ignored")
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    return fig
