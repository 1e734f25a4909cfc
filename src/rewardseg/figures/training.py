"""What fine-tuning did, from train_stats.csv: each estimator's E[A²]
(``estimator_variance``), the training reward (``training_reward``) and how far the
weights moved (``weight_change``)."""
from __future__ import annotations

from typing import Dict, Optional, Tuple

from .. import paths
from ..study import labels as variant_labels, as_resolved as resolve_study
from ..vocabulary import ESTIMATOR_TITLES, LOGGED_ADVANTAGE
from .registry import figure
from .style import (BAND_MOST, FIGSIZE, TEXT_PT, TITLE_PT, _fit_right_legend,
                    _legend_outside, _mean_line, _swatches, variant_colours, variant_markers)


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

    from ..vocabulary import ESTIMATORS

    labels, colours = variant_labels(study), variant_colours(study)
    markers = variant_markers(study)
    fell = _fell_below_start(study, metrics)
    sub = stats[stats["stat"] == "decode.reward_adv_sq"]
    loss = {v: x.loss for v, x in resolve_study(study).variants.items()}
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
    from ..vocabulary import ESTIMATORS, SAMPLING

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
