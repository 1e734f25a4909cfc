"""Procedurally generated synthetic street-scene segmentation dataset.

Every image is rendered from a single integer seed with numpy only (PIL is used
just to write PNGs), so a dataset is reproducible bit for bit from
``(seed, split, index)`` and needs no download.

Scenes are deliberately *not* trivially separable: per-class textures, building
windows, lane markings, per-image lighting (gain, contrast, white balance,
gradients, soft shadows), haze, colour jitter that makes e.g. grey cars, grey
buildings, overcast skies and pavements overlap in colour, Gaussian noise and
optional blur.  Class frequencies are imbalanced like a real street scene:
road / building / sky are large, person and pole are small, thin and rare.

Label convention (``trainId``)::

    0 road  1 sidewalk  2 building  3 sky  4 vegetation  5 car  6 person  7 pole
    255 ignore (a small "unlabelled object" blob in roughly 20% of images)

On-disk layout written by :func:`generate_dataset` follows the Cityscapes
convention that ``mmseg.datasets.CityscapesDataset`` scans::

    OUT/leftImg8bit/{train,val}/synth/synth_{i:05d}_000000_leftImg8bit.png
    OUT/gtFine/{train,val}/synth/synth_{i:05d}_000000_gtFine_labelTrainIds.png
    OUT/meta.json

As a dataset source (:mod:`rewardseg.data`): ``rewardseg prepare synthetic OUT
--dataset '{"num_train": 200}'``, or a study's ``dataset: {source: synthetic, ...}``;
the options and their defaults are :data:`OPTIONS`.

The package: :mod:`.spec` (classes, layout, options), :mod:`.canvas` (drawing primitives,
the street layout), :mod:`.background` and :mod:`.objects` (what a scene is made of),
:mod:`.scene` (:func:`render_scene`), :mod:`.writer` (:func:`generate_dataset`); this
module is the source's entry point (:func:`prepare`, :func:`describe`).
"""

from __future__ import annotations

from typing import Any, Dict

from ..options import resolve
from .scene import colorize, image_seed, render_scene
from .spec import (  # noqa: F401  (the names synthetic.py had; _scene_options: synthetic_cityscapes)
    BUILDING, CAR, CITY, CLASSES, CLASSES_OPTIONS, IGNORE_INDEX, IMG_SUFFIX, LICENSE,
    MIN_SIZE, NUM_CLASSES, OPTIONS, PALETTE, PERSON, POLE, ROAD, SCENE_KEYS, SECRETS,
    SEG_MAP_SUFFIX, SIDEWALK, SKY, SPLITS, VEGETATION, _scene_options)
from .writer import generate_dataset

__all__ = [
    "CLASSES",
    "PALETTE",
    "NUM_CLASSES",
    "IGNORE_INDEX",
    "IMG_SUFFIX",
    "SEG_MAP_SUFFIX",
    "SPLITS",
    "MIN_SIZE",
    "render_scene",
    "image_seed",
    "colorize",
    "generate_dataset",
    "OPTIONS",
    "CLASSES_OPTIONS",
    "SECRETS",
    "prepare",
    "describe",
]


# --------------------------------------------------------------------------- as a source
def prepare(root: str, dataset: Dict[str, Any], progress: bool = True,
            workers: int = 0) -> Dict[str, Any]:
    """Render the dataset of the study's ``dataset`` block (missing keys: the defaults of
    :data:`OPTIONS`) into ``root``, replacing what is there; returns ``root/meta.json``.
    ``workers`` is ignored (rendering is a few seconds)."""
    o = resolve(OPTIONS, dataset)
    meta = generate_dataset(root, o["num_train"], o["num_val"], height=o["height"],
                            width=o["width"], seed=o["seed"], progress=progress,
                            overwrite=True, scene={k: o[k] for k in SCENE_KEYS})
    return {k: v for k, v in meta.items() if k not in ("root", "seconds")}


def describe(dataset: Dict[str, Any]) -> str:
    """One line for the slides."""
    o = resolve(OPTIONS, dataset)
    scene = [f"{k.replace('_', ' ')} ×{o[k]:g}" for k in SCENE_KEYS
             if o[k] != OPTIONS[k]["default"]]
    return (f"synthetic street scenes ({o['num_train']} train / {o['num_val']} val images, "
            f"{o['height']}×{o['width']}{'; ' + ', '.join(scene) if scene else ''})")
