"""Mapillary Vistas preparation from a tiny tree / zip in the real layout (no network)."""
import io
import json
import os
import socket
import zipfile

import numpy as np
import pytest
from PIL import Image

from rewardseg.data import DataError, prepare
from rewardseg.data import mapillary as mv

H, W = 16, 24
URL = "https://www.mapillary.com/dataset/vistas"

# Class lists in the configs' style (a subset, deliberately not in the real order: the
# mapping must go by name). Expected Cityscapes train ids written out here.
CLASSES = {
    "v1.2": [
        ("object--vehicle--car", 13), ("nature--sky", 10), ("human--rider--motorcyclist", 12),
        ("construction--flat--road", 0), ("marking--general", 0),
        ("object--traffic-sign--back", 255), ("construction--flat--parking", 255),
        ("human--person", 11), ("construction--barrier--curb", 1),
        ("object--support--utility-pole", 5), ("void--unlabeled", 255)],
    "v2.0": [
        ("human--person--individual", 11), ("object--vehicle--car", 13),
        ("human--rider--bicyclist", 12), ("marking--continuous--solid", 0),
        ("object--traffic-light--general-upright", 6), ("object--traffic-sign--front", 7),
        ("construction--structure--garage", 2), ("object--sign--store", 255),
        ("void--unlabeled", 255)],
}
SPLIT_SIZES = {"training": 2, "validation": 1}


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr("rewardseg.data.archive.download", refuse)


def _jpg(seed):
    buf = io.BytesIO()
    arr = np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8)
    Image.fromarray(arr).save(buf, format="JPEG")
    return buf.getvalue()


def _palette_png(arr, colors):
    img = Image.fromarray(arr, mode="P")
    flat = [c for rgb in colors for c in rgb]
    img.putpalette(flat + [0] * (768 - len(flat)))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def make_files(version, seed=0):
    """{relative path: bytes} of a Vistas release, and {(split, stem): raw label}."""
    names = CLASSES[version]
    colors = [[(17 * i) % 256, (91 * i) % 256, (53 * i) % 256] for i in range(len(names))]
    config = {"labels": [{"name": n, "readable": n.split("--")[-1].replace("-", " ").title(),
                          "color": colors[i], "instances": True, "evaluate": True}
                         for i, (n, _) in enumerate(names)]}
    files = {f"config_{version}.json": json.dumps(config).encode()}
    raw = {}
    rng = np.random.default_rng(seed)
    for folder, n in SPLIT_SIZES.items():
        split = {"training": "train", "validation": "val"}[folder]
        for i in range(n):
            stem = f"{folder[:3]}{i:03d}_{rng.integers(1e6)}"
            lab = rng.integers(0, len(names), (H, W), dtype=np.uint8)
            lab[0, :len(names)] = np.arange(len(names))
            files[f"{folder}/images/{stem}.jpg"] = _jpg(seed + i + len(raw))
            files[f"{folder}/{version}/labels/{stem}.png"] = _palette_png(lab, colors)
            files[f"{folder}/{version}/instances/{stem}.png"] = b"not needed"
            raw[(split, stem)] = lab
    files["testing/images/test000.jpg"] = _jpg(99)
    return files, raw


def write_tree(base, files):
    for rel, blob in files.items():
        path = os.path.join(base, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(blob)


def write_zip(path, files, prefix=""):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel, blob in files.items():
            zf.writestr(prefix + rel, blob)


def check_cityscapes(root, raw, version):
    table = dict(CLASSES[version])
    names = [n for n, _ in CLASSES[version]]
    with open(os.path.join(root, "meta.json")) as fh:
        meta = json.load(fh)
    assert meta["source"] == "mapillary" and meta["class_setting"] == "cityscapes"
    assert meta["classes"][:3] == ["road", "sidewalk", "building"]
    assert len(meta["classes"]) == len(meta["palette"]) == meta["num_classes"] == 19
    assert meta["classes"][12] == "rider" and meta["classes"][18] == "bicycle"
    assert meta["label_dir"] == "labels_cityscapes"
    assert meta["train_labels"] == "labels_cityscapes/train"
    assert meta["splits"] == {"train": 2, "val": 1}
    assert (meta["img_dir"], meta["img_suffix"], meta["label_suffix"]) == \
        ("images", ".jpg", ".png")
    for key in mv.VISTAS_TO_CITYSCAPES:  # absent keys are reported, present ones are not
        assert (key in meta["unmapped_keys"]) == (key not in names)
    for (split, stem), lab in raw.items():
        img = os.path.join(root, "images", split, stem + ".jpg")
        assert os.path.isfile(img)
        out = np.asarray(Image.open(os.path.join(root, "labels_cityscapes", split,
                                                 stem + ".png")))
        assert out.dtype == np.uint8 and out.ndim == 2
        for (y, x), idx in np.ndenumerate(lab):
            assert out[y, x] == table[names[idx]], (stem, y, x, names[idx])
    return meta


def test_missing_data_says_what_to_do(tmp_path):
    raw = str(tmp_path / "raw")
    for version in ("v1.2", "v2.0"):
        with pytest.raises(DataError) as err:
            prepare(str(tmp_path / "mv"), dict(source="mapillary", raw_dir=raw,
                                               version=version), progress=False)
        msg = str(err.value)
        expected = os.path.join(os.path.abspath(raw),
                                f"mapillary-vistas-dataset_public_{version}.zip")
        assert expected in msg and URL in msg and "dataset.raw_dir" in msg
        assert "\n" not in msg
    assert not os.path.exists(raw)
    assert not os.path.exists(tmp_path / "mv" / "meta.json")


@pytest.mark.parametrize("version", ["v1.2", "v2.0"])
def test_extracted_tree_cityscapes(tmp_path, version):
    files, raw = make_files(version)
    raw_dir = str(tmp_path / "raw")
    write_tree(raw_dir, files)
    root = str(tmp_path / "mv")
    meta = mv.prepare_mapillary(root, raw_dir, version=version, progress=False)
    assert meta == check_cityscapes(root, raw, version)
    assert meta["version"] == version
    assert os.path.realpath(os.path.join(root, "images", "train")) == \
        os.path.realpath(os.path.join(raw_dir, "training", "images"))
    # rerun is cheap: labels up to date are kept
    val_stem = next(stem for split, stem in raw if split == "val")
    label = os.path.join(root, "labels_cityscapes", "val", val_stem + ".png")
    before = os.stat(label).st_mtime_ns
    mv.prepare_mapillary(root, raw_dir, version=version, progress=False)
    assert os.stat(label).st_mtime_ns == before
    check_cityscapes(root, raw, version)


@pytest.mark.parametrize("prefix", ["", "mapillary-vistas/"])
def test_zip_is_extracted_once(tmp_path, prefix):
    files, raw = make_files("v1.2", seed=1)
    raw_dir = str(tmp_path / "raw")
    write_zip(os.path.join(raw_dir, "mapillary-vistas-dataset_public_v1.2.zip"), files, prefix)
    root = str(tmp_path / "mv")
    mv.prepare_mapillary(root, raw_dir, progress=False)
    check_cityscapes(root, raw, "v1.2")
    extracted = os.path.join(raw_dir, "vistas_v1.2")
    assert os.path.isfile(os.path.join(extracted, "config_v1.2.json"))
    assert not os.path.exists(os.path.join(extracted, "training", "v1.2", "instances"))
    assert not os.path.exists(os.path.join(extracted, "testing"))
    assert not [n for n in os.listdir(raw_dir) if n.endswith(".partial")]
    cfg = os.path.join(extracted, "config_v1.2.json")
    before = os.stat(cfg).st_mtime_ns
    mv.prepare_mapillary(root, raw_dir, progress=False)
    assert os.stat(cfg).st_mtime_ns == before


def test_v20_zip_serves_v12(tmp_path):
    files, raw = make_files("v1.2", seed=2)
    raw_dir = str(tmp_path / "raw")
    write_zip(os.path.join(raw_dir, "mapillary-vistas-dataset_public_v2.0.zip"), files)
    mv.prepare_mapillary(str(tmp_path / "mv"), raw_dir, version="v1.2", progress=False)
    check_cityscapes(str(tmp_path / "mv"), raw, "v1.2")


def test_vistas_mode_keeps_ids(tmp_path):
    files, raw = make_files("v2.0", seed=3)
    raw_dir = str(tmp_path / "raw")
    write_tree(raw_dir, files)
    root = str(tmp_path / "mv")
    # through the uniform entry point: the study's dataset block names the class setting
    meta = prepare(root, dict(name="mv", source="mapillary", raw_dir=raw_dir, classes="vistas",
                              version="v2.0"), progress=False)
    assert meta["class_setting"] == "vistas" and meta["version"] == "v2.0"
    config = json.loads(files["config_v2.0.json"])
    assert meta["classes"] == [e["readable"] for e in config["labels"]]
    assert meta["palette"] == [e["color"] for e in config["labels"]]
    assert meta["label_dir"] == "labels_vistas" and meta["splits"] == {"train": 2, "val": 1}
    for (split, stem), lab in raw.items():
        out = np.asarray(Image.open(os.path.join(root, "labels_vistas", split, stem + ".png")))
        np.testing.assert_array_equal(out, lab)


def test_missing_label_names_the_directory(tmp_path):
    files, _ = make_files("v1.2", seed=4)
    raw_dir = str(tmp_path / "raw")
    write_tree(raw_dir, files)
    labels = os.path.join(raw_dir, "validation", "v1.2", "labels")
    os.remove(os.path.join(labels, os.listdir(labels)[0]))
    with pytest.raises(DataError) as err:
        mv.prepare_mapillary(str(tmp_path / "mv"), raw_dir, progress=False)
    assert labels in str(err.value)
    assert not os.path.exists(tmp_path / "mv" / "meta.json")


def test_mapping_table():
    assert set(mv.VISTAS_TO_CITYSCAPES.values()) == set(range(19))
    assert mv.VISTAS_TO_CITYSCAPES["human--rider--other-rider"] == 12
    assert "object--traffic-sign--back" not in mv.VISTAS_TO_CITYSCAPES
    assert all(len(k.split("--")) >= 2 for k in mv.VISTAS_TO_CITYSCAPES)
