"""One figure per experiment (``exp_{experiment}``): validation mIoU of its variants over
the fine-tuning window, next to the control and the CE pretraining's own trend."""
from __future__ import annotations

from .. import paths
from ..study import labels as variant_labels, as_resolved as resolve_study
from ..vocabulary import experiment_question
from .registry import figure
from .style import (FIGSIZE, TEXT_PT, TITLE_PT, TREND_COLOUR, _legend_outside,
                    _mean_line, control_variants, variant_colours, variant_markers)


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
