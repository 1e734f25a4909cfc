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
