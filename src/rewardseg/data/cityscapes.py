"""Cityscapes: download (account needed), extract, and ``*_labelTrainIds.png``.

Credentials come from the environment variables ``CITYSCAPES_USERNAME`` and
``CITYSCAPES_PASSWORD`` only; they are sent in the login form body and never printed,
logged or written. The site protocol is the one cityscapesscripts' ``csDownload`` uses
(form login answered by a redirect, a JSON package list, an md5 per package, ranged
downloads), with the base URL configurable for mirrors and tests. Train ids are made by
cityscapesscripts' own polygon rasteriser (``createLabelImage`` with ``trainIds``), as
mmseg's ``tools/dataset_converters/cityscapes.py`` does.

Alternatively ``local_copy`` points at a directory holding the two archives or the
extracted ``leftImg8bit/`` and ``gtFine/`` trees; nothing is downloaded then.
"""
from __future__ import annotations

import glob
import os
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from .. import paths
from .archive import DataError, _public_url, check_zip, download, extract_zip, remove_meta
from .labels import symlink_dir
from .meta import write_meta
from .options import describe_setting, resolve

BASE_URL = "https://www.cityscapes-dataset.com"
ENV_USER = "CITYSCAPES_USERNAME"
ENV_PASSWORD = "CITYSCAPES_PASSWORD"

#: the dataset-block keys of this source (JSON-schema properties)
OPTIONS: Dict[str, Dict[str, Any]] = {
    "raw_dir": {"type": "string", "default": paths.raw_dir("cityscapes"),
                "description": "the two archives are downloaded to / looked for in here"},
    "local_copy": {"type": ["string", "null"], "default": None,
                   "description": "an already-downloaded copy (the two archives or the "
                                  "extracted leftImg8bit/ and gtFine/): nothing is downloaded"},
    "base_url": {"type": "string", "default": BASE_URL,
                 "description": f"site or mirror (account: {ENV_USER} / {ENV_PASSWORD} "
                                "from the environment)"},
}
#: valid values of the dataset block's ``classes`` (default first): the 19 train ids
CLASSES_OPTIONS: Tuple[Optional[str], ...] = (None, "cityscapes")
#: environment variables this source reads (never from a config or command line)
SECRETS: Tuple[str, ...] = (ENV_USER, ENV_PASSWORD)
LICENSE = ("Cityscapes licence (non-commercial research and teaching, "
           "https://www.cityscapes-dataset.com/license/)")
PACKAGES = {"leftImg8bit": "leftImg8bit_trainvaltest.zip", "gtFine": "gtFine_trainvaltest.zip"}
IMG_SUFFIX = "_leftImg8bit.png"
POLYGON_SUFFIX = "_gtFine_polygons.json"
LABEL_SUFFIX = "_gtFine_labelTrainIds.png"


def train_classes() -> Tuple[List[str], List[List[int]]]:
    """Names and colours of the 19 train ids, from cityscapesscripts' label table."""
    from cityscapesscripts.helpers.labels import labels

    train = sorted((l for l in labels if 0 <= l.trainId < 255), key=lambda l: l.trainId)
    return [l.name for l in train], [list(l.color) for l in train]


def credentials() -> tuple:
    user, password = os.environ.get(ENV_USER), os.environ.get(ENV_PASSWORD)
    if not user or not password:
        missing = [v for v, x in ((ENV_USER, user), (ENV_PASSWORD, password)) if not x]
        raise DataError(
            f"Cityscapes download needs an account: set {' and '.join(missing)} "
            f"(register at {BASE_URL}/register/), or point dataset.local_copy at a "
            "directory with leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip; "
            "nothing was downloaded")
    return user, password


def login(base_url: str = BASE_URL):
    """A logged-in requests session (credentials from the environment)."""
    import requests

    user, password = credentials()
    session = requests.Session()
    session.headers["User-Agent"] = "rewardseg"
    try:
        session.get(f"{base_url}/login/", allow_redirects=False, timeout=60).raise_for_status()
        resp = session.post(f"{base_url}/login/", allow_redirects=False, timeout=60,
                            data={"username": user, "password": password, "submit": "Login"})
    except requests.RequestException as err:
        raise DataError(f"Cityscapes login at {_public_url(base_url)}/login/ failed "
                        f"({type(err).__name__})") from None
    if resp.status_code != 302:
        raise DataError(f"Cityscapes login at {_public_url(base_url)}/login/ was refused "
                        f"(HTTP {resp.status_code}, no redirect): check {ENV_USER} and "
                        f"{ENV_PASSWORD}")
    return session


def download_packages(session, raw_dir: str, names: Iterable[str], base_url: str = BASE_URL,
                      progress: bool = True) -> Dict[str, str]:
    """Download the named packages into ``raw_dir`` (resumable, md5-verified)."""
    resp = session.get(f"{base_url}/downloads/?list", allow_redirects=False, timeout=60)
    if resp.status_code != 200:
        raise DataError(f"Cityscapes package list: HTTP {resp.status_code} from "
                        f"{_public_url(base_url)}/downloads/ (is the login valid?)")
    ids = {p["name"]: p["packageID"] for p in resp.json()}
    paths = {}
    for name in names:
        if name not in ids:
            raise DataError(f"Cityscapes package {name!r} is not available to this account "
                            f"(available: {', '.join(sorted(ids)) or 'none'})")
        dest = os.path.join(raw_dir, name)
        md5 = None
        r = session.get(f"{base_url}/md5-sum/?packageID={ids[name]}", allow_redirects=False,
                        timeout=60)
        if r.status_code == 200 and r.text.split():
            md5 = r.text.split()[0]
        if md5 is None:
            raise DataError(f"Cityscapes package {name!r}: no md5 from the site; refusing "
                            "an unverifiable download")
        paths[name] = download(f"{base_url}/file-handling/?packageID={ids[name]}", dest,
                               md5=md5, session=session, progress=progress, desc=name,
                               allow_redirects=False)
    return paths


def _label_one(path: str) -> Optional[str]:
    """``*_gtFine_polygons.json`` -> ``*_gtFine_labelTrainIds.png`` next to it; returns
    an error message instead of raising (runs in a worker)."""
    from cityscapesscripts.helpers.annotation import Annotation
    from cityscapesscripts.preparation.json2labelImg import createLabelImage

    out = path[: -len(POLYGON_SUFFIX)] + LABEL_SUFFIX
    if os.path.isfile(out):
        return None
    try:
        annotation = Annotation()
        annotation.fromJsonFile(path)
        image = createLabelImage(annotation, "trainIds")
    except SystemExit:  # cityscapesscripts exits on an unknown label name
        return f"{path}: unknown label name (not in cityscapesscripts' labels table)"
    except Exception as err:  # noqa: BLE001 - reported with the file name
        return f"{path}: cannot convert ({type(err).__name__}: {err})"
    tmp = out + ".tmp.png"
    image.save(tmp)
    os.replace(tmp, out)
    return None


def make_train_ids(root: str, splits: Sequence[str] = ("train", "val"), workers: int = 0,
                   progress: bool = True) -> int:
    """Rasterise every polygon file of ``splits``; returns the number of label maps."""
    from tqdm import tqdm

    files = sorted(f for s in splits
                   for f in glob.glob(os.path.join(root, "gtFine", s, "*", "*" + POLYGON_SUFFIX)))
    if not files:
        raise DataError(f"{os.path.join(root, 'gtFine')}: no *{POLYGON_SUFFIX} files for "
                        f"splits {', '.join(splits)}")
    workers = workers or min(8, os.cpu_count() or 1)
    bar = dict(total=len(files), desc="labelTrainIds", unit="map", disable=not progress,
               mininterval=1.0)
    if workers > 1:
        from multiprocessing import Pool

        with Pool(workers) as pool:
            errors = [e for e in tqdm(pool.imap(_label_one, files, chunksize=16), **bar) if e]
    else:
        errors = [e for e in tqdm(map(_label_one, files), **bar) if e]
    if errors:
        raise DataError(f"{errors[0]} ({len(errors)} file(s) failed)")
    return len(files)


def preflight(root: str, dataset: Dict[str, Any], environ: Mapping[str, str],
              workdir: str = ".") -> List[Tuple[str, str]]:
    """What :func:`prepare` would miss, as (what is missing, what to do), checked before
    any job (:mod:`rewardseg.preflight`): a package that is neither extracted in ``root``,
    nor in ``dataset.local_copy``, nor in ``dataset.raw_dir`` must be downloaded, which
    needs both variables of :data:`SECRETS`; a ``local_copy`` must hold each package.
    Relative paths are taken from ``workdir``; variable values are never returned."""
    o = resolve(OPTIONS, dataset)
    at = lambda path: os.path.join(workdir, path)  # noqa: E731
    problems: List[Tuple[str, str]] = []
    download = []
    for top, name in PACKAGES.items():
        if os.path.isdir(at(os.path.join(root, top))):
            continue
        if o["local_copy"]:
            local = o["local_copy"]
            if not (os.path.isdir(at(os.path.join(local, top)))
                    or os.path.isfile(at(os.path.join(local, name)))):
                problems.append((
                    f"dataset.local_copy {local} has neither {top}/ nor {name}",
                    f"put {name} (or its extracted {top}/ folder) in {local}, or set "
                    "dataset.local_copy to null to download it with your account"))
        elif not os.path.isfile(at(os.path.join(o["raw_dir"], name))):
            download.append(name)
    if download:
        for var, what in ((ENV_USER, "account name"), (ENV_PASSWORD, "password")):
            if not environ.get(var):
                problems.append((
                    f"{var} is not set (downloading {' and '.join(download)} needs your "
                    "cityscapes-dataset.com account)",
                    f"export {var}=<your {what}> in the shell that runs snakemake (register "
                    f"at {BASE_URL}/register/; never put it in a config or on the command "
                    "line), or point dataset.local_copy at a folder with "
                    f"{' and '.join(PACKAGES.values())}"))
    return problems


def _count(root: str, sub: str, split: str, suffix: str) -> int:
    return len(glob.glob(os.path.join(root, sub, split, "*", "*" + suffix)))


def prepare_cityscapes(root: str, raw_dir: str, local_copy: Optional[str] = None,
                       base_url: str = BASE_URL, splits: Sequence[str] = ("train", "val"),
                       workers: int = 0, progress: bool = True) -> Dict:
    """Build ``root`` in mmseg's CityscapesDataset layout; returns the meta dict."""
    remove_meta(root)
    os.makedirs(root, exist_ok=True)
    archives: Dict[str, str] = {}
    for top, name in PACKAGES.items():
        if os.path.isdir(os.path.join(root, top)):
            continue
        if local_copy:
            if os.path.isdir(os.path.join(local_copy, top)):
                if top == "leftImg8bit":
                    symlink_dir(os.path.join(local_copy, top), os.path.join(root, top))
                else:
                    _copy_polygons(os.path.join(local_copy, top), os.path.join(root, top),
                                   splits)
                continue
            path = os.path.join(local_copy, name)
            if not os.path.isfile(path):
                raise DataError(f"dataset.local_copy: {local_copy} has neither {top}/ nor "
                                f"{name}")
            archives[top] = path
        else:
            archives[top] = os.path.join(raw_dir, name)
    missing = [top for top, path in archives.items() if not os.path.isfile(path)]
    if missing:
        session = login(base_url)
        download_packages(session, raw_dir, [PACKAGES[t] for t in missing], base_url=base_url,
                          progress=progress)
    for top, path in archives.items():
        try:
            check_zip(path)
        except DataError:
            if not local_copy:  # our own download: remove it so a re-run fetches it anew
                os.remove(path)
            raise
        extract_zip(path, os.path.join(root, top), members=[f"{top}/{s}/" for s in splits],
                    strip=f"{top}/", progress=progress)
    n_labels = make_train_ids(root, splits, workers=workers, progress=progress)
    counts = {s: _count(root, "leftImg8bit", s, IMG_SUFFIX) for s in splits}
    for s in splits:
        n_lab = _count(root, "gtFine", s, LABEL_SUFFIX)
        if counts[s] == 0 or n_lab != counts[s]:
            raise DataError(f"{os.path.join(root, 'leftImg8bit', s)}: {counts[s]} images but "
                            f"{n_lab} label maps in gtFine/{s}")
    classes, palette = train_classes()
    return write_meta(root, "cityscapes", classes, palette, counts, img_dir="leftImg8bit",
                      label_dir="gtFine", img_suffix=IMG_SUFFIX, label_suffix=LABEL_SUFFIX,
                      license=LICENSE, class_setting="cityscapes", num_label_maps=n_labels,
                      archives={t: os.path.basename(p) for t, p in archives.items()})


def prepare(root: str, dataset: Dict[str, Any], progress: bool = True,
            workers: int = 0) -> Dict:
    """:func:`prepare_cityscapes` with the options of the study's ``dataset`` block
    (missing keys: the defaults of :data:`OPTIONS`); returns the meta dict."""
    o = resolve(OPTIONS, dataset)
    return prepare_cityscapes(root, o["raw_dir"], local_copy=o["local_copy"],
                              base_url=o["base_url"], workers=workers, progress=progress)


def describe(dataset: Dict[str, Any]) -> str:
    """One line for the slides."""
    return describe_setting("cityscapes", dataset)


def _copy_polygons(src: str, dest: str, splits: Sequence[str]) -> None:
    """gtFine of a local copy: polygon json (and existing train-id maps) are linked into
    our own tree, so the conversion never writes into the user's copy."""
    tmp = dest + ".partial"
    for path in (p for s in splits for p in glob.glob(os.path.join(src, s, "*", "*"))):
        if not path.endswith((POLYGON_SUFFIX, LABEL_SUFFIX)):
            continue
        rel = os.path.relpath(path, src)
        target = os.path.join(tmp, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.exists(target):
            os.symlink(os.path.abspath(path), target)
    if not os.path.isdir(tmp):
        raise DataError(f"dataset.local_copy: {src} holds no *{POLYGON_SUFFIX} files")
    os.replace(tmp, dest)
