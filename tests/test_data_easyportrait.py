"""EasyPortrait preparation against tiny archives in the real layout, served on 127.0.0.1."""
import hashlib
import io
import json
import os
import socket
import zipfile

import numpy as np
import pytest
from PIL import Image

from fakeserver import FakeServer
from rewardseg.data import DataError, prepare
from rewardseg.data import easyportrait as ep
from rewardseg.data import labels

H, W = 16, 24
SPLITS = {"train": 3, "val": 2, "test": 2}
# Written out independently of the module's tables: raw value -> class index.
FACE = {0: 0, 1: 0, 2: 1, 3: 2, 4: 3, 5: 4, 6: 5, 7: 6, 8: 7}
PORTRAIT = {0: 0, 1: 1, 2: 1, 3: 1, 4: 1, 5: 1, 6: 1, 7: 1, 8: 1}
INVALID = (9, 17, 200, 255)


def _expected(raw, table):
    out = np.full(raw.shape, 255, dtype=np.uint8)
    for (y, x), v in np.ndenumerate(raw):
        out[y, x] = table.get(int(v), 255)
    return out


def _png(arr, mode="L"):
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def _jpg(seed):
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def make_dataset(seed=0, splits=SPLITS):
    """{(split, stem): (jpg bytes, raw label array)}; every value 0..8 and some invalid
    ones appear in each label."""
    rng = np.random.default_rng(seed)
    data = {}
    for split, n in splits.items():
        for i in range(n):
            raw = rng.integers(0, 9, (H, W), dtype=np.uint8)
            raw[0, :9] = np.arange(9)
            raw[1, :len(INVALID)] = INVALID
            data[(split, f"{split}_{i:04d}")] = (_jpg(seed * 100 + i + len(data)), raw)
    return data


def make_zips(data, prefix=True, compression=zipfile.ZIP_STORED):
    images, annotations = io.BytesIO(), io.BytesIO()
    ip, ap = ("images/", "annotations/") if prefix else ("", "")
    with zipfile.ZipFile(images, "w", compression) as zi, \
            zipfile.ZipFile(annotations, "w", compression) as za:
        for (split, stem), (jpg, raw) in data.items():
            zi.writestr(f"{ip}{split}/{stem}.jpg", jpg)
            za.writestr(f"{ap}{split}/{stem}.png", _png(raw))
        za.writestr(f"{ap}meta.zip", b"PK\x05\x06" + b"\0" * 18)  # an (empty) inner zip
    return images.getvalue(), annotations.getvalue()


def write_tree(base, data):
    for (split, stem), (jpg, raw) in data.items():
        for sub, name, blob in (("images", stem + ".jpg", jpg),
                                ("annotations", stem + ".png", _png(raw))):
            os.makedirs(os.path.join(base, sub, split), exist_ok=True)
            with open(os.path.join(base, sub, split, name), "wb") as fh:
                fh.write(blob)


def check_output(root, data, classes):
    table = FACE if classes == "face_parsing" else PORTRAIT
    with open(os.path.join(root, "meta.json")) as fh:
        meta = json.load(fh)
    label_dir = f"labels_{classes}"
    assert meta["source"] == "easyportrait" and meta["class_setting"] == classes
    assert meta["label_dir"] == label_dir and meta["img_dir"] == "images"
    assert meta["train_labels"] == f"{label_dir}/train"
    assert (meta["img_suffix"], meta["label_suffix"]) == (".jpg", ".png")
    assert meta["splits"] == {s: n for s, n in SPLITS.items()}
    n_classes = 8 if classes == "face_parsing" else 2
    assert len(meta["classes"]) == len(meta["palette"]) == meta["num_classes"] == n_classes
    assert meta["classes"][0] == "background"
    if classes == "face_parsing":
        assert meta["classes"][1] == "skin" and meta["classes"][7] == "teeth"
    for (split, stem), (jpg, raw) in data.items():
        with open(os.path.join(root, "images", split, stem + ".jpg"), "rb") as fh:
            assert fh.read() == jpg
        lab = np.asarray(Image.open(os.path.join(root, label_dir, split, stem + ".png")))
        assert lab.dtype == np.uint8 and lab.shape == (H, W)
        np.testing.assert_array_equal(lab, _expected(raw, table))
        assert (lab[1, :len(INVALID)] == 255).all()
    assert not [n for n in os.listdir(os.path.join(root, label_dir, "train"))
                if n.endswith(".tmp")]
    return meta


def partials(*dirs):
    found = []
    for d in dirs:
        for base, subdirs, files in os.walk(d):
            found += [os.path.join(base, n) for n in subdirs + files if n.endswith(".partial")]
    return found


@pytest.fixture
def server():
    srv = FakeServer().start()
    yield srv
    srv.stop()


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(ep, "download", refuse)


def serve(server, images, annotations):
    server.files["/files/images.zip"] = images
    server.files["/files/annotations.zip"] = annotations
    server.redirects["/LNLr"] = "/files/images.zip"
    server.redirects["/wPGX"] = "/files/annotations.zip"
    return {"images.zip": server.url + "/LNLr", "annotations.zip": server.url + "/wPGX"}


def test_defaults_are_the_readme_short_links():
    assert ep.DEFAULT_URLS == {"images.zip": "https://sc.link/LNLr",
                               "annotations.zip": "https://sc.link/wPGX"}


def test_download_through_redirect_both_settings_and_no_redownload(tmp_path, server):
    data = make_dataset()
    images, annotations = make_zips(data)
    urls = serve(server, images, annotations)
    root, raw = str(tmp_path / "ep"), str(tmp_path / "raw")
    sha = {"images.zip": hashlib.sha256(images).hexdigest()}

    meta = prepare(root, dict(name="ep", source="easyportrait", raw_dir=raw, urls=urls,
                              sha256=sha), progress=False)
    assert meta == check_output(root, data, "face_parsing")
    paths = [p for _, p, _, _ in server.requests]
    assert paths.count("/LNLr") == 1 and paths.count("/files/images.zip") == 1
    assert paths.count("/wPGX") == 1 and paths.count("/files/annotations.zip") == 1
    with open(os.path.join(raw, "images.zip"), "rb") as fh:
        assert fh.read() == images
    assert not os.path.exists(os.path.join(root, "annotations", "meta.zip"))

    n = len(server.requests)
    label = os.path.join(root, "labels_face_parsing", "train", "train_0000.png")
    ann = os.path.join(root, "annotations", "train", "train_0000.png")
    stamps = os.stat(label).st_mtime_ns, os.stat(ann).st_mtime_ns
    ep.prepare_easyportrait(root, raw, classes="portrait", urls=urls, sha256=sha,
                            progress=False)
    check_output(root, data, "portrait")
    ep.prepare_easyportrait(root, raw, urls=urls, progress=False)
    check_output(root, data, "face_parsing")
    assert len(server.requests) == n  # archives verified and kept, nothing fetched
    assert (os.stat(label).st_mtime_ns, os.stat(ann).st_mtime_ns) == stamps  # up to date


def test_wrong_sha256_is_an_error(tmp_path, server):
    urls = serve(server, *make_zips(make_dataset()))
    with pytest.raises(DataError, match="images.zip.*checksum mismatch"):
        ep.prepare_easyportrait(str(tmp_path / "ep"), str(tmp_path / "raw"), urls=urls,
                                sha256={"images.zip": "0" * 64}, progress=False)
    assert not os.path.exists(tmp_path / "ep" / "meta.json")


@pytest.mark.parametrize("prefix", [True, False])
def test_local_copy_zips_without_network(tmp_path, no_network, prefix):
    data = make_dataset(seed=1)
    local = tmp_path / "local"
    local.mkdir()
    images, annotations = make_zips(data, prefix=prefix, compression=zipfile.ZIP_DEFLATED)
    (local / "images.zip").write_bytes(images)
    (local / "annotations.zip").write_bytes(annotations)
    root = str(tmp_path / "ep")
    ep.prepare_easyportrait(root, str(tmp_path / "raw"), classes="portrait",
                            local_copy=str(local), progress=False)
    check_output(root, data, "portrait")
    assert not os.path.exists(tmp_path / "raw")


def test_local_copy_extracted_tree_is_symlinked(tmp_path, no_network, monkeypatch):
    data = make_dataset(seed=2)
    local = str(tmp_path / "local")
    write_tree(local, data)
    root = str(tmp_path / "ep")
    monkeypatch.setattr(labels, "POOL_MIN_FILES", 1)  # exercise the process pool
    ep.prepare_easyportrait(root, str(tmp_path / "raw"), local_copy=local, progress=False)
    check_output(root, data, "face_parsing")
    for split in SPLITS:
        link = os.path.join(root, "images", split)
        assert os.path.islink(link)
        assert os.path.realpath(link) == os.path.realpath(os.path.join(local, "images", split))


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_corrupt_archive(tmp_path, server, compression):
    data = make_dataset(seed=3)
    urls = serve(server, *make_zips(data, compression=compression))
    server.corrupt.add("/files/images.zip")
    root, raw = str(tmp_path / "ep"), str(tmp_path / "raw")
    with pytest.raises(DataError) as err:
        ep.prepare_easyportrait(root, raw, urls=urls, progress=False)
    assert os.path.join(raw, "images.zip") in str(err.value)
    assert not os.path.exists(os.path.join(root, "meta.json"))
    assert not os.path.exists(os.path.join(root, "images"))
    assert partials(root, raw) == []
    assert not os.path.exists(os.path.join(raw, "images.zip"))  # fetched anew next time

    server.corrupt.clear()
    ep.prepare_easyportrait(root, raw, urls=urls, progress=False)
    check_output(root, data, "face_parsing")


def test_truncated_transfer_resumes_with_range(tmp_path, server):
    data = make_dataset(seed=4)
    images, annotations = make_zips(data)
    urls = serve(server, images, annotations)
    server.truncate["/files/annotations.zip"] = len(annotations) // 2
    root, raw = str(tmp_path / "ep"), str(tmp_path / "raw")
    with pytest.raises(DataError, match="annotations.zip"):
        ep.prepare_easyportrait(root, raw, urls=urls, progress=False)
    part = os.path.join(raw, "annotations.zip.part")
    assert os.path.getsize(part) == len(annotations) // 2
    assert not os.path.exists(os.path.join(root, "meta.json"))

    ep.prepare_easyportrait(root, raw, urls=urls, progress=False)
    check_output(root, data, "face_parsing")
    assert not os.path.exists(part)
    ranges = [h.get("Range") for _, p, h, _ in server.requests
              if p == "/files/annotations.zip"]
    assert ranges[-1] == f"bytes={len(annotations) // 2}-"


def test_missing_annotation_names_the_directory(tmp_path, no_network):
    data = make_dataset(seed=5)
    local = str(tmp_path / "local")
    write_tree(local, data)
    os.remove(os.path.join(local, "annotations", "val", "val_0001.png"))
    root = str(tmp_path / "ep")
    with pytest.raises(DataError) as err:
        ep.prepare_easyportrait(root, str(tmp_path / "raw"), local_copy=local, progress=False)
    assert os.path.join(root, "annotations", "val") in str(err.value)
    assert "val_0001.png" in str(err.value)
    assert not os.path.exists(os.path.join(root, "meta.json"))


def test_empty_split_names_the_directory(tmp_path, no_network):
    data = make_dataset(seed=6, splits={"train": 2, "val": 1})
    local = tmp_path / "local"
    local.mkdir()
    images, annotations = make_zips(data)
    (local / "images.zip").write_bytes(images)
    (local / "annotations.zip").write_bytes(annotations)
    root = str(tmp_path / "ep")
    with pytest.raises(DataError) as err:
        ep.prepare_easyportrait(root, str(tmp_path / "raw"), local_copy=str(local),
                                progress=False)
    assert os.path.join(root, "images", "test") in str(err.value)
    # asking only for the splits that exist works
    meta = ep.prepare_easyportrait(root, str(tmp_path / "raw"), local_copy=str(local),
                                   splits=("train", "val"), progress=False)
    assert meta["splits"] == {"train": 2, "val": 1}


def test_bad_options(tmp_path, no_network):
    with pytest.raises(DataError, match="classes"):
        ep.prepare_easyportrait(str(tmp_path / "ep"), str(tmp_path / "raw"), classes="x")
    with pytest.raises(DataError, match="local_copy"):
        ep.prepare_easyportrait(str(tmp_path / "ep"), str(tmp_path / "raw"),
                                local_copy=str(tmp_path))


def test_broken_deflate_stream_is_a_data_error(tmp_path, no_network):
    """A corrupted deflate stream makes zlib raise its own error: still a DataError."""
    data = make_dataset(seed=7)
    images, annotations = make_zips(data, compression=zipfile.ZIP_DEFLATED)
    with zipfile.ZipFile(io.BytesIO(annotations)) as zf:
        info = zf.infolist()[0]
    local = tmp_path / "local"
    local.mkdir()
    blob = bytearray(annotations)
    header = info.header_offset
    name_len, extra_len = int.from_bytes(blob[header + 26:header + 28], "little"), \
        int.from_bytes(blob[header + 28:header + 30], "little")
    blob[header + 30 + name_len + extra_len] = 0xFF  # reserved deflate block type
    (local / "images.zip").write_bytes(images)
    (local / "annotations.zip").write_bytes(bytes(blob))
    root = str(tmp_path / "ep")
    with pytest.raises(DataError, match="annotations.zip"):
        ep.prepare_easyportrait(root, str(tmp_path / "raw"), local_copy=str(local),
                                progress=False)
    assert partials(root) == [] and not os.path.exists(os.path.join(root, "meta.json"))
    assert os.path.isfile(local / "annotations.zip")  # a local copy is never deleted
