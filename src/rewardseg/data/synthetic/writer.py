"""Writes a Cityscapes-layout dataset of rendered scenes (images, labels, ``meta.json``)
into place atomically."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np

from ..meta import write_meta
from .scene import image_seed, render_scene
from .spec import (CITY, CLASSES, IGNORE_INDEX, IMG_SUFFIX, LICENSE, MIN_SIZE, OPTIONS,
                   PALETTE, SEG_MAP_SUFFIX, SPLITS, _check_bool, _check_int, _scene_options)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def generate_dataset(
    out_dir: Union[str, "os.PathLike[str]"],
    num_train: int = OPTIONS["num_train"]["default"],
    num_val: int = OPTIONS["num_val"]["default"],
    height: int = OPTIONS["height"]["default"],
    width: int = OPTIONS["width"]["default"],
    seed: int = OPTIONS["seed"]["default"],
    progress: bool = True,
    overwrite: bool = False,
    scene: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Render and write a Cityscapes-layout synthetic dataset to ``out_dir``.

    Files are written into ``<out_dir>.tmp-<pid>`` and renamed into place only
    when everything (including ``meta.json``) has been written, so an
    interrupted run never leaves a complete-looking ``out_dir``.  Raises
    :class:`FileExistsError` if ``out_dir`` exists, unless ``overwrite=True``.
    Returns the metadata dict that is also stored as ``out_dir/meta.json`` (plus
    ``root`` and ``seconds``). The defaults are those of :data:`OPTIONS`; ``scene``
    holds the :data:`SCENE_KEYS` (persons and poles: how many, how large).
    """
    if not isinstance(out_dir, (str, os.PathLike)) or str(out_dir) == "":
        raise ValueError(f"out_dir must be a non-empty path, got {out_dir!r}")
    num_train = _check_int("num_train", num_train, 1)
    num_val = _check_int("num_val", num_val, 1)
    height = _check_int("height", height, MIN_SIZE)
    width = _check_int("width", width, MIN_SIZE)
    seed = _check_int("seed", seed, 0)
    scene = _scene_options(scene)
    progress = _check_bool("progress", progress)
    overwrite = _check_bool("overwrite", overwrite)

    final = Path(os.path.abspath(os.fspath(out_dir)))
    tmp = _temp_dir(final, overwrite)
    counts = {"train": num_train, "val": num_val}
    t0 = time.perf_counter()
    try:
        hist, present = _write_images(tmp, counts, height, width, seed, scene, progress,
                                      final.name)
        meta = _write_meta(tmp, counts, hist, present, height, width, seed, scene)
        _move_into_place(tmp, final, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    meta["root"] = str(final)
    meta["seconds"] = time.perf_counter() - t0
    return meta


def _temp_dir(final: Path, overwrite: bool) -> Path:
    """The empty temporary path ``<final>.tmp-<pid>`` next to ``final`` (its parents
    created); a FileExistsError if ``final`` exists and not ``overwrite``."""
    if (final.exists() or final.is_symlink()) and not overwrite:
        raise FileExistsError(
            f"out_dir {str(final)!r} already exists; pass overwrite=True (--overwrite) to replace it"
        )
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f"{final.name}.tmp-{os.getpid()}"
    _remove(tmp)
    return tmp


def _write_images(tmp: Path, counts: Dict[str, int], height: int, width: int, seed: int,
                  scene: Dict[str, float], progress: bool,
                  name: str) -> Tuple[np.ndarray, np.ndarray]:
    """Render and write every split's images and labels under ``tmp``; returns the train
    labels' pixel count per value and the number of train images each value occurs in."""
    from PIL import Image
    from tqdm import tqdm

    hist = np.zeros(256, np.int64)
    present = np.zeros(256, np.int64)
    with tqdm(total=sum(counts.values()), desc=f"synth -> {name}", unit="img",
              disable=not progress, dynamic_ncols=True) as bar:
        for split in SPLITS:
            img_dir = tmp / "leftImg8bit" / split / CITY
            ann_dir = tmp / "gtFine" / split / CITY
            img_dir.mkdir(parents=True)
            ann_dir.mkdir(parents=True)
            for i in range(counts[split]):
                img, label = render_scene(image_seed(seed, split, i), height, width, scene)
                stem = f"{CITY}_{i:05d}_000000"
                Image.fromarray(img).save(img_dir / f"{stem}{IMG_SUFFIX}", compress_level=1)
                Image.fromarray(label).save(ann_dir / f"{stem}{SEG_MAP_SUFFIX}", compress_level=1)
                if split == "train":
                    bc = np.bincount(label.ravel(), minlength=256)
                    hist += bc
                    present += bc > 0
                bar.update(1)
    return hist, present


def _write_meta(tmp: Path, counts: Dict[str, int], hist: np.ndarray, present: np.ndarray,
                height: int, width: int, seed: int, scene: Dict[str, float]) -> Dict[str, Any]:
    """Write ``tmp/meta.json``: the layout, the options and the train class frequencies."""
    num_train, num_val = counts["train"], counts["val"]
    total = float(hist.sum())
    return write_meta(
        str(tmp), "synthetic", CLASSES, PALETTE, counts, img_dir="leftImg8bit",
        label_dir="gtFine", img_suffix=IMG_SUFFIX, label_suffix=SEG_MAP_SUFFIX,
        license=LICENSE, num_train=num_train, num_val=num_val, height=height,
        width=width, seed=seed, **scene,
        # fraction of all train pixels per class (+ ignore): sums to 1
        train_class_pixel_frequency={n: float(hist[k] / total) for k, n in enumerate(CLASSES)},
        train_ignore_pixel_frequency=float(hist[IGNORE_INDEX] / total),
        # fraction of train images in which the class occurs at all
        train_class_image_frequency={n: float(present[k] / num_train)
                                     for k, n in enumerate(CLASSES)},
    )


def _move_into_place(tmp: Path, final: Path, overwrite: bool) -> None:
    """Rename the complete ``tmp`` to ``final``, replacing it (``overwrite``) if it
    appeared meanwhile; a FileExistsError otherwise."""
    if final.exists() or final.is_symlink():
        if not overwrite:
            raise FileExistsError(
                f"out_dir {str(final)!r} appeared while generating; pass overwrite=True to replace it"
            )
        old = final.parent / f"{final.name}.old-{os.getpid()}"
        _remove(old)
        os.replace(final, old)
        os.replace(tmp, final)
        _remove(old)
    else:
        os.replace(tmp, final)
