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
from .study import labels as variant_labels, as_resolved as resolve_study
from .vocabulary import ESTIMATOR_TITLES, LOGGED_ADVANTAGE, experiment_question

# What a figure may need: the study's metrics.csv, its train_stats.csv, and the
# predictions.npz of the qualitative panel (:func:`qualitative_predictions`).
NEEDS = ("metrics", "stats", "predictions")
NEED_FILES = {"metrics": "metrics.csv", "stats": "train_stats.csv",
              "predictions": "predictions.npz"}
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
        """The caption, its fields filled in; a family of experiments' also gets the
        experiment's ``{question}`` (``vocabulary.experiment_question``)."""
        extra = {"question": experiment_question(values["experiment"])} \
            if "experiment" in values else {}
        return self.caption.format(study=study, **values, **extra)


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


def build(name: str, study: dict, metrics=None, stats=None, predictions=None):
    """The Figure ``name`` of a study. ``metrics`` / ``stats``: a path to metrics.csv /
    train_stats.csv or the DataFrame read from it; ``predictions``: a path to
    predictions.npz or the arrays loaded from it (:func:`load_predictions`)."""
    import pandas as pd

    spec, values = resolve(name)
    given = dict(metrics=metrics, stats=stats, predictions=predictions)
    kwargs: Dict[str, Any] = {}
    for need in spec.needs:
        value = given[need]
        if value is None:
            raise ValueError(f"figure {name!r} needs {need} (the study's "
                             f"{NEED_FILES[need]})")
        if isinstance(value, (str, os.PathLike)):
            value = load_predictions(value) if need == "predictions" else pd.read_csv(value)
        kwargs[need] = value
    return spec.fn(study, **kwargs, **values)


def save(fig, out_png: str, dpi: int = 130) -> List[str]:
    """Write ``fig`` as ``out_png`` and a PDF beside it, then close it. The PNG carries
    ``min_text_px`` (a tEXt chunk): its smallest text in PNG pixels (:func:`min_text_px`),
    so that whoever shows it at another size can tell how large that text appears."""
    import matplotlib.pyplot as plt

    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    smallest = min_text_px(fig, dpi)
    fig.savefig(out_png, dpi=dpi, metadata={"min_text_px": f"{smallest:.2f}"})
    pdf = os.path.splitext(out_png)[0] + ".pdf"
    fig.savefig(pdf)
    plt.close(fig)
    return [out_png, pdf]


def shown_texts(fig) -> list:
    """The Text artists of ``fig`` that are drawn: visible themselves and all the way up,
    with some text; an axes with its axis turned off draws no tick or axis label."""
    from matplotlib.axes import Axes
    from matplotlib.axis import Axis
    from matplotlib.text import Text

    found, stack, seen = [], [fig], set()
    while stack:
        artist = stack.pop()
        if id(artist) in seen or not artist.get_visible():
            continue
        seen.add(id(artist))
        if isinstance(artist, Text):
            if artist.get_text().strip():
                found.append(artist)
            continue  # an Annotation's children are its arrow
        children = artist.get_children()
        if isinstance(artist, Axes) and not artist.axison:
            children = [c for c in children if not isinstance(c, Axis)]
        stack.extend(children)
    return found


def min_text_px(fig, dpi: Optional[float] = None) -> float:
    """The smallest drawn text of ``fig`` (:func:`shown_texts`: titles, labels, tick
    labels, legends, annotations) in pixels of the image saved at ``dpi`` (points × dpi /
    72); shown at another width, it scales with the width. 0 for a figure without text."""
    dpi = float(dpi or fig.dpi)
    sizes = [text.get_fontsize() for text in shown_texts(fig)]
    return min(sizes) * dpi / 72.0 if sizes else 0.0


def draw(name: str, study: dict, out_png: str, metrics=None, stats=None,
         predictions=None) -> List[str]:
    """Build figure ``name`` and write it (PNG + PDF); returns the paths written."""
    spec, _ = resolve(name)
    fig = build(name, study, metrics=metrics, stats=stats, predictions=predictions)
    return save(fig, out_png, dpi=spec.dpi)


# ---------------------------------------------------------------- style
# Every figure is drawn for a 1280 × 720 slide that shows it SLIDE_PX high (``![h:440]`` in
# paper/slides.md): at FIGSIZE and 130 dpi, TEXT_PT (the smallest text) is 12.4 px there.
FIGSIZE = (12.8, 5.4)
SLIDE_PX = 440
TEXT_PT = 11.0
TITLE_PT = 13.0
# one colour (and marker) per variant in every figure: the control dark, the reference
# blue, the others in the study's order
CONTROL_COLOURS = ("#222222", "#777777", "#a8a8a8")
REFERENCE_COLOUR = "#1f77b4"
VARIANT_COLOURS = ("#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                   "#17becf", "#bcbd22", "#393b79", "#637939", "#d6616b", "#7b4173",
                   "#e7ba52", "#00a087")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "p", "*")
TREND_COLOUR = "#444444"


def control_variants(study: dict) -> List[str]:
    """The variants that some other variant is compared with, the most compared first
    (then in the study's order)."""
    of = resolve_study(study).controls
    count: Dict[str, int] = {}
    for variant, control in of.items():
        if control != variant:
            count[control] = count.get(control, 0) + 1
    order = list(study["variants"])
    return sorted(count, key=lambda v: (-count[v], order.index(v)))


def reference_variant(study: dict) -> Optional[str]:
    """The variant that is the study's reference tuning (no field of its own but its label,
    experiments and control), else one called ``reference``, else None."""
    own = {"label", "experiment", "control"}
    for name, fields in study["variants"].items():
        if not set(fields or {}) - own and name not in control_variants(study):
            return name
    return "reference" if "reference" in study["variants"] else None


def variant_colours(study: dict) -> Dict[str, str]:
    """Variant -> its colour in every figure of the study: the control(s) dark grey, the
    reference blue, the others from a fixed list in the study's variant order (cycling
    after 14)."""
    found = {}
    for i, control in enumerate(control_variants(study)):
        found[control] = CONTROL_COLOURS[min(i, len(CONTROL_COLOURS) - 1)]
    reference = reference_variant(study)
    if reference and reference not in found:
        found[reference] = REFERENCE_COLOUR
    others = [v for v in study["variants"] if v not in found]
    for i, variant in enumerate(others):
        found[variant] = VARIANT_COLOURS[i % len(VARIANT_COLOURS)]
    return {v: found[v] for v in study["variants"]}


def variant_markers(study: dict) -> Dict[str, str]:
    """Variant -> its marker in line plots (in the study's order): with the colour, it
    tells apart lines of similar hue."""
    return {v: MARKERS[i % len(MARKERS)] for i, v in enumerate(study["variants"])}


def _mean_line(ax, values, colour: str, label: str, marker: str = "o", band: bool = True,
               x_shift: float = 0.0, **style):
    """Mean over seeds per step (``values``: rows with ``step`` and ``value``) and its
    95 % Student-t band; returns (x, mean, half-width)."""
    x, mean, half = _mean_band(values)
    x = x + x_shift
    style = dict(dict(lw=2, markersize=6), **style)
    ax.plot(x, mean, color=colour, marker=marker, label=label, **style)
    if band:
        ax.fill_between(x, mean - half, mean + half, color=colour, alpha=0.15, lw=0)
    return x, mean, half


def _legend_outside(fig, ax_or_fig, handles=None, title: Optional[str] = None):
    """A legend to the right of the data (of ``ax_or_fig``: one axes, or the figure)."""
    kwargs = dict(fontsize=TEXT_PT, frameon=False, title=title, title_fontsize=TEXT_PT,
                  alignment="left")
    if handles is not None:
        kwargs["handles"] = handles
    if ax_or_fig is fig:
        return fig.legend(loc="center left", bbox_to_anchor=(0.0, 0.5), **kwargs)
    return ax_or_fig.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0,
                            **kwargs)


def _fit_right_legend(fig, legend, top: float = 1.0, bottom: float = 0.0) -> None:
    """tight_layout for the axes, leaving the figure's right side to a figure legend."""
    fig.canvas.draw()
    width = legend.get_window_extent().width / fig.bbox.width
    fig.tight_layout(rect=(0, bottom, 0.985 - width, top))
    legend.set_bbox_to_anchor((0.99 - width, 0.5 * (top + bottom)), transform=fig.transFigure)


# ---------------------------------------------------------------- the figures

@figure("exp_{experiment}", needs=("metrics",),
        each=lambda study: list(resolve_study(study).experiments),
        caption="{question} Study ``{study}``, experiment ``{experiment}``: validation mIoU (%) of its "
                "variants over the fine-tuning window (mean and 95 % band over seeds) next "
                "to the CE control; as context, the CE pretraining continuing its own "
                "schedule (dash-dotted, shaded before the start) and its level at the "
                "start checkpoint (dotted).")
def experiment_figure(study: dict, metrics, experiment: str):
    """mIoU (%) vs tuning step per variant of an experiment over the tuning window: mean
    and 95 % Student-t band over seeds, one colour per variant (:func:`variant_colours`);
    the CE pretraining's own trend over the same steps (dash-dotted) and its level at the
    start (dotted), with a short stretch of pretraining before the start as context."""
    import matplotlib.pyplot as plt
    import numpy as np

    groups = resolve_study(study).experiments
    if experiment not in groups:
        raise ValueError(f"study {study['study']!r} has no experiment {experiment!r}; "
                         f"it has: {', '.join(groups)}")
    variants = groups[experiment]
    labels, colours = variant_labels(study), variant_colours(study)
    markers = variant_markers(study)
    fields = {v: resolve_study(study).fields(v) for v in variants}
    start_of = {v: fields[v]["start"] for v in variants}
    starts = sorted(set(start_of.values()))
    miou = metrics[metrics["class"] == "mIoU"]
    sub = miou[miou["variant"].isin(variants)].rename(columns={"IoU": "value"})
    pre = miou[miou["variant"] == paths.PRETRAIN].groupby("step")["IoU"].mean().sort_index()
    # one start: steps from it; several: pretraining iterations, each curve at its own start
    offset = starts[0] if len(starts) == 1 else 0
    ends = [start_of[v] + fields[v]["iters"] for v in variants]
    if len(sub):
        ends += list(sub["step"] + sub["variant"].map(start_of))
    lo, hi = min(starts) - offset, max(ends) - offset
    context = 0.1 * (hi - lo)  # the pretraining before the start, shown as context
    fig, ax = plt.subplots(figsize=FIGSIZE)
    ax.axvspan(lo - context, lo, color="0.92", lw=0, zorder=0)
    ax.text(lo - context / 2, 0.02, "CE pre-\ntraining", transform=ax.get_xaxis_transform(),
            ha="center", va="bottom", fontsize=TEXT_PT, color="0.35")
    visible = []  # the y values drawn inside the window
    seeds = 0
    for variant in variants:
        mine = sub[sub["variant"] == variant]
        if mine.empty:
            continue
        seeds = max(seeds, mine["seed"].nunique())
        control = variant in control_variants(study)
        x, mean, half = _mean_line(ax, mine, colours[variant], labels.get(variant, variant),
                                   marker=markers[variant],
                                   x_shift=start_of[variant] - offset,
                                   lw=2.6 if control else 2, zorder=3 if control else 2)
        visible += list(mean - half) + list(mean + half)
    # the pretraining from its last evaluation before the shown stretch to its first after
    first = pre[pre.index <= lo + offset - context].index.max()
    last = pre[pre.index >= hi + offset].index.min()
    trend = pre[(pre.index >= (first if first == first else -np.inf))
                & (pre.index <= (last if last == last else np.inf))]
    if len(trend):
        tx = trend.index.to_numpy(dtype=float) - offset
        ax.plot(tx, trend.to_numpy(), "-.", color=TREND_COLOUR, lw=2,
                label="CE pretraining, own schedule (trend)", zorder=1)
        inside = np.linspace(lo - context, hi, 50)
        inside = inside[(inside >= tx.min()) & (inside <= tx.max())]
        visible += list(np.interp(inside, tx, trend.to_numpy()))
    for start in starts:
        if start in pre.index:
            level = float(pre.loc[start])
            ax.axhline(level, color=TREND_COLOUR, ls=":", lw=1.5,
                       label=f"pretraining at step {start}", zorder=1)
            visible.append(level)
    ax.axvline(lo, color="0.5", lw=1)
    ax.set_xlim(lo - context, hi + 0.02 * (hi - lo))
    if visible:
        bottom, top = float(np.nanmin(visible)), float(np.nanmax(visible))
        pad = 0.08 * max(top - bottom, 0.5)
        ax.set_ylim(bottom - pad, top + pad)
    ax.set_xlabel(f"fine-tuning step (0: the CE checkpoint at iteration {offset})" if offset
                  else "pretraining iteration (each variant from its own start checkpoint)",
                  fontsize=TEXT_PT + 1)
    ax.set_ylabel("validation mIoU (%)", fontsize=TEXT_PT + 1)
    ax.tick_params(which="both", labelsize=TEXT_PT)
    ax.set_title(f"{experiment_question(experiment)}\n"
                 f"(mean and 95 % CI over {seeds} seeds)", fontsize=TITLE_PT)
    ax.grid(alpha=0.3)
    legend = _legend_outside(fig, ax)
    fig.tight_layout()
    return fig


DELTA_SYMLOG_AT = 8.0  # points: a Δ or CI end beyond it puts the axis on a symmetric log scale
DELTA_LINEAR = 2.0     # points: the symmetric log axis is linear within ± this


@figure("delta_vs_control", needs=("metrics",),
        caption="Study ``{study}``: final mIoU of each variant minus its control's (points), "
                "paired by seed, with the 95 % confidence interval (unadjusted, paired over "
                "seeds); a filled marker where the paired t-test, with p adjusted by Holm "
                "within the experiment, rejects (a variant in several experiments: its "
                "largest adjusted p), an open one where it does not; the values and verdicts "
                "are written on the right, and large collapses put the axis on a symmetric "
                "log scale.")
def delta_figure(study: dict, metrics):
    """One row per variant (``results.variant_table``): Δ and its unadjusted 95 % CI in the
    variant's colour; filled where the Holm-adjusted test rejects; Δ [CI] and the verdict
    written beside the row; a symmetric log axis when a value passes
    ``DELTA_SYMLOG_AT`` points, so that small effects stay visible next to collapses."""
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.lines import Line2D
    from matplotlib.transforms import blended_transform_factory

    from .results import ALPHA, variant_table

    labels, colours = variant_labels(study), variant_colours(study)
    resolved = resolve_study(study)
    table = variant_table(metrics, resolved.controls, resolved.experiments)
    table = table[table["control"] != table["variant"]].sort_values("delta").reset_index()
    height = max(FIGSIZE[1], 0.24 * len(table) + 2.3)
    fig, ax = plt.subplots(figsize=(FIGSIZE[0], height))
    y = np.arange(len(table))
    delta = table["delta"].to_numpy(dtype=float)
    low = table["ci_low"].to_numpy(dtype=float)
    high = table["ci_high"].to_numpy(dtype=float)
    # (verdict starts with, short words, marker, filled); the first that matches counts
    kinds = (("better than its control", "better", "o", True),
             ("worse than its control", "worse", "o", True),
             ("no difference detected after Holm", "n.s. after Holm", "o", False),
             ("no difference detected", "n.s.", "o", False),
             ("same Δ on every seed", "no spread: not testable", "X", True),
             ("not tested", "not tested (too few seeds)", "s", False))
    right = blended_transform_factory(ax.transAxes, ax.transData)
    for i, row in table.iterrows():
        verdict = str(row["verdict"])
        words, marker, filled = next(((w, m, f) for text, w, m, f in kinds
                                      if verdict.startswith(text)), (verdict, "o", False))
        colour = colours.get(row["variant"], "k")
        if low[i] == low[i]:
            ax.plot([low[i], high[i]], [i, i], color=colour, lw=2.5, solid_capstyle="butt")
            ax.plot([low[i], high[i]], [i, i], "|", color=colour, markersize=10, mew=2)
        ax.plot(delta[i], i, marker, color=colour, markersize=10, mew=2, zorder=3,
                markerfacecolor=colour if filled else "white",
                label=labels.get(row["variant"], row["variant"]))
        ci = f" [{low[i]:+.2f}, {high[i]:+.2f}]" if low[i] == low[i] else ""
        ax.text(1.02, i, f"{delta[i]:+.2f}{ci}  {words}", transform=right, ha="left",
                va="center", fontsize=TEXT_PT,
                fontweight="bold" if filled and marker == "o" else "normal")
    ax.axvline(0, color="k", lw=1)
    extent = np.abs(np.concatenate([delta, low, high]))
    extent = extent[np.isfinite(extent)]
    symlog = bool(extent.size) and float(extent.max()) > DELTA_SYMLOG_AT
    if symlog:
        ax.set_xscale("symlog", linthresh=DELTA_LINEAR, linscale=1.5)
        ax.axvspan(-DELTA_LINEAR, DELTA_LINEAR, color="0.95", lw=0, zorder=0)
    ax.set_yticks(y)
    ax.set_yticklabels([labels.get(v, v) for v in table["variant"]], fontsize=TEXT_PT)
    ax.set_ylim(-0.7, len(table) - 0.3)
    ax.tick_params(axis="x", which="both", labelsize=TEXT_PT)
    ax.set_xlabel("final Δ mIoU vs its control (points), paired by seed"
                  + (f"; symmetric log scale, linear within ±{DELTA_LINEAR:g} (shaded)"
                     if symlog else ""), fontsize=TEXT_PT + 1)
    ax.set_title("Final mIoU difference to the control", fontsize=TITLE_PT)
    ax.text(1.02, 1.0, "Δ [95 % CI]  verdict", transform=ax.transAxes, ha="left",
            va="bottom", fontsize=TEXT_PT, fontweight="bold")
    ax.grid(alpha=0.3, axis="x")
    handles = [Line2D([], [], color="k", lw=2.5, marker="|", markersize=10, mew=2,
                      label="95 % CI (unadjusted, paired over seeds)"),
               Line2D([], [], color="k", ls="", marker="o", markersize=9,
                      label=f"filled: p adjusted by Holm within the experiment < {ALPHA:g}"),
               Line2D([], [], color="k", ls="", marker="o", markersize=9,
                      markerfacecolor="white", label="open: not rejected after Holm")]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=TEXT_PT,
               frameon=False, bbox_to_anchor=(0.5, 0.0), handletextpad=0.4,
               columnspacing=1.5)
    note = ("A CI that excludes 0 can still be n.s.: the CI is not adjusted for the "
            "experiment's several tests, the verdict is.")
    fig.text(0.5, 0.06 * FIGSIZE[1] / height, note, ha="center", va="bottom",
             fontsize=TEXT_PT, color="0.3")
    # the written values are the axes' texts: tight_layout leaves room for them
    fig.tight_layout(rect=(0, 0.11 * FIGSIZE[1] / height, 1, 1))
    return fig


@figure("per_class_iou", needs=("metrics",),
        caption="Study ``{study}``: per-class IoU of each variant at the end of tuning, "
                "mean over seeds.")
def per_class_figure(study: dict, metrics):
    import matplotlib.pyplot as plt
    import seaborn as sns

    from .results import class_order, per_class_table

    labels = variant_labels(study)
    classes = class_order(metrics, study)  # the dataset's order
    table = per_class_table(metrics)
    cols = [c for c in classes if c in table.columns] + (["mIoU"] if "mIoU" in table.columns else [])
    order = [v for v in study["variants"] if v in table.index] + \
        [v for v in table.index if v not in study["variants"]]
    table = table.loc[order, cols].rename(index=lambda v: labels.get(v, v))
    fig, ax = plt.subplots(figsize=(FIGSIZE[0], max(FIGSIZE[1], 0.24 * len(table) + 1.6)))
    sns.heatmap(table, annot=True, fmt=".1f", cmap="viridis", ax=ax,
                annot_kws={"fontsize": TEXT_PT})
    bar = ax.collections[0].colorbar
    bar.set_label("IoU (%)", fontsize=TEXT_PT)
    bar.ax.tick_params(which="both", labelsize=TEXT_PT)
    ax.tick_params(labelsize=TEXT_PT, length=0)
    ax.set_xlabel("class", fontsize=TEXT_PT)
    ax.set_ylabel("")
    ax.set_title("Final per-class IoU (%), mean over seeds", fontsize=TITLE_PT)
    fig.tight_layout()
    return fig


def _fell_below_start(study: dict, metrics) -> Dict[str, Tuple[float, float]]:
    """Variant -> (mIoU at its start, final mIoU), mean over seeds, of the variants whose
    final validation mIoU ended below the one they started from (their own first
    evaluation): their estimator statistics are no sign of a low variance."""
    if metrics is None:
        return {}
    miou = metrics[(metrics["class"] == "mIoU") & (metrics["variant"] != paths.PRETRAIN)]
    found = {}
    for variant, rows in miou.groupby("variant"):
        by_step = rows.groupby("step")["IoU"].mean().sort_index()
        if len(by_step) > 1 and by_step.iloc[-1] < by_step.iloc[0]:
            found[variant] = (float(by_step.iloc[0]), float(by_step.iloc[-1]))
    return found


@figure("estimator_variance", needs=("metrics", "stats"),
        caption="Study ``{study}``: each estimator's variance measure, the mean squared "
                "advantage E[A^2] per fine-tuning step (averaged over each evaluation "
                "interval, mean and 95 % band over seeds, log scale), one panel per "
                "estimator and one colour per variant; its advantage differs between "
                "panels (weighted CE: the cost 1 - mIoU minus its baseline; REINFORCE: the "
                "sampled reward minus its baseline; local expectation: its per-image "
                "expected gain), so compare within a panel. Dashed, hollow: a variant "
                "whose mIoU ended below its start, which a small E[A^2] does not make "
                "good. The gradients' own variance is measured by bench/bench_variance.py.")
def variance_figure(study: dict, metrics, stats):
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    from .vocabulary import ESTIMATORS

    labels, colours = variant_labels(study), variant_colours(study)
    markers = variant_markers(study)
    fell = _fell_below_start(study, metrics)
    sub = stats[stats["stat"] == "decode.reward_adv_sq"]
    loss = {v: x.estimator for v, x in resolve_study(study).variants.items()}
    sub = sub.assign(estimator=sub["variant"].map(loss))
    estimators = [e for e in ESTIMATORS if (sub["estimator"] == e).any()]
    fig, axes = plt.subplots(1, max(1, len(estimators)), squeeze=False, figsize=FIGSIZE)
    handles = []
    for ax, estimator in zip(axes[0], estimators):
        mine = [v for v in study["variants"] if loss[v] == estimator]
        bands = len(mine) <= BAND_MOST
        for variant in mine:
            values = sub[sub["variant"] == variant]
            if values.empty:
                continue
            down = variant in fell
            label = labels.get(variant, variant)
            if down:
                label += f" (mIoU {fell[variant][0]:.1f} → {fell[variant][1]:.1f} %)"
            style = dict(ls="--", markerfacecolor="white") if down else {}
            _mean_line(ax, values, colours[variant], label, marker=markers[variant],
                       band=bands, **style)
            handles.append(Line2D([], [], color=colours[variant], marker=markers[variant],
                                  lw=2, label=label, **style))
        ax.set_yscale("log")
        ax.set_title(ESTIMATOR_TITLES.get(estimator, estimator)
                     + ("" if bands else "\n(means; bands left out)"), fontsize=TEXT_PT + 1)
        ax.set_xlabel("fine-tuning step", fontsize=TEXT_PT)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=4))
        advantage = LOGGED_ADVANTAGE.get(estimator, "R − b")
        ax.set_ylabel(f"E[A²], A = {advantage}", fontsize=TEXT_PT)
        ax.tick_params(which="both", labelsize=TEXT_PT)
        ax.grid(alpha=0.3)
    if not estimators:
        axes[0][0].text(0.5, 0.5, "no reward-estimator runs", ha="center",
                        fontsize=TEXT_PT + 1, transform=axes[0][0].transAxes)
        axes[0][0].set_axis_off()
    fig.suptitle("Each estimator's variance measure, the mean squared advantage E[A²], "
                 "per step (log scale)", fontsize=TITLE_PT)
    if handles and fell:
        handles.append(Line2D([], [], color="k", ls="--", marker="o",
                              markerfacecolor="white", label="dashed, hollow: mIoU ended\n"
                              "below its start (not a success)"))
    if handles:
        _fit_right_legend(fig, _legend_outside(fig, fig, handles), top=0.94)
    else:
        fig.tight_layout(rect=(0, 0, 1, 0.94))
    return fig


def _reward_measure(study: dict, variant: str) -> Optional[str]:
    """What ``decode.reward_miou_train`` measures for a variant (``RewardLoss._stats``):
    ``argmax`` (weighted CE: the argmax map's mIoU), ``sampled`` (the sampled maps'
    mIoU), ``sampled_weighted`` (their class-weighted mIoU), None for a plain loss."""
    from .vocabulary import ESTIMATORS, SAMPLING

    fields = resolve_study(study).fields(variant)
    if fields["loss"] not in ESTIMATORS:
        return None
    if fields["loss"] not in SAMPLING:
        return "argmax"
    return "sampled" if fields.get("class_weight_smoothing") is None else "sampled_weighted"


REWARD_MEASURES = {
    "sampled": "sampled maps:\nper-image mIoU (%)",
    "sampled_weighted": "sampled maps: class-weighted\nper-image mIoU (%)",
    "argmax": "argmax map (weighted CE\nsamples nothing): per-image mIoU (%)",
}


@figure("training_reward", needs=("stats",),
        caption="Study ``{study}``: the objective during fine-tuning, the per-image mIoU "
                "(%) of the training batches' label maps, averaged over each evaluation "
                "interval, mean and 95 % band over seeds, one panel per measure (the maps "
                "sampled by REINFORCE and the local expectation; the same, class-weighted, "
                "for a variant with class weights; the argmax map for weighted CE, which "
                "samples nothing): whether the reward is being optimised.")
def training_reward_figure(study: dict, stats):
    """One panel per measure of ``decode.reward_miou_train`` (:func:`_reward_measure`),
    one line per variant in its colour; the legend outside the panels."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    labels, colours = variant_labels(study), variant_colours(study)
    markers = variant_markers(study)
    sub = stats[stats["stat"] == "decode.reward_miou_train"]
    sub = sub.assign(value=sub["value"] * 100.0)
    measure = {v: _reward_measure(study, v) for v in study["variants"]}
    present = [m for m in REWARD_MEASURES
               if any(measure[v] == m and (sub["variant"] == v).any() for v in measure)]
    fig, axes = plt.subplots(1, max(1, len(present)), squeeze=False, figsize=FIGSIZE)
    handles = []
    for ax, name in zip(axes[0], present):
        mine = [v for v in study["variants"] if measure[v] == name]
        bands = len(mine) <= BAND_MOST
        for variant in mine:
            values = sub[sub["variant"] == variant]
            if values.empty:
                continue
            _mean_line(ax, values, colours[variant], labels.get(variant, variant),
                       marker=markers[variant], band=bands)
            handles.append(Line2D([], [], color=colours[variant], marker=markers[variant],
                                  lw=2, label=labels.get(variant, variant)))
        ax.set_title(REWARD_MEASURES[name] + ("" if bands else "\n(means; bands left out)"),
                     fontsize=TEXT_PT + 1)
        ax.set_xlabel("fine-tuning step", fontsize=TEXT_PT)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=4))
        ax.tick_params(which="both", labelsize=TEXT_PT)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("training reward (%)", fontsize=TEXT_PT)
    if not present:
        axes[0][0].text(0.5, 0.5, "no reward-estimator runs", ha="center",
                        fontsize=TEXT_PT + 1, transform=axes[0][0].transAxes)
        axes[0][0].set_axis_off()
    fig.suptitle("Is the reward being optimised? The training batches' reward per step "
                 "(mean over seeds, 95 % band)", fontsize=TITLE_PT)
    if handles:
        _fit_right_legend(fig, _legend_outside(fig, fig, handles), top=0.94)
    else:
        fig.tight_layout(rect=(0, 0, 1, 0.94))
    return fig


WEIGHT_PARTS = {"decode_head.conv_seg": "classifier\n(conv_seg)", "decode_head": "decode\nhead",
                "auxiliary_head": "auxiliary\nhead", "backbone": "backbone",
                "bn_statistics": "BatchNorm\nstatistics"}


def _swatches(ax, variants: List[str], colours: Dict[str, str], x: float) -> None:
    """A square in each row's variant colour at data x ``x`` (left of a heat map)."""
    ax.scatter([x] * len(variants), range(len(variants)), marker="s", s=110,
               c=[colours.get(v, "k") for v in variants], clip_on=False, zorder=3)


@figure("weight_change", needs=("stats",),
        caption="Study ``{study}``: how far each run moved from its start checkpoint, "
                "‖θ − θ₀‖ / ‖θ₀‖ in % per part of the model (and for the BatchNorm running "
                "statistics), mean over seeds, the colour on a log scale; runs that did not "
                "move cannot show an effect.")
def weight_change_figure(study: dict, stats):
    """Heat map, variants × parts of the model: the relative change in %, written in each
    cell, the colour on a log scale; the variant's colour left of its row."""
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import LogNorm

    labels, colours = variant_labels(study), variant_colours(study)
    sub = stats[stats["stat"].str.startswith("weight_change.")]
    fig, ax = plt.subplots(figsize=FIGSIZE)
    if sub.empty:
        ax.text(0.5, 0.5, "no weight changes recorded", ha="center", fontsize=TEXT_PT + 1,
                transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    sub = sub.assign(part=sub["stat"].str.slice(len("weight_change.")))
    final = sub[sub["step"] == sub.groupby(["variant", "seed"])["step"].transform("max")]
    table = final.pivot_table(index="variant", columns="part", values="value",
                              aggfunc="mean") * 100.0
    parts = [p for p in WEIGHT_PARTS if p in table.columns]
    variants = [v for v in study["variants"] if v in table.index] + \
        [v for v in table.index if v not in study["variants"]]
    values = table.reindex(index=variants, columns=parts).to_numpy(dtype=float)
    finite = values[np.isfinite(values) & (values > 0)]
    norm = LogNorm(vmin=float(finite.min()), vmax=float(finite.max())) if finite.size else None
    image = ax.imshow(np.ma.masked_invalid(np.where(values > 0, values, np.nan)),
                      cmap=plt.get_cmap("viridis").with_extremes(bad="0.9"), norm=norm,
                      aspect="auto", interpolation="nearest")
    bar = fig.colorbar(image, ax=ax, fraction=0.03, pad=0.02)
    bar.set_label("‖θ − θ₀‖ / ‖θ₀‖ (%)", fontsize=TEXT_PT)
    bar.ax.tick_params(which="both", labelsize=TEXT_PT)
    middle = np.sqrt(norm.vmin * norm.vmax) if norm else 0
    for i in range(len(variants)):
        for j in range(len(parts)):
            value = values[i, j]
            text = "n/a" if not value == value else f"{value:.2g}"
            ax.text(j, i, text, ha="center", va="center", fontsize=TEXT_PT,
                    color="white" if value == value and value < middle else "black")
    ax.set_xticks(range(len(parts)))
    ax.set_xticklabels([WEIGHT_PARTS[p] for p in parts], fontsize=TEXT_PT)
    ax.xaxis.tick_top()
    ax.set_yticks(range(len(variants)))
    ax.set_yticklabels([labels.get(v, v) for v in variants], fontsize=TEXT_PT)
    ax.tick_params(length=0)
    _swatches(ax, variants, colours, -0.62)
    ax.set_xlim(-0.75, len(parts) - 0.5)
    ax.set_title("Did the runs move? Relative change from the start checkpoint (%), "
                 "mean over seeds", fontsize=TITLE_PT)
    fig.tight_layout()
    return fig


def _last_checkpoint(run_dir: str) -> str:
    marker = paths.last_checkpoint(run_dir)
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


# ---------------------------------------------------------------- qualitative
# The qualitative panel is drawn from a small file of predictions (``predictions.npz``,
# written by ``rewardseg predictions`` from the finished runs), so a recorded study draws
# it again without its checkpoints (``rewardseg.recorded``).
QUALITATIVE_IMAGES = 3      # rows of the panel
QUALITATIVE_PT = 14.0       # its text: the panel is tall, so a slide shows it smaller
QUALITATIVE_CANDIDATES = 24  # validation images searched for the largest disagreement
IGNORE_INDEX = 255


def qualitative_variants(study: dict, metrics, control: str = "control"):
    """``(shown, better)``: the control and the reward-tuned variant (a loss from
    ``vocabulary.ESTIMATORS``) with the best final mIoU against its control, and whether
    that variant beats its control (Holm). Only the control when no variant is
    reward-tuned."""
    from .results import best_variant, variant_table
    from .vocabulary import ESTIMATORS

    resolved = resolve_study(study)
    table = variant_table(metrics, resolved.controls, resolved.experiments)
    tuned = table[[resolved.variants[v].estimator in ESTIMATORS for v in table["variant"]]]
    best = best_variant(tuned)
    if best is None and len(tuned):  # none is better: the highest Δ, and the panel says so
        best, better = str(tuned.sort_values("delta").iloc[-1]["variant"]), False
    else:
        better = best is not None
    return [control] + ([best] if best else []), better


def qualitative_predictions(study: dict, metrics, work_root: str = paths.WORK, seed: int = 0,
                            num_images: int = QUALITATIVE_IMAGES,
                            candidates: int = QUALITATIVE_CANDIDATES,
                            control: str = "control") -> Dict[str, Any]:
    """What the qualitative panel shows, as arrays (``numpy.savez``, no pickles): the
    control's and the best reward-tuned variant's predictions (seed ``seed``, their last
    checkpoints under ``work_root``) on the ``num_images`` of the first ``candidates``
    validation images where the two disagree on the most labelled pixels, with the
    images, their labels, the class names and palette."""
    import numpy as np
    from mmseg.apis import inference_model, init_model
    from PIL import Image

    import rewardseg.models  # noqa: F401

    shown, better = qualitative_variants(study, metrics, control)
    models = {}
    for variant in shown:
        run_dir = paths.run_dir(study["study"], variant, seed, root=work_root)
        models[variant] = init_model(os.path.join(run_dir, "config.py"),
                                     _last_checkpoint(run_dir), device="cpu")
    model = models[control]
    meta = model.dataset_meta or {}
    found = []  # (disagreement, index, path, gt, predictions), the most disagreeing kept
    pairs = val_pairs(model.cfg)[:candidates]
    for index, (path, gt_path) in enumerate(pairs):
        gt = np.asarray(Image.open(gt_path)).astype(np.uint8)
        preds = np.stack([inference_model(models[v], path).pred_sem_seg.data[0].cpu().numpy()
                          for v in shown]).astype(np.uint8)
        labelled = gt != IGNORE_INDEX
        differ = float((preds[0] != preds[-1])[labelled].mean()) if labelled.any() else 0.0
        found.append((-differ, index, path, gt, preds))
        found = sorted(found, key=lambda f: f[:2])[:num_images]
    root = os.path.commonpath([os.path.dirname(f[2]) for f in found]) if found else ""
    out: Dict[str, Any] = {
        "variants": np.array(shown), "better": np.array(better), "seed": np.array(seed),
        "classes": np.array(list(meta.get("classes", []))),
        "palette": np.array(meta.get("palette", []), dtype=np.uint8).reshape(-1, 3),
        "names": np.array([os.path.relpath(f[2], root) for f in found]),
        "disagreement": np.array([-f[0] for f in found]),
        "searched": np.array(len(pairs)),
    }
    for row, (_, _, path, gt, preds) in enumerate(found):
        out[f"image{row}"] = np.asarray(Image.open(path).convert("RGB"))
        out[f"label{row}"] = gt
        out[f"pred{row}"] = preds
    return out


def save_predictions(data: Dict[str, Any], path: str) -> str:
    """Write :func:`qualitative_predictions`'s arrays (compressed) whole or not at all."""
    import numpy as np

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, **data)
    os.replace(tmp, path)
    return path


def load_predictions(path: str) -> Dict[str, Any]:
    import numpy as np

    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


@figure("qualitative", needs=("predictions",), dpi=110,
        caption="Study ``{study}``: the validation images (first seed) on which the CE "
                "control and the reward-tuned variant with the best final mIoU disagree "
                "most: input, ground truth, the two predictions, in the class palette "
                "(black: ignored pixels).")
def qualitative_figure(study: dict, predictions: Dict[str, Any]):
    """Input, ground truth, the control's and the best reward-tuned variant's predictions
    on the images where they differ most (:func:`qualitative_predictions`)."""
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Patch

    data = predictions
    shown = [str(v) for v in data["variants"]]
    classes = [str(c) for c in data["classes"]]
    palette = np.asarray(data["palette"], dtype=np.uint8)
    rows = len(data["names"])
    labels = variant_labels(study)

    def colour(label):
        out = np.zeros(label.shape + (3,), dtype=np.uint8)
        valid = label < len(palette)
        out[valid] = palette[label[valid]]
        return out

    cols, lines = 2 + len(shown), max(rows, 1)
    first = data.get("image0")
    aspect = first.shape[0] / first.shape[1] if first is not None else 0.5
    panel = 3.0  # inches a panel is wide; text QUALITATIVE_PT stays >= 12 px on a slide
    ncol = max(1, min(len(classes), int(panel * cols / 2.0)))
    legend_rows = -(-len(classes) // ncol)
    height = lines * (panel * aspect + 0.12) + 1.35 + 0.3 * legend_rows
    # shown SLIDE_PX high on a slide: text of `size` pt is size * SLIDE_PX / (72 * height) px
    size = max(QUALITATIVE_PT, round(12.5 * 72 * height / SLIDE_PX + 0.49))
    fig, axes = plt.subplots(lines, cols, figsize=(panel * cols, height), squeeze=False)
    titles = ["input", "ground truth", labels.get(shown[0], shown[0])]
    if len(shown) > 1:
        verdict = ("best reward-tuned" if bool(data["better"]) else
                   "best reward-tuned (not\nbetter than its control)")
        titles.append(f"{verdict}:\n{labels.get(shown[1], shown[1])}")
    for row in range(rows):
        panels = [data[f"image{row}"], colour(data[f"label{row}"])]
        panels += [colour(p) for p in data[f"pred{row}"]]
        for col, shown_panel in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(shown_panel)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(titles[col], fontsize=size)
        axes[row, 0].set_ylabel(f"{100 * float(data['disagreement'][row]):.1f} %\ndiffer",
                                fontsize=size)
    handles = [Patch(color=np.array(palette[i]) / 255.0, label=name)
               for i, name in enumerate(classes)]
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=size,
               frameon=False, handlelength=1.2, columnspacing=1.0)
    fig.suptitle(f"Where the two differ most ({int(data['searched'])} validation images "
                 f"searched, seed {int(data['seed'])}); black: ignored",
                 fontsize=size)
    bottom = (0.3 * legend_rows + 0.15) / height
    fig.tight_layout(rect=(0, bottom, 1, 1 - 0.35 / height), h_pad=0.3, w_pad=0.3)
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
    of = resolve_study(study).controls
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
    bar.ax.tick_params(which="both", labelsize=11)
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
    _swatches(ax, variants, variant_colours(study), -0.66)
    ax.set_xlim(-0.8, len(classes) - 0.5)
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

    loss = {v: x.estimator for v, x in resolve_study(study).variants.items()}
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
    loss = {v: x.estimator for v, x in resolve_study(study).variants.items()}
    variants = [v for v in study["variants"] if loss[v] in ESTIMATORS]
    estimators = [e for e in ESTIMATORS if any(loss[v] == e for v in variants)]
    ncols = max(1, len(estimators))
    # the deck shows it 460 px high: 10.2 pt is 12 px there
    fig, axes = plt.subplots(2, ncols, squeeze=False, sharex="col", figsize=(12.8, 5.4),
                             gridspec_kw=dict(height_ratios=(3, 2)))
    colour = variant_colours(study)
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
            ax.tick_params(which="both", labelsize=TEXT_PT)
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
                        ha="center", va="center" if everything else "top", fontsize=TEXT_PT,
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
                        fontsize=TEXT_PT, frameon=False)
    fig.suptitle(f"{study['study']}: reward of the sampled maps vs the argmax map, and "
                 "the policy's entropy (mean over seeds, 95 % band)", fontsize=13)
    fig.canvas.draw()
    width = legend.get_window_extent().width / fig.bbox.width
    fig.tight_layout(rect=(0, 0, 0.99 - width, 0.96))
    return fig


def _wrap_runs(runs: List[str], most: int = 6) -> str:
    """Runs, one per line (at most ``most``, then how many more)."""
    shown = runs[:most] + ([f"… {len(runs) - most} more"] if len(runs) > most else [])
    return "\n".join(shown)
