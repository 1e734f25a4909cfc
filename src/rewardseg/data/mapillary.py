"""Mapillary Vistas (v1.2 / v2.0): check the manual download, extract, convert labels.

Vistas' licence requires registering and downloading by hand from
https://www.mapillary.com/dataset/vistas; nothing here touches the network. The label
PNGs are palette images whose pixel index is the position of the class in the
``"labels"`` list of ``config_<version>.json``.

``classes="vistas"`` keeps those indices (66 classes in v1.2, 124 in v2.0, the last one
``void--unlabeled`` included; names are the config's ``readable`` names).
``classes="cityscapes"`` maps them *by name* to the 19 Cityscapes train ids with
:data:`VISTAS_TO_CITYSCAPES`; every other class becomes 255 (ignored). The table holds the
names of both versions; a key absent from the config in use is listed in meta.json's
``unmapped_keys`` (for v1.2 that is the v2.0-only names, and the other way round).

=======  ==============  ===========================================================
trainId  Cityscapes      Vistas classes (v1.2 and v2.0 names)
=======  ==============  ===========================================================
0        road            construction--flat--road, --bike-lane, --service-lane,
                         --crosswalk-plain, --road-shoulder (v2.0); every lane
                         marking: marking--* and marking-only--* (v2.0)
1        sidewalk        construction--flat--sidewalk, --curb-cut, --pedestrian-area,
                         --traffic-island (v2.0); construction--barrier--curb
2        building        construction--structure--building, --garage (v2.0)
3        wall            construction--barrier--wall
4        fence           construction--barrier--fence
5        pole            object--support--pole, --utility-pole, --pole-group (v2.0)
6        traffic light   object--traffic-light (v1.2); object--traffic-light--* (v2.0)
7        traffic sign    object--traffic-sign--front; --direction-front,
                         --temporary-front, --information-parking (v2.0)
8        vegetation      nature--vegetation
9        terrain         nature--terrain, nature--sand
10       sky             nature--sky
11       person          human--person (v1.2); human--person--individual,
                         --person-group (v2.0)
12       rider           human--rider--bicyclist, --motorcyclist, --other-rider
13       car             object--vehicle--car
14       truck           object--vehicle--truck
15       bus             object--vehicle--bus
16       train           object--vehicle--on-rails
17       motorcycle      object--vehicle--motorcycle
18       bicycle         object--vehicle--bicycle
255      (ignored)       everything else
=======  ==============  ===========================================================

Decisions, following the Cityscapes class definitions: markings count as road (Cityscapes
labels lane markings and marking-delimited bike lanes as road); curbs, curb cuts,
pedestrian areas and traffic islands count as sidewalk (Cityscapes' sidewalk includes the
delimiting curb, traffic islands and pedestrian zones); sand counts as terrain. Classes
that Cityscapes also ignores (parking, parking aisle, rail track, bridge, tunnel, guard
rail, caravan, trailer) and ambiguous ones (backs of signs, ambiguous signs, sign frames,
driveways, vehicle groups, snow, mountain, water) become 255.
"""
from __future__ import annotations

import json
import os
import zipfile
from typing import Any, Dict, List, Mapping, Optional, Tuple

from .. import paths
from .archive import DataError, extract_zip, remove_meta
from .cityscapes import train_classes
from .labels import convert_split, make_lut, pair_labels, symlink_dir, write_label_meta
from .options import describe_setting, resolve

DOWNLOAD_PAGE = "https://www.mapillary.com/dataset/vistas"
VERSIONS = ("v1.2", "v2.0")
#: valid values of the dataset block's ``classes`` (default first)
CLASSES_OPTIONS: Tuple[str, ...] = ("cityscapes", "vistas")
#: environment variables this source needs: none (the download is manual)
SECRETS: Tuple[str, ...] = ()
LICENSE = "CC BY-NC-SA 4.0 (Mapillary Vistas research licence)"

#: the dataset-block keys of this source (JSON-schema properties)
OPTIONS: Dict[str, Dict[str, Any]] = {
    "raw_dir": {"type": "string", "default": paths.raw_dir("mapillary"),
                "description": f"the manual download from {DOWNLOAD_PAGE} (the zip or its "
                               "extracted tree) is looked for in here"},
    "version": {"type": "string", "enum": list(VERSIONS), "default": VERSIONS[0],
                "description": "Mapillary Vistas release"},
}
#: our split name -> Vistas folder (the test split has no public labels)
SPLITS = {"train": "training", "val": "validation"}

#: the 19 Cityscapes train classes and colours (cityscapesscripts' label table)
CITYSCAPES_CLASSES, CITYSCAPES_PALETTE = train_classes()

_MARKINGS_V12 = ["marking--crosswalk-zebra", "marking--general"]
_MARKINGS_V20 = [
    "marking--continuous--dashed", "marking--continuous--solid",
    "marking--continuous--zigzag", "marking--discrete--ambiguous",
    "marking--discrete--arrow--left", "marking--discrete--arrow--other",
    "marking--discrete--arrow--right", "marking--discrete--arrow--split-left-or-straight",
    "marking--discrete--arrow--split-right-or-straight", "marking--discrete--arrow--straight",
    "marking--discrete--crosswalk-zebra", "marking--discrete--give-way-row",
    "marking--discrete--give-way-single", "marking--discrete--hatched--chevron",
    "marking--discrete--hatched--diagonal", "marking--discrete--other-marking",
    "marking--discrete--stop-line", "marking--discrete--symbol--bicycle",
    "marking--discrete--symbol--other", "marking--discrete--text",
    "marking-only--continuous--dashed", "marking-only--discrete--crosswalk-zebra",
    "marking-only--discrete--other-marking", "marking-only--discrete--text"]
_TRAFFIC_LIGHTS_V20 = [
    "object--traffic-light--cyclists", "object--traffic-light--general-horizontal",
    "object--traffic-light--general-single", "object--traffic-light--general-upright",
    "object--traffic-light--other", "object--traffic-light--pedestrians"]

#: Vistas class name (v1.2 and v2.0) -> Cityscapes trainId; see the module docstring.
#: Names not in this table map to 255.
VISTAS_TO_CITYSCAPES: Dict[str, int] = {
    # 0 road
    "construction--flat--road": 0,
    "construction--flat--bike-lane": 0,
    "construction--flat--service-lane": 0,
    "construction--flat--crosswalk-plain": 0,
    "construction--flat--road-shoulder": 0,
    **{name: 0 for name in _MARKINGS_V12 + _MARKINGS_V20},
    # 1 sidewalk
    "construction--flat--sidewalk": 1,
    "construction--flat--curb-cut": 1,
    "construction--flat--pedestrian-area": 1,
    "construction--flat--traffic-island": 1,
    "construction--barrier--curb": 1,
    # 2 building .. 4 fence
    "construction--structure--building": 2,
    "construction--structure--garage": 2,
    "construction--barrier--wall": 3,
    "construction--barrier--fence": 4,
    # 5 pole
    "object--support--pole": 5,
    "object--support--utility-pole": 5,
    "object--support--pole-group": 5,
    # 6 traffic light
    "object--traffic-light": 6,
    **{name: 6 for name in _TRAFFIC_LIGHTS_V20},
    # 7 traffic sign (fronts only)
    "object--traffic-sign--front": 7,
    "object--traffic-sign--direction-front": 7,
    "object--traffic-sign--temporary-front": 7,
    "object--traffic-sign--information-parking": 7,
    # 8 vegetation .. 10 sky
    "nature--vegetation": 8,
    "nature--terrain": 9,
    "nature--sand": 9,
    "nature--sky": 10,
    # 11 person, 12 rider
    "human--person": 11,
    "human--person--individual": 11,
    "human--person--person-group": 11,
    "human--rider--bicyclist": 12,
    "human--rider--motorcyclist": 12,
    "human--rider--other-rider": 12,
    # 13 car .. 18 bicycle
    "object--vehicle--car": 13,
    "object--vehicle--truck": 14,
    "object--vehicle--bus": 15,
    "object--vehicle--on-rails": 16,
    "object--vehicle--motorcycle": 17,
    "object--vehicle--bicycle": 18,
}


def archive_names(version: str) -> List[str]:
    """Zip files that hold ``version``'s labels (the v2.0 release also ships v1.2's)."""
    return [f"mapillary-vistas-dataset_public_{v}.zip"
            for v in VERSIONS if v == version or (version == "v1.2" and v == "v2.0")]


def _config_candidates(version: str) -> List[str]:
    return [f"config_{version}.json"] + (["config.json"] if version == "v1.2" else [])


def _labels_candidates(folder: str, version: str) -> List[str]:
    return [f"{folder}/{version}/labels"] + ([f"{folder}/labels"] if version == "v1.2" else [])


def _tree_config(base: str, version: str) -> Optional[str]:
    """The config json of an extracted tree at ``base``, or None when it is not one."""
    if not os.path.isdir(os.path.join(base, "training", "images")):
        return None
    for name in _config_candidates(version):
        if os.path.isfile(os.path.join(base, name)):
            return os.path.join(base, name)
    return None


def _extracted_dir(raw_dir: str, version: str) -> str:
    return os.path.join(raw_dir, f"vistas_{version}")


def _find_tree(raw_dir: str, version: str):
    """(base, config path) of an extracted tree in ``raw_dir``, its own extraction folder
    or one of its immediate subfolders; None when there is none."""
    candidates = [raw_dir, _extracted_dir(raw_dir, version)]
    if os.path.isdir(raw_dir):
        candidates += sorted(e.path for e in os.scandir(raw_dir)
                             if e.is_dir() and not e.name.endswith(".partial"))
    for base in candidates:
        config = _tree_config(base, version)
        if config:
            return base, config
    return None


def _extract_archive(path: str, raw_dir: str, version: str, progress: bool) -> None:
    """Extract the config, images and ``version``'s labels of train/val (not instances,
    panoptic or test) into ``raw_dir/vistas_<version>``."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise DataError(f"{path}: not a readable zip archive ({err}); the file is corrupt "
                        "or truncated, download it again") from None
    configs = _config_candidates(version)
    prefix = config = None
    for candidate in configs:
        for n in names:
            if n == candidate or n.endswith("/" + candidate):
                prefix, config = n[:-len(candidate)], candidate
                break
        if config:
            break
    if config is None:
        raise DataError(f"{path}: no {' or '.join(configs)} in the archive; is this the "
                        f"Mapillary Vistas {version} download?")
    members = [prefix + config]
    for folder in SPLITS.values():
        members.append(f"{prefix}{folder}/images/")
        for labels in _labels_candidates(folder, version):
            if any(n.startswith(f"{prefix}{labels}/") for n in names):
                members.append(f"{prefix}{labels}/")
                break
    extract_zip(path, _extracted_dir(raw_dir, version), members=members, strip=prefix,
                progress=progress)


def _missing_message(raw_dir: str, version: str) -> str:
    return (f"Mapillary Vistas {version} was not found in {raw_dir}. Its licence requires "
            f"a manual download: {_what_to_do(raw_dir, version)} Then run again.")


def _what_to_do(raw_dir: str, version: str) -> str:
    """Where to get the archive and where to put it (one sentence, no newline)."""
    zips = archive_names(version)
    return (
        f"register and accept the terms at {DOWNLOAD_PAGE}, download "
        f"{zips[0]} and save it as {os.path.join(raw_dir, zips[0])}"
        + (f" (or {zips[1]} next to it)" if len(zips) > 1 else "")
        + f", or extract it there so that {os.path.join(raw_dir, _config_candidates(version)[0])}"
        f", training/ and validation/ exist. To keep it elsewhere, point the config key "
        f"dataset.raw_dir at that directory.")


def preflight(root: str, dataset: Dict[str, Any], environ: Mapping[str, str],
              workdir: str = ".") -> List[Tuple[str, str]]:
    """What :func:`prepare` would miss, as (what is missing, what to do), checked before
    any job (:mod:`rewardseg.preflight`): the manual download, the zip or its extracted
    tree, in ``dataset.raw_dir`` (relative paths are taken from ``workdir``)."""
    o = resolve(OPTIONS, dataset)
    raw_dir, version = o["raw_dir"], o["version"]
    found = os.path.join(workdir, raw_dir)
    if _find_tree(found, version) is not None or any(
            os.path.isfile(os.path.join(found, n)) for n in archive_names(version)):
        return []
    return [(f"the Mapillary Vistas {version} download is not in {raw_dir} (dataset.raw_dir; "
             "its licence requires a manual download)", _what_to_do(raw_dir, version))]


def _read_config(path: str) -> List[Dict]:
    try:
        with open(path) as fh:
            labels = json.load(fh)["labels"]
        names = [str(entry["name"]) for entry in labels]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{path}: not a Mapillary Vistas config (expected a \"labels\" "
                        f"list of entries with a \"name\"; {type(err).__name__}: {err})") from None
    if len(names) > 255:
        raise DataError(f"{path}: {len(names)} classes do not fit an 8-bit label map")
    return labels


def cityscapes_lut(names: List[str]):
    """(lookup table, keys of VISTAS_TO_CITYSCAPES absent from ``names``)."""
    lut = make_lut({i: VISTAS_TO_CITYSCAPES[n] for i, n in enumerate(names)
                    if n in VISTAS_TO_CITYSCAPES})
    present = set(names)
    return lut, sorted(k for k in VISTAS_TO_CITYSCAPES if k not in present)


def prepare_mapillary(root: str, raw_dir: str, classes: str = CLASSES_OPTIONS[0],
                      version: str = VERSIONS[0], progress: bool = True, workers: int = 0) -> Dict:
    """Build ``root`` from a manually downloaded Mapillary Vistas in ``raw_dir`` (the zip
    or its extracted tree); ``workers``: label-conversion processes (0: auto). Returns the dict written to ``root/meta.json``."""
    if version not in VERSIONS:
        raise DataError(f"version: unknown Mapillary Vistas version {version!r} "
                        f"(expected one of: {', '.join(VERSIONS)})")
    if classes not in CLASSES_OPTIONS:
        raise DataError(f"classes: unknown Mapillary Vistas class setting {classes!r} "
                        f"(expected {' or '.join(CLASSES_OPTIONS)})")
    raw_dir = os.path.abspath(raw_dir)
    root = os.path.abspath(root)
    remove_meta(root)

    found = _find_tree(raw_dir, version)
    if found is None:
        for name in archive_names(version):
            path = os.path.join(raw_dir, name)
            if os.path.isfile(path):
                _extract_archive(path, raw_dir, version, progress)
                found = _find_tree(raw_dir, version)
                break
    if found is None:
        raise DataError(_missing_message(raw_dir, version))
    base, config_path = found
    labels = _read_config(config_path)
    names = [str(entry["name"]) for entry in labels]

    label_dir = f"labels_{classes}"
    meta_extra: Dict = {}
    if classes == "cityscapes":
        lut, unmapped = cityscapes_lut(names)
        class_names, palette = list(CITYSCAPES_CLASSES), [list(c) for c in CITYSCAPES_PALETTE]
        without = [CITYSCAPES_CLASSES[t] for t in range(len(CITYSCAPES_CLASSES))
                   if t not in lut[:len(names)]]
        meta_extra = {"unmapped_keys": unmapped, "classes_without_source": without}
    else:
        lut = None
        class_names = [str(entry.get("readable") or entry["name"]) for entry in labels]
        palette = [list(map(int, entry.get("color") or (0, 0, 0)))[:3] for entry in labels]

    os.makedirs(root, exist_ok=True)
    counts = {}
    for split, folder in SPLITS.items():
        img_src = os.path.join(base, folder, "images")
        ann_src = next((os.path.join(base, p) for p in _labels_candidates(folder, version)
                        if os.path.isdir(os.path.join(base, p))),
                       os.path.join(base, _labels_candidates(folder, version)[0]))
        stems = pair_labels(img_src, ann_src, split,
                            hint=f" (Mapillary Vistas {version} in {base})")
        symlink_dir(img_src, os.path.join(root, "images", split))
        out_dir = os.path.join(root, label_dir, split)
        if lut is None:
            symlink_dir(ann_src, out_dir)
        else:
            convert_split(ann_src, out_dir, stems, lut, progress=progress,
                          desc=f"{label_dir}/{split}", workers=workers)
        counts[split] = len(stems)

    meta = write_label_meta(root, "mapillary", class_names, palette, counts, label_dir, classes,
                            license=LICENSE, version=version, raw=base, **meta_extra)
    return meta


def prepare(root: str, dataset: Dict[str, Any], progress: bool = True,
            workers: int = 0) -> Dict:
    """:func:`prepare_mapillary` with the options of the study's ``dataset`` block
    (missing keys: the defaults of :data:`OPTIONS`, classes: the first of
    :data:`CLASSES_OPTIONS`); returns the meta dict."""
    o = resolve(OPTIONS, dataset)
    return prepare_mapillary(root, o["raw_dir"],
                             classes=dataset.get("classes", CLASSES_OPTIONS[0]),
                             version=o["version"], progress=progress, workers=workers)


def describe(dataset: Dict[str, Any]) -> str:
    """One line for the slides."""
    return describe_setting("mapillary", dataset)
