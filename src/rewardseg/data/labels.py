"""Label-map helpers shared by the dataset preparations: lookup tables, all-or-nothing
conversion of index PNGs (temporary name, then rename), directory symlinks, image/label
pairing, and the meta.json of such a tree (:mod:`rewardseg.data.meta`)."""
from __future__ import annotations

import os
import shutil
from typing import Dict, List, Sequence, Tuple

import numpy as np

from .archive import DataError
from .meta import IGNORE_INDEX, write_meta

IMG_SUFFIX = ".jpg"
LABEL_SUFFIX = ".png"

#: convert with a process pool from this many label files on
POOL_MIN_FILES = 200


def make_lut(mapping: Dict[int, int], default: int = IGNORE_INDEX) -> np.ndarray:
    """A 256-entry uint8 lookup table: ``lut[raw] = mapping.get(raw, default)``."""
    lut = np.full(256, default, dtype=np.uint8)
    for raw, new in mapping.items():
        lut[int(raw)] = int(new)
    return lut


def _read_index_image(path: str) -> np.ndarray:
    """The pixel values (palette indices for a ``P`` image) as a 2-D integer array."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            arr = np.asarray(img)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: unreadable label image ({err})") from None
    if arr.ndim == 3:
        if not (arr[..., :3] == arr[..., :1]).all():
            raise DataError(f"{path}: a colour label image; expected one class index "
                            "per pixel (an L or P mode PNG)")
        arr = arr[..., 0]
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)  # 16-bit: values > 255 -> 255
    return arr


def _convert_one(task: Tuple[str, str, bytes]) -> None:
    from PIL import Image

    src, dst, lut = task
    out = np.frombuffer(lut, dtype=np.uint8)[_read_index_image(src)]
    tmp = dst + ".tmp"
    Image.fromarray(out, mode="L").save(tmp, format="PNG")
    os.replace(tmp, dst)


def convert_labels(jobs: Sequence[Tuple[str, str]], lut: np.ndarray, out_dir: str,
                   progress: bool = True, desc: str = "labels",
                   workers: int = 0) -> int:
    """Write ``lut[label]`` for every ``(src, dst)`` in ``jobs`` (all ``dst`` in
    ``out_dir``), each to a temporary name renamed into place. Files that are already up
    to date (same table, newer than their source) are kept; anything else in ``out_dir``
    is removed. ``workers``: processes, 0 for automatic (a pool of up to 8 from
    :data:`POOL_MIN_FILES` files on). Returns the number of files converted."""
    from tqdm import tqdm

    if os.path.islink(out_dir) or os.path.isfile(out_dir):
        os.remove(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    lut_bytes = np.asarray(lut, dtype=np.uint8).tobytes()
    stamp = os.path.join(out_dir, ".lut")
    same_table = False
    if os.path.isfile(stamp):
        with open(stamp) as fh:
            same_table = fh.read().strip() == lut_bytes.hex()
        os.remove(stamp)
    wanted = {os.path.basename(dst) for _, dst in jobs}
    for entry in os.scandir(out_dir):
        if entry.name not in wanted:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.remove(entry.path)
    todo = []
    for src, dst in jobs:
        if (same_table and os.path.isfile(dst)
                and os.path.getmtime(dst) >= os.path.getmtime(src)):
            continue
        todo.append((src, dst, lut_bytes))
    if not workers:
        workers = min(8, os.cpu_count() or 1) if len(todo) >= POOL_MIN_FILES else 1
    with tqdm(total=len(todo), desc=desc, unit="file", disable=not progress,
              mininterval=1.0) as bar:
        if workers > 1 and len(todo) > 1:
            import multiprocessing

            with multiprocessing.Pool(workers) as pool:
                for _ in pool.imap_unordered(_convert_one, todo, chunksize=8):
                    bar.update(1)
        else:
            for task in todo:
                _convert_one(task)
                bar.update(1)
    with open(stamp, "w") as fh:
        fh.write(lut_bytes.hex())
    return len(todo)


def symlink_dir(src: str, link: str) -> None:
    """Make ``link`` a symlink to the directory ``src`` (absolute), replacing whatever
    ``link`` was."""
    src = os.path.abspath(src)
    if os.path.islink(link) or os.path.isfile(link):
        os.remove(link)
    elif os.path.isdir(link):
        shutil.rmtree(link)
    os.makedirs(os.path.dirname(os.path.abspath(link)), exist_ok=True)
    tmp = link + ".tmp-link"
    if os.path.lexists(tmp):
        os.remove(tmp)
    os.symlink(src, tmp, target_is_directory=True)
    os.replace(tmp, link)


def list_files(directory: str, suffix: str) -> List[str]:
    """Sorted names in ``directory`` ending with ``suffix`` (hidden files skipped)."""
    if not os.path.isdir(directory):
        return []
    return sorted(n for n in os.listdir(directory)
                  if n.endswith(suffix) and not n.startswith("."))


def pair_labels(img_dir: str, ann_dir: str, split: str, hint: str = "") -> List[str]:
    """The image stems of ``img_dir`` after checking that each has ``ann_dir/<stem>.png``;
    a DataError names the directory for an empty split or missing annotations."""
    images = list_files(img_dir, IMG_SUFFIX)
    if not images:
        raise DataError(f"{img_dir}: no {IMG_SUFFIX} images for split {split!r}{hint}")
    stems = [n[:-len(IMG_SUFFIX)] for n in images]
    have = set(list_files(ann_dir, LABEL_SUFFIX))
    missing = [s + LABEL_SUFFIX for s in stems if s + LABEL_SUFFIX not in have]
    if missing:
        raise DataError(f"{ann_dir}: no annotation for {len(missing)} of {len(stems)} "
                        f"images of split {split!r} (e.g. {', '.join(missing[:3])}){hint}")
    return stems


def convert_split(ann_dir: str, out_dir: str, stems: Sequence[str], lut: np.ndarray,
                  progress: bool = True, desc: str = "labels", workers: int = 0) -> int:
    """:func:`convert_labels` for ``ann_dir/<stem>.png`` -> ``out_dir/<stem>.png``."""
    jobs = [(os.path.join(ann_dir, s + LABEL_SUFFIX), os.path.join(out_dir, s + LABEL_SUFFIX))
            for s in stems]
    return convert_labels(jobs, lut, out_dir, progress=progress, desc=desc, workers=workers)


def write_label_meta(root: str, source: str, classes: Sequence[str], palette, splits: Dict,
                     label_dir: str, class_setting: str, license: str, **extra) -> Dict:
    """``root/meta.json`` (:func:`rewardseg.data.meta.write_meta`: last, atomically) of an
    ``images/`` + ``labels_*/`` tree; returns it."""
    return write_meta(root, source, classes, palette, splits, img_dir="images",
                      label_dir=label_dir, img_suffix=IMG_SUFFIX, label_suffix=LABEL_SUFFIX,
                      license=license, class_setting=class_setting, **extra)
