"""How the tables read: what each statistic is (``STAT_NOTES``), cells and short verdicts,
Markdown and LaTeX tables."""
from __future__ import annotations

from typing import Optional

import pandas as pd

from .stats import ALPHA

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


def _p_text(p) -> str:
    if p is None or pd.isna(p):
        return ""
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


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
