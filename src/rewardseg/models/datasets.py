"""Dataset registrations for the studies."""
from __future__ import annotations

import os

from mmseg.datasets import BaseSegDataset, CityscapesDataset
from mmseg.registry import DATASETS

from ..data import synthetic
from ..data.easyportrait import CLASS_SETTINGS

FACE_PARSING = CLASS_SETTINGS["face_parsing"]


@DATASETS.register_module()
class SynthStreetDataset(BaseSegDataset):
    """The procedurally generated street scenes of :mod:`rewardseg.data.synthetic`
    (Cityscapes file layout, 8 classes, own trainIds: no Cityscapes label remapping)."""

    METAINFO = dict(classes=tuple(synthetic.CLASSES), palette=[list(p) for p in synthetic.PALETTE])

    def __init__(self, img_suffix=synthetic.IMG_SUFFIX, seg_map_suffix=synthetic.SEG_MAP_SUFFIX,
                 reduce_zero_label=False, **kwargs):
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix,
                         reduce_zero_label=reduce_zero_label, **kwargs)


@DATASETS.register_module()
class EasyPortraitDataset(BaseSegDataset):
    """EasyPortrait as prepared by ``rewardseg prepare easyportrait``: face parsing (8
    classes, person merged into background); pass ``metainfo`` with the two portrait
    classes for the portrait setting. Images ``.jpg``, label maps ``.png``."""

    METAINFO = dict(classes=tuple(FACE_PARSING[0]), palette=[list(c) for c in FACE_PARSING[1]])

    def __init__(self, img_suffix=".jpg", seg_map_suffix=".png", reduce_zero_label=False,
                 **kwargs):
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix,
                         reduce_zero_label=reduce_zero_label, **kwargs)


@DATASETS.register_module()
class MapillaryCityscapesDataset(BaseSegDataset):
    """Mapillary Vistas with labels mapped to the 19 Cityscapes train ids by
    ``rewardseg prepare mapillary`` (images ``.jpg``, label maps ``.png``)."""

    METAINFO = dict(CityscapesDataset.METAINFO)

    def __init__(self, img_suffix=".jpg", seg_map_suffix=".png", reduce_zero_label=False,
                 **kwargs):
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix,
                         reduce_zero_label=reduce_zero_label, **kwargs)


@DATASETS.register_module()
class PreparedDataset(BaseSegDataset):
    """Any dataset written by ``rewardseg prepare``: classes, palette and file suffixes
    come from its ``meta.json``, so a new dataset source needs no dataset class of its own
    (``dataset_type = 'PreparedDataset'`` in its mmseg config). Label maps hold the train
    ids already (no zero-label reduction)."""

    def __init__(self, data_root: str = "", metainfo=None, img_suffix=None,
                 seg_map_suffix=None, **kwargs):
        from ..data import load_meta

        meta = load_meta(data_root)
        if not meta:
            raise FileNotFoundError(f"{os.path.join(data_root, 'meta.json')} does not exist: "
                                    "prepare the dataset first (rewardseg prepare)")
        info = dict(classes=tuple(meta["classes"]), palette=[list(c) for c in meta["palette"]])
        info.update(metainfo or {})
        super().__init__(data_root=data_root, metainfo=info,
                         img_suffix=img_suffix or meta["img_suffix"],
                         seg_map_suffix=seg_map_suffix or meta["label_suffix"],
                         reduce_zero_label=False, **kwargs)
