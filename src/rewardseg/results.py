"""Results: a finished run's evaluations -> its result JSON; every run's -> one tidy table
(``metrics.csv``); the statistics and tables drawn from it (figures are ``figures``)."""
from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, Iterable, List, Optional, Sequence

import numpy as np
import pandas as pd

from . import paths
from .fileio import write_json_atomic, write_text_atomic

# every comparison: two-sided paired t-test at this level, Holm-adjusted over the study's
# comparisons; the minimum detectable effect is for this power
ALPHA = 0.05
POWER = 0.8
CONTROL = "control"


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
    training statistics per evaluation interval -> ``train_stats.csv``."""
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
    df = df.sort_values(["variant", "seed", "step", "class"]).reset_index(drop=True)
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

    Returns the mean Δ, its standard deviation over seeds, the 95 % CI (Student t), the
    two-sided p-value of the paired t-test, and the minimum detectable effect: the true Δ
    this many seeds would detect with probability ``power`` at level ``alpha``, given the
    observed spread, ``(t_{1-a/2} + t_{power}) · sd / √n``. Deltas that are the same on
    every seed (no spread: the runs did not move, or differ by a rounding step) are marked
    ``constant`` and get no CI, p-value or MDE: they cannot be tested."""
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
    """The true paired Δ that ``n`` seeds with spread ``sd`` detect with probability
    ``power`` in a two-sided t-test at level ``alpha``: ``(t_{1-a/2} + t_power)·sd/√n``."""
    from scipy import stats

    if n < 2 or not sd > 0:
        return float("nan")
    return ((float(stats.t.ppf(1 - alpha / 2, n - 1)) + float(stats.t.ppf(power, n - 1)))
            * sd / math.sqrt(n))


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
    """What a row of ``final_table`` may claim."""
    if row.get("control") in (None, row["variant"]) or pd.isna(row.get("delta")):
        return "control"
    if row.get("constant"):
        return f"same Δ on every seed ({row['delta']:+.2f}): not testable"
    if pd.notna(row.get("p_holm")) and row["p_holm"] < alpha:
        return "better than its control" if row["delta"] > 0 else "worse than its control"
    mde = row.get("mde_holm", row.get("mde"))
    if pd.isna(mde):
        return "not tested (fewer than 2 seeds)"
    return f"no difference detected (MDE {mde:.2f})"


def final_table(df: pd.DataFrame, controls: Optional[Dict[str, str]] = None) -> pd.DataFrame:
    """Final mIoU per variant (mean ± std over seeds) and its comparison with its control
    (``controls``: variant -> its control, default ``control``; a control maps to itself):
    Δ paired by seed, 95 % CI, paired t-test p-value, Holm-adjusted over every comparison
    of the table, minimum detectable effect at 80 % power (``mde`` at ``ALPHA``;
    ``mde_holm`` at ``ALPHA / comparisons``, the strictest level Holm tests at, so that
    "no difference detected" is stated at the level the verdicts use), and the verdict."""
    controls = dict(controls or {})
    miou = df[(df["class"] == "mIoU") & (df["variant"] != paths.PRETRAIN)]
    last = miou.loc[miou.groupby(["variant", "seed"])["step"].idxmax()]
    final = last.pivot(index="seed", columns="variant", values="IoU")
    out = []
    is_control = {c for v, c in controls.items() if c != v}
    for variant in final.columns:
        values = final[variant].dropna()
        control = variant if variant in is_control else controls.get(variant, CONTROL)
        row = dict(variant=variant, control=control, n=len(values), mean=values.mean(),
                   std=values.std(ddof=1) if len(values) > 1 else float("nan"))
        if control != variant and control in final.columns:
            row.update(paired_comparison((final[variant] - final[control]).dropna()))
        else:
            row["control"] = variant
        out.append(row)
    table = pd.DataFrame(out)
    for col in ("delta", "sd_delta", "ci_low", "ci_high", "p", "mde"):
        if col not in table:
            table[col] = float("nan")
    table["constant"] = table.get("constant", False)
    table["constant"] = table["constant"].fillna(False).astype(bool)
    compared = table["control"] != table["variant"]
    table["p_holm"] = float("nan")
    table.loc[compared, "p_holm"] = holm(table.loc[compared, "p"])
    # the MDE at the level the verdicts use: Holm's strictest step, alpha / comparisons
    family = max(1, int(compared.sum()))
    table["mde_holm"] = [
        minimum_detectable_effect(row["sd_delta"], int(row["pairs"]), ALPHA / family)
        if c and not row["constant"] and pd.notna(row.get("pairs")) else float("nan")
        for c, (_, row) in zip(compared, table.iterrows())]
    table["verdict"] = [verdict(row) for _, row in table.iterrows()]
    return table.sort_values("mean", ascending=False).reset_index(drop=True)


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
    """The variant that beats its control by the most (adjusted test), or None."""
    better = table[table["verdict"] == "better than its control"]
    return None if better.empty else str(better.sort_values("delta").iloc[-1]["variant"])


def per_class_table(df: pd.DataFrame) -> pd.DataFrame:
    last_step = df[df["variant"] != paths.PRETRAIN].groupby(["variant", "seed"])["step"].transform("max")
    sub = df[(df["variant"] != paths.PRETRAIN)]
    sub = sub[sub["step"] == last_step]
    return sub.pivot_table(index="variant", columns="class", values="IoU", aggfunc="mean")


# The files ``write_tables`` writes into a study's table folder (``paths.table``); the
# workflow declares exactly these as the outputs of its ``tables`` rule.
TABLES = ("final_miou.md", "final_miou.tex", "final_miou.csv",
          "per_class_iou.md", "per_class_iou.tex")


def _short(verdict: str) -> str:
    """The table's one-word form of a verdict (the slides' summary has the long one)."""
    for start, word in (("better", "better"), ("worse", "worse"), ("no difference", "n.s."),
                        ("same Δ", "untestable"), ("not tested", "untested")):
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


def write_tables(df: pd.DataFrame, out_dir: str, labels: Dict[str, str],
                 controls: Optional[Dict[str, str]] = None) -> List[str]:
    """The final-mIoU table (Markdown, LaTeX, and its numbers as CSV) and the per-class IoU
    table (Markdown, LaTeX) into ``out_dir``: the files named in ``TABLES``."""
    final = final_table(df, controls)
    shown = pd.DataFrame({
        "variant": final["variant"],
        "description": [labels.get(v, v) for v in final["variant"]],
        "seeds": final["n"],
        "final mIoU (%)": [f"{m:.2f} ± {s:.2f}" for m, s in zip(final["mean"], final["std"])],
        "control": [c if c != v else "" for v, c in zip(final["variant"], final["control"])],
        "Δ vs control (95% CI)": [_delta_text(row) for _, row in final.iterrows()],
        "p (Holm)": [f"{p:.3f}" if pd.notna(p) else "" for p in final["p_holm"]],
        "MDE (80 %, Holm)": [f"{m:.2f}" if pd.notna(m) else "" for m in final["mde_holm"]],
        "verdict": [_short(v) for v in final["verdict"]],
    })
    per_class = per_class_table(df).round(2).reset_index()
    texts = {}
    for name, table in (("final_miou", shown), ("per_class_iou", per_class)):
        texts[f"{name}.md"] = _markdown(table)
        texts[f"{name}.tex"] = _latex(table)
    texts["final_miou.csv"] = final.to_csv(index=False)
    assert sorted(texts) == sorted(TABLES), "TABLES names what write_tables writes"
    written = []
    for name in TABLES:
        path = os.path.join(out_dir, name)
        write_text_atomic(path, texts[name])
        written.append(path)
    return written


def _markdown(table: pd.DataFrame) -> str:
    cols = [str(c) for c in table.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(_fmt(v) for v in row.values) + " |")
    return "\n".join(lines) + "\n"


def _latex(table: pd.DataFrame) -> str:
    esc = lambda s: str(s).replace("_", r"\_").replace("%", r"\%").replace("±", r"$\pm$").replace("Δ", r"$\Delta$")  # noqa: E731
    cols = [esc(c) for c in table.columns]
    lines = [r"\begin{tabular}{" + "l" * len(cols) + "}", r"\hline", " & ".join(cols) + r" \\",
             r"\hline"]
    for _, row in table.iterrows():
        lines.append(" & ".join(esc(_fmt(v)) for v in row.values) + r" \\")
    lines += [r"\hline", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def _fmt_delta(value) -> str:
    return f"{value:+.2f}" if value == value else "n/a"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.2f}" if value == value else "n/a"
    return str(value)


def _study_controls(metrics_csv: str) -> Dict[str, str]:
    """The controls of the study whose ``metrics.csv`` this is (its ``study.yaml`` beside)."""
    from .study import controls

    path = os.path.join(os.path.dirname(os.path.abspath(metrics_csv)), "study.yaml")
    if not os.path.isfile(path):
        return {}
    import yaml

    with open(path) as fh:
        return controls(yaml.safe_load(fh))


def overview(metrics_files: Sequence[str], out_md: Optional[str] = None) -> pd.DataFrame:
    """One row per study that has results (``results/<study>/metrics.csv``): final mIoU of
    the control, the best variant (only one that beats its control under the Holm-adjusted
    test; "none" otherwise), its paired Δ and 95 % CI, and how many variants are better /
    worse than their control. Written as Markdown when ``out_md`` is given."""
    rows = []
    for path in sorted(metrics_files):
        study = os.path.basename(os.path.dirname(os.path.abspath(path)))
        table = final_table(pd.read_csv(path), _study_controls(path))
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
                 "Δ vs control | 95 % CI | better / worse than control (Holm) |",
                 "|---|---:|---:|---:|---|---:|---:|---|---|"]
        for r in rows:
            lines.append(f"| {r['study']} | {r['variants']} | {r['seeds']} | "
                         f"{_fmt(r['control'])} | {r['best']} | {_fmt(r['best_mean'])} | "
                         f"{_fmt_delta(r['delta'])} | {r['ci']} | {r['above']} / {r['below']} |")
        write_text_atomic(out_md, "\n".join(lines) + "\n")
    return df
