"""The figures' common look and output: sizes, fonts, each variant's colour and marker, the
helpers that draw mean lines, legends and swatches, and :func:`save` (PNG + PDF)."""
from __future__ import annotations

import os
from typing import Dict, List, Optional

from ..study import as_resolved as resolve_study

# Every figure is drawn for a 1280 × 720 slide that shows it SLIDE_PX high (``![h:440]`` in
# paper/slides.md): at FIGSIZE and 130 dpi, TEXT_PT (the smallest text) is 12.4 px there.
FIGSIZE = (12.8, 5.4)
SLIDE_PX = 440
TEXT_PT = 11.0
TITLE_PT = 13.0
# one colour (and marker) per variant in every figure: the control dark, the reference
# blue, the others in the study's order
CONTROL_COLOURS = ("#222222", "#777777", "#a8a8a8")
REFERENCE_COLOUR = "#1f77b4"
VARIANT_COLOURS = ("#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                   "#17becf", "#bcbd22", "#393b79", "#637939", "#d6616b", "#7b4173",
                   "#e7ba52", "#00a087")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "p", "*")
TREND_COLOUR = "#444444"
BAND_MOST = 2  # a panel with more variants draws their means without the 95 % bands


def save(fig, out_png: str, dpi: int = 130) -> List[str]:
    """Write ``fig`` as ``out_png`` and a PDF beside it, then close it. The PNG carries
    ``min_text_px`` (a tEXt chunk): its smallest text in PNG pixels (:func:`min_text_px`),
    so that whoever shows it at another size can tell how large that text appears."""
    import matplotlib.pyplot as plt

    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    smallest = min_text_px(fig, dpi)
    fig.savefig(out_png, dpi=dpi, metadata={"min_text_px": f"{smallest:.2f}"})
    pdf = os.path.splitext(out_png)[0] + ".pdf"
    fig.savefig(pdf)
    plt.close(fig)
    return [out_png, pdf]


def shown_texts(fig) -> list:
    """The Text artists of ``fig`` that are drawn: visible themselves and all the way up,
    with some text; an axes with its axis turned off draws no tick or axis label."""
    from matplotlib.axes import Axes
    from matplotlib.axis import Axis
    from matplotlib.text import Text

    found, stack, seen = [], [fig], set()
    while stack:
        artist = stack.pop()
        if id(artist) in seen or not artist.get_visible():
            continue
        seen.add(id(artist))
        if isinstance(artist, Text):
            if artist.get_text().strip():
                found.append(artist)
            continue  # an Annotation's children are its arrow
        children = artist.get_children()
        if isinstance(artist, Axes) and not artist.axison:
            children = [c for c in children if not isinstance(c, Axis)]
        stack.extend(children)
    return found


def min_text_px(fig, dpi: Optional[float] = None) -> float:
    """The smallest drawn text of ``fig`` (:func:`shown_texts`: titles, labels, tick
    labels, legends, annotations) in pixels of the image saved at ``dpi`` (points × dpi /
    72); shown at another width, it scales with the width. 0 for a figure without text."""
    dpi = float(dpi or fig.dpi)
    sizes = [text.get_fontsize() for text in shown_texts(fig)]
    return min(sizes) * dpi / 72.0 if sizes else 0.0



def control_variants(study: dict) -> List[str]:
    """The variants that some other variant is compared with, the most compared first
    (then in the study's order)."""
    of = resolve_study(study).controls
    count: Dict[str, int] = {}
    for variant, control in of.items():
        if control != variant:
            count[control] = count.get(control, 0) + 1
    order = list(study["variants"])
    return sorted(count, key=lambda v: (-count[v], order.index(v)))


def reference_variant(study: dict) -> Optional[str]:
    """The variant that is the study's reference tuning (no field of its own but its label,
    experiments and control), else one called ``reference``, else None."""
    own = {"label", "experiment", "control"}
    for name, fields in study["variants"].items():
        if not set(fields or {}) - own and name not in control_variants(study):
            return name
    return "reference" if "reference" in study["variants"] else None


def variant_colours(study: dict) -> Dict[str, str]:
    """Variant -> its colour in every figure of the study: the control(s) dark grey, the
    reference blue, the others from a fixed list in the study's variant order (cycling
    after 14)."""
    found = {}
    for i, control in enumerate(control_variants(study)):
        found[control] = CONTROL_COLOURS[min(i, len(CONTROL_COLOURS) - 1)]
    reference = reference_variant(study)
    if reference and reference not in found:
        found[reference] = REFERENCE_COLOUR
    others = [v for v in study["variants"] if v not in found]
    for i, variant in enumerate(others):
        found[variant] = VARIANT_COLOURS[i % len(VARIANT_COLOURS)]
    return {v: found[v] for v in study["variants"]}


def variant_markers(study: dict) -> Dict[str, str]:
    """Variant -> its marker in line plots (in the study's order): with the colour, it
    tells apart lines of similar hue."""
    return {v: MARKERS[i % len(MARKERS)] for i, v in enumerate(study["variants"])}


def _mean_band(run_values):
    """Mean over seeds per step and the 95 % Student-t half-width (0 with one seed)."""
    from scipy import stats as st

    grouped = run_values.groupby("step")["value"]
    mean, sd, n = grouped.mean(), grouped.std(ddof=1), grouped.count()
    half = (sd / n.pow(0.5) * n.map(lambda k: st.t.ppf(0.975, k - 1) if k > 1 else 0.0))
    return mean.index.to_numpy(), mean.to_numpy(), half.fillna(0.0).to_numpy()


def _mean_line(ax, values, colour: str, label: str, marker: str = "o", band: bool = True,
               x_shift: float = 0.0, **style):
    """Mean over seeds per step (``values``: rows with ``step`` and ``value``) and its
    95 % Student-t band; returns (x, mean, half-width)."""
    x, mean, half = _mean_band(values)
    x = x + x_shift
    style = dict(dict(lw=2, markersize=6), **style)
    ax.plot(x, mean, color=colour, marker=marker, label=label, **style)
    if band:
        ax.fill_between(x, mean - half, mean + half, color=colour, alpha=0.15, lw=0)
    return x, mean, half


def _legend_outside(fig, ax_or_fig, handles=None, title: Optional[str] = None):
    """A legend to the right of the data (of ``ax_or_fig``: one axes, or the figure)."""
    kwargs = dict(fontsize=TEXT_PT, frameon=False, title=title, title_fontsize=TEXT_PT,
                  alignment="left")
    if handles is not None:
        kwargs["handles"] = handles
    if ax_or_fig is fig:
        return fig.legend(loc="center left", bbox_to_anchor=(0.0, 0.5), **kwargs)
    return ax_or_fig.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0,
                            **kwargs)


def _fit_right_legend(fig, legend, top: float = 1.0, bottom: float = 0.0) -> None:
    """tight_layout for the axes, leaving the figure's right side to a figure legend."""
    fig.canvas.draw()
    width = legend.get_window_extent().width / fig.bbox.width
    fig.tight_layout(rect=(0, bottom, 0.985 - width, top))
    legend.set_bbox_to_anchor((0.99 - width, 0.5 * (top + bottom)), transform=fig.transFigure)



def _swatches(ax, variants: List[str], colours: Dict[str, str], x: float) -> None:
    """A square in each row's variant colour at data x ``x`` (left of a heat map)."""
    ax.scatter([x] * len(variants), range(len(variants)), marker="s", s=110,
               c=[colours.get(v, "k") for v in variants], clip_on=False, zorder=3)
