"""Per-class Δ IoU against each variant's control: the paired table
(:func:`per_class_deltas`) and its heat map (``per_class_delta``)."""
from __future__ import annotations

from typing import List, Tuple

from .. import paths
from ..study import labels as variant_labels, as_resolved as resolve_study
from .registry import figure
from .style import _swatches, variant_colours


def per_class_deltas(study: dict, metrics):
    """Per-class Δ IoU of every compared variant against its control (``study.controls``)
    at the final step, paired by seed: one row per (variant, class) with the control, the
    class, and ``results.paired_comparison``'s ``delta`` (points: IoU is in %),
    ``ci_low`` / ``ci_high`` (95 %, Student t over seeds), ``p``, ``pairs`` and
    ``constant``; class ``mIoU`` is the mean over classes. Variants in study order,
    classes in metrics.csv's order with mIoU last. A control without rows in ``metrics``
    is a ValueError that names it."""
    import pandas as pd

    from ..results import CONTROL, paired_comparison

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
    classes, dropped = _shown_classes(table)
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
    _write_cells(fig, ax, cell, variants, classes, vmax, footnote)
    if "mIoU" in classes and len(classes) > 1:
        ax.axvline(len(classes) - 1.5, color="white", lw=4)
    return fig


def _shown_classes(table) -> Tuple[List[str], int]:
    """The classes of the heat map (mIoU last) and how many were left out: with more than
    ``PER_CLASS_COLUMNS``, those with a CI that excludes 0 and the largest differences."""
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
    return classes, dropped


def _write_cells(fig, ax, cell, variants: List[str], classes: List[str], vmax: float,
                 footnote: str) -> None:
    """Frame the cells whose CI excludes 0 (dotted: the same Δ on every seed) and write
    each cell's Δ, with the CI's half-width below it where the cells leave room (else the
    footnote, the figure's last text, drops its ±)."""
    from matplotlib.patches import Rectangle

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
