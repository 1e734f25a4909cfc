"""The rendered slides and the snakemake report open in a real headless Chromium with
every image loaded; a screenshot of the first result slide is kept."""
import os
import shutil

import pytest

from conftest import REPO, snakemake

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = os.path.join(REPO, "test-artifacts")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                       "(apt install chromium); .ci/run installs it"),
    pytest.mark.skipif(shutil.which("npx") is None,
                       reason="Node.js (npx) is missing, so the slides are not rendered"),
]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def images(page):
    return page.evaluate(
        "Array.from(document.images).map(i => ({src: i.getAttribute('src').slice(0, 80),"
        " ok: i.complete && i.naturalWidth > 0}))")


def test_slides_render_with_every_image(smoke, browser, tmp_path):
    """The deck is one self-contained file: opened after moving it elsewhere, every
    image loads (embedded), and no slide's content runs past its bottom edge."""
    built = os.path.join(smoke, "paper/build/smoke/slides.html")
    assert os.path.getsize(built) > 10000
    html = str(tmp_path / "moved" / "deck.html")
    os.makedirs(os.path.dirname(html))
    shutil.copy(built, html)
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto("file://" + html)
    page.wait_for_load_state("load")
    imgs = images(page)
    assert len(imgs) >= 8, imgs  # experiments, delta, per-class, moved, reward, variance, ...
    assert all(i["ok"] for i in imgs), [i for i in imgs if not i["ok"]]
    assert all(i["src"].startswith("data:image/png;base64,") for i in imgs), imgs
    assert not errors, errors
    # Marp draws each slide as a fixed 1280 x 720 <section>: content below it is cut off
    overflow = page.evaluate(
        "Array.from(document.querySelectorAll('section')).map((s, i) => ({slide: i + 1,"
        " over: s.scrollHeight - s.clientHeight}))"
        ".filter(s => s.over > 1)")
    assert not overflow, overflow
    # the first result slide: the first one showing an experiment figure
    first = page.evaluate(
        "Array.from(document.querySelectorAll('section')).findIndex("
        "s => s.querySelector('img') !== null)")
    assert first >= 0
    page.goto("file://" + html + f"#{first + 1}")
    page.wait_for_timeout(300)
    os.makedirs(ARTIFACTS, exist_ok=True)
    shot = os.path.join(ARTIFACTS, "slides_first_result.png")
    page.screenshot(path=shot)
    assert os.path.getsize(shot) > 20000
    page.close()


def test_snakemake_report_shows_every_figure(smoke, browser):
    report = os.path.join(smoke, "report.html")
    snakemake(smoke, "--configfile", "configs/studies/smoke.yaml", "--report", report)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto("file://" + report)
    page.get_by_text("Results").click()
    page.get_by_text("Figures").first.click()
    listed = page.inner_text("body")
    names = sorted(f for f in os.listdir(os.path.join(smoke, "figures/smoke")) if f.endswith(".png"))
    assert names and all(f"figures/smoke/{n}" in listed for n in names), listed[:2000]
    # open each figure: its image must load
    for name in names:
        row = page.locator("tr", has_text=f"figures/smoke/{name}").first
        row.locator("a[iconname=eye]").click()  # the report's "show" button
        page.wait_for_timeout(300)
        loaded = [i for i in images(page)
                  if i["ok"] and i["src"].startswith(f"data:image/png;charset=utf8;filename={name}")]
        assert loaded, f"{name}: no image shown"
        page.go_back()
        page.wait_for_timeout(200)
    page.screenshot(path=os.path.join(ARTIFACTS, "snakemake_report.png"))
    assert not errors, errors
    page.close()
