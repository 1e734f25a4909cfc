"""Downloads with resume, progress and checksums; verified, all-or-nothing extraction.

Rules of the house:

* a download goes to ``<dest>.part`` and is renamed to ``dest`` only after its size and
  checksum are verified; an interrupted transfer keeps the ``.part`` file so that the
  next attempt resumes with an HTTP ``Range`` request where the server allows it;
* a completed file whose checksum does not match is deleted (so a re-run downloads it
  again) and the error names the file and both digests;
* archives are extracted into a ``.partial`` directory next to the target and renamed
  into place after every member's CRC has been checked, so a corrupt archive never
  leaves a tree the workflow could mistake for a complete one;
* nothing here logs request bodies, headers or credentials.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import zipfile
import zlib
from typing import Iterable, Optional
from urllib.parse import urlsplit, urlunsplit

from ..fileio import write_json_atomic  # noqa: F401  (re-exported for the preparations)

CHUNK = 1 << 20


class DataError(RuntimeError):
    """A dataset that cannot be prepared; the message names the file, key or variable."""


def _public_url(url: str) -> str:
    """The URL without query string or user info (safe to print)."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def file_digest(path: str, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_file(path: str, md5: Optional[str] = None, sha256: Optional[str] = None,
                remove: bool = True) -> None:
    """Check ``path`` against an md5 and/or a sha256 (a prefix of the hex digest is
    accepted, as in OpenMMLab's ``<name>-<sha256[:8]>.pth`` convention). On mismatch the
    file is removed (unless ``remove=False``) and a DataError names it."""
    for algorithm, expected in (("md5", md5), ("sha256", sha256)):
        if not expected:
            continue
        expected = expected.strip().lower()
        actual = file_digest(path, algorithm)
        if not actual.startswith(expected):
            if remove:
                os.remove(path)
            raise DataError(
                f"{path}: {algorithm} checksum mismatch (expected {expected}, got "
                f"{actual[:len(expected)]}); the file is corrupt or truncated"
                + (" and was removed, run again to download it anew" if remove else ""))


def _session(session=None):
    if session is not None:
        return session
    import requests

    s = requests.Session()
    s.headers["User-Agent"] = "rewardseg"
    return s


def download(url: str, dest: str, *, md5: Optional[str] = None, sha256: Optional[str] = None,
             session=None, progress: bool = True, desc: Optional[str] = None,
             allow_redirects: bool = True, timeout: float = 60.0) -> str:
    """Download ``url`` to ``dest`` (resuming ``dest.part``), verify, rename; returns dest.

    An existing ``dest`` is verified and kept when it matches (no network access)."""
    import requests
    from tqdm import tqdm

    name = desc or os.path.basename(dest)
    if os.path.isfile(dest):
        verify_file(dest, md5=md5, sha256=sha256)
        return dest
    os.makedirs(os.path.dirname(os.path.abspath(dest)) or ".", exist_ok=True)
    part = dest + ".part"
    sess = _session(session)
    have = os.path.getsize(part) if os.path.isfile(part) else 0
    headers = {"Accept-Encoding": "identity"}  # byte counts must match Content-Length
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        with sess.get(url, stream=True, headers=headers, timeout=timeout,
                      allow_redirects=allow_redirects) as resp:
            if resp.status_code == 416 and have:  # .part already complete
                total = have
            elif resp.status_code not in (200, 206):
                raise DataError(f"{name}: HTTP {resp.status_code} from "
                                f"{_public_url(resp.url or url)} (expected 200)")
            else:
                if resp.status_code == 200 and have:
                    have = 0  # server ignored Range: start again
                length = resp.headers.get("Content-Length")
                total = have + int(length) if length is not None else None
                mode = "ab" if have else "wb"
                with open(part, mode) as fh, tqdm(
                        total=total, initial=have, unit="B", unit_scale=True,
                        unit_divisor=1024, desc=name, disable=not progress,
                        mininterval=1.0) as bar:
                    # read the raw stream so that every byte received before a
                    # dropped connection is kept for the resume (the size check below
                    # catches the truncation)
                    raw = resp.raw
                    raw.enforce_content_length = False
                    while True:
                        chunk = raw.read(CHUNK)
                        if not chunk:
                            break
                        fh.write(chunk)
                        bar.update(len(chunk))
    except requests.RequestException as err:
        raise DataError(f"{name}: download from {_public_url(url)} interrupted "
                        f"({type(err).__name__}); {os.path.getsize(part) if os.path.isfile(part) else 0}"
                        f" bytes kept in {part}, run again to resume") from None
    got = os.path.getsize(part)
    if total is not None and got < total:
        raise DataError(f"{name}: download from {_public_url(url)} stopped at {got} of "
                        f"{total} bytes; kept {part}, run again to resume")
    try:
        verify_file(part, md5=md5, sha256=sha256)
    except DataError as err:
        detail = str(err).replace(part, dest).split("; ")[0]
        raise DataError(f"{detail} after download from {_public_url(url)}; the partial "
                        "file was removed, run again to download it anew") from None
    os.replace(part, dest)
    return dest


def check_zip(path: str) -> None:
    """A DataError naming ``path`` unless it is a readable zip whose every member's
    CRC-32 matches (catches truncated and corrupted archives)."""
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path}: not a readable zip archive ({err}); the file is "
                        "corrupt or truncated") from None
    if bad is not None:
        raise DataError(f"{path}: CRC check failed for member {bad!r}; the archive is "
                        "corrupt")


def extract_zip(path: str, dest_dir: str, members: Optional[Iterable[str]] = None,
                strip: Optional[str] = None, progress: bool = True) -> str:
    """Extract ``path`` (optionally only names starting with one of ``members``, and with
    a leading ``strip`` component removed) into ``dest_dir``, all or nothing: the files go
    to ``dest_dir.partial`` first, CRC-checked, and the directory is renamed at the end."""
    from tqdm import tqdm

    tmp = dest_dir.rstrip("/") + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    prefixes = tuple(members) if members else None
    try:
        with zipfile.ZipFile(path) as zf:
            infos = [i for i in zf.infolist() if not i.is_dir()]
            if prefixes:
                infos = [i for i in infos if i.filename.startswith(prefixes)]
            if not infos:
                raise DataError(f"{path}: no members under {', '.join(prefixes or ['/'])}; "
                                "is this the right archive?")
            for info in tqdm(infos, desc=f"extract {os.path.basename(path)}", unit="file",
                             disable=not progress, mininterval=1.0):
                name = info.filename
                if strip and name.startswith(strip):
                    name = name[len(strip):]
                target = os.path.abspath(os.path.join(tmp, name))
                if not target.startswith(os.path.abspath(tmp) + os.sep):
                    raise DataError(f"{path}: member {info.filename!r} escapes the target")
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)  # raises BadZipFile on CRC error
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile, zlib.error) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"{path}: extraction failed ({err}); the archive is corrupt or "
                        "truncated, nothing was extracted") from None
    except OSError as err:  # the file system, not the archive (disk full, read-only, ...)
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"{path}: cannot extract into {tmp} ({err.strerror or err}); "
                        "nothing was extracted and the archive was kept") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if os.path.isdir(dest_dir):
        shutil.rmtree(dest_dir)
    os.replace(tmp, dest_dir)
    return dest_dir


def remove_meta(root: str) -> None:
    """Invalidate a dataset before rebuilding it (meta.json is the completion marker)."""
    path = os.path.join(root, "meta.json")
    if os.path.exists(path):
        os.remove(path)
