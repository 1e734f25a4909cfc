"""``meta.json``: the one record every dataset source writes, last and atomically.

Its existence marks a prepared dataset as complete (the workflow's data rule has it as
output, and the training rules as input). Every source writes the same keys
(:data:`KEYS`); a source adds its own facts (synthetic: image counts and class
frequencies; Mapillary: version, unmapped names; ...) next to them, never in place of
them. Readers: the study check (``classes``), ``rewardseg class-weights`` through the
workflow (``train_labels``, ``label_suffix``, ``classes``), the qualitative figure
(``img_suffix``, ``label_suffix``, ``classes``, ``palette``).
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional, Sequence

from ..fileio import write_json_atomic

FILENAME = "meta.json"
#: 2: one dialect for every source (1: the synthetic generator's own)
FORMAT_VERSION = 2
IGNORE_INDEX = 255

#: the keys every meta.json has, in this order
KEYS = ("format_version", "source", "class_setting", "classes", "num_classes", "palette",
        "ignore_index", "img_dir", "label_dir", "img_suffix", "label_suffix", "train_labels",
        "splits", "license")


def make_meta(source: str, classes: Sequence[str], palette: Sequence[Sequence[int]],
              splits: Dict[str, int], img_dir: str, label_dir: str, img_suffix: str,
              label_suffix: str, license: str, class_setting: Optional[str] = None,
              **extra: Any) -> Dict[str, Any]:
    """The meta dict: :data:`KEYS` first, then the source's own ``extra`` facts.

    ``splits``: images per split; ``img_dir`` / ``label_dir``: folders (relative to the
    dataset root) holding one folder per split; ``train_labels`` is
    ``<label_dir>/train``, the folder ``rewardseg class-weights`` reads."""
    classes = [str(c) for c in classes]
    palette = [[int(v) for v in colour] for colour in palette]
    if len(palette) != len(classes):
        raise ValueError(f"meta.json of {source}: {len(classes)} classes but "
                         f"{len(palette)} palette colours")
    if not splits or not all(isinstance(n, int) and n >= 0 for n in splits.values()):
        raise ValueError(f"meta.json of {source}: splits must map split names to image "
                         f"counts, got {splits!r}")
    clash = sorted(set(extra) & set(KEYS))
    if clash:
        raise ValueError(f"meta.json of {source}: {', '.join(clash)} "
                         f"{'is a common key' if len(clash) == 1 else 'are common keys'}, "
                         "not a source's own")
    meta = {
        "format_version": FORMAT_VERSION,
        "source": source,
        "class_setting": class_setting,
        "classes": classes,
        "num_classes": len(classes),
        "palette": palette,
        "ignore_index": IGNORE_INDEX,
        "img_dir": img_dir,
        "label_dir": label_dir,
        "img_suffix": img_suffix,
        "label_suffix": label_suffix,
        "train_labels": f"{label_dir}/train",
        "splits": {str(k): int(v) for k, v in splits.items()},
        "license": license,
    }
    meta.update(extra)
    return meta


def write_meta(root: str, source: str, classes: Sequence[str],
               palette: Sequence[Sequence[int]], splits: Dict[str, int], img_dir: str,
               label_dir: str, img_suffix: str, label_suffix: str, license: str,
               class_setting: Optional[str] = None, **extra: Any) -> Dict[str, Any]:
    """Write ``root/meta.json`` (a temporary name renamed into place) and return it.
    Call it last: the file says the dataset is complete."""
    meta = make_meta(source, classes, palette, splits, img_dir, label_dir, img_suffix,
                     label_suffix, license, class_setting=class_setting, **extra)
    write_json_atomic(os.path.join(root, FILENAME), meta)
    return meta


def load_meta(root: str) -> Dict[str, Any]:
    """``root/meta.json`` of a prepared dataset ({} when it is not there yet)."""
    path = os.path.join(root, FILENAME)
    if not os.path.isfile(path):
        return {}
    with open(path) as fh:
        return json.load(fh)
