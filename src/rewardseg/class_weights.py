"""Class weights from label counts, as in the original study's utility.

``w_c = 1 / (n_c + s * N)`` with ``n_c`` the pixel count of class ``c``, ``N`` the total
number of labelled pixels and ``s`` the smoothing; the weights are then rescaled to sum
to the number of classes ``C``. The report used ``s = 0.05`` and ``s = 0.005``.
"""
from __future__ import annotations

import glob
import json
import os
from typing import Iterable, List, Optional, Sequence

import numpy as np

from . import paths

DEFAULT_SUFFIX = "_labelTrainIds.png"


def class_weights(counts: Sequence[float], smoothing: float) -> List[float]:
    """Weights ``(C,)`` from per-class pixel counts (see module docstring)."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError("counts: expected a non-empty 1-D sequence of class counts")
    if np.any(counts < 0):
        raise ValueError("counts: class counts must be >= 0")
    if smoothing < 0:
        raise ValueError(f"smoothing: must be >= 0, got {smoothing}")
    total = counts.sum()
    denom = counts + smoothing * total
    if np.any(denom <= 0):
        raise ValueError("counts: a class has no pixels and smoothing is 0, so its weight "
                         "would be infinite; use smoothing > 0")
    weights = 1.0 / denom
    weights = weights * counts.size / weights.sum()
    return weights.tolist()


def find_label_files(root: str, suffix: str = DEFAULT_SUFFIX) -> List[str]:
    if not os.path.isdir(root):
        raise FileNotFoundError(f"label folder {root!r} does not exist")
    files = sorted(glob.glob(os.path.join(root, "**", f"*{suffix}"), recursive=True))
    if not files:
        raise FileNotFoundError(f"no label maps matching '*{suffix}' under {root!r}")
    return files


def count_labels(files: Iterable[str], num_classes: int, ignore_index: int = 255,
                 progress: bool = True) -> np.ndarray:
    """Pixel count per class ``(C,)`` over label PNGs; ``ignore_index`` is skipped and
    any other value outside ``[0, C)`` is an error naming the file."""
    from PIL import Image
    from tqdm import tqdm

    files = list(files)
    counts = np.zeros(num_classes, dtype=np.int64)
    for path in tqdm(files, desc="counting labels", unit="img", disable=not progress):
        with Image.open(path) as im:
            label = np.asarray(im)
        if label.ndim != 2:
            raise ValueError(f"{path}: expected a single-channel label map, got shape "
                             f"{label.shape}")
        values = label[label != ignore_index].astype(np.int64).ravel()
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{path}: label value {int(values.max())} outside [0, "
                             f"{num_classes}) and not ignore_index {ignore_index}")
        counts += np.bincount(values, minlength=num_classes)
    return counts


def write_class_weights(root: str, num_classes: int, smoothing: float,
                        out: Optional[str] = None, suffix: str = DEFAULT_SUFFIX,
                        ignore_index: int = 255, progress: bool = True) -> str:
    """Count labels under ``root``, write ``out`` (JSON) and ``out`` with ``.npy``.

    The JSON holds ``weights``, ``counts`` and the parameters; RewardLoss reads it
    directly (``class_weight='path.json'``), mmseg's CrossEntropyLoss reads the ``.npy``.
    Both are written to temporary names first and renamed, so a crash leaves no
    half-written file.
    """
    files = find_label_files(root, suffix)
    counts = count_labels(files, num_classes, ignore_index, progress)
    weights = class_weights(counts, smoothing)
    if out is None:
        out = paths.class_weights(root, smoothing)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    record = {"num_classes": num_classes, "smoothing": smoothing, "ignore_index": ignore_index,
              "num_files": len(files), "counts": counts.tolist(), "weights": weights}
    tmp = f"{out}.tmp-{os.getpid()}"
    with open(tmp, "w") as fh:
        json.dump(record, fh, indent=2)
    npy = os.path.splitext(out)[0] + ".npy"
    tmp_npy = f"{npy}.tmp-{os.getpid()}.npy"
    np.save(tmp_npy, np.asarray(weights, dtype=np.float32))
    os.replace(tmp_npy, npy)
    os.replace(tmp, out)
    return out
