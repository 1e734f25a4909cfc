"""The qualitative panel (``qualitative``): input, ground truth and the two variants'
predictions, drawn from :mod:`.predictions`' arrays."""
from __future__ import annotations

from typing import Any, Dict

from ..study import labels as variant_labels
from .registry import figure
from .style import SLIDE_PX

QUALITATIVE_PT = 14.0  # its text: the panel is tall, so a slide shows it smaller


@figure("qualitative", needs=("predictions",), dpi=110,
        caption="Study ``{study}``: the validation images (first seed) on which the CE "
                "control and the reward-tuned variant with the best final mIoU disagree "
                "most: input, ground truth, the two predictions, in the class palette "
                "(black: ignored pixels).")
def qualitative_figure(study: dict, predictions: Dict[str, Any]):
    """Input, ground truth, the control's and the best reward-tuned variant's predictions
    on the images where they differ most (:func:`qualitative_predictions`)."""
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Patch

    data = predictions
    shown = [str(v) for v in data["variants"]]
    classes = [str(c) for c in data["classes"]]
    palette = np.asarray(data["palette"], dtype=np.uint8)
    rows = len(data["names"])
    labels = variant_labels(study)

    def colour(label):
        out = np.zeros(label.shape + (3,), dtype=np.uint8)
        valid = label < len(palette)
        out[valid] = palette[label[valid]]
        return out

    cols, lines = 2 + len(shown), max(rows, 1)
    first = data.get("image0")
    aspect = first.shape[0] / first.shape[1] if first is not None else 0.5
    panel = 3.0  # inches a panel is wide; text QUALITATIVE_PT stays >= 12 px on a slide
    ncol = max(1, min(len(classes), int(panel * cols / 2.0)))
    legend_rows = -(-len(classes) // ncol)
    height = lines * (panel * aspect + 0.12) + 1.35 + 0.3 * legend_rows
    # shown SLIDE_PX high on a slide: text of `size` pt is size * SLIDE_PX / (72 * height) px
    size = max(QUALITATIVE_PT, round(12.5 * 72 * height / SLIDE_PX + 0.49))
    fig, axes = plt.subplots(lines, cols, figsize=(panel * cols, height), squeeze=False)
    titles = ["input", "ground truth", labels.get(shown[0], shown[0])]
    if len(shown) > 1:
        verdict = ("best reward-tuned" if bool(data["better"]) else
                   "best reward-tuned (not\nbetter than its control)")
        titles.append(f"{verdict}:\n{labels.get(shown[1], shown[1])}")
    for row in range(rows):
        panels = [data[f"image{row}"], colour(data[f"label{row}"])]
        panels += [colour(p) for p in data[f"pred{row}"]]
        for col, shown_panel in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(shown_panel)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(titles[col], fontsize=size)
        axes[row, 0].set_ylabel(f"{100 * float(data['disagreement'][row]):.1f} %\ndiffer",
                                fontsize=size)
    handles = [Patch(color=np.array(palette[i]) / 255.0, label=name)
               for i, name in enumerate(classes)]
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=size,
               frameon=False, handlelength=1.2, columnspacing=1.0)
    fig.suptitle(f"Where the two differ most ({int(data['searched'])} validation images "
                 f"searched, seed {int(data['seed'])}); black: ignored",
                 fontsize=size)
    bottom = (0.3 * legend_rows + 0.15) / height
    fig.tight_layout(rect=(0, bottom, 1, 1 - 0.35 / height), h_pad=0.3, w_pad=0.3)
    return fig
