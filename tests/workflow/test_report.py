"""The snakemake report's figure captions are valid reStructuredText (issue 23, item 6):
every registered figure's caption, as the report renders it, parses without a Docutils
message, and the report of the smoke study shows no Docutils error block."""
import io
import os

import pytest

from conftest import REPO, snakemake
from rewardseg import figures
from rewardseg.study import load_study

STUDIES = ["smoke.yaml", "default.yaml"]


def _docutils_messages(text):
    """What Docutils reports (level >= INFO) while parsing ``text`` as the report does."""
    from docutils.core import publish_doctree

    stream = io.StringIO()
    doctree = publish_doctree(text, settings_overrides={
        "warning_stream": stream, "report_level": 1, "halt_level": 5,
        "input_encoding": "unicode"})
    from docutils import nodes

    messages = [node.astext() for node in doctree.findall(nodes.system_message)]
    return stream.getvalue(), messages


def _captions():
    out = []
    for study_file in STUDIES:
        path = os.path.join(REPO, "configs/studies", study_file)
        if not os.path.isfile(path):
            continue
        study = load_study(path)
        for name in figures.names(study):
            spec, values = figures.resolve(name)
            out.append((f"{study['study']}:{name}", spec.caption_for(study["study"], **values)))
    return out


@pytest.mark.parametrize("name,caption", _captions(), ids=[n for n, _ in _captions()])
def test_every_figure_caption_is_valid_restructuredtext(name, caption):
    # the report fills workflow/report/figure.rst ({{ snakemake.params.caption }}) with it
    template = open(os.path.join(REPO, "workflow/report/figure.rst")).read()
    text = template.replace("{{ snakemake.params.caption }}", caption)
    assert caption in text
    warnings, messages = _docutils_messages(text)
    assert not warnings and not messages, (name, warnings, messages)


def test_each_figure_of_a_study_has_its_own_caption():
    """No two figures of a study share a caption: each experiment's names its question."""
    by_study = {}
    for name, caption in _captions():
        by_study.setdefault(name.split(":", 1)[0], []).append(caption)
    assert by_study
    for study, captions in by_study.items():
        assert len(set(captions)) == len(captions), study


def test_every_registered_pattern_is_checked():
    checked = {figures.resolve(name.split(":", 1)[1])[0].pattern for name, _ in _captions()}
    assert checked == set(figures.FIGURES)


def test_snakemake_report_has_no_docutils_message(smoke):
    report = os.path.join(smoke, "report_rst.html")
    snakemake(smoke, "--configfile", "configs/studies/smoke.yaml", "--report", report)
    html = open(report, encoding="utf-8").read()
    assert "System Message" not in html
    assert "ERROR/" not in html and "WARNING/" not in html
    assert "Unknown target name" not in html
    assert "Docutils System Messages" not in html
