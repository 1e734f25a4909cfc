"""Build the report deck (Marp markdown) of a study from ``paper/slides.md``.

The template holds ``{{key}}`` placeholders (study settings), ``<!-- include: PATH -->``
lines (a generated table, path relative to ``paper/``), ``<!-- experiments -->`` (one
slide per experiment figure) and ``<!-- summary -->`` (the final comparison in words).
Image paths are rewritten relative to the built deck's folder.
"""
from __future__ import annotations

import os
import re
from typing import Dict, Optional

import pandas as pd

from . import paths
from .data import describe
from .results import final_table
from .runconfig import pretrain_spec
from .study import experiments, labels as variant_labels, released_checkpoints, tuning_fields

_IMG = re.compile(r"(!\[[^\]]*\]\()([^)]+)(\))")


def _values(study: dict) -> Dict[str, str]:
    ref = tuning_fields(study)
    data = study["dataset"]
    pre = pretrain_spec(study)
    dataset = f"`{data['name']}`: {describe(data)}"
    released = released_checkpoints(study)
    if released:
        pretrain = ("released CE checkpoints at iterations "
                    + ", ".join(map(str, released)) + " (downloaded, verified, evaluated)")
    else:
        pretrain = (f"{pre['iters']} iterations, LR {pre['lr']} poly, "
                    f"checkpoints every {pre['checkpoint_interval']}")
    return {
        "study": study["study"], "num_seeds": str(len(study["seeds"])),
        "seeds": ", ".join(map(str, study["seeds"])), "dataset": dataset,
        "model": study["model"]["config"], "pretrain_desc": pretrain,
        "start": str(ref["start"]), "iters": str(ref["iters"]), "lr": f"{ref['lr']:g}",
        "min_lr": f"{ref['min_lr']:g}", "loss": ref["loss"], "baseline": ref["baseline"],
    }


def _summary(metrics_csv: str, labels: Dict[str, str]) -> str:
    table = final_table(pd.read_csv(metrics_csv))
    lines = []
    for _, row in table.iterrows():
        if row["variant"] == "control" or "delta" not in row:
            continue
        lo, hi = row.get("ci_low"), row.get("ci_high")
        if pd.notna(lo) and lo > 0:
            verdict = "better than the control"
        elif pd.notna(hi) and hi < 0:
            verdict = "worse than the control"
        else:
            verdict = "not distinguishable from the control"
        lines.append(f"- {labels.get(row['variant'], row['variant'])}: Δ {row['delta']:+.2f} "
                     f"[{lo:+.2f}, {hi:+.2f}] → {verdict}")
    head = lines[:8]
    more = len(lines) - len(head)
    return "\n".join(head + ([f"- … and {more} more (table above)"] if more > 0 else []))


def build_slides(template: str, study: dict, metrics_csv: str, out: str,
                 paper_dir: str = "paper", overview: Optional[str] = None) -> str:
    with open(template) as fh:
        text = fh.read()
    if overview and os.path.isfile(overview):
        with open(overview) as fh:
            text = text.replace("<!-- overview -->", fh.read())
    else:
        text = text.replace("<!-- overview -->", "Only this study has results so far.")
    labels = variant_labels(study)
    exp_slides = []
    for name, variants in experiments(study).items():
        shown = ", ".join(labels[v] for v in variants)
        exp_slides.append(f"\n---\n\n# {name.replace('_', ' ').capitalize()}\n\n"
                          f"![h:470](../{paths.figure('{{study}}', 'exp_' + name)})\n\n"
                          f"<small>{shown}</small>\n")
    text = text.replace("<!-- experiments -->", "".join(exp_slides))
    text = text.replace("<!-- summary -->", _summary(metrics_csv, labels))
    for key, value in _values(study).items():
        text = text.replace("{{" + key + "}}", value)

    def include(match):
        path = os.path.join(paper_dir, match.group(1).strip())
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{template}: included file {path!r} does not exist")
        with open(path) as fh:
            return fh.read()

    text = re.sub(r"<!--\s*include:\s*(.+?)\s*-->", include, text)
    out_dir = os.path.dirname(os.path.abspath(out))

    def relink(match):
        target = match.group(2)
        if re.match(r"^[a-z]+://", target) or os.path.isabs(target):
            return match.group(0)
        absolute = os.path.abspath(os.path.join(paper_dir, target))
        return match.group(1) + os.path.relpath(absolute, out_dir) + match.group(3)

    text = _IMG.sub(relink, text)
    missing = re.findall(r"\{\{(\w+)\}\}", text)
    if missing:
        raise ValueError(f"{template}: unknown placeholder {{{{{missing[0]}}}}}")
    os.makedirs(out_dir, exist_ok=True)
    tmp = out + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, out)
    return out
