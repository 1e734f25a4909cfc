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
from .vocabulary import ESTIMATOR_TITLES, LOGGED_ADVANTAGE

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
        caption="Study ``{study}``: final mIoU of each variant minus its control's, "
                "paired by seed, with unadjusted 95 % confidence intervals; the colour is "
                "the verdict of the paired t-test, Holm-adjusted within each experiment (a "
                "variant in several experiments: its largest adjusted p).")
def delta_figure(study: dict, metrics):
    """One point per variant (``results.variant_table``): Δ and its unadjusted 95 % CI;
    the colour is the verdict, which follows the Holm-adjusted p (open circles: the CI
    excludes 0 but the adjusted test does not reject)."""
    import matplotlib.pyplot as plt
    import numpy as np

    from .results import variant_table

    labels = variant_labels(study)
    table = variant_table(metrics, controls(study), experiments(study))
    table = table[table["control"] != table["variant"]].sort_values("delta")
    fig, ax = plt.subplots(figsize=(7.5, 0.35 * len(table) + 2.1))
    y = np.arange(len(table))
    delta = table["delta"].to_numpy(dtype=float)
    err = np.vstack([delta - table["ci_low"].to_numpy(dtype=float),
                     table["ci_high"].to_numpy(dtype=float) - delta])
    # (verdict starts with, colour, marker, filled, legend); the first that matches counts
    kinds = (("better than its control", "C2", "o", True, "better than its control (Holm)"),
             ("worse than its control", "C3", "o", True, "worse than its control (Holm)"),
             ("no difference detected after Holm", "C0", "o", False,
              "n.s. after Holm (the unadjusted CI excludes 0)"),
             ("no difference detected", "C0", "o", True, "no difference detected"),
             ("same Δ on every seed", "grey", "x", True,
              "same Δ on every seed (no spread: not testable)"),
             ("not tested", "grey", "s", False, "not tested (too few seeds)"))
    drawn = np.zeros(len(table), dtype=bool)
    for text, colour, marker, filled, label in kinds:
        sel = ~drawn & np.array([v.startswith(text) for v in table["verdict"]], dtype=bool)
        drawn |= sel
        if sel.any():
            ax.errorbar(delta[sel], y[sel], xerr=np.nan_to_num(err[:, sel]), fmt=marker,
                        color=colour, capsize=3, label=label,
                        markerfacecolor=colour if filled else "white")
    ax.axvline(0, color="k", lw=1)
    ax.set_yticks(y)
    ax.set_yticklabels([labels.get(v, v) for v in table["variant"]], fontsize=8)
    ax.set_xlabel("final Δ mIoU vs its control (paired by seed; bars: 95 % CI, unadjusted)\n"
                  "colour: verdict of the paired t-test, Holm-adjusted within each experiment\n"
                  "(a variant in several experiments: its largest adjusted p)", fontsize=8)
    ax.set_title("Final mIoU difference to the control")
    if drawn.any():
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
                "sum_j sum_c p_j(c) (R(y with pixel j set to c) - R(y)): different scales; the variance of "
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
                "truth, the CE control's prediction and that of the reward-tuned variant "
                "with the best final mean mIoU, in the class palette (black: ignored pixels).")
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

    from .results import best_variant, variant_table
    from .vocabulary import ESTIMATORS

    table = variant_table(metrics, controls(study), experiments(study))
    # the reward-tuned variants only: the figure shows what optimising the reward does
    tuned = table[[variant_fields(study, v)["loss"] in ESTIMATORS for v in table["variant"]]]
    best = best_variant(tuned)
    # no reward-tuned variant beats its control: show the highest final mIoU, and say so
    top = best or (tuned.iloc[0]["variant"] if len(tuned) else None)
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
        titles.append(f"best reward-tuned: {labels.get(top, top)}" if best else
                      f"best reward-tuned (not better than\nits control): {labels.get(top, top)}")
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


# ---------------------------------------------------------------- diagnosis
def per_class_deltas(study: dict, metrics):
    """Per-class Δ IoU of every compared variant against its control (``study.controls``)
    at the final step, paired by seed: one row per (variant, class) with the control, the
    class, and ``results.paired_comparison``'s ``delta`` (points: IoU is in %),
    ``ci_low`` / ``ci_high`` (95 %, Student t over seeds), ``p``, ``pairs`` and
    ``constant``; class ``mIoU`` is the mean over classes. Variants in study order,
    classes in metrics.csv's order with mIoU last. A control without rows in ``metrics``
    is a ValueError that names it."""
    import pandas as pd

    from .results import CONTROL, paired_comparison

    data = metrics[metrics["variant"] != paths.PRETRAIN]
    final = data[data["step"] == data.groupby(["variant", "seed"])["step"].transform("max")]
    iou = final.pivot_table(index=["variant", "seed"], columns="class", values="IoU",
                            aggfunc="mean", dropna=False)
    present = list(dict.fromkeys(final["variant"]))
    order = [v for v in study["variants"] if v in present] + \
        [v for v in present if v not in study["variants"]]
    classes = [c for c in dict.fromkeys(final["class"]) if c != "mIoU"]
    classes += ["mIoU"] if "mIoU" in iou.columns else []
    of = controls(study)
    rows = []
    for variant in order:
        control = of.get(variant, CONTROL)
        if control == variant:
            continue
        if control not in present:
            raise ValueError(f"per_class_delta: variant {variant!r} is compared with its "
                             f"control {control!r}, which has no rows in metrics.csv")
        mine, theirs = iou.loc[variant], iou.loc[control]
        for name in classes:
            diff = (mine[name] - theirs[name]).dropna()  # aligned on the seed
            rows.append(dict(variant=variant, control=control, **{"class": name},
                             **paired_comparison(diff)))
    columns = ["variant", "control", "class", "pairs", "delta", "sd_delta", "ci_low",
               "ci_high", "p", "mde", "constant"]
    return pd.DataFrame(rows, columns=columns)


def _delta_label(value: float, digits: int = 1) -> str:
    """A Δ for a heat-map cell: ``digits`` decimals (none from 10 up; with 2 decimals, one
    significant digit, ``4e−5``, for a value that would round to 0 but is not 0), no
    ``+``, a true minus sign."""
    if value != value:
        return "n/a"
    value = value + 0.0  # no "−0.00"
    if digits >= 2 and 0 < abs(value) < 0.5 * 10 ** -digits:
        mantissa, exponent = f"{value:.0e}".split("e")
        return f"{mantissa}e{int(exponent)}".replace("-", "−")
    digits = 0 if abs(value) >= 9.95 else digits
    return f"{value:.{digits}f}".replace("-", "−")


PER_CLASS_COLUMNS = 20  # classes shown, mIoU included: more would not be legible


@figure("per_class_delta", needs=("metrics",),
        caption="Study ``{study}``: which classes each variant gains or loses against its "
                "own control, as the final per-class IoU difference in points (IoU in %), "
                "mean over seeds of the difference paired by seed, one row per variant and "
                "the mIoU in the last column; a framed cell is one whose 95 % confidence "
                "interval (Student t over seeds) excludes 0, a dotted frame one with the "
                "same difference on every seed (not testable), and grey a class without an "
                "IoU; with more than 19 classes, those with the largest differences are "
                "shown.")
def per_class_delta_figure(study: dict, metrics):
    """Heat map of per-class Δ IoU (variants × classes, mIoU last) vs each variant's
    control (:func:`per_class_deltas`): colour and number = mean Δ over seeds, ± = the
    95 % CI's half-width (when the cells leave room for it), bold frame = the CI excludes
    0. Rows: the best mIoU difference on top."""
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Rectangle

    table = per_class_deltas(study, metrics)
    labels = variant_labels(study)
    fig_w, fig_h = 12.8, 5.4  # the deck shows it 460 px high: 10.2 pt is 12 px there
    if table.empty:
        fig, ax = plt.subplots(figsize=(fig_w, fig_h))
        ax.text(0.5, 0.5, "no variant with a control in metrics.csv", ha="center",
                va="center", fontsize=14, transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    table = table.assign(excludes=(table["ci_low"] > 0) | (table["ci_high"] < 0))
    classes = list(dict.fromkeys(table["class"]))
    named = [c for c in classes if c != "mIoU"]
    dropped = 0
    if len(classes) > PER_CLASS_COLUMNS:  # the classes with the largest differences
        per = table[table["class"] != "mIoU"].groupby("class").agg(
            excludes=("excludes", "any"), size=("delta", lambda d: d.abs().max()))
        keep = per.fillna(0).sort_values(["excludes", "size"], ascending=False).index
        keep = set(keep[:PER_CLASS_COLUMNS - 1])
        dropped = len(named) - len(keep)
        named = [c for c in named if c in keep]
        classes = named + (["mIoU"] if "mIoU" in classes else [])
    variants = list(dict.fromkeys(table["variant"]))
    miou = table[table["class"] == "mIoU"].set_index("variant")["delta"]
    variants.sort(key=lambda v: -np.nan_to_num(miou.get(v, np.nan), nan=-np.inf))
    cell = table.set_index(["variant", "class"])
    delta = np.array([[cell.loc[(v, c), "delta"] for c in classes] for v in variants],
                     dtype=float)
    fig, ax = plt.subplots(figsize=(fig_w, max(fig_h, 0.22 * len(variants) + 1.6)))
    finite = np.abs(delta[np.isfinite(delta)])
    vmax = float(max(np.percentile(finite, 95) if finite.size else 1.0, 0.5))
    cmap = plt.get_cmap("RdBu").with_extremes(bad="0.85")
    image = ax.imshow(np.ma.masked_invalid(delta), cmap=cmap, vmin=-vmax, vmax=vmax,
                      aspect="auto", interpolation="nearest")
    bar = fig.colorbar(image, ax=ax, fraction=0.035, pad=0.02,
                       extend="both" if finite.size and finite.max() > vmax else "neither")
    bar.set_label("Δ IoU vs control (points)", fontsize=12)
    bar.ax.tick_params(labelsize=11)
    of = dict(zip(table["variant"], table["control"]))
    ax.set_yticks(range(len(variants)))
    ax.set_yticklabels([labels.get(v, v) + ("" if of[v] == "control" else f" (vs {of[v]})")
                        for v in variants], fontsize=11)
    ax.set_xticks(range(len(classes)))
    ax.set_xticklabels(classes, rotation=40 if len(classes) > 6 else 0,
                       ha="right" if len(classes) > 6 else "center", fontsize=11,
                       rotation_mode="anchor")
    for tick, name in zip(ax.get_xticklabels(), classes):
        if name == "mIoU":
            tick.set_fontweight("bold")
    ax.tick_params(length=0)
    seeds = int(table["pairs"].max())
    ax.set_title(f"{study['study']}: final per-class IoU minus the control's, paired by "
                 f"seed ({seeds} seeds)", fontsize=13)
    footnote = ("bold, framed: the 95 % CI (Student t over seeds) excludes 0{pm}; dotted: "
                "same Δ on every seed (not testable); grey: no IoU"
                + (f"; {dropped} classes with smaller Δ not shown" if dropped else ""))
    fig.text(0.01, 0.01, footnote.format(pm="; ±: its half-width"), fontsize=11,
             ha="left", va="bottom")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    # the numbers' font and precision follow the cells' size (in points)
    box = ax.get_window_extent().transformed(fig.dpi_scale_trans.inverted())
    cell_w, cell_h = 72 * box.width / len(classes), 72 * box.height / len(variants)
    size = min(12.0, cell_w / 2.9, cell_h / 1.4)
    two_lines = cell_h >= 2.6 * size and cell_w >= 3.6 * size
    digits = 2 if cell_w >= 3.6 * size else 1
    if not two_lines:
        fig.texts[-1].set_text(footnote.format(pm=""))
    for i, variant in enumerate(variants):
        for j, name in enumerate(classes):
            row = cell.loc[(variant, name)]
            if row["excludes"]:
                ax.add_patch(Rectangle((j - 0.43, i - 0.41), 0.86, 0.82, fill=False,
                                       edgecolor="k", lw=1.8))
            elif row["constant"]:
                ax.add_patch(Rectangle((j - 0.43, i - 0.41), 0.86, 0.82, fill=False,
                                       edgecolor="0.3", lw=1.5, ls=":"))
            if size < 6:
                continue
            text = _delta_label(row["delta"], digits)
            if two_lines and row["ci_low"] == row["ci_low"]:
                half = (row["ci_high"] - row["ci_low"]) / 2
                text += "\n±" + _delta_label(half, 2 if half < 0.995 else 1)
            dark = row["delta"] == row["delta"] and abs(row["delta"]) > 0.6 * vmax
            ax.text(j, i, text, ha="center", va="center", fontsize=size,
                    color="white" if dark else "black",
                    fontweight="bold" if row["excludes"] else "normal")
    if "mIoU" in classes and len(classes) > 1:
        ax.axvline(len(classes) - 1.5, color="white", lw=4)
    return fig


# the loss's statistics of a reward estimator (``RewardLoss._stats``, logged as
# ``decode.reward_<name>`` and averaged over each evaluation interval in train_stats.csv)
SAMPLED_REWARD = "decode.reward_reward"          # mean reward of the sampled maps
ARGMAX_REWARD = "decode.reward_reward_argmax"    # per-image mIoU of the argmax map
POLICY_ENTROPY = "decode.reward_entropy"         # mean per-pixel entropy (nats)


BAND_MOST = 2  # a panel with more variants draws their means without the 95 % bands


def reward_gap_data(study: dict, stats):
    """The rows of ``reward_gap``: one per reward-estimator run (variant, seed), step and
    ``quantity`` (``sampled``: mean reward of the sampled maps, ``argmax``: reward of the
    argmax map of the same batches, both in %; ``entropy``: the policy's mean per-pixel
    entropy in nats), with the run's ``estimator``. Weighted CE samples nothing, so it has
    no ``sampled`` rows (its ``decode.reward_reward`` is the cost 1 − mIoU).

    Returns (rows, missing): ``missing`` maps each estimator to the runs ("variant seed
    k") that have no argmax-reward or entropy statistics (results from before they were
    logged)."""
    import pandas as pd

    from .vocabulary import ESTIMATORS, SAMPLING

    loss = {v: variant_fields(study, v)["loss"] for v in study["variants"]}
    sub = stats[stats["variant"].map(lambda v: loss.get(v) in ESTIMATORS)]
    sub = sub.assign(estimator=sub["variant"].map(loss))
    wanted = {ARGMAX_REWARD: ("argmax", 100.0), POLICY_ENTROPY: ("entropy", 1.0),
              SAMPLED_REWARD: ("sampled", 100.0)}
    rows = sub[sub["stat"].isin(wanted)]
    rows = rows[(rows["stat"] != SAMPLED_REWARD) | rows["estimator"].isin(SAMPLING)]
    rows = rows.assign(quantity=rows["stat"].map(lambda s: wanted[s][0]),
                       value=rows["value"] * rows["stat"].map(lambda s: wanted[s][1]))
    missing: Dict[str, List[str]] = {}
    order = {v: i for i, v in enumerate(study["variants"])}
    for (estimator, variant, seed), run in sorted(
            sub.groupby(["estimator", "variant", "seed"]),
            key=lambda kv: (kv[0][0], order[kv[0][1]], kv[0][2])):
        if not {ARGMAX_REWARD, POLICY_ENTROPY} <= set(run["stat"]):
            missing.setdefault(estimator, []).append(f"{variant} seed {seed}")
    columns = ["estimator", "variant", "seed", "step", "quantity", "value"]
    return rows[columns].reset_index(drop=True), missing


def _mean_band(run_values):
    """Mean over seeds per step and the 95 % Student-t half-width (0 with one seed)."""
    from scipy import stats as st

    grouped = run_values.groupby("step")["value"]
    mean, sd, n = grouped.mean(), grouped.std(ddof=1), grouped.count()
    half = (sd / n.pow(0.5) * n.map(lambda k: st.t.ppf(0.975, k - 1) if k > 1 else 0.0))
    return mean.index.to_numpy(), mean.to_numpy(), half.fillna(0.0).to_numpy()


@figure("reward_gap", needs=("stats",),
        caption="Study ``{study}``: how far the sampled label maps lag the argmax map the "
                "model is evaluated with, per reward estimator over the fine-tuning steps: "
                "the mean reward (per-image mIoU in %, class-weighted for a variant with "
                "class weights) of the sampled maps (solid) and of the "
                "argmax map of the same batches (dashed), and below the policy's mean "
                "per-pixel entropy in nats, each averaged over an evaluation interval, mean "
                "over seeds with a 95 % band (panels of one or two variants); weighted CE "
                "samples no maps, and runs recorded before these statistics were logged are "
                "named on their panel.")
def reward_gap_figure(study: dict, stats):
    """Top row: per estimator, the sampled maps' mean reward (solid) and the argmax map's
    (dashed) per variant; bottom row: the policy's mean per-pixel entropy. A run without
    the argmax / entropy statistics (older results) is named on its panel."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    from .vocabulary import ESTIMATORS, SAMPLING

    data, missing = reward_gap_data(study, stats)
    labels = variant_labels(study)
    loss = {v: variant_fields(study, v)["loss"] for v in study["variants"]}
    variants = [v for v in study["variants"] if loss[v] in ESTIMATORS]
    estimators = [e for e in ESTIMATORS if any(loss[v] == e for v in variants)]
    ncols = max(1, len(estimators))
    # the deck shows it 460 px high: 10.2 pt is 12 px there
    fig, axes = plt.subplots(2, ncols, squeeze=False, sharex="col", figsize=(12.8, 5.4),
                             gridspec_kw=dict(height_ratios=(3, 2)))
    palette = plt.get_cmap("tab10" if len(variants) <= 10 else "tab20")
    colour = {v: palette(i % palette.N) for i, v in enumerate(variants)}
    shown = []
    for col, estimator in enumerate(estimators):
        top, bottom = axes[0][col], axes[1][col]
        mine_all = [v for v in variants if loss[v] == estimator]
        bands = len(mine_all) <= BAND_MOST  # more: the bands would hide the lines
        for variant in mine_all:
            mine = data[data["variant"] == variant]
            drew = False
            for quantity, ax, style in (("sampled", top, "-"), ("argmax", top, "--"),
                                        ("entropy", bottom, "-")):
                values = mine[mine["quantity"] == quantity]
                if values.empty:
                    continue
                x, y, half = _mean_band(values)
                ax.plot(x, y, style, color=colour[variant], lw=2, marker="o", markersize=3,
                        label=f"{labels.get(variant, variant)}: {quantity}")
                if bands:
                    ax.fill_between(x, y - half, y + half, color=colour[variant],
                                    alpha=0.12, lw=0)
                drew = True
            if drew:
                shown.append(variant)
        notes = ([] if estimator in SAMPLING else ["samples nothing: argmax only"]) + \
            ([] if bands else ["means only"])
        top.set_title(ESTIMATOR_TITLES.get(estimator, estimator)
                      + "".join(f"\n({note})" for note in notes), fontsize=12)
        top.set_ylabel("training reward\n(per-image mIoU, %)" if col == 0 else "",
                       fontsize=11)
        bottom.set_ylabel("policy entropy\n(nats / pixel)" if col == 0 else "",
                          fontsize=11)
        bottom.set_xlabel("fine-tuning step", fontsize=11)
        bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=10.5)
        runs = missing.get(estimator, [])
        if not runs and not any(loss[v] == estimator for v in shown):
            top.text(0.5, 0.5, "no training statistics of these runs yet",
                     transform=top.transAxes, ha="center", va="center", fontsize=12)
        if runs:
            note = ("no argmax-reward / entropy statistics (older results) for:\n"
                    + _wrap_runs(runs))
            everything = not len(data[(data["estimator"] == estimator)
                                      & (data["quantity"] != "sampled")])
            for ax in (top, bottom) if everything else (bottom,):
                if everything:
                    ax.set_yticks([])
                    ax.tick_params(labelbottom=False)
                ax.text(0.5, 0.5 if everything else 0.97, note, transform=ax.transAxes,
                        ha="center", va="center" if everything else "top", fontsize=10.5,
                        color="C3", bbox=dict(facecolor="white", edgecolor="C3", alpha=0.9))
    if not estimators:
        for ax in axes[:, 0]:
            ax.text(0.5, 0.5, "no reward-estimator runs in this study", ha="center",
                    va="center", fontsize=14, transform=ax.transAxes)
            ax.set_axis_off()
    handles = [Line2D([], [], color="k", lw=2, ls="-", label="sampled maps (mean reward)"),
               Line2D([], [], color="k", lw=2, ls="--", label="argmax map, same batches")]
    handles += [Line2D([], [], color=colour[v], lw=6, label=labels.get(v, v))
                for v in variants if v in shown]
    legend = fig.legend(handles=handles, loc="center right", bbox_to_anchor=(0.995, 0.5),
                        fontsize=10.5, frameon=False)
    fig.suptitle(f"{study['study']}: reward of the sampled maps vs the argmax map, and "
                 "the policy's entropy (mean over seeds, 95 % band)", fontsize=13)
    fig.canvas.draw()
    width = legend.get_window_extent().width / fig.bbox.width
    fig.tight_layout(rect=(0, 0, 0.99 - width, 0.96))
    return fig


def _wrap_runs(runs: List[str], per_line: int = 2, most: int = 6) -> str:
    shown = runs[:most] + ([f"… {len(runs) - most} more"] if len(runs) > most else [])
    return "\n".join(", ".join(shown[i:i + per_line]) for i in range(0, len(shown), per_line))
