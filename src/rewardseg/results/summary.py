"""A study in one paragraph (``conclusion``, from ``findings.json``) and the studies side by
side (``overview``, from their ``metrics.csv``)."""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence

import pandas as pd

from ..fileio import write_text_atomic
from .comparisons import CONTROL, best_variant, variant_table
from .formatting import _fmt, _fmt_delta, _p_text, _short


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


def _study_settings(metrics_csv: str) -> tuple:
    """The controls and experiments of the study whose ``metrics.csv`` this is (its
    ``study.yaml`` beside); ({}, None) without one."""
    from ..study import as_resolved as resolve

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
