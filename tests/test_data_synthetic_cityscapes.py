"""Synthetic scenes written as Cityscapes (rewardseg.data.synthetic_cityscapes) and
prepared by the Cityscapes source's own code from that local copy."""
import io
import json
import os
import zipfile

import numpy as np
import pytest
from PIL import Image

from rewardseg.data import SOURCES, load_meta, prepare, preflight
from rewardseg.data import synthetic, synthetic_cityscapes as sc
from rewardseg.data.cityscapes import PACKAGES, _label_one, train_classes

pytest.importorskip("cityscapesscripts")
from cityscapesscripts.helpers.labels import id2label, name2label  # noqa: E402

SMALL = dict(num_train=3, num_val=2, height=32, width=64, seed=5)
SCENE = dict(persons=1.5, person_size=1.5, poles=1.5, pole_width=2.0)


def _block(tmp_path, **extra):
    return dict(dict(name="sc", source="synthetic_cityscapes",
                     local_copy=str(tmp_path / "raw"), **SMALL), **extra)


def _scene(index, h=SMALL["height"], w=SMALL["width"], split="train", seed=SMALL["seed"],
           scene=None):
    return synthetic.render_scene(synthetic.image_seed(seed, split, index), h, w, scene)


def test_is_a_source_without_secrets_or_downloads(tmp_path):
    assert "synthetic_cityscapes" in SOURCES
    assert sc.SECRETS == ()
    # no credentials, no archive yet: nothing is missing (prepare writes the local copy)
    assert preflight("data/sc", _block(tmp_path), environ={}, workdir=str(tmp_path)) == []


def test_label_ids_and_polygons_give_back_each_pixels_class(tmp_path):
    """The written labelIds map to the Cityscapes train id of each pixel's synthetic class
    (by name), and the polygons, rasterised by the Cityscapes source's own conversion
    (cityscapesscripts' createLabelImage), give the same train ids pixel for pixel."""
    classes, _ = train_classes()
    for index, (h, w) in enumerate([(32, 64), (48, 96), (17, 33), (96, 192)]):
        _, label = _scene(index, h, w, scene=SCENE)
        ids = sc.id_lut()[label]
        for k, name in enumerate(synthetic.CLASSES):  # labelIds: the class's own name
            assert {id2label[int(i)].name for i in np.unique(ids[label == k])} <= {name}
        assert set(np.unique(ids[label == synthetic.IGNORE_INDEX])) <= {
            name2label["unlabeled"].id}
        train = sc.train_ids_of(ids)
        expected = np.full(label.shape, 255, np.uint8)
        for k, name in enumerate(synthetic.CLASSES):
            expected[label == k] = classes.index(name)
        np.testing.assert_array_equal(train, expected)
        # the polygons file, converted by the Cityscapes source's worker
        stem = tmp_path / f"x_{index:06d}_000019_gtFine"
        (tmp_path / f"{stem.name}_polygons.json").write_text(json.dumps(sc.polygons(label)))
        assert _label_one(str(tmp_path / f"{stem.name}_polygons.json")) is None
        converted = np.asarray(Image.open(tmp_path / f"{stem.name}_labelTrainIds.png"))
        np.testing.assert_array_equal(converted, expected)


def test_rectangles_cover_every_labelled_pixel_once():
    _, label = _scene(1, 40, 80, scene=SCENE)
    cover = np.zeros(label.shape, np.int64)
    out = np.full(label.shape, 255, np.int64)
    for value, x0, y0, x1, y1 in sc.rectangles(label):
        cover[y0:y1 + 1, x0:x1 + 1] += 1
        out[y0:y1 + 1, x0:x1 + 1] = value
    assert cover.max() == 1
    np.testing.assert_array_equal(cover == 0, label == synthetic.IGNORE_INDEX)
    np.testing.assert_array_equal(out, label)


def test_prepare_writes_the_archives_and_the_cityscapes_tree(tmp_path, monkeypatch):
    monkeypatch.delenv("CITYSCAPES_USERNAME", raising=False)
    monkeypatch.delenv("CITYSCAPES_PASSWORD", raising=False)
    root = tmp_path / "data" / "sc"
    meta = prepare(str(root), _block(tmp_path), progress=False, workers=1)
    # the two official archives, in their layout
    raw = tmp_path / "raw"
    assert sorted(os.listdir(raw)) == sorted(PACKAGES.values())
    with zipfile.ZipFile(raw / PACKAGES["gtFine"]) as zf:
        names = zf.namelist()
        stem = "gtFine/train/synthtrain/synthtrain_000000_000019_gtFine"
        for kind in ("polygons.json", "labelIds.png", "instanceIds.png", "color.png"):
            assert f"{stem}_{kind}" in names
        assert not [n for n in names if n.endswith("labelTrainIds.png")]  # as upstream's
        label_ids = np.asarray(Image.open(io.BytesIO(zf.read(f"{stem}_labelIds.png"))))
    with zipfile.ZipFile(raw / PACKAGES["leftImg8bit"]) as zf:
        img = np.asarray(Image.open(io.BytesIO(zf.read(
            "leftImg8bit/train/synthtrain/synthtrain_000000_000019_leftImg8bit.png"))))
    want_img, want_label = _scene(0)
    np.testing.assert_array_equal(img, want_img)
    np.testing.assert_array_equal(label_ids, sc.id_lut()[want_label])
    # the tree the Cityscapes source builds: images, its train-id maps, its meta.json
    assert meta == load_meta(str(root))
    assert meta["source"] == "cityscapes" and meta["num_classes"] == 19
    assert meta["classes"] == train_classes()[0]
    assert meta["splits"] == {"train": 3, "val": 2} and meta["num_label_maps"] == 5
    assert meta["generated"]["by"] == "rewardseg.data.synthetic_cityscapes"
    assert meta["generated"]["height"] == 32 and meta["license"] == sc.LICENSE
    assert sum(meta["train_class_pixel_frequency"].values()) + \
        meta["train_ignore_pixel_frequency"] == pytest.approx(1.0)
    for split, n in (("train", 3), ("val", 2)):
        city = sc.CITIES[split]
        for i in range(n):
            base = root / "gtFine" / split / city / f"{city}_{i:06d}_000019_gtFine"
            train_ids = np.asarray(Image.open(f"{base}_labelTrainIds.png"))
            ids = np.asarray(Image.open(f"{base}_labelIds.png"))
            np.testing.assert_array_equal(train_ids, sc.train_ids_of(ids))
            assert (root / "leftImg8bit" / split / city /
                    f"{city}_{i:06d}_000019_leftImg8bit.png").is_file()
    # prepared again with other options: nothing of the earlier tree is reused
    meta2 = prepare(str(root), _block(tmp_path, num_train=2), progress=False, workers=2)
    assert meta2["splits"]["train"] == 2
    assert len(os.listdir(root / "gtFine" / "train" / "synthtrain")) == 2 * 5


def test_describe():
    from rewardseg.data import describe

    assert describe({"source": "synthetic_cityscapes", **SMALL}) == (
        "synthetic street scenes in Cityscapes' format (3 train / 2 val images, 32×64), "
        "prepared by the Cityscapes source from a local copy (19 train ids, 8 present)")
