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
