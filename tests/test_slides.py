"""The deck (rewardseg.slides): long tables split over slides, images embedded so that
the rendered file stands alone."""
import base64
import os

import pytest

from rewardseg.slides import embed_images, split_table


def test_a_long_table_continues_on_the_next_slide():
    table = "| a | b |\n|---|---|\n" + "".join(f"| {i} | x |\n" for i in range(20))
    out = split_table(table, 9, "# Final mIoU")
    slides = out.split("\n---\n")
    assert len(slides) == 3
    for slide in slides:
        lines = [l for l in slide.strip().splitlines() if l.startswith("|")]
        assert lines[:2] == ["| a | b |", "|---|---|"] and len(lines) - 2 <= 9
    assert out.count("# Final mIoU (continued)") == 2
    rows = [l for l in out.splitlines() if l.startswith("| ") and l[2].isdigit()]
    assert rows == [f"| {i} | x |" for i in range(20)]
    assert split_table(table, 50, "# T").count("---\n\n#") == 0


def test_images_are_embedded_and_a_missing_one_is_named(tmp_path):
    png = b"\x89PNG\r\n\x1a\n" + b"0" * 40
    (tmp_path / "figs").mkdir()
    (tmp_path / "figs" / "a b.png").write_bytes(png)
    deck = tmp_path / "deck" / "slides.html"
    deck.parent.mkdir()
    deck.write_text('<p><img src="../figs/a%20b.png" alt="x"><img src="data:image/png;base64,AA">'
                    '<img src="https://example.org/y.png"></p>')
    assert embed_images(str(deck)) == 1
    text = deck.read_text()
    assert f'src="data:image/png;base64,{base64.b64encode(png).decode()}"' in text
    assert 'src="https://example.org/y.png"' in text and "../figs" not in text
    deck.write_text('<img src="../figs/missing.png">')
    with pytest.raises(FileNotFoundError, match="missing.png"):
        embed_images(str(deck))
    assert deck.read_text() == '<img src="../figs/missing.png">'  # left as it was
    assert not os.path.exists(str(deck) + ".tmp")


# ---------------------------------------------------------------- the deck's words
RECORDED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "paper", "recorded", "default")


def recorded_study():
    from rewardseg.study import load_study

    return load_study(os.path.join(RECORDED, "study.yaml"))


def recorded_paper(tmp_path, study):
    """A paper folder holding the recorded study's tables, and the deck's template."""
    paper = tmp_path / "paper"
    (paper / "tables" / study["study"]).mkdir(parents=True)
    for name in ("final_miou.md", "per_class_iou.md"):
        (paper / "tables" / study["study"] / name).write_text(
            open(os.path.join(RECORDED, name)).read())
    return paper, os.path.join(os.path.dirname(RECORDED), "..", "slides.md")


def test_the_estimators_are_described_as_the_loss_computes_them():
    import copy

    from rewardseg import vocabulary as voc
    from rewardseg.slides import estimators_text
    from rewardseg.study import variant_fields

    study = recorded_study()
    text = estimators_text(study)
    sampling = [variant_fields(study, v) for v in study["variants"]
                if variant_fields(study, v)["loss"] in voc.SAMPLING]
    used = {f["normalize"] for f in sampling}
    for normalize in voc.NORMALIZE:
        assert (voc.NORMALIZE_WORDS[normalize] in text) == (normalize in used), normalize
    assert "per valid pixel" not in text
    for estimator in voc.ESTIMATORS:
        assert f"**{voc.ESTIMATOR_TITLES[estimator]}** ({voc.ESTIMATOR_SOURCES[estimator]})" \
            in text
    for estimator in voc.SAMPLING:  # the code's default baseline is the one marked
        if len(voc.BASELINES[estimator]) > 1:
            default = voc.BASELINE_WORDS[voc.DEFAULT_BASELINE[estimator]]
            assert f"**{default}** (default)" in text
    ks = sorted({f["num_samples"] for f in sampling if f["loss"] == voc.SAMPLING[0]})
    assert f"$k$ = {' or '.join(map(str, ks))} label maps" in text
    # a run that averages over the pixels instead: the slide says so
    pixel = copy.deepcopy(study)
    first = next(v for v in pixel["variants"]
                 if variant_fields(pixel, v)["loss"] == voc.SAMPLING[0])
    pixel["variants"][first]["normalize"] = "pixel"
    assert voc.NORMALIZE_WORDS["pixel"] in estimators_text(pixel)


def test_the_deck_is_english_and_lists_variants_in_legends_not_comma_strings(tmp_path):
    import re

    from rewardseg.slides import build_slides
    from rewardseg.study import experiments, labels
    from rewardseg.vocabulary import experiment_title

    study = recorded_study()
    paper, template = recorded_paper(tmp_path, study)
    out = build_slides(template, study, os.path.join(RECORDED, "metrics.csv"),
                       str(tmp_path / "deck" / "slides.md"), paper_dir=str(paper))
    text = open(out).read()
    front = text.split("\n---\n")[0]
    assert re.search(r"^lang: en$", front, re.M)
    names = labels(study)
    for experiment, variants in experiments(study).items():
        assert f"# {experiment_title(experiment)}\n" in text
        joined = ", ".join(names[v] for v in variants)
        assert joined not in text  # the figure's legend lists them, one a line
    # the statistics are defined where they are shown
    for words in ("95 % CI: unadjusted, paired over seeds",
                  "p adjusted by Holm within the experiment",
                  "the smallest Δ this design detects with 80 % power at that level"):
        assert words in text
    assert "{{" not in text


def test_the_setup_slide_says_how_far_the_tuning_start_is_from_the_converged_end(tmp_path):
    """The pretraining may have converged at its end while the tuning starts earlier: the
    setup slide gives both, from metrics.csv (a changed number changes the slide)."""
    import pandas as pd

    from rewardseg.slides import _plateau
    from rewardseg.study import tuning_fields

    study = recorded_study()
    start = tuning_fields(study)["start"]
    metrics = pd.read_csv(os.path.join(RECORDED, "metrics.csv"))
    pre = metrics[(metrics["variant"] == "pretrain") & (metrics["class"] == "mIoU")]
    at_start = pre[pre["step"] == start]["IoU"].iloc[0]
    end = pre.sort_values("step").iloc[-1]
    text = _plateau(metrics, start)
    assert "converged" in text
    assert (f"the tuning starts at {start} ({at_start:.2f}), where CE still gains "
            f"{end['IoU'] - at_start:+.2f} by {int(end['step'])}") in text
    lower = metrics.copy()
    lower.loc[(lower["variant"] == "pretrain") & (lower["class"] == "mIoU")
              & (lower["step"] == start), "IoU"] -= 1.0
    assert f"({at_start - 1.0:.2f})" in _plateau(lower, start)
    assert "tuning starts" not in _plateau(metrics, int(end["step"]))


def test_a_registered_figure_the_template_does_not_show_gets_its_own_slide(tmp_path):
    """A new figure is one registered function: the deck gives it a slide (its title, the
    figure, its caption) after the template's figures; a figure the template shows gets
    no second slide, and with no new figure the marker leaves nothing behind."""
    from rewardseg.figures import FIGURES, figure
    from rewardseg.slides import build_slides

    study = recorded_study()
    paper, template = recorded_paper(tmp_path, study)

    def deck(name):
        return open(build_slides(template, study, os.path.join(RECORDED, "metrics.csv"),
                                 str(tmp_path / name / "slides.md"),
                                 paper_dir=str(paper))).read()

    before = deck("before")
    assert "<!-- figures -->" not in before
    registered = dict(FIGURES)
    figure("probe_hist", caption="Study ``{study}``: the final mIoU of every run.",
           title="Final mIoU, every run")(lambda study, metrics: None)
    try:
        after = deck("after")
    finally:  # the registry as it was
        FIGURES.clear()
        FIGURES.update(registered)
    import re

    qualitative = re.search(r"!\[h:440\]\((\S+)/qualitative\.png\)", before).group(1)
    slide = ("\n\n---\n\n# Final mIoU, every run\n\n"
             f"![h:440]({qualitative}/probe_hist.png)\n\n"
             f'<p class="caption">Study {study["study"]}: the final mIoU of every run.</p>')
    assert slide in after
    assert after.replace(slide, "") == before.replace(str(tmp_path / "before"),
                                                      str(tmp_path / "after"))
    assert after.index(slide) > after.index("/qualitative.png")
    assert after.count("/delta_vs_control.png") == 1
