"""Tests for the procedurally generated synthetic street-scene dataset."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rewardseg.data import synthetic
from rewardseg.data.synthetic import (
    CLASSES,
    IGNORE_INDEX,
    IMG_SUFFIX,
    OPTIONS,
    PALETTE,
    SEG_MAP_SUFFIX,
    colorize,
    generate_dataset,
    image_seed,
    prepare,
    render_scene,
)

H, W = 128, 256
VALID = set(range(len(CLASSES))) | {IGNORE_INDEX}


@pytest.fixture(scope="module")
def scenes():
    """40 scenes at 128x256, rendered once for the statistics tests."""
    return [render_scene(s, H, W) for s in range(40)]


# --------------------------------------------------------------------------- constants
def test_classes_and_palette():
    assert CLASSES == ("road", "sidewalk", "building", "sky", "vegetation", "car", "person", "pole")
    assert len(PALETTE) == len(CLASSES)
    assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in PALETTE)
    assert len({tuple(c) for c in PALETTE}) == len(PALETTE)
    assert PALETTE[0] == [128, 64, 128] and PALETTE[5] == [0, 0, 142]  # Cityscapes road / car


def test_colorize():
    lab = np.array([[0, 7], [255, 3]], np.uint8)
    rgb = colorize(lab)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == PALETTE[0] and rgb[0, 1].tolist() == PALETTE[7]
    assert rgb[1, 0].tolist() == [0, 0, 0] and rgb[1, 1].tolist() == PALETTE[3]


# --------------------------------------------------------------------------- rendering
def test_same_seed_identical():
    a_img, a_lab = render_scene(123, H, W)
    b_img, b_lab = render_scene(123, H, W)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)


def test_different_seed_differs():
    a_img, a_lab = render_scene(1, H, W)
    b_img, b_lab = render_scene(2, H, W)
    assert not np.array_equal(a_img, b_img)
    assert not np.array_equal(a_lab, b_lab)


def test_numpy_integer_seed_same_as_int():
    a = render_scene(np.uint64(7), H, W)
    b = render_scene(7, H, W)
    np.testing.assert_array_equal(a[0], b[0])


@pytest.mark.parametrize("h,w", [(16, 16), (37, 53), (64, 64), (128, 256), (256, 512)])
def test_shapes_and_dtypes(h, w):
    img, lab = render_scene(5, h, w)
    assert img.shape == (h, w, 3) and img.dtype == np.uint8
    assert lab.shape == (h, w) and lab.dtype == np.uint8
    assert set(np.unique(lab).tolist()) <= VALID


def test_label_values_subset(scenes):
    seen = set()
    for _, lab in scenes:
        vals = set(np.unique(lab).tolist())
        assert vals <= VALID, vals - VALID
        seen |= vals
    assert set(range(len(CLASSES))) <= seen  # every class occurs somewhere


def test_class_imbalance(scenes):
    hist = np.zeros(256, np.int64)
    present = np.zeros(256, np.int64)
    for _, lab in scenes:
        bc = np.bincount(lab.ravel(), minlength=256)
        hist += bc
        present += bc > 0
    freq = hist / hist.sum()
    n = len(scenes)
    for name in ("road", "building", "sky"):
        assert freq[CLASSES.index(name)] > 0.05, (name, freq[CLASSES.index(name)])
    for name in ("sidewalk", "vegetation", "car"):
        assert freq[CLASSES.index(name)] > 0.01, (name, freq[CLASSES.index(name)])
    for name in ("person", "pole"):
        k = CLASSES.index(name)
        assert 0 < freq[k] < 0.03, (name, freq[k])
        assert present[k] / n >= 0.7, (name, present[k] / n)  # in most images
        # rarer than every "stuff" class
        assert freq[k] < min(freq[CLASSES.index(c)] for c in ("road", "sidewalk", "building", "sky"))


def test_ignore_blob_is_occasional_and_small(scenes):
    more = scenes + [render_scene(s, 64, 128) for s in range(1000, 1040)]
    with_ignore = [lab for _, lab in more if (lab == IGNORE_INDEX).any()]
    frac = len(with_ignore) / len(more)
    assert 0.05 <= frac <= 0.45, frac
    for lab in with_ignore:
        assert (lab == IGNORE_INDEX).mean() < 0.03


def test_poles_are_thin(scenes):
    """Horizontal runs of pole pixels are mostly 1-3 px (signs/lamp arms excepted)."""
    runs = []
    pole = CLASSES.index("pole")
    for _, lab in scenes:
        m = np.pad(lab == pole, ((0, 0), (1, 1))).astype(np.int8)
        d = np.diff(m, axis=1)
        starts = np.nonzero(d == 1)
        ends = np.nonzero(d == -1)
        runs.extend((ends[1] - starts[1]).tolist())
    runs = np.asarray(runs)
    assert runs.size > 0
    assert np.mean(runs <= 3) > 0.8, np.bincount(runs)[:10]


def test_not_separable_by_colour_alone():
    """A per-pixel nearest-class-mean colour classifier must be clearly imperfect."""
    def data(seeds):
        pairs = [render_scene(s, 64, 128) for s in seeds]
        x = np.concatenate([p[0].reshape(-1, 3) for p in pairs]).astype(np.float64)
        y = np.concatenate([p[1].ravel() for p in pairs])
        return x, y

    xa, ya = data(range(300, 315))
    xb, yb = data(range(400, 415))
    means = np.stack([xa[ya == k].mean(0) for k in range(len(CLASSES))])
    pred = np.argmin(((xb[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    valid = yb != IGNORE_INDEX
    acc = (pred[valid] == yb[valid]).mean()
    assert acc < 0.85, acc
    # but also not pure noise: colour carries some signal
    assert acc > 1.0 / len(CLASSES), acc


def test_images_are_not_flat(scenes):
    img, lab = scenes[0]
    for k in np.unique(lab):
        px = img[lab == k].astype(np.float64)
        if len(px) > 50:
            assert px.std(0).max() > 2.0, CLASSES[k] if k < len(CLASSES) else k  # textured + noise


# --------------------------------------------------------------------------- seeds
def test_image_seed():
    assert image_seed(0, "train", 3) == image_seed(0, "train", 3)
    seeds = {
        image_seed(0, "train", 0),
        image_seed(0, "train", 1),
        image_seed(0, "val", 0),
        image_seed(1, "train", 0),
    }
    assert len(seeds) == 4
    assert all(isinstance(s, int) and s >= 0 for s in seeds)
    with pytest.raises(ValueError, match="split"):
        image_seed(0, "test", 0)


# --------------------------------------------------------------------------- argument validation
@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(rng_seed=-1), "rng_seed"),
        (dict(rng_seed=1.5), "rng_seed"),
        (dict(rng_seed=True), "rng_seed"),
        (dict(height=0), "height"),
        (dict(height=8), "height"),
        (dict(width="256"), "width"),
        (dict(width=-5), "width"),
    ],
)
def test_render_bad_args(kwargs, name):
    args = dict(rng_seed=0, height=H, width=W)
    args.update(kwargs)
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        render_scene(**args)


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(num_train=0), "num_train"),
        (dict(num_train=2.0), "num_train"),
        (dict(num_val=-1), "num_val"),
        (dict(num_val=None), "num_val"),
        (dict(height=0), "height"),
        (dict(width=3), "width"),
        (dict(seed=-2), "seed"),
        (dict(seed="0"), "seed"),
        (dict(progress="yes"), "progress"),
        (dict(overwrite=1), "overwrite"),
        (dict(out_dir=""), "out_dir"),
        (dict(out_dir=None), "out_dir"),
    ],
)
def test_generate_bad_args(tmp_path, kwargs, name):
    args = dict(out_dir=tmp_path / "ds", num_train=2, num_val=1, height=32, width=64, progress=False)
    args.update(kwargs)
    with pytest.raises(ValueError, match=rf"\b{name}\b") as ei:
        generate_dataset(**args)
    assert "\n" not in str(ei.value)
    assert not (tmp_path / "ds").exists()
    assert os.listdir(tmp_path) == []  # nothing written, not even a tmp dir


# --------------------------------------------------------------------------- dataset writer
def _pairs(root: Path, split: str):
    """Pair images and labels the way mmseg's CityscapesDataset does (suffix swap)."""
    img_dir = root / "leftImg8bit" / split
    ann_dir = root / "gtFine" / split
    imgs = sorted(img_dir.rglob("*" + IMG_SUFFIX))
    out = []
    for p in imgs:
        rel = p.relative_to(img_dir).as_posix()
        seg = ann_dir / (rel[: -len(IMG_SUFFIX)] + SEG_MAP_SUFFIX)
        out.append((p, seg))
    return out


def test_generate_layout_and_meta(tmp_path):
    out = tmp_path / "synth_ds"
    meta = generate_dataset(out, num_train=4, num_val=2, height=32, width=64, seed=3, progress=False)
    assert sorted(os.listdir(tmp_path)) == ["synth_ds"]  # no leftover tmp/old dirs
    for split, n in (("train", 4), ("val", 2)):
        pairs = _pairs(out, split)
        assert len(pairs) == n
        assert len(list((out / "gtFine" / split).rglob("*" + SEG_MAP_SUFFIX))) == n
        for i, (ip, sp) in enumerate(pairs):
            assert ip.name == f"synth_{i:05d}_000000_leftImg8bit.png"
            assert ip.parent == out / "leftImg8bit" / split / "synth"
            assert sp.name == f"synth_{i:05d}_000000_gtFine_labelTrainIds.png"
            assert sp.is_file()
            with Image.open(ip) as im:
                assert im.mode == "RGB" and im.size == (64, 32)
            with Image.open(sp) as lb:
                assert lb.mode == "L" and lb.size == (64, 32)
                assert set(np.unique(np.asarray(lb)).tolist()) <= VALID

    on_disk = json.loads((out / "meta.json").read_text())
    assert on_disk["source"] == "synthetic"
    assert on_disk["classes"] == list(CLASSES) and on_disk["num_classes"] == len(CLASSES)
    assert on_disk["palette"] == PALETTE
    assert on_disk["num_train"] == 4 and on_disk["num_val"] == 2
    assert on_disk["height"] == 32 and on_disk["width"] == 64 and on_disk["seed"] == 3
    assert on_disk["img_suffix"] == IMG_SUFFIX and on_disk["label_suffix"] == SEG_MAP_SUFFIX
    assert on_disk["splits"] == {"train": 4, "val": 2}
    assert (on_disk["img_dir"], on_disk["label_dir"]) == ("leftImg8bit", "gtFine")
    assert on_disk["train_labels"] == "gtFine/train" and (out / "gtFine" / "train").is_dir()
    assert meta["root"] == str(out.resolve())
    assert {k: v for k, v in meta.items() if k not in ("root", "seconds")} == on_disk

    # per-class pixel frequencies over the train split match the written labels
    hist = np.zeros(256, np.int64)
    for _, sp in _pairs(out, "train"):
        hist += np.bincount(np.asarray(Image.open(sp)).ravel(), minlength=256)
    freq = on_disk["train_class_pixel_frequency"]
    assert list(freq) == list(CLASSES)
    for k, name in enumerate(CLASSES):
        assert freq[name] == pytest.approx(hist[k] / hist.sum())
    assert on_disk["train_ignore_pixel_frequency"] == pytest.approx(hist[255] / hist.sum())
    assert sum(freq.values()) + on_disk["train_ignore_pixel_frequency"] == pytest.approx(1.0)


def test_generate_is_deterministic_and_splits_differ(tmp_path):
    a = tmp_path / "a"
    b = tmp_path / "b"
    generate_dataset(a, 3, 3, height=32, width=64, seed=11, progress=False)
    generate_dataset(b, 3, 3, height=32, width=64, seed=11, progress=False)
    for split in ("train", "val"):
        for (ia, sa), (ib, sb) in zip(_pairs(a, split), _pairs(b, split)):
            np.testing.assert_array_equal(np.asarray(Image.open(ia)), np.asarray(Image.open(ib)))
            np.testing.assert_array_equal(np.asarray(Image.open(sa)), np.asarray(Image.open(sb)))
    # the written image is exactly render_scene(image_seed(seed, split, i))
    img, lab = render_scene(image_seed(11, "val", 2), 32, 64)
    ip, sp = _pairs(a, "val")[2]
    np.testing.assert_array_equal(np.asarray(Image.open(ip)), img)
    np.testing.assert_array_equal(np.asarray(Image.open(sp)), lab)
    # train and val images differ
    tr = np.asarray(Image.open(_pairs(a, "train")[0][0]))
    va = np.asarray(Image.open(_pairs(a, "val")[0][0]))
    assert not np.array_equal(tr, va)
    # a different seed gives a different dataset
    c = tmp_path / "c"
    generate_dataset(c, 1, 1, height=32, width=64, seed=12, progress=False)
    assert not np.array_equal(np.asarray(Image.open(_pairs(c, "train")[0][0])), tr)


def test_refuses_to_overwrite(tmp_path):
    out = tmp_path / "ds"
    generate_dataset(out, 1, 1, height=32, width=64, progress=False)
    marker = out / "marker.txt"
    marker.write_text("old")
    with pytest.raises(FileExistsError, match="overwrite"):
        generate_dataset(out, 1, 1, height=32, width=64, progress=False)
    assert marker.exists()  # untouched
    assert sorted(os.listdir(tmp_path)) == ["ds"]

    generate_dataset(out, 2, 1, height=32, width=64, progress=False, overwrite=True)
    assert not marker.exists()
    assert len(_pairs(out, "train")) == 2
    assert sorted(os.listdir(tmp_path)) == ["ds"]  # no leftover tmp/old dirs


def test_refuses_existing_file(tmp_path):
    out = tmp_path / "ds"
    out.write_text("not a dataset")
    with pytest.raises(FileExistsError):
        generate_dataset(out, 1, 1, height=32, width=64, progress=False)
    generate_dataset(out, 1, 1, height=32, width=64, progress=False, overwrite=True)
    assert out.is_dir() and (out / "meta.json").is_file()


def test_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
    real = synthetic.render_scene
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:
            raise KeyboardInterrupt("simulated interrupt")
        return real(*args, **kwargs)

    # generate_dataset (synthetic.writer) renders through the name in its own module
    monkeypatch.setattr(synthetic.writer, "render_scene", flaky)
    out = tmp_path / "ds"
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(out, 3, 2, height=32, width=64, progress=False)
    assert calls["n"] == 3
    assert not out.exists()
    assert os.listdir(tmp_path) == []  # temp dir cleaned up too


def test_interrupted_overwrite_keeps_old_dataset(tmp_path, monkeypatch):
    out = tmp_path / "ds"
    generate_dataset(out, 1, 1, height=32, width=64, progress=False)
    before = (out / "meta.json").read_text()

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(synthetic.writer, "render_scene", boom)
    with pytest.raises(RuntimeError):
        generate_dataset(out, 2, 2, height=32, width=64, progress=False, overwrite=True)
    assert (out / "meta.json").read_text() == before
    assert sorted(os.listdir(tmp_path)) == ["ds"]


def test_progress_bar(tmp_path, capsys):
    generate_dataset(tmp_path / "quiet", 1, 1, height=32, width=64, progress=False)
    assert capsys.readouterr().err == ""
    generate_dataset(tmp_path / "loud", 2, 1, height=32, width=64, progress=True)
    err = capsys.readouterr().err
    assert "3/3" in err


def test_creates_missing_parents(tmp_path):
    out = tmp_path / "a" / "b" / "ds"
    generate_dataset(out, 1, 1, height=32, width=64, progress=False)
    assert (out / "meta.json").is_file()
    assert os.listdir(out.parent) == ["ds"]


def test_defaults_are_the_options(tmp_path):
    """One set of defaults: generate_dataset's are those of OPTIONS (the study's)."""
    import inspect

    params = inspect.signature(generate_dataset).parameters
    scene_defaults = synthetic._scene_options(None)
    for key, spec in OPTIONS.items():
        if key in synthetic.SCENE_KEYS:  # passed as generate_dataset(scene={...})
            assert scene_defaults[key] == spec["default"], key
        else:
            assert params[key].default == spec["default"], key
    assert {k: v["default"] for k, v in OPTIONS.items()} == dict(
        num_train=200, num_val=32, height=96, width=192, seed=0,
        persons=1.0, person_size=1.0, poles=1.0, pole_width=1.0)


# ------------------------------------------------------------------ the rare classes' scene
def _pixel_share(scene, n=40, h=96, w=192):
    hist = np.zeros(256, np.int64)
    for s in range(n):
        hist += np.bincount(render_scene(s, h, w, scene)[1].ravel(), minlength=256)
    return hist / hist.sum()


def test_scene_multipliers_of_one_are_the_original_scenes():
    """All four multipliers at 1 draw nothing extra: the original scenes, bit for bit."""
    ones = dict(persons=1, person_size=1.0, poles=1.0, pole_width=1)
    for s in (0, 7, 123):
        img, lab = render_scene(s, 64, 128)
        img1, lab1 = render_scene(s, 64, 128, ones)
        assert np.array_equal(img, img1) and np.array_equal(lab, lab1)


def test_more_and_larger_persons_and_poles():
    """Each multiplier raises its class's share of the pixels; the default study's scene
    puts person and pole at Cityscapes' order (1-2.5 %) and keeps them the rarest classes."""
    person, pole = CLASSES.index("person"), CLASSES.index("pole")
    base = _pixel_share({})
    assert _pixel_share({"persons": 2})[person] > 1.3 * base[person]
    assert _pixel_share({"person_size": 1.5})[person] > 1.3 * base[person]
    assert _pixel_share({"poles": 2})[pole] > 1.3 * base[pole]
    assert _pixel_share({"pole_width": 2})[pole] > 1.3 * base[pole]
    import yaml

    with open(Path(__file__).resolve().parents[1] / "configs" / "studies" / "default.yaml") as fh:
        block = yaml.safe_load(fh)["dataset"]
    share = _pixel_share({k: block[k] for k in synthetic.SCENE_KEYS if k in block})
    for k in (person, pole):
        assert 0.01 <= share[k] <= 0.025, (CLASSES[k], share[k])
        assert share[k] < min(share[CLASSES.index(c)] for c in ("road", "building", "sky", "car"))


@pytest.mark.parametrize("scene, words", [
    ({"crowds": 2}, "scene option 'crowds' is not one of"),
    ({"persons": -1}, "persons must be a number >= 0"),
    ({"pole_width": "wide"}, "pole_width must be a number >= 0.25"),
    ({"person_size": True}, "person_size must be a number"),
])
def test_bad_scene_options_name_the_key(scene, words):
    with pytest.raises(ValueError, match=words):
        render_scene(0, 32, 64, scene)


def test_describe_names_the_scene_multipliers_that_differ():
    assert synthetic.describe({"persons": 1.5, "pole_width": 2.0, "poles": 1.0}) == (
        "synthetic street scenes (200 train / 32 val images, 96×192; persons ×1.5, "
        "pole width ×2)")


def test_prepare_passes_the_scene_and_records_it(tmp_path):
    block = dict(num_train=2, num_val=1, height=32, width=48, seed=5, persons=2.0,
                 pole_width=1.5)
    meta = prepare(str(tmp_path / "d"), block, progress=False)
    assert meta["persons"] == 2.0 and meta["pole_width"] == 1.5 and meta["poles"] == 1.0
    lab = np.asarray(Image.open(next((tmp_path / "d" / "gtFine" / "train").rglob("synth_00000_*.png"))))
    assert np.array_equal(lab, render_scene(image_seed(5, "train", 0), 32, 48,
                                            {"persons": 2.0, "pole_width": 1.5})[1])


def test_prepare_is_generate_with_the_block(tmp_path):
    """prepare(root, dataset block) writes what generate_dataset writes, file for file;
    it replaces an existing tree (the workflow rebuilds in place)."""
    block = dict(num_train=2, num_val=1, height=32, width=48, seed=5)
    a, b = tmp_path / "a", tmp_path / "b"
    b.mkdir()
    (b / "stale.txt").write_text("old")
    generate_dataset(a, progress=False, **block)
    meta = prepare(str(b), dict(block, name="b", source="synthetic"), progress=False)
    assert meta == json.loads((b / "meta.json").read_text())
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    with pytest.raises(ValueError, match="num_train"):
        prepare(str(tmp_path / "c"), {"num_train": 0}, progress=False)


def test_describe():
    assert synthetic.describe({}) == "synthetic street scenes (200 train / 32 val images, 96×192)"
    assert synthetic.describe({"num_train": 8, "height": 64}) == \
        "synthetic street scenes (8 train / 32 val images, 64×192)"
