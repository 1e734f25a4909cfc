"""Results: a finished run's evaluations -> its result JSON; every run's -> one tidy table
(``metrics.csv``); the statistics and tables drawn from it (figures are ``figures``)."""
from __future__ import annotations

import functools
import json
import math
import os
from typing import Any, Dict, Iterable, List, Optional, Sequence

import numpy as np
import pandas as pd

from . import paths
from .fileio import write_json_atomic, write_text_atomic

# every comparison: two-sided paired t-test at this level, Holm-adjusted within its
# experiment (the variants one figure ``exp_<experiment>`` shows); the minimum detectable
# effect is for this power
ALPHA = 0.05
POWER = 0.8
CONTROL = "control"
REFERENCE = "reference"  # the reference configuration (``tuning:``), in several experiments


def read_val_metrics(work_dir: str) -> List[Dict[str, Any]]:
    """Validation records of a run, one per step (a resumed run's repeat keeps the last)."""
    path = paths.val_metrics(work_dir)
    by_step: Dict[int, Dict[str, Any]] = {}
    if os.path.isfile(path):
        with open(path) as fh:
            for line in fh:
                if line.strip():
                    rec = json.loads(line)
                    by_step[int(rec["step"])] = rec
    return [by_step[s] for s in sorted(by_step)]


def collect_run(work_dir: str, out: str, pretrain_dir: Optional[str] = None) -> Dict[str, Any]:
    """Turn a finished run into ``results/.../seed<k>.json``: per-step mIoU and per-class
    IoU, training statistics, provenance. Step 0 is the start checkpoint's evaluation
    from the pretraining run."""
    with open(paths.run_record(work_dir)) as fh:
        record = json.load(fh)
    spec = record["spec"]
    evals = []
    if pretrain_dir is not None and spec.get("stage") == "tune":
        for rec in read_val_metrics(pretrain_dir):
            if rec["step"] == spec["start"]:
                evals.append(dict(step=0, metrics=rec["metrics"], train={}))
    evals += read_val_metrics(work_dir)
    if len(evals) < (1 if spec.get("released") else 2):
        raise ValueError(f"{work_dir}: no validation results recorded (val_metrics.jsonl)")
    result = dict(study=spec["study"], variant=spec["variant"], seed=spec["seed"],
                  spec=spec, evals=evals, weight_change=record.get("weight_change"),
                  provenance={k: record[k] for k in (
                      "git_commit", "versions", "wall_time_s", "resumed", "finished")})
    write_json_atomic(out, result, indent=1)
    return result


def _rows_from_run(result: dict, step_offset: int = 0) -> Iterable[dict]:
    for ev in result["evals"]:
        step = int(ev["step"]) + step_offset
        metrics = ev["metrics"]
        base = dict(study=result["study"], variant=result["variant"], seed=result["seed"],
                    step=step)
        yield dict(base, **{"class": "mIoU", "IoU": metrics["mIoU"]})
        for key, value in metrics.items():
            if key.startswith("IoU."):
                yield dict(base, **{"class": key[4:], "IoU": value})


def aggregate(run_files: Sequence[str], pretrain_file: str, out_csv: str,
              stats_csv: str) -> pd.DataFrame:
    """All run JSONs -> ``metrics.csv`` (study, variant, seed, step, class, IoU) and the
    training statistics per evaluation interval -> ``train_stats.csv``. Within an
    evaluation the rows keep the run's order: mIoU, then the classes in the dataset's
    order (``class_order`` reads it back)."""
    rows: List[dict] = []
    stats: List[dict] = []
    for path in run_files:
        with open(path) as fh:
            result = json.load(fh)
        rows.extend(_rows_from_run(result))
        for ev in result["evals"]:
            for key, value in (ev.get("train") or {}).items():
                stats.append(dict(study=result["study"], variant=result["variant"],
                                  seed=result["seed"], step=int(ev["step"]), stat=key,
                                  value=value))
        last = max(int(ev["step"]) for ev in result["evals"])
        for group, value in (result.get("weight_change") or {}).items():  # at the last step
            stats.append(dict(study=result["study"], variant=result["variant"],
                              seed=result["seed"], step=last, stat=f"weight_change.{group}",
                              value=value))
    with open(pretrain_file) as fh:
        rows.extend(_rows_from_run(json.load(fh)))
    df = pd.DataFrame(rows, columns=["study", "variant", "seed", "step", "class", "IoU"])
    df = df.sort_values(["variant", "seed", "step"], kind="mergesort").reset_index(drop=True)
    _atomic_csv(df, out_csv)
    _atomic_csv(pd.DataFrame(stats, columns=["study", "variant", "seed", "step", "stat",
                                             "value"]), stats_csv)
    return df


def _atomic_csv(df: pd.DataFrame, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)


def paired_comparison(diff: Sequence[float], alpha: float = ALPHA,
                      power: float = POWER) -> Dict[str, Any]:
    """A variant against its control, paired by seed (``diff``: one Δ per seed).

    Returns the mean Δ, its standard deviation over seeds, the 95 % CI (Student t,
    unadjusted), the two-sided p-value of the paired t-test, and the minimum detectable
    effect at level ``alpha`` (``minimum_detectable_effect``: exact, from the noncentral t).
    Deltas that are the same on every seed (no spread: the runs did not move, or differ by
    a rounding step) are marked ``constant`` and get no CI, p-value or MDE: they cannot be
    tested."""
    from scipy import stats

    diff = np.asarray(list(diff), dtype=float)
    n = len(diff)
    nan = float("nan")
    out = dict(pairs=n, delta=float(diff.mean()) if n else nan, sd_delta=nan, ci_low=nan,
               ci_high=nan, p=nan, mde=nan, constant=False)
    if n < 2:
        return out
    sd = float(diff.std(ddof=1))
    out["sd_delta"] = sd
    if sd <= 1e-9 * max(1.0, abs(out["delta"])):
        out["constant"] = True
        return out
    se = sd / math.sqrt(n)
    t_half = float(stats.t.ppf(1 - alpha / 2, n - 1))
    out.update(ci_low=out["delta"] - t_half * se, ci_high=out["delta"] + t_half * se,
               p=float(2 * stats.t.sf(abs(out["delta"]) / se, n - 1)),
               mde=minimum_detectable_effect(sd, n, alpha, power))
    return out


def minimum_detectable_effect(sd: float, n: int, alpha: float = ALPHA,
                              power: float = POWER) -> float:
    """The smallest true paired Δ that a two-sided paired t-test with ``n`` pairs (Δ
    spread ``sd``) at level ``alpha`` detects with probability ``power``: exact. With T
    noncentral t (df = n - 1, noncentrality δ = Δ·√n/sd) the test's power is
    P(T > t_crit) + P(T < -t_crit); δ is its root at ``power`` (scipy's ``brentq``, to
    ~1e-12), and Δ = δ·sd/√n. The usual ``(t_{1-a/2} + t_power)·sd/√n`` understates it
    for few seeds (n = 3, alpha 0.05/6: 6.90 sd instead of 8.02 sd)."""
    if n < 2 or not sd > 0 or not 0 < alpha < power < 1:
        return float("nan")
    return _noncentrality_at_power(int(n), float(alpha), float(power)) * sd / math.sqrt(n)


@functools.lru_cache(maxsize=None)
def _noncentrality_at_power(n: int, alpha: float, power: float) -> float:
    """The noncentrality δ at which the two-sided paired t-test (``n`` pairs, level
    ``alpha``) has power ``power`` (it depends on nothing else: the MDE is δ·sd/√n)."""
    from scipy import optimize, stats

    df = n - 1
    crit = float(stats.t.ppf(1 - alpha / 2, df))

    def gap(nc: float) -> float:
        # P(T > crit) + P(T < -crit); the lower tail as P(T' > crit) for the mirrored
        # noncentrality (the same number: scipy's nct.cdf is NaN far in that tail)
        value = float(stats.nct.sf(crit, df, nc) + stats.nct.sf(crit, df, -nc)) - power
        if value != value:
            raise ArithmeticError(f"noncentral t power is NaN at nc={nc}, df={df}")
        return value

    high = crit + float(stats.t.ppf(power, df))  # the central approximation: a first bracket
    for _ in range(200):
        if gap(high) > 0:
            break
        high *= 1.5
    else:
        raise ArithmeticError(f"no noncentrality reaches power {power} (n={n}, alpha={alpha})")
    return float(optimize.brentq(gap, 0.0, high, xtol=1e-12, rtol=4 * np.finfo(float).eps,
                                 maxiter=1000))


def holm(pvalues: Sequence[float]) -> List[float]:
    """Holm's step-down adjustment of a family of p-values (NaN: a comparison that could
    not be tested; it still counts in the family, which keeps the adjustment conservative)."""
    p = np.asarray(list(pvalues), dtype=float)
    m = len(p)
    adjusted = np.full(m, np.nan)
    order = [i for i in np.argsort(np.where(np.isnan(p), np.inf, p)) if not np.isnan(p[i])]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def verdict(row, alpha: float = ALPHA) -> str:
    """What a row of ``final_table`` (or ``variant_table``) may claim. It follows the
    Holm-adjusted p alone: better / worse where ``p_holm < alpha``; otherwise "no
    difference detected", with the words "after Holm adjustment" where the unadjusted 95 %
    CI excludes 0 (the CI and the verdict then answer different questions, and say so)."""
    if row.get("control") in (None, row["variant"]):
        return "control"
    if pd.isna(row.get("delta")):
        return "not tested (no seed in common with its control)"
    if row.get("constant"):
        return f"same Δ on every seed ({row['delta']:+.2f}): not testable"
    p_holm = row.get("p_holm")
    if pd.notna(p_holm) and p_holm < alpha:
        return "better than its control" if row["delta"] > 0 else "worse than its control"
    mde = row.get("mde_holm", row.get("mde"))
    if pd.isna(mde) or pd.isna(p_holm):
        return "not tested (fewer than 2 seeds)"
    if row["ci_low"] > 0 or row["ci_high"] < 0:
        return (f"no difference detected after Holm adjustment (p_Holm {p_holm:.3f}; the "
                f"unadjusted 95 % CI excludes 0; MDE {mde:.2f})")
    return f"no difference detected (p_Holm {p_holm:.3f}; MDE {mde:.2f})"


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


def dataset_classes(study: Optional[Dict[str, Any]]) -> Optional[List[str]]:
    """The class names of the study's dataset in its label order, where its source module
    declares them without the data: ``CLASS_SETTINGS[classes][0]`` (a source with class
    settings), ``CLASSES`` (one fixed list), ``train_classes()`` (the Cityscapes train ids,
    for the default or ``cityscapes`` setting). None otherwise (the order is then the one
    ``metrics.csv`` keeps: ``class_order``)."""
    dataset = (study or {}).get("dataset") or {}
    if not dataset.get("source"):
        return None
    try:
        from . import data

        module = data.source_module(dataset["source"])
    except (ImportError, ValueError, KeyError):
        return None
    setting = dataset.get("classes")
    settings = getattr(module, "CLASS_SETTINGS", None)
    if isinstance(settings, dict):
        chosen = settings.get(setting if setting is not None else next(iter(settings), None))
        return list(chosen[0]) if chosen else None
    named = getattr(module, "CLASSES", None)
    if isinstance(named, (list, tuple)) and named and all(isinstance(c, str) for c in named):
        return list(named)
    if callable(getattr(module, "train_classes", None)) and setting in (None, "cityscapes"):
        return list(module.train_classes()[0])
    return None


def class_order(df: pd.DataFrame, study: Optional[Dict[str, Any]] = None) -> List[str]:
    """The classes of ``metrics.csv`` (mIoU left out) in the dataset's order: the study's
    source's (``dataset_classes``) where it names them all, else the order of their first
    rows (``aggregate`` keeps the run's, which is the dataset's)."""
    present = [c for c in dict.fromkeys(df["class"]) if c != "mIoU"]
    declared = dataset_classes(study)
    if declared and set(present) <= set(declared):
        return [c for c in declared if c in present]
    return present


def _final_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Every class's IoU at the last step of each run (the pretraining left out)."""
    runs = df[df["variant"] != paths.PRETRAIN]
    last_step = runs.groupby(["variant", "seed"])["step"].transform("max")
    return runs[runs["step"] == last_step]


def per_class_table(df: pd.DataFrame, study: Optional[Dict[str, Any]] = None,
                    aggfunc: str = "mean") -> pd.DataFrame:
    """Final IoU per variant (rows, sorted by name) and class (columns: the dataset's
    order, ``class_order``, then mIoU), ``aggfunc`` over seeds (``mean``, or ``std``:
    sample standard deviation)."""
    table = _final_rows(df).pivot_table(index="variant", columns="class", values="IoU",
                                        aggfunc=aggfunc)
    columns = [c for c in class_order(df, study) if c in table.columns]
    return table[columns + (["mIoU"] if "mIoU" in table.columns else [])]


def table_variant_order(final: pd.DataFrame, variants: Sequence[str] = ()) -> List[tuple]:
    """(experiment, variant) once per variant, in the order the final-mIoU table (the
    grouped ``final_table``) first shows it, a control just before the first variant
    compared with it (under that experiment); then ``variants`` not in the table (none
    compared: experiment "")."""
    out: List[tuple] = []
    seen = set()
    for _, row in final.iterrows():
        for name in (row["control"], row["variant"]):
            if name not in seen:
                seen.add(name)
                out.append((row["experiment"], name))
    out += [("", v) for v in variants if v not in seen]
    return out


def per_class_summary(df: pd.DataFrame, final: pd.DataFrame,
                      labels: Optional[Dict[str, str]] = None,
                      study: Optional[Dict[str, Any]] = None) -> pd.DataFrame:
    """The per-class table as shown (``per_class_iou.md``): one row per variant in the
    final-mIoU table's order (``table_variant_order``; ``final``: the grouped
    ``final_table``), its experiment, label and seeds, and per class (the dataset's order,
    mIoU last) the final IoU in % as "mean ± std" over seeds."""
    mean, std = per_class_table(df, study), per_class_table(df, study, "std")
    counts = _final_rows(df).groupby("variant")["seed"].nunique()
    labels = dict(labels or {})
    study_variants = list((study or {}).get("variants") or [])
    rest = [v for v in study_variants if v in mean.index] + sorted(
        v for v in mean.index if v not in study_variants)
    rows = []
    for experiment, variant in table_variant_order(final, rest):
        if variant not in mean.index:
            continue
        row = {"experiment": experiment, "variant": variant,
               "description": labels.get(variant, variant), "seeds": int(counts[variant])}
        for column in mean.columns:
            m = mean.at[variant, column]
            sd = std.at[variant, column] if column in std.columns and variant in std.index \
                else float("nan")
            row[column] = ("n/a" if pd.isna(m) else
                           f"{m:.2f}" + (f" ± {sd:.2f}" if pd.notna(sd) else ""))
        rows.append(row)
    return pd.DataFrame(rows, columns=["experiment", "variant", "description", "seeds"]
                        + list(mean.columns))


# The files ``write_tables`` writes into a study's table folder (``paths.table``); the
# workflow declares exactly these as the outputs of its ``tables`` rule.
TABLES = ("final_miou.md", "final_miou.tex", "final_miou.csv",
          "per_class_iou.md", "per_class_iou.tex", "findings.json", "findings.md")

# what each statistic of the tables is, stated under every table that shows it (the final
# table, findings.md and the README, the notebook); ``findings.json`` carries them as notes
STAT_NOTES = {
    "delta": "Δ: final mIoU (%) minus its control's, paired by seed",
    "ci": "95 % CI (unadjusted, paired over seeds)",
    "p": "p (Holm): paired t-test, p adjusted by Holm within the experiment",
    "mde": "MDE: the smallest Δ this design detects with 80 % power at that level (exact; "
           "a smaller Δ can still be detected, with less power)",
    "verdict": f"Verdict: better / worse where p (Holm) < {ALPHA:g}, else n.s.; \"n.s. "
               "after Holm\": the unadjusted CI excludes 0, the Holm-adjusted test does not",
}

# what the final-mIoU table's numbers are (below the table, Markdown and LaTeX)
TABLE_NOTES = ". ".join(STAT_NOTES[k] for k in ("delta", "ci", "p", "mde", "verdict")) + (
    ". A variant in several experiments has a row in each.")

# what the per-class table's numbers are (below it)
PER_CLASS_NOTE = ("Final IoU per class in % (mIoU: their mean), mean ± std over seeds at "
                  "the last tuning step; classes in the dataset's order; rows in the order "
                  "of the final-mIoU table, each variant once, under the first experiment "
                  "that shows it (a control just before the first variant compared with it).")


def _short(verdict: str) -> str:
    """The table's short form of a verdict (the slides' summary has the long one); the
    "n.s." whose unadjusted CI excludes 0 says why next to it."""
    for start, word in (("better", "better"), ("worse", "worse"),
                        ("no difference detected after Holm",
                         "n.s. after Holm (CI unadjusted)"),
                        ("no difference", "n.s."), ("same Δ", "untestable"),
                        ("not tested", "untested")):
        if verdict.startswith(start):
            return word
    return ""


def _delta_text(row) -> str:
    if pd.isna(row["delta"]):
        return ""
    if row["constant"]:
        return f"{row['delta']:+.2f} on every seed"
    if pd.isna(row["ci_low"]):
        return f"{row['delta']:+.2f}"
    return f"{row['delta']:+.2f} [{row['ci_low']:+.2f}, {row['ci_high']:+.2f}]"


def group_by_experiment(final: pd.DataFrame,
                        experiments: Optional[Dict[str, Sequence[str]]]) -> pd.DataFrame:
    """``final_table``'s rows grouped by experiment, in the study's order of experiments
    (within one: highest final mIoU first)."""
    order = list(experiments or {}) + [WHOLE_STUDY, UNGROUPED]
    rank = final["experiment"].map(lambda e: order.index(e) if e in order else len(order))
    return final.assign(_rank=rank).sort_values("_rank", kind="mergesort").drop(
        columns="_rank").reset_index(drop=True)


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def findings(df: pd.DataFrame, controls: Optional[Dict[str, str]] = None,
             experiments: Optional[Dict[str, Sequence[str]]] = None,
             labels: Optional[Dict[str, str]] = None,
             final: Optional[pd.DataFrame] = None,
             study: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The study's numbers in machine-readable form (``findings.json``, for the README):
    the seeds, what each statistic is (``notes``: ``STAT_NOTES``), every comparison of
    ``final_table`` (NaN -> null), the reference's Holm-level MDE (``reference_mde``) and
    its control's final mIoU and per-class IoU (mean over seeds; the dataset's class order
    where ``study`` names it). ``final``: the grouped ``final_table``, when the caller has
    it."""
    if final is None:
        final = group_by_experiment(final_table(df, controls, experiments), experiments)
    found = reference_mde(final)
    control = found["control"] if found else CONTROL
    runs = df[df["variant"] != paths.PRETRAIN]
    per_class = per_class_table(df, study)
    classes = [c for c in per_class.columns if c != "mIoU"]
    control_row = per_class.loc[control] if control in per_class.index else None
    columns = list(COMPARISON_COLUMNS) + ["pairs", "family", "constant"]
    return _jsonable(dict(
        study=str(runs["study"].iloc[0]) if len(runs) and "study" in runs else None,
        seeds=sorted(int(s) for s in runs["seed"].unique()),
        alpha=ALPHA, power=POWER,
        notes=dict(STAT_NOTES),
        comparisons=[{k: row[k] for k in columns} for _, row in final.iterrows()],
        labels=dict(labels or {}),
        pretrain=pretrain_plateau(df),
        reference=found,
        control=dict(
            variant=control,
            seeds=int(runs[runs["variant"] == control]["seed"].nunique()),
            final_miou=(control_row.get("mIoU", float("nan"))
                        if control_row is not None else None),
            per_class_iou=({c: control_row.get(c, float("nan")) for c in classes}
                           if control_row is not None else None))))


RARE_CLASSES = ("person", "pole")  # the classes mIoU weighs like road and CE under-serves


def render_findings(found: Dict[str, Any]) -> str:
    """``findings.json`` as a short Markdown summary (``findings.md``; the README includes
    the default study's recorded one between ``README_MARKERS``): the pretraining, the
    control's rare classes, the reference's power, and every comparison's verdict."""
    def num(value, fmt="+.2f"):
        return "n/a" if value is None else format(value, fmt)

    labels = found.get("labels") or {}
    lines = [f"Study `{found.get('study')}`, {len(found['seeds'])} seeds "
             f"({', '.join(str(s) for s in found['seeds'])})."]
    pre = found.get("pretrain")
    if pre:
        lines.append(
            f"- CE pretraining: {pre['final']:.2f} mIoU at iteration {pre['final_step']}; "
            f"its last quarter added {pre['gain']:+.2f} points "
            f"({'a plateau' if pre['converged'] else 'NOT converged'}: under "
            f"{PLATEAU_POINTS:g} counts as one).")
    control = found.get("control") or {}
    per_class = control.get("per_class_iou") or {}
    if per_class:
        rare = [c for c in RARE_CLASSES if c in per_class]
        frequent = [v for c, v in per_class.items() if c not in rare and v is not None]
        rare_text = ", ".join(f"{c} {num(per_class[c], '.2f')}" for c in rare)
        mean_text = (f"; the other classes' mean {sum(frequent) / len(frequent):.2f}"
                     if frequent else "")
        lines.append(f"- The control (`{control['variant']}`) ends at "
                     f"{num(control.get('final_miou'), '.2f')} mIoU; its rare classes: "
                     f"{rare_text or 'none'} IoU{mean_text}.")
    ref = found.get("reference")
    if ref:
        lines.append(
            f"- The reference (`{ref['variant']}`) vs `{ref['control']}`: Δ "
            f"{ref['delta']:+.2f} [{ref['ci_low']:+.2f}, {ref['ci_high']:+.2f}] mIoU, "
            f"p (Holm) {ref['p_holm']:.3f}; the smallest Δ this design detects with "
            f"{ref['power'] * 100:g} % power at its Holm level (α = {ref['alpha']:.4f}, family of "
            f"{ref['family']} in experiment `{ref['experiment']}`) is "
            f"**{ref['mde_holm']:.2f} mIoU**.")
    lines += ["", render_comparisons(found)]
    return "\n".join(lines)


def _p_text(p) -> str:
    if p is None or pd.isna(p):
        return ""
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


# the reader's comparison table (findings.md, the README, the notebook): its columns
READER_COLUMNS = ("experiment", "variant", "Δ mIoU vs control [95 % CI]", "p (Holm)",
                  "MDE (80 % power)", "verdict")


def reader_table(found: Dict[str, Any]) -> pd.DataFrame:
    """``findings.json``'s comparisons as a reader reads them, rounded text: experiment;
    the variant's label (with " vs <its control>" where that is not ``CONTROL``); Δ and its
    95 % CI; p (Holm); the Holm-level MDE; the short verdict (``READER_COLUMNS``). The full
    numbers are ``final_miou.csv``."""
    labels = found.get("labels") or {}

    def num(value, fmt="+.2f"):
        return "n/a" if value is None or pd.isna(value) else format(value, fmt)

    rows = []
    for row in found["comparisons"]:
        name = labels.get(row["variant"], row["variant"])
        if row.get("control") not in (None, CONTROL):
            name += f" vs {labels.get(row['control'], row['control'])}"
        if row.get("constant"):
            delta = f"{num(row.get('delta'))} on every seed"
        elif row.get("ci_low") is not None and not pd.isna(row["ci_low"]):
            delta = f"{num(row['delta'])} [{num(row['ci_low'])}, {num(row['ci_high'])}]"
        else:
            delta = num(row.get("delta"))
        mde = row.get("mde_holm")
        rows.append((row["experiment"], name, delta, _p_text(row.get("p_holm")),
                     "" if mde is None or pd.isna(mde) else f"{mde:.2f}",
                     _short(row["verdict"])))
    return pd.DataFrame(rows, columns=list(READER_COLUMNS))


def render_comparisons(found: Dict[str, Any]) -> str:
    """``reader_table`` in Markdown with what its statistics are under it (the notes of
    ``findings.json``)."""
    notes = found.get("notes") or {}
    text = ". ".join(notes[k] for k in ("delta", "ci", "p", "mde", "verdict") if k in notes)
    return _markdown(reader_table(found), notes=text + "." if text else None)


def conclusion(found: Dict[str, Any]) -> str:
    """One paragraph from ``findings.json``: how many variants beat, lose to or do not
    differ detectably from their control (a variant counts as better or worse only where
    it is in every experiment that shows it, as ``variant_table`` says), the largest gain
    and loss, the reference's Δ and its Holm-level MDE, the control's final mIoU."""
    labels = found.get("labels") or {}
    by_variant: Dict[str, List[dict]] = {}
    for row in found["comparisons"]:
        by_variant.setdefault(row["variant"], []).append(row)

    def outcome(rows):
        words = {_short(r["verdict"]).split(" ")[0] for r in rows}
        if words in ({"better"}, {"worse"}):
            return words.pop()
        return "untested" if words <= {"untested", "untestable"} else "n.s."

    def strictest(rows):  # the row with the largest Holm p: what holds in every experiment
        return max(rows, key=lambda r: -1.0 if r.get("p_holm") is None else r["p_holm"])

    def said(row):
        return (f"*{labels.get(row['variant'], row['variant'])}*, Δ {row['delta']:+.2f} "
                f"mIoU [95 % CI {row['ci_low']:+.2f}, {row['ci_high']:+.2f}] vs "
                f"*{labels.get(row['control'], row['control'])}*, p (Holm) "
                f"{_p_text(row['p_holm'])}")

    outcomes = {v: outcome(rows) for v, rows in by_variant.items()}
    count = {k: sum(o == k for o in outcomes.values())
             for k in ("better", "worse", "n.s.", "untested")}
    seeds = found.get("seeds") or []
    control = found.get("control") or {}
    start = (f"Study `{found.get('study')}`: {len(outcomes)} variants compared with their "
             f"control over {len(seeds)} seeds (paired by seed; paired t-tests, p adjusted "
             f"by Holm within each experiment)")
    if control.get("final_miou") is not None:
        start += (f"; the control, *{labels.get(control['variant'], control['variant'])}*, "
                  f"ends at {control['final_miou']:.2f} mIoU")
    parts = [start + ".",
             f"{count['better']} {'is' if count['better'] == 1 else 'are'} better than their "
             f"control in every experiment that shows them, {count['worse']} worse, and "
             f"{count['n.s.']} show no difference this design can detect"
             + (f"; {count['untested']} could not be tested" if count["untested"] else "")
             + "."]
    better = [strictest(by_variant[v]) for v, o in outcomes.items() if o == "better"]
    worse = [strictest(by_variant[v]) for v, o in outcomes.items() if o == "worse"]
    if better:
        parts.append("The largest gain: " + said(max(better, key=lambda r: r["delta"])) + ".")
    else:
        parts.append("No variant beats its control.")
    if worse:
        parts.append("The largest loss: " + said(min(worse, key=lambda r: r["delta"])) + ".")
    ref = found.get("reference")
    if ref:
        parts.append(
            f"The reference configuration, *{labels.get(ref['variant'], ref['variant'])}*, "
            f"vs *{labels.get(ref['control'], ref['control'])}*: Δ {ref['delta']:+.2f} mIoU "
            f"[{ref['ci_low']:+.2f}, {ref['ci_high']:+.2f}]; the smallest Δ this design "
            f"detects with {ref['power'] * 100:g} % power at its Holm level is "
            f"{ref['mde_holm']:.2f} mIoU, so smaller effects can go unseen.")
    return " ".join(parts)


README_MARKERS = ("<!-- findings: generated from {path}; do not edit by hand -->",
                  "<!-- end of findings -->")


def readme_block(readme_text: str) -> Optional[str]:
    """The generated findings block of a README (between ``README_MARKERS``), or None."""
    start = readme_text.find("<!-- findings: generated from ")
    end = readme_text.find(README_MARKERS[1])
    if start < 0 or end < start:
        return None
    return readme_text[readme_text.index("\n", start) + 1:end]


def update_readme(readme: str, findings_json: str) -> bool:
    """Rewrite the README's findings block from ``findings_json`` (``findings.md`` as
    ``render_findings`` makes it); True when it changed. The README must hold the markers."""
    with open(readme) as fh:
        text = fh.read()
    old = readme_block(text)
    if old is None:
        raise ValueError(f"{readme}: no findings block (a line starting "
                         f"'<!-- findings: generated from ' and a line "
                         f"{README_MARKERS[1]!r})")
    with open(findings_json) as fh:
        new = render_findings(json.load(fh))
    start = text.find("<!-- findings: generated from ")
    head = README_MARKERS[0].format(path=findings_json)
    updated = text[:start] + head + "\n" + new + text[text.find(README_MARKERS[1]):]
    if updated != text:
        write_text_atomic(readme, updated)
    return updated != text


def write_tables(df: pd.DataFrame, out_dir: str, labels: Dict[str, str],
                 controls: Optional[Dict[str, str]] = None,
                 experiments: Optional[Dict[str, Sequence[str]]] = None,
                 study: Optional[Dict[str, Any]] = None) -> List[str]:
    """The final-mIoU table (Markdown, LaTeX, and its numbers as CSV: one row per
    (experiment, variant) comparison, grouped by experiment, Holm within each), the
    per-class IoU table (Markdown, LaTeX) and ``findings.json`` into ``out_dir``: the files
    named in ``TABLES``. ``study``: the study dict, whose experiments are used when
    ``experiments`` is not given. Prints the reference's Holm-level MDE (one line: the
    workflow's log of its ``tables`` rule)."""
    if experiments is None and study is not None:
        from .study import as_resolved as resolve

        experiments = resolve(study).experiments
    final = group_by_experiment(final_table(df, controls, experiments), experiments)
    means = {r["variant"]: (r["mean"], r["std"])
             for r in variant_table(df, controls, experiments, final).to_dict("records")}

    def control_text(name):
        mean, std = means.get(name, (float("nan"), float("nan")))
        return f"{name} ({_fmt(mean)} ± {_fmt(std)})"

    shown = pd.DataFrame({
        "experiment": final["experiment"],
        "variant": final["variant"],
        "description": [labels.get(v, v) for v in final["variant"]],
        "seeds": final["n"],
        "final mIoU (%, mean ± std)": [f"{m:.2f} ± {s:.2f}" for m, s in zip(final["mean"], final["std"])],
        "control (its mIoU)": [control_text(c) for c in final["control"]],
        "Δ vs control [95 % CI]": [_delta_text(row) for _, row in final.iterrows()],
        "p (Holm)": [("< 0.001" if p < 0.001 else f"{p:.3f}") if pd.notna(p) else ""
                     for p in final["p_holm"]],
        "MDE (80 % power)": [f"{m:.2f}" if pd.notna(m) else "" for m in final["mde_holm"]],
        "verdict": [_short(v) for v in final["verdict"]],
    })
    per_class = per_class_summary(df, final, labels, study)
    texts = {
        "final_miou.md": _markdown(shown, notes=TABLE_NOTES),
        "final_miou.tex": _latex(shown, notes=TABLE_NOTES, group="experiment"),
        "final_miou.csv": final.to_csv(index=False),
        "per_class_iou.md": _markdown(per_class, notes=PER_CLASS_NOTE),
        "per_class_iou.tex": _latex(per_class, notes=PER_CLASS_NOTE, group="experiment"),
    }
    found = findings(df, controls, experiments, labels, final, study)
    texts["findings.json"] = json.dumps(found, indent=1, ensure_ascii=False) + "\n"
    texts["findings.md"] = render_findings(found)
    assert sorted(texts) == sorted(TABLES), "TABLES names what write_tables writes"
    written = []
    for name in TABLES:
        path = os.path.join(out_dir, name)
        write_text_atomic(path, texts[name])
        written.append(path)
    print(reference_line(reference_mde(final)))
    return written


def markdown_table(table: pd.DataFrame, notes: Optional[str] = None) -> str:
    """``table`` as a Markdown table (cells as ``_fmt`` writes them), ``notes`` (what its
    numbers are) as a paragraph under it."""
    return _markdown(table, notes)


def _markdown(table: pd.DataFrame, notes: Optional[str] = None) -> str:
    cols = [str(c) for c in table.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(_fmt(v) for v in row.values) + " |")
    if notes:
        lines += ["", notes]
    return "\n".join(lines) + "\n"


def _latex(table: pd.DataFrame, notes: Optional[str] = None,
           group: Optional[str] = None) -> str:
    """A tabular; ``group``: a column whose change of value starts a new block (a rule);
    ``notes``: a paragraph below it."""
    def esc(text) -> str:  # LaTeX's specials; < and > are math (text mode prints ¡ ¿)
        for plain, latex in (("_", r"\_"), ("%", r"\%"), ("±", r"$\pm$"), ("Δ", r"$\Delta$"),
                             ("<", r"$<$"), (">", r"$>$")):
            text = str(text).replace(plain, latex)
        return text

    cols = [esc(c) for c in table.columns]
    lines = [r"\begin{tabular}{" + "l" * len(cols) + "}", r"\hline", " & ".join(cols) + r" \\",
             r"\hline"]
    previous = None
    for i, (_, row) in enumerate(table.iterrows()):
        if group is not None and i and row[group] != previous:
            lines.append(r"\hline")
        previous = row[group] if group is not None else None
        lines.append(" & ".join(esc(_fmt(v)) for v in row.values) + r" \\")
    lines += [r"\hline", r"\end{tabular}"]
    if notes:
        lines += [r"\par\smallskip{\footnotesize " + esc(notes) + r"\par}"]
    return "\n".join(lines) + "\n"


def _fmt_delta(value) -> str:
    return f"{value:+.2f}" if value == value else "n/a"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.2f}" if value == value else "n/a"
    return str(value)


def _study_settings(metrics_csv: str) -> tuple:
    """The controls and experiments of the study whose ``metrics.csv`` this is (its
    ``study.yaml`` beside); ({}, None) without one."""
    from .study import as_resolved as resolve

    path = os.path.join(os.path.dirname(os.path.abspath(metrics_csv)), "study.yaml")
    if not os.path.isfile(path):
        return {}, None
    import yaml

    with open(path) as fh:
        study = yaml.safe_load(fh)
    resolved = resolve(study)
    return resolved.controls, resolved.experiments


def overview(metrics_files: Sequence[str], out_md: Optional[str] = None) -> pd.DataFrame:
    """One row per study that has results (``results/<study>/metrics.csv``): final mIoU of
    the control, the best variant (only one that beats its control under the test
    Holm-adjusted within each experiment it is in; "none" otherwise), its paired Δ and
    95 % CI, and how many variants are better / worse than their control (one row per
    variant: ``variant_table``)."""
    rows = []
    for path in sorted(metrics_files):
        study = os.path.basename(os.path.dirname(os.path.abspath(path)))
        table = variant_table(pd.read_csv(path), *_study_settings(path))
        control = table[table["variant"] == CONTROL]
        name = best_variant(table)
        best = table[table["variant"] == name].iloc[0] if name else None
        rows.append(dict(
            study=study, variants=len(table), seeds=int(table["n"].max()),
            control=float(control["mean"].iloc[0]) if len(control) else float("nan"),
            best=best["variant"] if best is not None else "none",
            best_mean=float(best["mean"]) if best is not None else float("nan"),
            delta=float(best.get("delta", float("nan"))) if best is not None else float("nan"),
            ci=(f"[{best['ci_low']:+.2f}, {best['ci_high']:+.2f}]"
                if best is not None and "ci_low" in best and best["ci_low"] == best["ci_low"]
                else "n/a"),
            above=int((table["verdict"] == "better than its control").sum()),
            below=int((table["verdict"] == "worse than its control").sum())))
    df = pd.DataFrame(rows)
    if out_md:
        lines = ["| study | variants | seeds | control mIoU | best variant | its mIoU | "
                 "Δ vs control | 95 % CI | better / worse than control (Holm within "
                 "experiments) |",
                 "|---|---:|---:|---:|---|---:|---:|---|---|"]
        for r in rows:
            lines.append(f"| {r['study']} | {r['variants']} | {r['seeds']} | "
                         f"{_fmt(r['control'])} | {r['best']} | {_fmt(r['best_mean'])} | "
                         f"{_fmt_delta(r['delta'])} | {r['ci']} | {r['above']} / {r['below']} |")
        write_text_atomic(out_md, "\n".join(lines) + "\n")
    return df
