"""Each variant against its control: the verdict table (``final_table``, Holm within each
experiment), one row per variant (``variant_table``), the reference's MDE, the
pretraining's plateau and the best variant."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import pandas as pd

from .. import paths
from .stats import ALPHA, POWER, holm, minimum_detectable_effect, paired_comparison, verdict

CONTROL = "control"
REFERENCE = "reference"  # the reference configuration (``tuning:``), in several experiments

# the columns of ``final_table``, one row per (experiment, variant) comparison; ``pairs``
# (seeds paired with the control), ``family`` (comparisons in the experiment) and
# ``constant`` (the same Δ on every seed) follow
COMPARISON_COLUMNS = ("experiment", "variant", "control", "n", "mean", "std", "delta",
                      "sd_delta", "ci_low", "ci_high", "p", "p_holm", "mde", "mde_holm",
                      "verdict")
# family names: the whole study (every comparison, when no experiments are given); the
# compared variants that no experiment shows
WHOLE_STUDY = "all"
UNGROUPED = "ungrouped"


def _final_by_seed(df: pd.DataFrame) -> pd.DataFrame:
    """Final mIoU (the last step of each run), seeds x variants; the pretraining left out."""
    miou = df[(df["class"] == "mIoU") & (df["variant"] != paths.PRETRAIN)]
    last = miou.loc[miou.groupby(["variant", "seed"])["step"].idxmax()]
    return last.pivot(index="seed", columns="variant", values="IoU")


def _per_variant(df: pd.DataFrame, controls: Optional[Dict[str, str]]) -> Dict[str, dict]:
    """Variant -> its final mIoU (n, mean, std over seeds), its control and, where that
    control has results, the paired comparison (``compared``)."""
    controls = dict(controls or {})
    final = _final_by_seed(df)
    is_control = {c for v, c in controls.items() if c != v}
    rows: Dict[str, dict] = {}
    for variant in final.columns:
        values = final[variant].dropna()
        control = variant if variant in is_control else controls.get(variant, CONTROL)
        row = dict(variant=variant, control=control, n=len(values), mean=values.mean(),
                   std=values.std(ddof=1) if len(values) > 1 else float("nan"),
                   compared=False)
        if control != variant and control in final.columns:
            row.update(paired_comparison((final[variant] - final[control]).dropna()),
                       compared=True)
        else:
            row["control"] = variant
        rows[variant] = row
    return rows


def _families(compared: Sequence[str],
              experiments: Optional[Dict[str, Sequence[str]]]) -> List[tuple]:
    """(experiment, its compared variants) in the study's order: the family that Holm
    adjusts over is the set of non-control variants the figure ``exp_<experiment>`` shows.
    Without ``experiments``: one family, the whole study (``WHOLE_STUDY``); compared
    variants that no experiment shows form one more (``UNGROUPED``)."""
    if experiments is None:
        return [(WHOLE_STUDY, list(compared))] if compared else []
    out, seen = [], set()
    for name, variants in experiments.items():
        members = [v for v in dict.fromkeys(variants) if v in compared]
        seen.update(members)
        if members:
            out.append((name, members))
    rest = [v for v in compared if v not in seen]
    if rest:
        out.append((UNGROUPED, rest))
    return out


def final_table(df: pd.DataFrame, controls: Optional[Dict[str, str]] = None,
                experiments: Optional[Dict[str, Sequence[str]]] = None) -> pd.DataFrame:
    """The verdict table: one row per (experiment, variant) comparison (a variant in
    several experiments has a row in each; controls have none: see ``variant_table``).

    ``controls``: variant -> its control (default ``control``; a control maps to itself);
    ``experiments``: experiment -> the variants its figure shows (``study.experiments``);
    without it the whole study is one family. Per row: the final mIoU of the variant
    (``n`` seeds, mean, std), Δ against its control paired by seed with its sd and
    unadjusted 95 % CI, the paired t-test's p and ``p_holm``, Holm-adjusted within the
    experiment, the minimum detectable effect at 80 % power (exact, noncentral t) at
    ``ALPHA`` (``mde``) and at ``ALPHA / family`` (``mde_holm``: Holm's strictest step in
    that experiment, so that "no difference detected" is stated at the level the verdicts
    use), and the verdict (``verdict``: it follows ``p_holm``). Sorted by final mIoU,
    highest first (``write_tables`` groups the rows by experiment)."""
    rows = _per_variant(df, controls)
    compared = [v for v, row in rows.items() if row["compared"]]
    out = []
    for experiment, members in _families(compared, experiments):
        family = len(members)
        for variant, p_holm in zip(members, holm([rows[v]["p"] for v in members])):
            row = rows[variant]
            testable = row["pairs"] >= 2 and not row["constant"] and row["sd_delta"] > 0
            out.append(dict(
                {k: row[k] for k in ("variant", "control", "n", "mean", "std", "delta",
                                     "sd_delta", "ci_low", "ci_high", "p", "mde")},
                experiment=experiment, p_holm=p_holm, family=family, pairs=row["pairs"],
                constant=bool(row["constant"]),
                mde_holm=(minimum_detectable_effect(row["sd_delta"], int(row["pairs"]),
                                                    ALPHA / family)
                          if testable else float("nan"))))
    extra = ("pairs", "family", "constant")
    table = pd.DataFrame(out, columns=[c for c in COMPARISON_COLUMNS if c != "verdict"]
                         + list(extra))
    table["verdict"] = [verdict(row) for _, row in table.iterrows()]
    table = table[list(COMPARISON_COLUMNS) + list(extra)]
    table["constant"] = table["constant"].astype(bool)
    return table.sort_values("mean", ascending=False, kind="mergesort").reset_index(drop=True)


def variant_table(df: pd.DataFrame, controls: Optional[Dict[str, str]] = None,
                  experiments: Optional[Dict[str, Sequence[str]]] = None,
                  comparisons: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """One row per variant, controls included (for the best variant, the overview, the
    slides' summary, the Δ figure and each variant's mean ± std): n, mean, std of its
    final mIoU, its control, the paired Δ, sd, unadjusted CI, p and ``mde`` (these do not
    depend on the experiment), ``experiments`` (those it is compared in, comma-joined),
    ``family`` (the largest of them), and from ``final_table`` the strictest of its rows:
    the largest ``p_holm`` and ``mde_holm``, and the verdict from those, so that a variant
    is called better or worse only where that holds in every experiment it is in. Sorted
    by final mIoU, highest first. ``comparisons``: ``final_table`` of the same arguments,
    when the caller has it already."""
    rows = _per_variant(df, controls)
    if comparisons is None:
        comparisons = final_table(df, controls, experiments)
    out = []
    for variant, row in rows.items():
        mine = comparisons[comparisons["variant"] == variant]
        entry = {k: row.get(k, float("nan")) for k in (
            "variant", "control", "n", "mean", "std", "delta", "sd_delta", "ci_low",
            "ci_high", "p", "mde", "pairs")}
        entry.update(constant=bool(row.get("constant", False)),
                     experiments=", ".join(mine["experiment"]),
                     family=int(mine["family"].max()) if len(mine) else 0,
                     p_holm=mine["p_holm"].max() if len(mine) else float("nan"),
                     mde_holm=mine["mde_holm"].max() if len(mine) else float("nan"))
        entry["verdict"] = verdict(entry)
        out.append(entry)
    columns = ["variant", "control", "n", "mean", "std", "experiments", "family", "delta",
               "sd_delta", "ci_low", "ci_high", "p", "p_holm", "mde", "mde_holm", "verdict",
               "pairs", "constant"]
    table = pd.DataFrame(out, columns=columns)
    return table.sort_values("mean", ascending=False, kind="mergesort").reset_index(drop=True)


def reference_mde(table: pd.DataFrame, variant: str = REFERENCE) -> Optional[Dict[str, Any]]:
    """The Holm-level minimum detectable effect of ``variant`` (the reference
    configuration) against its control, from ``final_table``: the largest over the
    experiments it is compared in (its largest family), with that row's experiment,
    family, seeds paired, Δ, CI and Holm p. None when the variant is not compared or not
    testable (fewer than 2 seeds, or the same Δ on every seed)."""
    rows = table[(table["variant"] == variant) & table["mde_holm"].notna()]
    if rows.empty:
        return None
    row = rows.sort_values(["mde_holm", "family"], kind="mergesort").iloc[-1]
    return dict(variant=variant, control=str(row["control"]),
                experiment=str(row["experiment"]), family=int(row["family"]),
                experiments=int(len(rows)), pairs=int(row["pairs"]),
                delta=float(row["delta"]), ci_low=float(row["ci_low"]),
                ci_high=float(row["ci_high"]), p_holm=float(row["p_holm"]),
                mde_holm=float(row["mde_holm"]), alpha=ALPHA / int(row["family"]),
                power=POWER)


def reference_line(found: Optional[Dict[str, Any]], variant: str = REFERENCE) -> str:
    """``reference_mde`` in one line, for the workflow's log."""
    if found is None:
        return f"{variant} vs control: not compared or not testable (no Holm-level MDE)"
    return (f"{found['variant']} vs {found['control']}: Δ {found['delta']:+.2f} mIoU "
            f"[{found['ci_low']:+.2f}, {found['ci_high']:+.2f}], p_Holm "
            f"{found['p_holm']:.3f}, Holm-level MDE {found['mde_holm']:.2f} mIoU "
            f"({found['pairs']} seeds; family of {found['family']} comparisons in "
            f"experiment {found['experiment']!r}, the largest of the {found['experiments']} "
            f"it is in)")


PLATEAU_POINTS = 1.0  # the pretraining has converged when its last quarter adds less


def pretrain_plateau(df: pd.DataFrame) -> Optional[Dict[str, float]]:
    """How much the CE pretraining's last quarter added (final mIoU minus the mIoU of the
    last evaluation at or before 3/4 of its iterations), and whether that is below
    ``PLATEAU_POINTS``: the report tuned a converged model. None with fewer than two
    evaluations (released checkpoints: one per release)."""
    pre = df[(df["variant"] == paths.PRETRAIN) & (df["class"] == "mIoU")].sort_values("step")
    if len(pre) < 2:
        return None
    last = pre.iloc[-1]
    earlier = pre[pre["step"] <= 0.75 * last["step"]]
    if earlier.empty:
        return None
    before = earlier.iloc[-1]
    gain = float(last["IoU"] - before["IoU"])
    return dict(step=int(before["step"]), final_step=int(last["step"]),
                final=float(last["IoU"]), gain=gain, converged=gain < PLATEAU_POINTS)


def best_variant(table: pd.DataFrame) -> Optional[str]:
    """The variant that beats its control by the most (Holm-adjusted test), or None.
    ``table``: ``variant_table`` or ``final_table``; from the latter a variant counts only
    where it is better in every experiment it is compared in (as ``variant_table`` says)."""
    verdicts = table.groupby("variant", sort=False)["verdict"]
    better = [v for v, found in verdicts if (found == "better than its control").all()]
    rows = table[table["variant"].isin(better)].drop_duplicates("variant")
    return None if rows.empty else str(rows.sort_values("delta").iloc[-1]["variant"])


def group_by_experiment(final: pd.DataFrame,
                        experiments: Optional[Dict[str, Sequence[str]]]) -> pd.DataFrame:
    """``final_table``'s rows grouped by experiment, in the study's order of experiments
    (within one: highest final mIoU first)."""
    order = list(experiments or {}) + [WHOLE_STUDY, UNGROUPED]
    rank = final["experiment"].map(lambda e: order.index(e) if e in order else len(order))
    return final.assign(_rank=rank).sort_values("_rank", kind="mergesort").drop(
        columns="_rank").reset_index(drop=True)
