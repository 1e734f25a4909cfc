"""Figures of a study: a registry with one function per figure (or per family of figures).

A figure is a function decorated with :func:`figure`. It takes the study (a dict) and the
inputs its ``needs`` names, and returns a matplotlib Figure; :func:`save` writes that
Figure as PNG + PDF. The notebook calls :func:`build` and shows the Figure inline; the
command ``rewardseg figure NAME`` calls :func:`draw` (build + save).

The workflow reads the registry: ``workflow/rules/figures.smk`` makes one rule per entry
and ``rule all`` asks for every figure of the study (``figure_outputs`` in common.smk), so
a new figure is one registered function in a module of this package and nothing else. Its
caption in the snakemake report is the registered sentence.

A pattern with a ``{field}`` is a family: one figure per value of ``each(study)``, the
value handed to the function as the keyword ``field`` (``exp_{experiment}``: one figure
per experiment of the study).

The modules: the registry (``registry``), the common look and :func:`save` (``style``),
the figures (``experiments``, ``final``, ``training``, ``qualitative``, ``class_deltas``,
``reward_gap``) and the qualitative panel's data (``predictions``). They register in the
order they are imported below, which is the order of :func:`names`.

Importing this package is cheap (the Snakefile imports it): matplotlib, seaborn, pandas
and mmseg are imported inside the functions.
"""
from .registry import (FIGURES, NEED_FILES, NEEDS, FigureSpec, build, draw, figure, names,
                       resolve)
from .style import (BAND_MOST, CONTROL_COLOURS, FIGSIZE, MARKERS, REFERENCE_COLOUR,
                    SLIDE_PX, TEXT_PT, TITLE_PT, TREND_COLOUR, VARIANT_COLOURS,
                    control_variants, min_text_px, reference_variant, save, shown_texts,
                    variant_colours, variant_markers)
from .predictions import (IGNORE_INDEX, QUALITATIVE_CANDIDATES, QUALITATIVE_IMAGES,
                          load_predictions, qualitative_predictions, qualitative_variants,
                          save_predictions, val_pairs)
from .experiments import experiment_figure
from .final import DELTA_LINEAR, DELTA_SYMLOG_AT, delta_figure, per_class_figure
from .training import (REWARD_MEASURES, WEIGHT_PARTS, training_reward_figure,
                       variance_figure, weight_change_figure)
from .qualitative import QUALITATIVE_PT, qualitative_figure
from .class_deltas import PER_CLASS_COLUMNS, per_class_delta_figure, per_class_deltas
from .reward_gap import (ARGMAX_REWARD, POLICY_ENTROPY, SAMPLED_REWARD, reward_gap_data,
                         reward_gap_figure)
