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

# two-sided 95 % Student-t quantiles by degrees of freedom (no scipy needed)
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262, 10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}


def t975(df: int) -> float:
    if df < 1:
        return float("nan")
    keys = sorted(k for k in _T975 if k <= df)
    return _T975[keys[-1]] if df <= 30 else 1.96


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
                  spec=spec, evals=evals, provenance={k: record[k] for k in (
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


def final_table(df: pd.DataFrame, control: str = "control") -> pd.DataFrame:
    """Final mIoU per variant: mean ± std over seeds, Δ vs control paired by seed, 95 % CI."""
    miou = df[(df["class"] == "mIoU") & (df["variant"] != paths.PRETRAIN)]
    last = miou.loc[miou.groupby(["variant", "seed"])["step"].idxmax()]
    final = last.pivot(index="seed", columns="variant", values="IoU")
    out = []
    for variant in final.columns:
        values = final[variant].dropna()
        row = dict(variant=variant, n=len(values), mean=values.mean(),
                   std=values.std(ddof=1) if len(values) > 1 else float("nan"))
        if control in final.columns:
            diff = (final[variant] - final[control]).dropna()
            n = len(diff)
            row["delta"] = diff.mean()
            half = (t975(n - 1) * diff.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
            row["ci_low"], row["ci_high"] = row["delta"] - half, row["delta"] + half
        out.append(row)
    table = pd.DataFrame(out).sort_values("mean", ascending=False).reset_index(drop=True)
    return table


def per_class_table(df: pd.DataFrame) -> pd.DataFrame:
    last_step = df[df["variant"] != paths.PRETRAIN].groupby(["variant", "seed"])["step"].transform("max")
    sub = df[(df["variant"] != paths.PRETRAIN)]
    sub = sub[sub["step"] == last_step]
    return sub.pivot_table(index="variant", columns="class", values="IoU", aggfunc="mean")


# The files ``write_tables`` writes into a study's table folder (``paths.table``); the
# workflow declares exactly these as the outputs of its ``tables`` rule.
TABLES = ("final_miou.md", "final_miou.tex", "final_miou.csv",
          "per_class_iou.md", "per_class_iou.tex")


def write_tables(df: pd.DataFrame, out_dir: str, labels: Dict[str, str]) -> List[str]:
    """The final-mIoU table (Markdown, LaTeX, and its numbers as CSV) and the per-class IoU
    table (Markdown, LaTeX) into ``out_dir``: the files named in ``TABLES``."""
    final = final_table(df)
    shown = pd.DataFrame({
        "variant": final["variant"],
        "description": [labels.get(v, v) for v in final["variant"]],
        "seeds": final["n"],
        "final mIoU (%)": [f"{m:.2f} ± {s:.2f}" for m, s in zip(final["mean"], final["std"])],
        "Δ vs control (95% CI)": [
            f"{d:+.2f} [{lo:+.2f}, {hi:+.2f}]" if np.isfinite(lo) else f"{d:+.2f}"
            for d, lo, hi in zip(final.get("delta", np.nan), final.get("ci_low", np.nan),
                                 final.get("ci_high", np.nan))],
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


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def overview(metrics_files: Sequence[str], out_md: Optional[str] = None) -> pd.DataFrame:
    """One row per study that has results (``results/<study>/metrics.csv``): final mIoU of
    the control, the best variant, its paired Δ and 95 % CI, and how many variants are
    credibly above / below the control. Written as Markdown when ``out_md`` is given."""
    rows = []
    for path in sorted(metrics_files):
        study = os.path.basename(os.path.dirname(os.path.abspath(path)))
        table = final_table(pd.read_csv(path))
        control = table[table["variant"] == "control"]
        others = table[table["variant"] != "control"]
        best = others.iloc[0] if len(others) else None
        rows.append(dict(
            study=study, variants=len(table), seeds=int(table["n"].max()),
            control=float(control["mean"].iloc[0]) if len(control) else float("nan"),
            best=best["variant"] if best is not None else "",
            best_mean=float(best["mean"]) if best is not None else float("nan"),
            delta=float(best.get("delta", float("nan"))) if best is not None else float("nan"),
            ci=(f"[{best['ci_low']:+.2f}, {best['ci_high']:+.2f}]"
                if best is not None and "ci_low" in best and best["ci_low"] == best["ci_low"]
                else "n/a"),
            above=int((others.get("ci_low", pd.Series(dtype=float)) > 0).sum()),
            below=int((others.get("ci_high", pd.Series(dtype=float)) < 0).sum())))
    df = pd.DataFrame(rows)
    if out_md:
        lines = ["| study | variants | seeds | control mIoU | best variant | its mIoU | "
                 "Δ vs control | 95 % CI | above / below control |",
                 "|---|---:|---:|---:|---|---:|---:|---|---|"]
        for r in rows:
            lines.append(f"| {r['study']} | {r['variants']} | {r['seeds']} | "
                         f"{_fmt(r['control'])} | {r['best']} | {_fmt(r['best_mean'])} | "
                         f"{r['delta']:+.2f} | {r['ci']} | {r['above']} / {r['below']} |")
        write_text_atomic(out_md, "\n".join(lines) + "\n")
    return df
