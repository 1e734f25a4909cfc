"""The rendered slides and the snakemake report open in a real headless Chromium with
every image loaded; a screenshot of the first result slide is kept. The default study's
deck (rebuilt from its record) fits every slide with legible text."""
import os
import shutil

import pytest

from conftest import REPO, copy_workflow, snakemake

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


# Per slide of a rendered deck: how far its content runs past the bottom, the smallest text
# as displayed (CSS px at a 1280 x 720 viewport, the slide's scale applied), and each image
# as displayed and as stored (its PNG bytes for the figure's own smallest text).
SLIDE_MEASURES = """() => Array.from(document.querySelectorAll('section')).map((s, i) => {
  const box = s.getBoundingClientRect();
  const scale = box.width / s.offsetWidth;
  const images = Array.from(s.querySelectorAll('img')).map(img => ({
      src: img.getAttribute('src'), shown: img.getBoundingClientRect().width,
      natural: img.naturalWidth}));
  const walker = document.createTreeWalker(s, NodeFilter.SHOW_TEXT);
  let smallest = Infinity, text = '';
  while (walker.nextNode()) {
    const node = walker.currentNode;
    if (!node.textContent.trim()) continue;
    const el = node.parentElement, r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0) continue;
    const size = parseFloat(getComputedStyle(el).fontSize) * scale;
    if (size < smallest) { smallest = size; text = node.textContent.trim().slice(0, 50); }
  }
  return {slide: i + 1, over: s.scrollHeight - s.clientHeight, smallest, text, images};
})"""
MIN_TEXT_PX = 12


def figure_min_text_px(src):
    """The smallest text of a figure in its own pixels, as rewardseg.figures.save wrote it
    into the PNG (tEXt ``min_text_px``); None for an image without it."""
    import base64
    import io

    from PIL import Image

    head = "data:image/png;base64,"
    assert src.startswith(head), src[:80]
    value = Image.open(io.BytesIO(base64.b64decode(src[len(head):]))).info.get("min_text_px")
    return None if value is None else float(value)


@pytest.fixture(scope="module")
def default_deck(tmp_path_factory):
    """The default study's deck, rebuilt from its recorded results (`make figures`: no
    training) in a copy of the workflow."""
    root = copy_workflow(tmp_path_factory.mktemp("default-deck"))
    recorded = os.path.join("paper", "recorded", "default")
    snakemake(root, "--configfile", os.path.join(recorded, "study.yaml"), "--config",
              f"recorded={recorded}")
    return os.path.join(root, "paper", "build", "default", "slides.html")


def test_every_slide_of_the_default_deck_fits_and_its_text_is_legible(default_deck, browser):
    """At 1280 x 720, on every slide of the default study's deck: nothing runs past the
    slide, no text is under 12 px, and no figure's smallest text is under 12 px as the
    figure is displayed (its PNG's min_text_px x displayed width / stored width). Every
    slide's screenshot is kept in test-artifacts/default-deck/."""
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    page.goto("file://" + default_deck)
    page.wait_for_load_state("load")
    slides = page.evaluate(SLIDE_MEASURES)
    assert len(slides) >= 15
    problems, figures = [], 0
    for s in slides:
        if s["over"] > 1:
            problems.append(f"slide {s['slide']}: content {s['over']} px past its bottom")
        if s["smallest"] < MIN_TEXT_PX:
            problems.append(f"slide {s['slide']}: text {s['smallest']:.1f} px ({s['text']!r})")
        for image in s["images"]:
            own = figure_min_text_px(image["src"])
            assert own is not None, f"slide {s['slide']}: a figure without min_text_px"
            figures += 1
            shown = own * image["shown"] / image["natural"]
            if shown < MIN_TEXT_PX:
                problems.append(f"slide {s['slide']}: figure text {shown:.1f} px "
                                f"({own:g} px stored, shown at {image['shown']:.0f} of "
                                f"{image['natural']} px)")
    assert figures >= 10
    out = os.path.join(ARTIFACTS, "default-deck")
    os.makedirs(out, exist_ok=True)
    for s in slides:
        page.goto("file://" + default_deck + f"#{s['slide']}")
        page.wait_for_timeout(150)
        page.screenshot(path=os.path.join(out, f"slide-{s['slide']:02d}.png"))
    page.close()
    assert not problems, "\n".join(problems)
