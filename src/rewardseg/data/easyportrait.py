"""EasyPortrait (hukenovs/easyportrait, CC BY-SA 4.0): download, extract, convert labels.

The dataset is published as two zip archives, ``images.zip`` (``train/``, ``val/``,
``test/`` folders of ``.jpg``) and ``annotations.zip`` (the same folders with one ``.png``
per image, plus a ``meta.zip`` we do not need). Member names may or may not start with
an ``images/`` / ``annotations/`` component; both are handled.

Annotation values and the two class settings:

=====  ==========  ================  ==========
value  meaning     ``face_parsing``  ``portrait``
=====  ==========  ================  ==========
0      background  0 background      0 background
1      person      0 background      1 person
2      skin        1 skin            1 person
3      left brow   2 left brow       1 person
4      right brow  3 right brow      1 person
5      left eye    4 left eye        1 person
6      right eye   5 right eye       1 person
7      lips        6 lips            1 person
8      teeth       7 teeth           1 person
>8     (invalid)   255 ignore        255 ignore
=====  ==========  ================  ==========

Layout written under ``root``::

    images/<split>/*.jpg                 extracted (or symlinked split dirs of a local copy)
    annotations/<split>/*.png            the raw annotations, same
    labels_<classes>/<split>/*.png       converted, single-channel uint8
    meta.json                            written last: the dataset is complete

The label-conversion helpers here (:func:`convert_labels`, :func:`symlink_dir`) are
shared with the Mapillary Vistas preparation.
"""
from __future__ import annotations

import json
import os
import shutil
import zipfile
from collections import Counter
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .archive import DataError, check_zip, download, extract_zip, remove_meta, write_json_atomic

#: Short links from the project's README; they redirect to the archives.
DEFAULT_URLS = {
    "images.zip": "https://sc.link/LNLr",
    "annotations.zip": "https://sc.link/wPGX",
}
ARCHIVES = (("images.zip", "images"), ("annotations.zip", "annotations"))
ALL_SPLITS = ("train", "val", "test")
IMG_SUFFIX = ".jpg"
LABEL_SUFFIX = ".png"
IGNORE_INDEX = 255

#: class setting -> (class names, palette, {raw value: class index}); other values -> 255
CLASS_SETTINGS = {
    "face_parsing": (
        ["background", "skin", "left brow", "right brow", "left eye", "right eye", "lips",
         "teeth"],
        [[0, 0, 0], [223, 87, 188], [160, 221, 255], [130, 106, 237], [200, 121, 255],
         [255, 183, 255], [0, 144, 193], [113, 137, 255]],  # = models.datasets' METAINFO
        {0: 0, 1: 0, 2: 1, 3: 2, 4: 3, 5: 4, 6: 5, 7: 6, 8: 7},
    ),
    "portrait": (
        ["background", "person"],
        [[0, 0, 0], [220, 20, 60]],
        {0: 0, **{v: 1 for v in range(1, 9)}},
    ),
}

#: convert with a process pool from this many label files on
POOL_MIN_FILES = 200


def make_lut(mapping: Dict[int, int], default: int = IGNORE_INDEX) -> np.ndarray:
    """A 256-entry uint8 lookup table: ``lut[raw] = mapping.get(raw, default)``."""
    lut = np.full(256, default, dtype=np.uint8)
    for raw, new in mapping.items():
        lut[int(raw)] = int(new)
    return lut


def lookup_table(classes: str) -> np.ndarray:
    if classes not in CLASS_SETTINGS:
        raise DataError(f"classes: unknown EasyPortrait class setting {classes!r} "
                        f"(expected one of: {', '.join(CLASS_SETTINGS)})")
    return make_lut(CLASS_SETTINGS[classes][2])


# --------------------------------------------------------------------------- helpers
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


# --------------------------------------------------------------------------- archives
def _split_prefix(path: str, splits: Iterable[str]) -> str:
    """The folder (``""``, ``"images/"``, ...) that holds the split folders in a zip."""
    splits = set(splits)
    found: Counter = Counter()
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            if name.endswith("/") or name.startswith("__MACOSX"):
                continue
            parts = name.split("/")
            for i, part in enumerate(parts[:-1]):
                if part in splits:
                    found["".join(p + "/" for p in parts[:i])] += 1
                    break
    if not found:
        raise DataError(f"{path}: no {'/, '.join(sorted(splits))}/ folders in the archive; "
                        "is this the right file?")
    return found.most_common(1)[0][0]


def _stamp_path(root: str, archive_name: str) -> str:
    return os.path.join(root, f".{archive_name}.extracted.json")


def _archive_id(path: str, splits: Sequence[str]) -> Dict:
    st = os.stat(path)
    return {"archive": os.path.abspath(path), "size": st.st_size,
            "mtime_ns": st.st_mtime_ns, "splits": sorted(splits)}


def _extract(path: str, dest: str, stamp: str, splits: Sequence[str], downloaded: bool,
             progress: bool) -> None:
    """Check and extract ``path``'s split folders to ``dest`` unless ``stamp`` says this
    very archive was extracted there already."""
    ident = _archive_id(path, splits)
    if os.path.isfile(stamp) and os.path.isdir(dest):
        with open(stamp) as fh:
            try:
                if json.load(fh) == ident:
                    return
            except ValueError:
                pass
    if os.path.exists(stamp):
        os.remove(stamp)
    try:
        check_zip(path)
        prefix = _split_prefix(path, splits)
        extract_zip(path, dest, members=[prefix + s + "/" for s in splits], strip=prefix,
                    progress=progress)
    except DataError as err:
        if downloaded and os.path.isfile(path):
            os.remove(path)
            raise DataError(f"{err}; the downloaded file was removed, run again to "
                            "download it anew") from None
        raise
    write_json_atomic(stamp, ident)


# --------------------------------------------------------------------------- main
def prepare_easyportrait(root: str, raw_dir: str, classes: str = "face_parsing",
                         urls: Optional[Dict[str, str]] = None,
                         sha256: Optional[Dict[str, str]] = None,
                         local_copy: Optional[str] = None,
                         splits: Sequence[str] = ALL_SPLITS, progress: bool = True,
                         workers: int = 0) -> Dict:
    """Download (or take from ``local_copy``), verify, extract and convert EasyPortrait.

    ``urls``/``sha256`` map archive names (``images.zip``, ``annotations.zip``) to a URL /
    an expected sha256 (optional; the zip CRCs are always checked). ``local_copy`` is a
    directory holding either both zips or extracted ``images/`` and ``annotations/``
    trees; nothing is downloaded then. ``workers``: label-conversion processes (0: auto).
    Returns the dict written to ``root/meta.json``."""
    lut = lookup_table(classes)
    names, palette, _ = CLASS_SETTINGS[classes]
    splits = list(splits)
    bad = [s for s in splits if s not in ALL_SPLITS]
    if not splits or bad:
        raise DataError(f"splits: expected a non-empty subset of {', '.join(ALL_SPLITS)}, "
                        f"got {splits!r}")
    root = os.path.abspath(root)
    remove_meta(root)
    os.makedirs(root, exist_ok=True)

    tree = None
    archives: Dict[str, str] = {}
    if local_copy:
        local_copy = os.path.abspath(local_copy)
        zips = {n: os.path.join(local_copy, n) for n, _ in ARCHIVES}
        dirs = {sub: os.path.join(local_copy, sub) for _, sub in ARCHIVES}
        if all(os.path.isfile(p) for p in zips.values()):
            archives = zips
        elif all(os.path.isdir(p) for p in dirs.values()):
            tree = local_copy
        else:
            raise DataError(f"local_copy {local_copy}: expected images.zip and "
                            "annotations.zip, or extracted images/ and annotations/ "
                            "folders with train/ val/ test/ inside")
    else:
        urls = {**DEFAULT_URLS, **(urls or {})}
        sha256 = sha256 or {}
        for name, _ in ARCHIVES:
            archives[name] = download(urls[name], os.path.join(raw_dir, name),
                                      sha256=sha256.get(name), progress=progress)

    if tree is not None:
        for name, sub in ARCHIVES:
            stamp = _stamp_path(root, name)
            if os.path.exists(stamp):
                os.remove(stamp)
            dest = os.path.join(root, sub)
            if os.path.islink(dest) or os.path.isfile(dest):
                os.remove(dest)
            for split in splits:
                src = os.path.join(tree, sub, split)
                if not os.path.isdir(src):
                    raise DataError(f"{src}: missing split folder of the local copy")
                symlink_dir(src, os.path.join(dest, split))
    else:
        for name, sub in ARCHIVES:
            _extract(archives[name], os.path.join(root, sub), _stamp_path(root, name),
                     splits, downloaded=not local_copy, progress=progress)

    label_dir = f"labels_{classes}"
    counts = {}
    for split in splits:
        img_dir = os.path.join(root, "images", split)
        ann_dir = os.path.join(root, "annotations", split)
        stems = pair_labels(img_dir, ann_dir, split)
        out_dir = os.path.join(root, label_dir, split)
        jobs = [(os.path.join(ann_dir, s + LABEL_SUFFIX), os.path.join(out_dir, s + LABEL_SUFFIX))
                for s in stems]
        convert_labels(jobs, lut, out_dir, progress=progress, desc=f"{label_dir}/{split}",
                       workers=workers)
        counts[split] = len(stems)

    meta = {
        "dataset": "easyportrait",
        "source": "easyportrait",
        "classes": list(names),
        "palette": [list(c) for c in palette],
        "num_classes": len(names),
        "ignore_index": IGNORE_INDEX,
        "splits": counts,
        "img_dir": "images",
        "label_dir": label_dir,
        "img_suffix": IMG_SUFFIX,
        "label_suffix": LABEL_SUFFIX,
        "train_labels": f"{label_dir}/train",
        "class_setting": classes,
        "license": "CC BY-SA 4.0 (EasyPortrait, hukenovs/easyportrait)",
    }
    write_json_atomic(os.path.join(root, "meta.json"), meta)
    return meta
