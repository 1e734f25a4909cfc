"""The results notebook of the smoke study (issue 23, items 5 and 6): its HTML carries no
path of the machine that ran it and opens with the title; the executed notebook shows every
registered figure, in the registry's order."""
import json
import os
import re
import sys

from conftest import REPO
from rewardseg import figures, paths
from rewardseg.study import load_study

PREAMBLE_TAG = "snakemake-job-properties"


def _study(smoke):
    return load_study(os.path.join(smoke, "configs/studies/smoke.yaml"))


def test_notebook_html_has_no_path_of_the_machine(smoke):
    html = open(os.path.join(smoke, paths.study_result("smoke", "results.html"))).read()
    venv = os.path.dirname(os.path.dirname(sys.executable))  # the venv the DAG ran in
    for path in {os.path.realpath(smoke), os.path.abspath(smoke), REPO,
                 os.path.realpath(REPO), venv, sys.prefix}:
        assert path not in html, path
    assert "snakemake preamble" not in html
    assert PREAMBLE_TAG not in html
    # it opens with the notebook's title: the first cell rendered is the title's
    first_cell = re.search(r'<div[^>]*class="[^"]*jp-Cell[ "][^>]*>', html)
    assert first_cell, "no cell in the HTML"
    head = html[first_cell.start():]
    assert re.search(r"<h1[^>]*>\s*Results of a rewardseg study", head[:3000]), head[:3000]
    # the executed notebook keeps snakemake's preamble as it wrote it
    nb = json.load(open(os.path.join(smoke, paths.study_result("smoke", "results.ipynb"))))
    assert PREAMBLE_TAG in nb["cells"][0]["metadata"].get("tags", [])


def _shown_figures(nb):
    """(name, has an image after it) per figure heading the notebook's outputs show, in
    order: each figure is a markdown output ``### `name` `` followed by its image."""
    outputs = [out for cell in nb["cells"] if cell["cell_type"] == "code"
               for out in cell.get("outputs", [])]
    shown = []
    for i, out in enumerate(outputs):
        text = "".join(out.get("data", {}).get("text/markdown", ""))
        found = re.match(r"### `(\w+)`", text)
        if found:
            following = outputs[i + 1] if i + 1 < len(outputs) else {}
            shown.append((found.group(1), "image/png" in following.get("data", {})))
    return shown


def test_notebook_shows_every_registered_figure_in_order(smoke):
    nb = json.load(open(os.path.join(smoke, paths.study_result("smoke", "results.ipynb"))))
    names = figures.names(_study(smoke))
    assert {"qualitative", "exp_baseline", "exp_weights"} <= set(names)  # runs + a family
    shown = _shown_figures(nb)
    assert [name for name, _ in shown] == names
    assert all(image for _, image in shown), shown
    # the figure that loads the checkpoints is its PNG under figures/<study>/, byte for byte
    import base64

    outputs = [out for cell in nb["cells"] if cell["cell_type"] == "code"
               for out in cell.get("outputs", [])]
    pngs = [base64.b64decode("".join(out["data"]["image/png"])) for out in outputs
            if "image/png" in out.get("data", {})]
    qualitative = open(os.path.join(smoke, paths.figure("smoke", "qualitative", "png")), "rb").read()
    assert qualitative in pngs
    # no cell of the executed notebook failed
    errors = [out for out in outputs if out.get("output_type") == "error"]
    assert not errors, errors


# --- the notebook run alone, on the recorded default study, with a stand-in for the
# ``snakemake`` object that the workflow's ``notebook:`` directive gives it

NOTEBOOK = os.path.join(REPO, "workflow", "notebooks", "results.py.ipynb")
RECORDED = os.path.join(REPO, "paper", "recorded", "default")


def run_notebook(cwd, metrics, stats, study, figure_pngs=(), with_figures=False):
    """Execute the results notebook in ``cwd`` as the workflow does, with a first cell
    defining ``snakemake.input`` (study, metrics, stats, figures) as its preamble would;
    the cell tagged ``figures`` is left out unless ``with_figures``. Returns the executed
    notebook (its stand-in cell first)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    if not with_figures:
        nb.cells = [c for c in nb.cells if "figures" not in c.metadata.get("tags", [])]
    stand_in = nbformat.v4.new_code_cell(
        "from types import SimpleNamespace\n"
        f"snakemake = SimpleNamespace(input=SimpleNamespace(study={str(study)!r}, "
        f"metrics={str(metrics)!r}, stats={str(stats)!r}, "
        f"figures={[str(p) for p in figure_pngs]!r}))\n",
        metadata={"tags": [PREAMBLE_TAG]})
    nb.cells.insert(0, stand_in)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def _markdown_outputs(cell):
    return ["".join(out.get("data", {}).get("text/markdown", ""))
            for out in cell.get("outputs", []) if "text/markdown" in out.get("data", {})]


def _recorded_copy(tmp_path, edit=None):
    """The recorded default study's files in ``tmp_path`` (``edit``: a function that
    changes the metrics DataFrame first)."""
    import shutil

    import pandas as pd

    for name in ("study.yaml", "train_stats.csv"):
        shutil.copy(os.path.join(RECORDED, name), tmp_path / name)
    df = pd.read_csv(os.path.join(RECORDED, "metrics.csv"))
    if edit is not None:
        df = edit(df)
    df.to_csv(tmp_path / "metrics.csv", index=False)
    return dict(metrics=tmp_path / "metrics.csv", stats=tmp_path / "train_stats.csv",
                study=tmp_path / "study.yaml")


def _conclusion(nb):
    """The first output after the title: the markdown of the first code cell after the
    stand-in (nothing else may come first)."""
    assert nb.cells[1].cell_type == "markdown"
    assert nb.cells[1].source.startswith("# Results of a rewardseg study")
    cell = nb.cells[2]
    assert cell.cell_type == "code" and "remove-input" in cell.metadata.get("tags", [])
    texts = _markdown_outputs(cell)
    assert len(texts) == 1 and len(cell.outputs) == 1, cell.outputs  # nothing printed
    return texts[0]


def _shown_table(nb):
    """The comparison table the notebook shows: (header, rows) of the first Markdown
    output holding a table, and the text under it."""
    for cell in nb.cells[3:]:
        for text in _markdown_outputs(cell):
            lines = text.strip().splitlines()
            if lines and lines[0].startswith("| experiment | variant | Δ"):
                table = [line for line in lines if line.startswith("|")]
                split = lambda line: [c.strip() for c in line.strip("|").split("|")]  # noqa: E731
                return split(table[0]), [split(r) for r in table[2:]], text
    raise AssertionError("no comparison table in the notebook's outputs")


def test_the_notebook_opens_with_a_conclusion_computed_from_the_metrics(tmp_path):
    """The paragraph under the title is what rewardseg.results.conclusion writes from the
    metrics it was given: a final mIoU changed in a copy of metrics.csv changes it."""
    import yaml

    import pandas as pd

    from rewardseg.results import conclusion, findings, final_table, group_by_experiment
    from rewardseg.study import controls, experiments, labels

    first = tmp_path / "first"
    first.mkdir()
    nb = run_notebook(first, **_recorded_copy(first))
    text = _conclusion(nb)
    study = yaml.safe_load(open(os.path.join(RECORDED, "study.yaml")))
    df = pd.read_csv(os.path.join(RECORDED, "metrics.csv"))
    final = group_by_experiment(final_table(df, controls(study), experiments(study)),
                                experiments(study))
    found = findings(df, controls(study), experiments(study), labels(study), final, study)
    assert text.strip() == conclusion(found)
    assert f"{found['control']['final_miou']:.2f} mIoU" in text
    assert "\n\n" not in text.strip()  # one paragraph

    def lower_control(metrics):  # the control's final mIoU 3 points lower on every seed
        runs = metrics[metrics["variant"] == "control"]
        last = runs["step"] == runs.groupby("seed")["step"].transform("max")
        rows = runs[last & (runs["class"] == "mIoU")].index
        metrics.loc[rows, "IoU"] -= 3.0
        return metrics

    second = tmp_path / "second"
    second.mkdir()
    changed = _conclusion(run_notebook(second, **_recorded_copy(second, lower_control)))
    assert changed != text
    assert f"{found['control']['final_miou'] - 3.0:.2f} mIoU" in changed


def test_the_notebook_shows_the_reader_columns_rounded_and_links_the_full_csv(tmp_path):
    from rewardseg.results import READER_COLUMNS, TABLES

    nb = run_notebook(tmp_path, **_recorded_copy(tmp_path))
    header, rows, text = _shown_table(nb)
    assert header == list(READER_COLUMNS)
    assert rows and all(len(r) == len(header) for r in rows)
    number = re.compile(r"[-+]?\d+\.\d+")
    for row in rows:
        for cell in row[2:5]:
            for value in number.findall(cell):
                assert len(value.split(".")[1]) <= 3, (cell, row)  # rounded
        assert "nan" not in " ".join(row).lower()
    # the statistics are defined under it
    for words in ("95 % CI (unadjusted, paired over seeds)",
                  "p adjusted by Holm within the experiment",
                  "MDE: the smallest Δ this design detects with 80 % power at that level"):
        assert words in text
    # the raw comparison frame is shown nowhere (no HTML table with its columns)
    html = " ".join("".join(out.get("data", {}).get("text/html", ""))
                    for cell in nb.cells for out in cell.get("outputs", []))
    for raw in ("sd_delta", "mde_holm", "constant", "pairs"):
        assert raw not in html
    # the link to every number: the tables folder's CSV, relative to results/<study>/
    link = re.search(r"\]\(([^)]+final_miou\.csv)\)", text)
    assert link and "final_miou.csv" in TABLES
    target = os.path.normpath(os.path.join(paths.study_result("default", ""), link.group(1)))
    assert target == os.path.normpath(paths.table("default", "final_miou.csv"))
    assert not os.path.isabs(link.group(1))
    # the per-class table: the dataset's class order, mIoU last, mean ± std
    import pandas as pd
    import yaml

    from rewardseg.results import class_order

    df = pd.read_csv(os.path.join(RECORDED, "metrics.csv"))
    study = yaml.safe_load(open(os.path.join(RECORDED, "study.yaml")))
    heads = [text.strip().splitlines()[0] for cell in nb.cells[3:]
             for text in _markdown_outputs(cell) if "mean ± std over seeds" in text]
    assert heads == ["| experiment | variant | seeds | "
                     + " | ".join(class_order(df, study) + ["mIoU"]) + " |"]
    # no path of this machine in any output
    outputs = json.dumps([cell.get("outputs", []) for cell in nb.cells[1:]])
    for path in {str(tmp_path), REPO, os.path.realpath(REPO), sys.prefix}:
        assert path not in outputs, path
