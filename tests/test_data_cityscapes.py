"""Cityscapes preparation against a fake Cityscapes site on 127.0.0.1."""
import io
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

from conftest import ENV
from fakeserver import FakeServer
from rewardseg.data import DataError, prepare
from rewardseg.data.cityscapes import ENV_PASSWORD, ENV_USER, prepare_cityscapes

pytest.importorskip("cityscapesscripts")
from cityscapesscripts.helpers.labels import name2label  # noqa: E402

H, W = 32, 64
SECRET = "s3cr3t-pa55"
# (label, x0, y0, x1, y1) painted in order; the expectation uses the official table
OBJECTS = [("road", 0, 16, 63, 31), ("sky", 0, 0, 63, 7), ("building", 0, 8, 20, 15),
           ("car", 30, 10, 50, 25), ("license plate", 36, 20, 44, 24),
           ("cargroup", 52, 10, 60, 25), ("ego vehicle", 0, 28, 63, 31),
           ("person", 22, 8, 27, 20)]
CITIES = {"train": ["aachen", "bochum"], "val": ["frankfurt"], "test": ["berlin"]}


def _png(array):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _polygons(shift):
    objects = [dict(label=name, polygon=[[x0 + shift, y0], [x1 + shift, y0], [x1 + shift, y1],
                                         [x0 + shift, y1]], deleted=0, verified=0, date="",
                    id=i, user="")
               for i, (name, x0, y0, x1, y1) in enumerate(OBJECTS)]
    return json.dumps(dict(imgHeight=H, imgWidth=W, objects=objects))


def expected_train_ids(shift):
    """Each rectangle painted in order with its official trainId (objects with a negative
    id, the licence plate, are skipped by the rasteriser, as upstream does); pixels on
    any rectangle's outline are left out of the comparison (-1)."""
    out = np.full((H, W), 255, np.int64)  # unlabeled
    edge = np.zeros((H, W), bool)
    for name, x0, y0, x1, y1 in OBJECTS:
        label = name2label.get(name) or name2label[name[: -len("group")]]
        xs, xe = x0 + shift, min(W - 1, x1 + shift)
        edge[y0:y1 + 1, [xs, xe]] = True
        edge[[y0, y1], xs:xe + 1] = True
        if label.id >= 0:
            out[y0:y1 + 1, xs:xe + 1] = label.trainId
    out[edge] = -1
    return out


def make_archives(dest):
    """leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip in the real layout."""
    rng = np.random.default_rng(0)
    left, gt = io.BytesIO(), io.BytesIO()
    with zipfile.ZipFile(left, "w") as zl, zipfile.ZipFile(gt, "w") as zg:
        zl.writestr("README", "fake")
        zg.writestr("license.txt", "fake")
        for split, cities in CITIES.items():
            for c, city in enumerate(cities):
                for k in range(2):
                    stem = f"{city}_{k:06d}_000019"
                    img = (rng.random((H, W, 3)) * 255).astype(np.uint8)
                    zl.writestr(f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png", _png(img))
                    zg.writestr(f"gtFine/{split}/{city}/{stem}_gtFine_polygons.json",
                                _polygons(shift=k))
                    zg.writestr(f"gtFine/{split}/{city}/{stem}_gtFine_labelIds.png",
                                _png(np.zeros((H, W), np.uint8)))
    data = {"leftImg8bit_trainvaltest.zip": left.getvalue(),
            "gtFine_trainvaltest.zip": gt.getvalue()}
    if dest:
        for name, blob in data.items():
            with open(os.path.join(dest, name), "wb") as fh:
                fh.write(blob)
    return data


@pytest.fixture
def site(monkeypatch):
    server = FakeServer().start()
    for i, (name, blob) in enumerate(make_archives(None).items()):
        server.add_package(name, blob, package_id=i + 1)
    server.users["alice"] = SECRET
    monkeypatch.setenv(ENV_USER, "alice")
    monkeypatch.setenv(ENV_PASSWORD, SECRET)
    yield server
    server.stop()


def check_labels(root):
    for split in ("train", "val"):
        for city in CITIES[split]:
            for k in range(2):
                path = os.path.join(root, "gtFine", split, city,
                                    f"{city}_{k:06d}_000019_gtFine_labelTrainIds.png")
                got = np.array(Image.open(path)).astype(np.int64)
                want = expected_train_ids(k)
                mask = want >= 0
                assert mask.sum() > 500
                np.testing.assert_array_equal(got[mask], want[mask])
    # ignore pixels: ego vehicle (trainId 255) and the unpainted background (unlabeled)
    assert name2label["ego vehicle"].trainId == 255
    assert not os.path.exists(os.path.join(root, "gtFine", "test"))


def test_download_convert_and_labels(site, tmp_path, capsys):
    root, raw = str(tmp_path / "cityscapes"), str(tmp_path / "raw")
    meta = prepare_cityscapes(root, raw, base_url=site.url, workers=1, progress=False)
    check_labels(root)
    assert meta["splits"] == {"train": 4, "val": 2}
    assert meta["classes"][:3] == ["road", "sidewalk", "building"] and len(meta["classes"]) == 19
    assert json.load(open(os.path.join(root, "meta.json"))) == meta
    assert sorted(os.listdir(raw)) == ["gtFine_trainvaltest.zip", "leftImg8bit_trainvaltest.zip"]
    # the password went only into the login form body
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err + json.dumps(meta)
    posts = [r for r in site.requests if r[0] == "POST"]
    assert len(posts) == 1 and SECRET.encode() in posts[0][3]
    assert all(SECRET not in r[1] and SECRET not in json.dumps(r[2]) for r in site.requests)
    # a second run downloads nothing (archives verified locally, tree reused)
    n = len(site.requests)
    os.remove(os.path.join(root, "meta.json"))
    prepare_cityscapes(root, raw, base_url=site.url, workers=1, progress=False)
    assert len(site.requests) == n


def test_missing_credentials_downloads_nothing(site, tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_PASSWORD)
    raw = tmp_path / "raw"
    with pytest.raises(DataError, match=f"set {ENV_PASSWORD}") as err:
        prepare_cityscapes(str(tmp_path / "cs"), str(raw), base_url=site.url, progress=False)
    assert ENV_USER not in str(err.value).split("set ")[1].split(" (")[0]
    assert site.requests == [] and not raw.exists()
    monkeypatch.delenv(ENV_USER)
    with pytest.raises(DataError, match=f"set {ENV_USER} and {ENV_PASSWORD}"):
        prepare_cityscapes(str(tmp_path / "cs"), str(raw), base_url=site.url, progress=False)


def test_wrong_password_is_refused(site, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_PASSWORD, "wrong")
    with pytest.raises(DataError, match="refused.*CITYSCAPES_PASSWORD"):
        prepare_cityscapes(str(tmp_path / "cs"), str(tmp_path / "raw"), base_url=site.url,
                           progress=False)
    assert not (tmp_path / "raw").exists() or not os.listdir(tmp_path / "raw")


def test_corrupt_download_fails_checksum_and_leaves_nothing(site, tmp_path):
    site.corrupt.add("gtFine_trainvaltest.zip")
    root, raw = tmp_path / "cs", tmp_path / "raw"
    with pytest.raises(DataError, match="gtFine_trainvaltest.zip: md5 checksum mismatch"):
        prepare_cityscapes(str(root), str(raw), base_url=site.url, progress=False)
    assert sorted(os.listdir(raw)) == ["leftImg8bit_trainvaltest.zip"]  # verified one kept
    assert not (root / "meta.json").exists()


def test_truncated_download_resumes(site, tmp_path):
    site.truncate["leftImg8bit_trainvaltest.zip"] = 1000
    root, raw = str(tmp_path / "cs"), tmp_path / "raw"
    with pytest.raises(DataError, match="leftImg8bit_trainvaltest.zip.*run again to resume"):
        prepare_cityscapes(root, str(raw), base_url=site.url, progress=False)
    assert os.path.getsize(raw / "leftImg8bit_trainvaltest.zip.part") == 1000
    prepare_cityscapes(root, str(raw), base_url=site.url, workers=1, progress=False)
    ranged = [r for r in site.requests if r[2].get("Range") == "bytes=1000-"]
    assert len(ranged) == 1
    check_labels(root)


def test_corrupt_local_archive_extracts_nothing(tmp_path):
    local = tmp_path / "local"
    local.mkdir()
    make_archives(str(local))
    path = local / "gtFine_trainvaltest.zip"
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 3] ^= 0xFF
    path.write_bytes(bytes(blob))
    root = tmp_path / "cs"
    with pytest.raises(DataError, match="gtFine_trainvaltest.zip"):
        prepare_cityscapes(str(root), str(tmp_path / "raw"), local_copy=str(local),
                           base_url="http://127.0.0.1:9", progress=False)
    assert not (root / "gtFine").exists() and not (root / "gtFine.partial").exists()
    assert not (root / "meta.json").exists()
    assert path.exists()  # the user's own file is never deleted


def test_local_extracted_copy_is_not_modified(tmp_path):
    local = tmp_path / "local"
    local.mkdir()
    for name, blob in make_archives(None).items():
        with zipfile.ZipFile(io.BytesIO(blob)) as zf:
            zf.extractall(local)
    before = sorted(str(p.relative_to(local)) for p in local.rglob("*"))
    root = str(tmp_path / "cs")
    # through the uniform entry point: the study's dataset block
    block = dict(name="cs", source="cityscapes", raw_dir=str(tmp_path / "raw"),
                 local_copy=str(local), base_url="http://127.0.0.1:9")
    meta = prepare(root, block, workers=1, progress=False)
    check_labels(root)
    assert meta["splits"] == {"train": 4, "val": 2}
    assert meta["num_classes"] == 19 and meta["train_labels"] == "gtFine/train"
    assert json.load(open(os.path.join(root, "meta.json"))) == meta
    assert sorted(str(p.relative_to(local)) for p in local.rglob("*")) == before


def test_cli_reports_missing_credentials_in_one_line(tmp_path):
    env = {k: v for k, v in ENV.items() if k not in (ENV_USER, ENV_PASSWORD)}
    block = json.dumps({"raw_dir": str(tmp_path / "raw"), "base_url": "http://127.0.0.1:9"})
    proc = subprocess.run([sys.executable, "-m", "rewardseg", "prepare", "cityscapes",
                           str(tmp_path / "cs"), "--dataset", block, "--quiet"],
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and ENV_USER in lines[0] and ENV_PASSWORD in lines[0]
    assert not (tmp_path / "raw").exists()


def test_credentials_are_not_options(tmp_path):
    """A password in the dataset block is refused by name, and its value is not echoed."""
    block = json.dumps({"password": SECRET})
    proc = subprocess.run([sys.executable, "-m", "rewardseg", "prepare", "cityscapes",
                           str(tmp_path / "cs"), "--dataset", block, "--quiet"],
                          env=ENV, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "dataset.password is not an option of source 'cityscapes'" in proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    assert not (tmp_path / "cs").exists()


def test_full_disk_is_not_reported_as_a_corrupt_archive(tmp_path, monkeypatch):
    import errno
    import shutil

    from rewardseg.data import archive

    zpath = tmp_path / "a.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("x/y.txt", "hello")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copyfileobj", full)
    with pytest.raises(DataError, match="cannot extract into .*No space left on device.*"
                                        "archive was kept"):
        archive.extract_zip(str(zpath), str(tmp_path / "out"), progress=False)
    assert zpath.exists() and not (tmp_path / "out.partial").exists()
