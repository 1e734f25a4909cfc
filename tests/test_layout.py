"""The library's import graph (module-level and function-level imports alike) has no
cycle, the modules the Snakefile reads at parse time stay light, and the README's map of the
library names every module."""
import ast
import glob
import os
import subprocess
import sys

from conftest import ENV, REPO

SRC = os.path.join(REPO, "src")


def _module_name(path):
    rel = os.path.relpath(path, SRC)[:-3].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def import_graph():
    """rewardseg module -> the rewardseg modules it imports (the package's own
    ``__init__``, which only applies the compat layer and registers, is left out)."""
    graph = {}
    for path in glob.glob(os.path.join(SRC, "rewardseg", "**", "*.py"), recursive=True):
        name = _module_name(path)
        package = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
        deps = set()
        for node in ast.walk(ast.parse(open(path).read())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    parts = parts[: len(parts) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            deps |= {t for t in targets if t.startswith("rewardseg.")}
        graph[name] = deps
    modules = set(graph)
    return {m: {d for d in deps if d in modules and d != m} for m, deps in graph.items()}


def find_cycle(graph):
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                return stack[stack.index(dep):] + [dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_import_graph_is_acyclic():
    graph = import_graph()
    assert {"rewardseg.study", "rewardseg.runconfig", "rewardseg.runner",
            "rewardseg.results", "rewardseg.paths", "rewardseg.data"} <= set(graph)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_model_layer_imports_no_dataset_source():
    """rewardseg.models (mmseg's modules) reads a prepared dataset through the generic
    ``data`` API (``data.meta``), never through a source module (``data.<source>``): every
    study's config uses ``PreparedDataset``, and a new source needs no model-side code."""
    from rewardseg.data import SOURCES

    assert {"synthetic", "cityscapes"} <= set(SOURCES)
    sources = {f"rewardseg.data.{s}" for s in SOURCES}
    graph = import_graph()
    models = [m for m in graph if m == "rewardseg.models" or m.startswith("rewardseg.models.")]
    assert "rewardseg.models.datasets" in models
    found = {m: sorted(graph[m] & sources) for m in models if graph[m] & sources}
    assert not found, f"model modules import dataset sources: {found}"


def test_what_the_snakefile_reads_stays_light():
    """common.smk imports paths, plan, runconfig, study and the figure registry at parse
    time: none of them may pull in mmseg, matplotlib or seaborn (``import rewardseg``
    itself applies the compat layer, which needs torch and mmengine)."""
    code = ("import sys; import rewardseg.paths, rewardseg.plan, rewardseg.runconfig, "
            "rewardseg.study, rewardseg.figures, rewardseg.data, rewardseg.results; "
            "print(sorted(m for m in ('mmseg', 'matplotlib', 'seaborn') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "[]", out


def test_the_readme_module_table_names_every_module():
    """Each module of src/rewardseg (top level) and each dataset source of data/ is named
    in the README's tables, so the map of the library does not fall behind it."""
    import glob
    import os
    import re

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    readme = open(os.path.join(repo, "README.md")).read()
    named = set(re.findall(r"`([a-z_]+)\.py`", readme))
    named |= set(re.findall(r"`([a-z_]+)`", readme))
    modules = {os.path.basename(p)[:-3]
               for p in glob.glob(os.path.join(repo, "src", "rewardseg", "*.py"))}
    modules |= {os.path.basename(p)[:-3]
                for p in glob.glob(os.path.join(repo, "src", "rewardseg", "data", "*.py"))}
    modules -= {"__init__", "__main__", "options", "labels"}
    missing = sorted(modules - named)
    assert not missing, f"README.md does not name: {missing}"
