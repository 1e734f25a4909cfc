"""The sampled maps' reward next to the argmax map's and the policy's entropy, per reward
estimator (``reward_gap``), and the rows it draws (:func:`reward_gap_data`)."""
from __future__ import annotations

from typing import Dict, List

from ..study import labels as variant_labels, as_resolved as resolve_study
from ..vocabulary import ESTIMATOR_TITLES
from .registry import figure
from .style import BAND_MOST, TEXT_PT, _mean_band, variant_colours

# the loss's statistics of a reward estimator (``RewardLoss._stats``, logged as
# ``decode.reward_<name>`` and averaged over each evaluation interval in train_stats.csv)
SAMPLED_REWARD = "decode.reward_reward"          # mean reward of the sampled maps
ARGMAX_REWARD = "decode.reward_reward_argmax"    # per-image mIoU of the argmax map
POLICY_ENTROPY = "decode.reward_entropy"         # mean per-pixel entropy (nats)


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

    from ..vocabulary import ESTIMATORS, SAMPLING

    loss = {v: x.loss for v, x in resolve_study(study).variants.items()}
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

    from ..vocabulary import ESTIMATORS, SAMPLING

    data, missing = reward_gap_data(study, stats)
    labels = variant_labels(study)
    loss = {v: x.loss for v, x in resolve_study(study).variants.items()}
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
            if _reward_gap_lines(top, bottom, data[data["variant"] == variant],
                                 colour[variant], labels.get(variant, variant), bands):
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
        _reward_gap_notes(top, bottom, data[data["estimator"] == estimator],
                          missing.get(estimator, []),
                          any(loss[v] == estimator for v in shown))
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


def _reward_gap_lines(top, bottom, rows, colour: str, label: str, bands: bool) -> bool:
    """One variant's lines (``rows``: its rows of :func:`reward_gap_data`): the sampled
    (solid) and argmax (dashed) reward on ``top``, the entropy on ``bottom``, each with its
    95 % band if ``bands``; whether it drew any."""
    drew = False
    for quantity, ax, style in (("sampled", top, "-"), ("argmax", top, "--"),
                                ("entropy", bottom, "-")):
        values = rows[rows["quantity"] == quantity]
        if values.empty:
            continue
        x, y, half = _mean_band(values)
        ax.plot(x, y, style, color=colour, lw=2, marker="o", markersize=3,
                label=f"{label}: {quantity}")
        if bands:
            ax.fill_between(x, y - half, y + half, color=colour, alpha=0.12, lw=0)
        drew = True
    return drew


def _reward_gap_notes(top, bottom, rows, runs: List[str], drew: bool) -> None:
    """What an estimator's panels say when they lack lines: no statistics yet (nothing
    ``drew``), or the ``runs`` without argmax-reward / entropy statistics, over both
    panels when none of its ``rows`` has them, else on the entropy panel."""
    if not runs and not drew:
        top.text(0.5, 0.5, "no training statistics of these runs yet",
                 transform=top.transAxes, ha="center", va="center", fontsize=12)
    if runs:
        note = ("no argmax-reward / entropy statistics (older results) for:\n"
                + _wrap_runs(runs))
        everything = not len(rows[rows["quantity"] != "sampled"])
        for ax in (top, bottom) if everything else (bottom,):
            if everything:
                ax.set_yticks([])
                ax.tick_params(labelbottom=False)
            ax.text(0.5, 0.5 if everything else 0.97, note, transform=ax.transAxes,
                    ha="center", va="center" if everything else "top", fontsize=TEXT_PT,
                    color="C3", bbox=dict(facecolor="white", edgecolor="C3", alpha=0.9))


def _wrap_runs(runs: List[str], most: int = 6) -> str:
    """Runs, one per line (at most ``most``, then how many more)."""
    shown = runs[:most] + ([f"… {len(runs) - most} more"] if len(runs) > most else [])
    return "\n".join(shown)
