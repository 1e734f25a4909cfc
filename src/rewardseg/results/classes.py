"""Per-class IoU: the classes in the dataset's order and the per-class tables."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import pandas as pd

from .. import paths


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
        from .. import data

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
