"""The one mmseg dataset class of the studies: :class:`PreparedDataset`."""
from __future__ import annotations

import os

from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from ..data.meta import FILENAME, load_meta


@DATASETS.register_module()
class PreparedDataset(BaseSegDataset):
    """Any dataset written by ``rewardseg prepare``: classes, palette and file suffixes
    come from its ``meta.json``, so a dataset source needs no dataset class of its own
    (``dataset_type = 'PreparedDataset'`` in its mmseg config; every study's config uses
    it). Label maps hold the train ids already (no zero-label reduction). ``metainfo``
    overrides the meta's classes and palette, as in any mmseg dataset."""

    def __init__(self, data_root: str = "", metainfo=None, img_suffix=None,
                 seg_map_suffix=None, **kwargs):
        meta = load_meta(data_root)
        if not meta:
            raise FileNotFoundError(f"{os.path.join(data_root, FILENAME)} does not exist: "
                                    "prepare the dataset first (rewardseg prepare)")
        info = dict(classes=tuple(meta["classes"]), palette=[list(c) for c in meta["palette"]])
        info.update(metainfo or {})
        super().__init__(data_root=data_root, metainfo=info,
                         img_suffix=img_suffix or meta["img_suffix"],
                         seg_map_suffix=seg_map_suffix or meta["label_suffix"],
                         reduce_zero_label=False, **kwargs)
