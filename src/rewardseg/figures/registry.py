"""The figure registry: :func:`figure` registers a function, :func:`names`, :func:`resolve`,
:func:`build` and :func:`draw` find, build and write a study's figures."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..vocabulary import experiment_question
from .predictions import load_predictions
from .style import save

# What a figure may need: the study's metrics.csv, its train_stats.csv, and the
# predictions.npz of the qualitative panel (:func:`qualitative_predictions`).
NEEDS = ("metrics", "stats", "predictions")
NEED_FILES = {"metrics": "metrics.csv", "stats": "train_stats.csv",
              "predictions": "predictions.npz"}
_FIELD = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class FigureSpec:
    pattern: str                    # file stem: "delta_vs_control", "exp_{experiment}"
    fn: Callable[..., Any]          # (study, <needs>, [<field>=value]) -> Figure
    needs: Tuple[str, ...]
    caption: str                    # one sentence; a family's ``{field}`` is filled in
    each: Optional[Callable[[dict], List[str]]] = None  # a family's values for a study
    dpi: int = 130
    title: str = ""                 # its slide's heading when the deck template lacks it

    @property
    def heading(self) -> str:
        """The heading of the slide the deck makes for it (``rewardseg.slides``)."""
        return self.title or self.pattern.replace("_", " ").capitalize()

    @property
    def field(self) -> Optional[str]:
        found = _FIELD.findall(self.pattern)
        return found[0] if found else None

    @property
    def rule(self) -> str:
        """The workflow rule that draws it: ``figure_delta_vs_control``,
        ``figure_exp_experiment``."""
        return "figure_" + re.sub(r"\W", "", self.pattern)

    def names(self, study: dict) -> List[str]:
        """The figure names this entry gives for a study."""
        if self.field is None:
            return [self.pattern]
        return [self.pattern.format(**{self.field: value}) for value in self.each(study)]

    def match(self, name: str) -> Optional[Dict[str, str]]:
        """The family's keyword for ``name`` ({} for a plain figure), or None."""
        if self.field is None:
            return {} if name == self.pattern else None
        head, tail = self.pattern.split("{" + self.field + "}")
        found = re.fullmatch(re.escape(head) + r"(?P<v>.+)" + re.escape(tail), name)
        return {self.field: found.group("v")} if found else None

    def caption_for(self, study: str, **values: str) -> str:
        """The caption, its fields filled in; a family of experiments' also gets the
        experiment's ``{question}`` (``vocabulary.experiment_question``)."""
        extra = {"question": experiment_question(values["experiment"])} \
            if "experiment" in values else {}
        return self.caption.format(study=study, **values, **extra)


FIGURES: Dict[str, FigureSpec] = {}


def figure(pattern: str, needs: Tuple[str, ...] = ("metrics",), caption: str = "",
           each: Optional[Callable[[dict], List[str]]] = None, dpi: int = 130,
           title: str = ""):
    """Register a figure function under ``pattern`` (the file stem under
    ``figures/<study>/``). ``caption``: one sentence for the snakemake report (``{study}``
    and a family's ``{field}`` are filled in), also under the figure on its slide;
    ``title``: that slide's heading (default: the pattern in words), for a figure the deck
    template (``paper/slides.md``) does not place itself."""
    unknown = set(needs) - set(NEEDS)
    if unknown:
        raise ValueError(f"figure {pattern!r}: unknown needs {sorted(unknown)}; "
                         f"choose from {NEEDS}")
    fields = _FIELD.findall(pattern)
    if len(fields) > 1 or (fields and each is None) or (each is not None and not fields):
        raise ValueError(f"figure {pattern!r}: a family has exactly one {{field}} and an "
                         "`each`; a plain figure has neither")
    if not re.fullmatch(r"[A-Za-z0-9_]+", _FIELD.sub("x", pattern)):
        raise ValueError(f"figure {pattern!r}: letters, digits and _ only")
    if not caption.strip():
        raise ValueError(f"figure {pattern!r}: give a one-sentence caption")

    def register(fn):
        if pattern in FIGURES and FIGURES[pattern].fn is not fn:
            raise ValueError(f"figure {pattern!r} is registered twice")
        FIGURES[pattern] = FigureSpec(pattern, fn, tuple(needs), caption.strip(), each, dpi,
                                      title.strip())
        return fn

    return register


def names(study: dict) -> List[str]:
    """Every figure name of a study (families expanded)."""
    return [name for spec in FIGURES.values() for name in spec.names(study)]


def resolve(name: str) -> Tuple[FigureSpec, Dict[str, str]]:
    """The registry entry of a figure name and the family keyword it carries."""
    for spec in FIGURES.values():
        values = spec.match(name)
        if values is not None:
            return spec, values
    raise ValueError(f"unknown figure {name!r}; registered: {', '.join(FIGURES)}")


def build(name: str, study: dict, metrics=None, stats=None, predictions=None):
    """The Figure ``name`` of a study. ``metrics`` / ``stats``: a path to metrics.csv /
    train_stats.csv or the DataFrame read from it; ``predictions``: a path to
    predictions.npz or the arrays loaded from it (:func:`load_predictions`)."""
    import pandas as pd

    spec, values = resolve(name)
    given = dict(metrics=metrics, stats=stats, predictions=predictions)
    kwargs: Dict[str, Any] = {}
    for need in spec.needs:
        value = given[need]
        if value is None:
            raise ValueError(f"figure {name!r} needs {need} (the study's "
                             f"{NEED_FILES[need]})")
        if isinstance(value, (str, os.PathLike)):
            value = load_predictions(value) if need == "predictions" else pd.read_csv(value)
        kwargs[need] = value
    return spec.fn(study, **kwargs, **values)


def draw(name: str, study: dict, out_png: str, metrics=None, stats=None,
         predictions=None) -> List[str]:
    """Build figure ``name`` and write it (PNG + PDF); returns the paths written."""
    spec, _ = resolve(name)
    fig = build(name, study, metrics=metrics, stats=stats, predictions=predictions)
    return save(fig, out_png, dpi=spec.dpi)
