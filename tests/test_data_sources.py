"""The dataset-source table of rewardseg.data: discovery, checks, schema, the one meta.json
dialect and the one command (`rewardseg prepare SOURCE ROOT --dataset JSON`)."""
import glob
import importlib
import json
import os
import pkgutil
import subprocess
import sys
import textwrap

import pytest
import yaml

import rewardseg.data as data
from conftest import ENV, REPO
from rewardseg import cli
from rewardseg.data import meta as meta_mod
from rewardseg.data.synthetic import generate_dataset

SMALL = dict(num_train=2, num_val=1, height=32, width=48, seed=3)


def _files(root):
    return {os.path.relpath(p, root): open(p, "rb").read()
            for p in glob.glob(os.path.join(root, "**", "*"), recursive=True)
            if os.path.isfile(p)}


# ---------------------------------------------------------------- the table
# the sources these tests pin; a new source adds to data.SOURCES without changing them
KNOWN = ("cityscapes", "easyportrait", "mapillary", "synthetic", "synthetic_cityscapes")
SOURCES = data.SOURCES  # as discovered (before any test adds a fake one)
ONE_OF = ", ".join(SOURCES)  # what the errors list


def test_sources_are_the_modules_with_prepare_and_options():
    expected = set()
    for info in pkgutil.iter_modules(data.__path__):
        module = importlib.import_module(f"rewardseg.data.{info.name}")
        if hasattr(module, "OPTIONS") and hasattr(module, "prepare"):
            expected.add(info.name)
    assert set(data.SOURCES) == expected
    assert set(KNOWN) <= set(data.SOURCES)
    assert list(data.SOURCES) == sorted(data.SOURCES)
    for helper in ("archive", "labels", "meta", "options"):
        assert helper not in data.SOURCES


def test_declarations():
    settings = {s: data.source_module(s).CLASSES_OPTIONS for s in KNOWN}
    assert settings == {"synthetic": (None,), "cityscapes": (None, "cityscapes"),
                        "easyportrait": ("face_parsing", "portrait"),
                        "mapillary": ("cityscapes", "vistas"),
                        "synthetic_cityscapes": (None,)}
    secrets = {s: data.source_module(s).SECRETS for s in KNOWN}
    assert secrets == {"synthetic": (), "easyportrait": (), "mapillary": (),
                       "cityscapes": ("CITYSCAPES_USERNAME", "CITYSCAPES_PASSWORD"),
                       "synthetic_cityscapes": ()}
    assert {s: set(data.source_module(s).OPTIONS) for s in KNOWN} == {
        "synthetic": {"num_train", "num_val", "height", "width", "seed", "persons",
                      "person_size", "poles", "pole_width"},
        "cityscapes": {"raw_dir", "local_copy", "base_url"},
        "easyportrait": {"raw_dir", "local_copy", "urls", "sha256"},
        "mapillary": {"raw_dir", "version"},
        "synthetic_cityscapes": {"num_train", "num_val", "height", "width", "seed", "persons",
                                 "person_size", "poles", "pole_width", "local_copy"}}
    for source in data.SOURCES:
        for key, spec in data.source_module(source).OPTIONS.items():
            assert spec["description"], (source, key)
            assert "type" in spec or "enum" in spec, (source, key)
    # the defaults of the study configs of today, so that their data stay identical
    assert data.settings({"source": "synthetic"}) == dict(
        source="synthetic", classes=None, num_train=200, num_val=32, height=96, width=192,
        seed=0, persons=1.0, person_size=1.0, poles=1.0, pole_width=1.0)
    assert data.settings({"source": "mapillary", "name": "mv"}) == dict(
        name="mv", source="mapillary", classes="cityscapes", raw_dir="data/raw/mapillary",
        version="v1.2")


def test_data_modules_import_without_torch_or_mmseg():
    """The package and every module in it import with torch, mmseg, mmengine and mmcv
    unavailable (rewardseg/__init__ is bypassed: it applies the mmseg compatibility layer)."""
    code = textwrap.dedent(f"""
        import importlib, pkgutil, sys, types
        for name in ("torch", "mmseg", "mmengine", "mmcv"):
            sys.modules[name] = None  # any import of them fails
        pkg = types.ModuleType("rewardseg")
        pkg.__path__ = [{os.path.join(REPO, "src", "rewardseg")!r}]
        sys.modules["rewardseg"] = pkg
        import rewardseg.data as data
        for info in pkgutil.iter_modules(data.__path__):
            importlib.import_module("rewardseg.data." + info.name)
        print(",".join(data.SOURCES))
    """)
    proc = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == ",".join(data.SOURCES)


FAKE = '''
"""A made-up source: one module, no list edited anywhere."""
from rewardseg.data.meta import write_meta
from rewardseg.data.options import resolve

OPTIONS = {"size": {"type": "integer", "minimum": 1, "default": 2,
                    "description": "number of train images"},
           "raw_dir": {"type": "string", "default": "data/raw/fakesrc",
                       "description": "where nothing is downloaded to"}}
CLASSES_OPTIONS = ("two", "three")
SECRETS = ()


def prepare(root, dataset, progress=True, workers=0):
    o = resolve(OPTIONS, dataset)
    classes = ["a", "b", "c"][:{"two": 2, "three": 3}[dataset.get("classes", "two")]]
    return write_meta(root, "fakesrc", classes, [[0, 0, 0]] * len(classes),
                      {"train": o["size"], "val": 1}, img_dir="img", label_dir="lab",
                      img_suffix=".jpg", label_suffix=".png", license="none",
                      class_setting=dataset.get("classes", "two"))


def describe(dataset):
    return f"fake ({resolve(OPTIONS, dataset)['size']} images)"
'''


@pytest.fixture
def fake_source(tmp_path, monkeypatch):
    """A temp folder on the package's __path__ with a source module and a helper module
    that has ``prepare`` but no ``OPTIONS``; the table rebuilt by discover()."""
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "fakesrc.py").write_text(FAKE)
    (extra / "fakehelper.py").write_text("def prepare(root, dataset):\n    return {}\n")
    monkeypatch.setattr(data, "__path__", list(data.__path__) + [str(extra)])
    names = ("rewardseg.data.fakesrc", "rewardseg.data.fakehelper")
    for attr in ("fakesrc", "fakehelper"):
        monkeypatch.setattr(data, attr, None, raising=False)  # removed again on undo
    try:
        table = data.discover()
        monkeypatch.setattr(data, "_TABLE", table)
        monkeypatch.setattr(data, "SOURCES", tuple(table))
        yield table
    finally:
        for name in names:
            sys.modules.pop(name, None)


def test_a_new_module_is_a_new_source(fake_source, tmp_path, capsys):
    assert set(fake_source) == set(SOURCES) | {"fakesrc"}
    assert "fakehelper" not in fake_source
    # the checks, the schema, describe and prepare all know it
    data.check_dataset({"name": "f", "source": "fakesrc", "size": 3, "classes": "three"})
    with pytest.raises(ValueError, match=r"dataset\.num_train is not an option of source "
                                         r"'fakesrc' \(its options: name, source, classes, "
                                         r"size, raw_dir\)"):
        data.check_dataset({"source": "fakesrc", "num_train": 3})
    with pytest.raises(ValueError, match=r"dataset\.classes 'vistas' is not valid for source "
                                         r"'fakesrc' \(valid: two, three\)"):
        data.check_dataset({"source": "fakesrc", "classes": "vistas"})
    schema = data.dataset_schema()
    assert "fakesrc" in schema["source"]["enum"] and "size" in schema
    assert "three" in schema["classes"]["enum"]
    assert "fakesrc: where nothing is downloaded to" in schema["raw_dir"]["description"]
    assert data.describe({"source": "fakesrc", "size": 5}) == "fake (5 images)"
    meta = data.prepare(str(tmp_path / "f"), {"source": "fakesrc", "classes": "three"})
    assert meta["splits"] == {"train": 2, "val": 1} and meta["num_classes"] == 3
    # and so does the command
    assert cli.main(["prepare", "fakesrc", str(tmp_path / "g"), "--dataset",
                     '{"size": 4}', "--quiet"]) == 0
    assert data.load_meta(str(tmp_path / "g"))["splits"]["train"] == 4
    assert "fakesrc, 2 classes, train 4 images, val 1 images" in capsys.readouterr().out


def test_an_incomplete_source_is_refused_at_discovery(tmp_path, monkeypatch):
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "halfsrc.py").write_text("OPTIONS = {}\n\ndef prepare(root, dataset):\n"
                                      "    return {}\n")
    monkeypatch.setattr(data, "__path__", list(data.__path__) + [str(extra)])
    monkeypatch.setattr(data, "halfsrc", None, raising=False)
    try:
        with pytest.raises(TypeError, match=r"rewardseg\.data\.halfsrc: a dataset source "
                                            r"also needs CLASSES_OPTIONS, SECRETS, describe"):
            data.discover()
    finally:
        sys.modules.pop("rewardseg.data.halfsrc", None)


# ---------------------------------------------------------------- check_dataset
@pytest.mark.parametrize("block,message", [
    ({"name": "c", "source": "cityscapes", "num_train": 3},
     "study config: dataset.num_train is not an option of source 'cityscapes' (its options: "
     "name, source, classes, raw_dir, local_copy, base_url)"),
    ({"name": "s", "source": "synthetic", "raw_dir": "x"},
     "study config: dataset.raw_dir is not an option of source 'synthetic' (its options: "
     "name, source, num_train, num_val, height, width, seed, persons, person_size, poles, "
     "pole_width)"),
    ({"name": "k", "source": "kitti"},
     f"study config: dataset.source 'kitti' is not a dataset source (one of: {ONE_OF})"),
    ({"name": "k"}, f"study config: dataset.source is missing (one of: {ONE_OF})"),
    ({"source": "mapillary", "classes": "portrait"},
     "study config: dataset.classes 'portrait' is not valid for source 'mapillary' (valid: "
     "cityscapes, vistas)"),
    ({"source": "easyportrait", "classes": None},
     "study config: dataset.classes None is not valid for source 'easyportrait' (valid: "
     "face_parsing, portrait)"),
    ({"source": "cityscapes", "classes": "vistas"},
     "study config: dataset.classes 'vistas' is not valid for source 'cityscapes' (valid: "
     "cityscapes or leave it out)"),
    ({"source": "synthetic", "classes": "cityscapes"},
     "study config: dataset.classes 'cityscapes' is not valid for source 'synthetic' (valid: "
     "leave it out)"),
    ({"source": "synthetic", "num_train": 0},
     "study config: dataset.num_train must be >= 1, got 0"),
    ({"source": "synthetic", "height": "96"},
     "study config: dataset.height must be an integer, got \"96\""),
    ({"source": "synthetic", "seed": True},
     "study config: dataset.seed must be an integer, got true"),
    ({"source": "mapillary", "version": "v3"},
     "study config: dataset.version 'v3' is not one of: v1.2, v2.0"),
    ({"source": "easyportrait", "sha256": {"images.zip": "xyz"}},
     "study config: dataset.sha256.images.zip 'xyz' does not match ^[0-9a-fA-F]{8,64}$"),
    ({"source": "easyportrait", "urls": ["http://x"]},
     "study config: dataset.urls must be a mapping, got [\"http://x\"]"),
    ({"source": "cityscapes", "local_copy": 3},
     "study config: dataset.local_copy must be a string or null, got 3"),
    ({"name": "a/b", "source": "synthetic"},
     "study config: dataset.name 'a/b' does not match ^[A-Za-z0-9_.-]+$"),
])
def test_check_dataset_names_the_key(block, message):
    with pytest.raises(ValueError) as err:
        data.check_dataset(block, where="study config: dataset")
    assert str(err.value) == message
    assert "\n" not in str(err.value)


def test_check_dataset_default_where_and_non_mapping():
    with pytest.raises(ValueError, match=r"^dataset\.num_val is not an option"):
        data.check_dataset({"source": "mapillary", "num_val": 3})
    with pytest.raises(ValueError, match="dataset must be a mapping, got list"):
        data.check_dataset([])


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, "configs", "studies",
                                                              "*.yaml"))))
def test_the_study_configs_pass(path):
    with open(path) as fh:
        block = yaml.safe_load(fh)["dataset"]
    data.check_dataset(block)
    assert data.describe(block)


def test_describe():
    assert data.describe({"name": "s", "source": "synthetic"}) == \
        "synthetic street scenes (200 train / 32 val images, 96×192)"
    assert data.describe({"source": "synthetic", **SMALL}) == \
        "synthetic street scenes (2 train / 1 val images, 32×48)"
    assert data.describe({"source": "cityscapes"}) == "cityscapes"
    assert data.describe({"source": "cityscapes", "classes": "cityscapes"}) == \
        "cityscapes, cityscapes classes"
    assert data.describe({"source": "easyportrait", "classes": "portrait"}) == \
        "easyportrait, portrait classes"
    assert data.describe({"source": "mapillary", "classes": "vistas"}) == \
        "mapillary, vistas classes"
    with pytest.raises(ValueError, match="dataset.source 'kitti'"):
        data.describe({"source": "kitti"})


# ---------------------------------------------------------------- the schema
def test_dataset_schema():
    schema = data.dataset_schema()
    options = set().union(*(data.source_module(s).OPTIONS for s in data.SOURCES))
    assert set(schema) == {"name", "source", "classes"} | options
    assert schema["source"]["enum"] == list(data.SOURCES)
    assert schema["name"]["pattern"] == "^[A-Za-z0-9_.-]+$"
    assert sorted(schema["classes"]["enum"]) == ["cityscapes", "face_parsing", "portrait",
                                                 "vistas"]
    # no defaults: a validator that fills them in would give every study one source's keys
    assert "default" not in json.dumps(schema).replace("(default", "")
    assert schema["num_train"] == {"type": "integer", "minimum": 1,
                                   "description": "synthetic, synthetic_cityscapes: number "
                                                  "of train images (default 200)"}
    assert schema["local_copy"]["type"] == ["string", "null"]
    assert schema["raw_dir"]["type"] == "string"
    for source in ("cityscapes", "easyportrait", "mapillary"):
        assert f"(default data/raw/{source})" in schema["raw_dir"]["description"]


def test_schema_accepts_the_configs_and_refuses_wrong_values():
    jsonschema = pytest.importorskip("jsonschema")
    block_schema = {"type": "object", "additionalProperties": False,
                    "required": ["name", "source"], "properties": data.dataset_schema()}
    validator = jsonschema.Draft202012Validator(block_schema)
    for path in glob.glob(os.path.join(REPO, "configs", "studies", "*.yaml")):
        with open(path) as fh:
            validator.validate(yaml.safe_load(fh)["dataset"])
    for source in data.SOURCES:  # every source's defaults are valid values
        block = {k: v for k, v in data.settings({"source": source}).items() if v is not None}
        validator.validate(dict(block, name="x"))
    for bad in ({"name": "x", "source": "kitti"}, {"name": "x", "source": "synthetic",
                                                    "num_train": 0},
                {"name": "x", "source": "mapillary", "version": "v3"},
                {"name": "x", "source": "synthetic", "colour": "red"}):
        assert not validator.is_valid(bad), bad


def test_schema_merge_rules():
    merged = data._merge("k", [
        ("a", {"type": "integer", "minimum": 2, "enum": [1, 2], "default": 1,
               "description": "one"}),
        ("b", {"type": ["integer", "null"], "minimum": 0, "enum": [2, 3], "pattern": "x",
               "description": "one"})])
    assert merged == {"type": ["integer", "null"], "minimum": 0, "enum": [1, 2, 3],
                      "description": "a: one (default 1); b: one"}
    same = data._merge("k", [("a", {"type": "string", "description": "d"}),
                             ("b", {"type": "string", "description": "d"})])
    assert same == {"type": "string", "description": "a, b: d"}
    with pytest.raises(TypeError, match="'k'.*a, b declare different 'pattern'"):
        data._merge("k", [("a", {"type": "string", "pattern": "x", "description": "d"}),
                          ("b", {"type": "string", "pattern": "y", "description": "d"})])


# ---------------------------------------------------------------- meta.json
def test_meta_writer_refuses_inconsistent_records(tmp_path):
    args = dict(classes=["a", "b"], palette=[[0, 0, 0], [1, 1, 1]], splits={"train": 1},
                img_dir="i", label_dir="l", img_suffix=".jpg", label_suffix=".png",
                license="none")
    with pytest.raises(ValueError, match="meta.json of x: num_classes is a common key"):
        meta_mod.make_meta("x", **args, num_classes=3, pixels=10)
    with pytest.raises(ValueError, match="2 classes but 1 palette colours"):
        meta_mod.make_meta("x", **dict(args, palette=[[0, 0, 0]]))
    with pytest.raises(ValueError, match="splits"):
        meta_mod.make_meta("x", **dict(args, splits={"train": "many"}))
    meta = meta_mod.write_meta(str(tmp_path), "x", **args)
    assert os.listdir(tmp_path) == ["meta.json"]  # no temporary left
    assert list(meta)[:len(meta_mod.KEYS)] == list(meta_mod.KEYS)
    assert meta["train_labels"] == "l/train" and meta["num_classes"] == 2
    assert data.load_meta(str(tmp_path)) == meta
    assert data.load_meta(str(tmp_path / "missing")) == {}


def test_prepare_synthetic_command_one_dialect_and_same_bytes(tmp_path, capsys):
    """`rewardseg prepare synthetic` writes exactly what generate_dataset writes, and its
    meta.json has the keys of every other source's (here: EasyPortrait's, through the
    label-conversion path)."""
    from test_data_easyportrait import make_dataset, write_tree

    root = tmp_path / "synth"
    block = json.dumps(dict(SMALL, name="synth", source="synthetic"))
    assert cli.main(["prepare", "synthetic", str(root), "--dataset", block, "--quiet"]) == 0
    assert "synthetic, 8 classes, train 2 images, val 1 images" in capsys.readouterr().out
    generate_dataset(tmp_path / "direct", progress=False, **SMALL)
    assert _files(str(root)) == _files(str(tmp_path / "direct"))

    write_tree(str(tmp_path / "local"), make_dataset())
    portrait = data.prepare(str(tmp_path / "ep"), dict(
        source="easyportrait", raw_dir=str(tmp_path / "raw"),
        local_copy=str(tmp_path / "local")), progress=False)
    synth = json.loads((root / "meta.json").read_text())
    assert set(meta_mod.KEYS) <= set(synth) and set(meta_mod.KEYS) <= set(portrait)
    assert set(synth) & set(portrait) == set(meta_mod.KEYS)
    for meta in (synth, portrait):
        assert list(meta)[:len(meta_mod.KEYS)] == list(meta_mod.KEYS)
        assert meta["format_version"] == meta_mod.FORMAT_VERSION
        assert meta["num_classes"] == len(meta["classes"]) == len(meta["palette"])
        assert all(isinstance(n, int) for n in meta["splits"].values())
    assert synth["splits"] == {"train": 2, "val": 1}
    assert os.path.isdir(root / synth["train_labels"])
    assert os.path.isdir(tmp_path / "ep" / portrait["train_labels"])


def test_prepare_defaults_are_the_old_workflow_values(tmp_path):
    """Left-out keys give what the workflow passed before (96x192, seed 0): same bytes."""
    data.prepare(str(tmp_path / "new"), {"source": "synthetic", "num_train": 2,
                                         "num_val": 1}, progress=False)
    generate_dataset(tmp_path / "old", 2, 1, height=96, width=192, seed=0, progress=False)
    assert _files(str(tmp_path / "new")) == _files(str(tmp_path / "old"))


@pytest.mark.parametrize("args,message", [
    (["--dataset", '{"source": "cityscapes"}'],
     "--dataset names source 'cityscapes', but this command prepares 'synthetic'"),
    (["--dataset", "[1]"], "--dataset: expected a JSON object"),
    (["--dataset", "num_train=2"], "--dataset: not JSON"),
    (["--dataset", '{"num_train": 0}'], "dataset.num_train must be >= 1, got 0"),
    (["--dataset", '{"raw_dir": "x"}'], "dataset.raw_dir is not an option of source "
                                        "'synthetic'"),
])
def test_prepare_command_errors(tmp_path, capsys, args, message):
    root = tmp_path / "ds"
    assert cli.main(["prepare", "synthetic", str(root), *args, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rewardseg prepare: error: ") and message in err
    assert len(err.splitlines()) == 1
    assert not root.exists()


def test_old_commands_are_gone(capsys):
    with pytest.raises(SystemExit):
        cli.main(["data", "out"])
    with pytest.raises(SystemExit):
        cli.main(["prepare", "kitti", "out"])
    assert "invalid choice: 'kitti'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["prepare", "mapillary", "out", "--version", "v2.0"])


def test_prepared_dataset_reads_what_prepare_wrote(tmp_path):
    """``PreparedDataset`` (every study's mmseg dataset type) finds every image and its
    label map, with the classes and palette of the source that wrote them."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS

    import rewardseg.models  # noqa: F401
    from rewardseg.data import synthetic

    init_default_scope("mmseg")
    root = str(tmp_path / "synth")
    data.prepare(root, dict(source="synthetic", num_train=3, num_val=2, height=32, width=64),
                 progress=False)
    prefix = dict(img_path="leftImg8bit/val", seg_map_path="gtFine/val")
    generic = DATASETS.build(dict(type="PreparedDataset", data_root=root, data_prefix=prefix,
                                  pipeline=[]))
    images = sorted(p.name for p in (tmp_path / "synth" / "leftImg8bit" / "val").rglob(
        f"*{synthetic.IMG_SUFFIX}"))
    assert len(generic) == len(images) == 2
    for item in generic.data_list:
        assert os.path.basename(item["img_path"]) in images
        rel = os.path.relpath(item["img_path"], os.path.join(root, "leftImg8bit", "val"))
        assert item["seg_map_path"] == os.path.join(
            root, "gtFine", "val", rel[: -len(synthetic.IMG_SUFFIX)] + synthetic.SEG_MAP_SUFFIX)
        assert os.path.isfile(item["seg_map_path"])
    assert generic.metainfo["classes"] == tuple(synthetic.CLASSES)
    assert [list(c) for c in generic.metainfo["palette"]] == \
        [list(c) for c in synthetic.PALETTE]
    assert generic.reduce_zero_label is False
    with pytest.raises(FileNotFoundError, match="meta.json does not exist"):
        DATASETS.build(dict(type="PreparedDataset", data_root=str(tmp_path / "none"),
                            data_prefix=prefix, pipeline=[]))
