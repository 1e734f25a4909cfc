"""The study's findings: ``findings.json``, its Markdown summary (``findings.md``) with the
reader's comparison table, and the README's generated block."""
from __future__ import annotations

import json
import math
from typing import Any, Dict, Optional, Sequence

import numpy as np
import pandas as pd

from .. import paths
from ..fileio import write_text_atomic
from .classes import per_class_table
from .comparisons import (COMPARISON_COLUMNS, CONTROL, PLATEAU_POINTS, final_table,
                          group_by_experiment, pretrain_plateau, reference_mde)
from .formatting import STAT_NOTES, _markdown, _p_text, _short
from .stats import ALPHA, POWER


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
