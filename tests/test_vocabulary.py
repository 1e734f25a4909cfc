"""Each name is spelled in one place: estimator and baseline names in ``vocabulary.py``
(and the loss that implements them, ``models/losses.py``); a dataset source only in its
own module ``data/<source>.py``. Everything else (the study check, the schema, the CLI, the
rules, the slides) reads them from there."""
import ast
import glob
import os
import re

from conftest import REPO
from rewardseg import data, vocabulary

SRC = os.path.join(REPO, "src", "rewardseg")


def _code_files():
    files = glob.glob(os.path.join(SRC, "**", "*.py"), recursive=True)
    files += glob.glob(os.path.join(REPO, "workflow", "rules", "*.smk"))
    return files + [os.path.join(REPO, "Snakefile")]


def _string_literals(path):
    """String constants of a Python module (docstrings left out); a rule file, which is
    not Python, by a regular expression over its quoted strings."""
    text = open(path).read()
    if not path.endswith(".py"):
        return re.findall(r"[\"']([A-Za-z0-9_.-]+)[\"']", text)
    tree = ast.parse(text)
    docs = {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body and isinstance(node.body[0], ast.Expr)}
    return [n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs]


def _where_spelled(names):
    found = {}
    for path in _code_files():
        hits = set(_string_literals(path)) & set(names)
        if hits:
            found[os.path.relpath(path, REPO)] = sorted(hits)
    return found


def test_estimator_and_baseline_names_live_in_the_vocabulary_and_the_loss():
    names = set(vocabulary.ESTIMATORS)
    names |= {b for bs in vocabulary.BASELINES.values() for b in bs} - {"none"}
    allowed = {"src/rewardseg/vocabulary.py", "src/rewardseg/models/losses.py"}
    outside = {f: n for f, n in _where_spelled(names).items() if f not in allowed}
    assert not outside, f"estimator / baseline names spelled outside the vocabulary: {outside}"



def test_precision_names_live_in_the_vocabulary():
    outside = {f: n for f, n in _where_spelled(vocabulary.PRECISIONS).items()
               if f != "src/rewardseg/vocabulary.py"}
    assert not outside, f"precision names spelled outside the vocabulary: {outside}"

def test_a_dataset_source_is_spelled_only_by_its_own_module():
    settings = {c for src in data.SOURCES for c in data.source_module(src).CLASSES_OPTIONS}
    names = set(data.SOURCES) - settings  # "cityscapes" is also a class setting's name
    assert names, "nothing to check"
    for path, hits in _where_spelled(names).items():
        # its own module: data/<source>.py, or any module of a package data/<source>/
        own = os.path.splitext(path[len("src/rewardseg/data/"):].split("/")[0])[0]
        assert path.startswith("src/rewardseg/data/") and hits == [own], (
            f"{path} spells the dataset source(s) {hits}")


def test_the_check_itself_catches_a_spelled_name(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text('"""rloo in a docstring is fine."""\nif baseline == "rloo":\n    pass\n')
    assert _string_literals(str(probe)) == ["rloo"]
