"""Build the report deck (Marp markdown) of a study from ``paper/slides.md``.

The template holds ``{{key}}`` placeholders (study settings), ``<!-- include: PATH -->``
lines (a generated table, path relative to ``paper/``), ``<!-- experiments -->`` (one
slide per experiment figure), ``<!-- figures -->`` (a slide for each registered figure the
template does not show) and ``<!-- summary -->`` (the final comparison in words).
Image paths are rewritten relative to the built deck's folder.
"""
from __future__ import annotations

import html as html_mod
import os
import re
from typing import Dict, List, Optional

import pandas as pd

from . import paths
from .data import describe
from .results import ALPHA, PLATEAU_POINTS, best_variant, pretrain_plateau, variant_table
from .runconfig import pretrain_spec
from .study import (as_resolved as resolve, labels as variant_labels, released_checkpoints,
                    tuning_fields)
from .vocabulary import experiment_title

_IMG = re.compile(r"(!\[[^\]]*\]\()([^)]+)(\))")


def _plateau(metrics: pd.DataFrame, start: Optional[int] = None) -> str:
    """Whether the CE pretraining converged, and (``start``: the reference's tuning start)
    how far below its end the checkpoint the tuning starts from is."""
    found = pretrain_plateau(metrics)
    if found is None:
        return "n/a (fewer than two pretraining evaluations)"
    verdict = "converged" if found["converged"] else "**not converged**"
    text = (f"final mIoU {found['final']:.2f} at {found['final_step']}; the last quarter "
            f"(from {found['step']}) added {found['gain']:+.2f} points → {verdict} "
            f"(criterion < {PLATEAU_POINTS:g})")
    pre = metrics[(metrics["variant"] == paths.PRETRAIN) & (metrics["class"] == "mIoU")]
    at_start = pre[pre["step"] == start]["IoU"]
    if start is not None and start < found["final_step"] and len(at_start):
        text += (f"; the tuning starts at {start} ({at_start.iloc[0]:.2f}), where CE still "
                 f"gains {found['final'] - at_start.iloc[0]:+.2f} by {found['final_step']}")
    return text


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
        if pre.get("class_weight_smoothing") is not None:
            pretrain += (f"; **class-weighted** CE (weights 1/(n_c + s·N), s = "
                         f"{pre['class_weight_smoothing']:g}: plain CE does not learn the "
                         f"rare classes here)")
    return {
        "study": study["study"], "num_seeds": str(len(study["seeds"])),
        "seeds": ", ".join(map(str, study["seeds"])), "dataset": dataset,
        "model": study["model"]["config"], "pretrain_desc": pretrain,
        "start": str(ref["start"]), "iters": str(ref["iters"]), "lr": f"{ref['lr']:g}",
        "min_lr": f"{ref['min_lr']:g}", "loss": ref["loss"], "baseline": ref["baseline"],
        "estimators": estimators_text(study), "alpha": f"{ALPHA:g}",
    }


def _values_of(found) -> str:
    """Values as words: ``4``, ``1 or 4``, ``1, 2 or 4``."""
    found = [f"{v:g}" if isinstance(v, float) else str(v) for v in found]
    return found[0] if len(found) == 1 else ", ".join(found[:-1]) + " or " + found[-1]


def estimators_text(study: dict) -> str:
    """The deck's description of each estimator (``{{estimators}}``): the vocabulary's
    words, with the study's values of the fields that ``models.losses.RewardLoss`` reads
    (α, the samples per image, ``normalize``) and the code's default baseline."""
    from .vocabulary import (BASELINE_WORDS, BASELINES, DEFAULT_BASELINE,
                             ESTIMATOR_DESCRIPTIONS, ESTIMATOR_SOURCES, ESTIMATOR_TITLES,
                             ESTIMATORS, NORMALIZE, NORMALIZE_LOGP, NORMALIZE_WORDS, SAMPLING)

    reference = tuning_fields(study)
    resolved = resolve(study)
    fields = [resolved.fields(v) for v in resolved.variants]
    parts = []
    for estimator in ESTIMATORS:
        mine = [f for f in fields if f["loss"] == estimator] or [reference]
        normalize = [n for n in NORMALIZE if any(f["normalize"] == n for f in mine)]
        samples = sorted({int(f["num_samples"]) for f in mine})
        alpha = sorted({float(f["alpha"]) for f in mine})
        text = ESTIMATOR_DESCRIPTIONS[estimator].format(
            alpha=_values_of(alpha), k=_values_of(samples),
            logp=NORMALIZE_LOGP[normalize[0]],
            normalize="; ".join(NORMALIZE_WORDS[n] for n in normalize))
        if estimator in SAMPLING and len(BASELINES[estimator]) > 1:
            names = [f"**{BASELINE_WORDS[b]}** (default)" if b == DEFAULT_BASELINE[estimator]
                     else BASELINE_WORDS[b] for b in BASELINES[estimator]]
            text += " Baselines $b$: " + " · ".join(names) + "."
        parts.append(f"**{ESTIMATOR_TITLES[estimator]}** ({ESTIMATOR_SOURCES[estimator]}): "
                     + text)
    return "\n\n".join(parts)


EXPERIMENT_CAPTION = ("Mean over {seeds} seeds, 95 % CI bands; dash-dotted: CE pretraining "
                      "on its own schedule, dotted: its level at the start.")


def _summary(metrics: pd.DataFrame, labels: Dict[str, str], controls: Dict[str, str],
             experiments: Optional[Dict[str, List[str]]] = None) -> str:
    """The comparisons in words: what the tests, Holm-adjusted within each experiment,
    allow to say, strongest evidence first, one line per variant (a variant in several
    experiments: its largest adjusted p); the headline names a variant only if it beats
    its control in every experiment it is in."""
    table = variant_table(metrics, controls, experiments)
    best = best_variant(table)
    head = [f"**Best variant: {labels.get(best, best)}**" if best else
            f"**No variant beats its control** (paired t-tests, Holm-adjusted within each "
            f"experiment, level {ALPHA})"]
    rows = table[table["control"] != table["variant"]].sort_values("p_holm", na_position="last")
    lines = []
    for _, row in rows.iterrows():
        several = (f" (the largest over its {len(row['experiments'].split(', '))} experiments)"
                   if ", " in str(row["experiments"]) else "")
        p = "< 0.001" if row["p_holm"] < 0.001 else f"{row['p_holm']:.3f}"
        ci = (f" [{row['ci_low']:+.2f}, {row['ci_high']:+.2f}] (95 % CI, unadjusted), "
              f"p_Holm {p}{several}" if pd.notna(row["ci_low"]) else "")
        verdict = row["verdict"]
        if verdict.startswith("no difference detected"):  # its p_Holm is said already
            verdict = ("no difference detected after Holm adjustment (the unadjusted CI "
                       "excludes 0)" if "after Holm" in verdict else "no difference detected")
            verdict += f", MDE {row['mde_holm']:.2f}"
        lines.append(f"- {labels.get(row['variant'], row['variant'])}: Δ {row['delta']:+.2f}"
                     f"{ci} → {verdict}")
    shown = lines[:7]
    more = len(lines) - len(shown)
    return "\n".join(head + shown + ([f"- … and {more} more (table above)"] if more > 0 else []))


def split_table(markdown: str, rows: int, heading: str = "") -> str:
    """A Markdown table of more than ``rows`` rows as several slides (the header repeated,
    the slide's heading marked "continued"), so that no slide runs past its bottom. Text
    below the table (what its numbers are) is repeated under each part."""
    lines = markdown.strip().splitlines()
    end = next((i for i, line in enumerate(lines) if not line.startswith("|")), len(lines))
    table, notes = lines[:end], "\n".join(lines[end:]).strip()
    head, body = table[:2], table[2:]
    chunks = [body[i:i + rows] for i in range(0, len(body), rows)] or [[]]
    if notes:  # in the table's own small type: the definitions must not push it off the slide
        notes = f'<p style="font-size: 14px; line-height: 1.3">{html_mod.escape(notes)}</p>'
    parts = ["\n".join(head + chunk) + (f"\n\n{notes}" if notes else "") for chunk in chunks]
    more = f"\n\n---\n\n{heading} (continued)\n\n" if heading else "\n\n---\n\n"
    return more.join(parts) + "\n"


_SRC = re.compile(r'(<img\b[^>]*?\bsrc=")([^"]+)(")')


def embed_images(html_path: str) -> int:
    """Put every local image of a rendered deck into the HTML itself (``data:`` URIs), so
    that the file can be moved, mailed or uploaded alone. Returns how many were embedded."""
    import base64
    import html as html_mod
    import mimetypes
    from urllib.parse import unquote

    base = os.path.dirname(os.path.abspath(html_path))
    with open(html_path) as fh:
        text = fh.read()
    embedded = []

    def embed(match):
        target = html_mod.unescape(match.group(2))
        if target.startswith("data:") or re.match(r"^[a-z]+://", target):
            return match.group(0)
        path = os.path.normpath(os.path.join(base, unquote(target)))
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{html_path}: image {target!r} not found ({path})")
        mime = mimetypes.guess_type(path)[0] or "application/octet-stream"
        with open(path, "rb") as fh:
            data = base64.b64encode(fh.read()).decode()
        embedded.append(path)
        return f"{match.group(1)}data:{mime};base64,{data}{match.group(3)}"

    text = _SRC.sub(embed, text)
    tmp = html_path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, html_path)
    return len(embedded)


def _figure_slides(text: str, name: str) -> str:
    """A slide for each registered figure (``rewardseg.figures``) that the template does
    not show itself (no ``<name>.png`` in it), in registry order: its ``title``, the
    figure, its caption. So a new figure reaches the deck with nothing else to edit; the
    experiment families have their own slides (``<!-- experiments -->``). ``name``: the
    study's, for the captions."""
    from .figures import FIGURES

    slides = []
    for spec in FIGURES.values():
        if spec.field is not None or f"/{spec.pattern}.png" in text:
            continue
        caption = spec.caption_for(name).replace("``", "")
        slides.append(f"\n\n---\n\n# {spec.heading}\n\n"
                      f"![h:440](../{paths.figure('{{study}}', spec.pattern)})\n\n"
                      f'<p class="caption">{html_mod.escape(caption)}</p>')
    return "".join(slides)


def build_slides(template: str, study: dict, metrics_csv: str, out: str,
                 paper_dir: str = "paper", overview: Optional[str] = None) -> str:
    with open(template) as fh:
        text = fh.read()
    if overview and os.path.isfile(overview):
        with open(overview) as fh:
            text = text.replace("<!-- overview -->", fh.read())
    else:
        text = text.replace("<!-- overview -->", "Only this study has results so far.")
    resolved = resolve(study)
    labels = variant_labels(resolved)
    exp_slides = []
    caption = EXPERIMENT_CAPTION.format(seeds=len(study["seeds"]))
    for name in resolved.experiments:  # the figure's legend lists the variants, one a line
        exp_slides.append(f"\n---\n\n# {experiment_title(name)}\n\n"
                          f"![h:440](../{paths.figure('{{study}}', 'exp_' + name)})\n\n"
                          f'<p class="caption">{html_mod.escape(caption)}</p>\n')
    text = text.replace("<!-- experiments -->", "".join(exp_slides))
    text = text.replace("<!-- figures -->", _figure_slides(text, resolved.name))
    metrics = pd.read_csv(metrics_csv)
    text = text.replace("<!-- summary -->", _summary(metrics, labels, resolved.controls,
                                                     resolved.experiments))
    text = text.replace("{{plateau}}", _plateau(metrics, tuning_fields(study)["start"]))
    for key, value in _values(study).items():
        text = text.replace("{{" + key + "}}", value)

    def include(match):
        path = os.path.join(paper_dir, match.group(1).strip())
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{template}: included file {path!r} does not exist")
        with open(path) as fh:
            body = fh.read()
        rows = int(match.group(2) or 0)
        if not rows:
            return body
        heading = [line for line in text[: match.start()].splitlines() if line.startswith("# ")]
        return split_table(body, rows, heading[-1] if heading else "")

    text = re.sub(r"<!--\s*include:\s*(\S+?)(?:\s+rows=(\d+))?\s*-->", include, text)
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
