"""The final step's figures: each variant's Δ mIoU to its control (``delta_vs_control``)
and the per-class IoU heat map (``per_class_iou``)."""
from __future__ import annotations

from ..study import labels as variant_labels, as_resolved as resolve_study
from .registry import figure
from .style import FIGSIZE, TEXT_PT, TITLE_PT, variant_colours

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

    from ..results import ALPHA, variant_table

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

    from ..results import class_order, per_class_table

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
