"""Real datasets: download, verify, extract and convert to mmseg's file layout.

Each ``prepare_<dataset>`` writes ``<root>/meta.json`` last (atomically): the workflow
takes a dataset as ready only when it exists. Raw archives live in a separate
``raw_dir`` so that a converted tree can be rebuilt without downloading again.
"""
import json
import os

from .archive import DataError  # noqa: F401

SOURCES = ("cityscapes", "easyportrait", "mapillary")


def prepare(source: str, root: str, **options):
    """Dispatch to ``prepare_<source>``; returns the meta dict written to meta.json."""
    if source == "cityscapes":
        from .cityscapes import prepare_cityscapes as fn
    elif source == "easyportrait":
        from .easyportrait import prepare_easyportrait as fn
    elif source == "mapillary":
        from .mapillary import prepare_mapillary as fn
    else:
        raise DataError(f"dataset.source: unknown source {source!r} "
                        f"(expected one of: synthetic, {', '.join(SOURCES)})")
    return fn(root, **options)


def load_meta(root: str) -> dict:
    """``root/meta.json`` of a prepared dataset ({} when it is not there yet)."""
    path = os.path.join(root, "meta.json")
    if not os.path.isfile(path):
        return {}
    with open(path) as fh:
        return json.load(fh)
