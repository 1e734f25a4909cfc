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

The label conversion itself is :mod:`rewardseg.data.labels`, shared with Mapillary.
"""
from __future__ import annotations

import json
import os
import zipfile
from collections import Counter
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .. import paths
from .archive import DataError, check_zip, download, extract_zip, remove_meta, write_json_atomic
from .labels import convert_split, make_lut, pair_labels, symlink_dir, write_label_meta
from .options import describe_setting, resolve

#: Short links from the project's README; they redirect to the archives.
DEFAULT_URLS = {
    "images.zip": "https://sc.link/LNLr",
    "annotations.zip": "https://sc.link/wPGX",
}
ARCHIVES = (("images.zip", "images"), ("annotations.zip", "annotations"))
ALL_SPLITS = ("train", "val", "test")

#: class setting -> (class names, palette, {raw value: class index}); other values -> 255
CLASS_SETTINGS = {
    "face_parsing": (
        ["background", "skin", "left brow", "right brow", "left eye", "right eye", "lips",
         "teeth"],
        [[0, 0, 0], [223, 87, 188], [160, 221, 255], [130, 106, 237], [200, 121, 255],
         [255, 183, 255], [0, 144, 193], [113, 137, 255]],
        {0: 0, 1: 0, 2: 1, 3: 2, 4: 3, 5: 4, 6: 5, 7: 6, 8: 7},
    ),
    "portrait": (
        ["background", "person"],
        [[0, 0, 0], [220, 20, 60]],
        {0: 0, **{v: 1 for v in range(1, 9)}},
    ),
}
#: valid values of the dataset block's ``classes`` (default first)
CLASSES_OPTIONS: Tuple[str, ...] = tuple(CLASS_SETTINGS)
#: environment variables this source needs: none
SECRETS: Tuple[str, ...] = ()
LICENSE = "CC BY-SA 4.0 (EasyPortrait, hukenovs/easyportrait)"
_ARCHIVE_NAMES = " / ".join(name for name, _ in ARCHIVES)

#: the dataset-block keys of this source (JSON-schema properties)
OPTIONS: Dict[str, Dict[str, Any]] = {
    "raw_dir": {"type": "string", "default": paths.raw_dir("easyportrait"),
                "description": "the two archives are downloaded to / looked for in here"},
    "local_copy": {"type": ["string", "null"], "default": None,
                   "description": "an already-downloaded copy (the two archives or the "
                                  "extracted images/ and annotations/): nothing is "
                                  "downloaded"},
    "urls": {"type": "object", "additionalProperties": {"type": "string"}, "default": {},
             "description": f"archive name ({_ARCHIVE_NAMES}) -> URL, over the README's "
                            "short links"},
    "sha256": {"type": "object",
               "additionalProperties": {"type": "string", "pattern": "^[0-9a-fA-F]{8,64}$"},
               "default": {},
               "description": f"archive name ({_ARCHIVE_NAMES}) -> expected sha256 (or a "
                              "prefix of it)"},
}


def lookup_table(classes: str) -> np.ndarray:
    if classes not in CLASS_SETTINGS:
        raise DataError(f"classes: unknown EasyPortrait class setting {classes!r} "
                        f"(expected one of: {', '.join(CLASS_SETTINGS)})")
    return make_lut(CLASS_SETTINGS[classes][2])


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


def preflight(root: str, dataset: Dict[str, Any], environ: Mapping[str, str],
              workdir: str = ".") -> List[Tuple[str, str]]:
    """What :func:`prepare` would miss, as (what is missing, what to do), checked before
    any job (:mod:`rewardseg.preflight`): a ``dataset.local_copy`` must hold both zips or
    both extracted folders (the public download itself needs nothing)."""
    local = resolve(OPTIONS, dataset)["local_copy"]
    if not local:
        return []
    at = os.path.join(workdir, local)
    if all(os.path.isfile(os.path.join(at, n)) for n, _ in ARCHIVES) or \
            all(os.path.isdir(os.path.join(at, sub)) for _, sub in ARCHIVES):
        return []
    return [(f"dataset.local_copy {local} holds neither {_ARCHIVE_NAMES} nor extracted "
             f"{' and '.join(sub + '/' for _, sub in ARCHIVES)} folders",
             f"put both archives (or both folders) in {local}, or set dataset.local_copy to "
             "null to download them")]


# --------------------------------------------------------------------------- main
def prepare_easyportrait(root: str, raw_dir: str, classes: str = CLASSES_OPTIONS[0],
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
        convert_split(ann_dir, os.path.join(root, label_dir, split), stems, lut,
                      progress=progress, desc=f"{label_dir}/{split}", workers=workers)
        counts[split] = len(stems)

    meta = write_label_meta(root, "easyportrait", names, palette, counts, label_dir, classes,
                            license=LICENSE)
    return meta


def prepare(root: str, dataset: Dict[str, Any], progress: bool = True,
            workers: int = 0) -> Dict:
    """:func:`prepare_easyportrait` with the options of the study's ``dataset`` block
    (missing keys: the defaults of :data:`OPTIONS`, classes: the first of
    :data:`CLASSES_OPTIONS`); returns the meta dict."""
    o = resolve(OPTIONS, dataset)
    return prepare_easyportrait(root, o["raw_dir"],
                                classes=dataset.get("classes", CLASSES_OPTIONS[0]),
                                urls=o["urls"], sha256=o["sha256"], local_copy=o["local_copy"],
                                progress=progress, workers=workers)


def describe(dataset: Dict[str, Any]) -> str:
    """One line for the slides."""
    return describe_setting("easyportrait", dataset)
