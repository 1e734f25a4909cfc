"""The final tables of a study (``TABLES``): final mIoU and per-class IoU in Markdown,
LaTeX and CSV, and ``findings.json`` / ``findings.md``."""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence

import pandas as pd

from ..fileio import write_text_atomic
from .classes import per_class_summary
from .comparisons import (final_table, group_by_experiment, reference_line, reference_mde,
                          variant_table)
from .formatting import STAT_NOTES, _delta_text, _fmt, _latex, _markdown, _short
from .report import findings, render_findings

# The files ``write_tables`` writes into a study's table folder (``paths.table``); the
# workflow declares exactly these as the outputs of its ``tables`` rule.
TABLES = ("final_miou.md", "final_miou.tex", "final_miou.csv",
          "per_class_iou.md", "per_class_iou.tex", "findings.json", "findings.md")

# what the final-mIoU table's numbers are (below the table, Markdown and LaTeX)
TABLE_NOTES = ". ".join(STAT_NOTES[k] for k in ("delta", "ci", "p", "mde", "verdict")) + (
    ". A variant in several experiments has a row in each.")

# what the per-class table's numbers are (below it)
PER_CLASS_NOTE = ("Final IoU per class in % (mIoU: their mean), mean ± std over seeds at "
                  "the last tuning step; classes in the dataset's order; rows in the order "
                  "of the final-mIoU table, each variant once, under the first experiment "
                  "that shows it (a control just before the first variant compared with it).")


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
        from ..study import as_resolved as resolve

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
