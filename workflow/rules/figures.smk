# Figures: one rule per figure registered in rewardseg.figures (a family such as
# exp_{experiment} gets one wildcard rule), each calling `rewardseg figure NAME` and
# declaring its PNG (in the snakemake report, with the figure's own caption) and its PDF.
# A new figure is a registered function in src/rewardseg/figures.py; nothing here changes.
# Each rule is local (`localrule: True`: a `localrules:` list cannot name generated rules).
import re
import shlex

from rewardseg import figures as figure_registry

# What each of a figure's `needs` adds to its rule: inputs, and the command's options.
FIGURE_NEEDS = {
    "metrics": (lambda wc: {"metrics": paths.study_result(wc.study, "metrics.csv")},
                lambda input: ["--metrics", input.metrics]),
    "stats": (lambda wc: {"stats": paths.study_result(wc.study, "train_stats.csv")},
              lambda input: ["--stats", input.stats]),
    "runs": (lambda wc: {"runs": first_seed_runs(wc)},
             lambda input: ["--work-root", paths.WORK, "--seed", str(SEEDS[0])]),
}


# The rules below are made in a loop: everything that differs between them is bound here,
# at definition time (a rule's shell command is evaluated again when its job runs, when
# the loop variable holds the last figure).
def figure_inputs(spec):
    def inputs(wildcards):
        out = {"study": paths.study_result(wildcards.study, "study.yaml")}
        for need in spec.needs:
            out.update(FIGURE_NEEDS[need][0](wildcards))
        return out

    return inputs


def figure_options(spec):
    def options(wildcards, input):
        opts = [opt for need in spec.needs for opt in FIGURE_NEEDS[need][1](input)]
        return " ".join(shlex.quote(opt) for opt in opts)

    return options


def figure_name(spec):
    return lambda wc: spec.pattern.format(**dict(wc.items()))


def figure_caption(spec):
    return lambda wc: spec.caption_for(**dict(wc.items()))


def one_of(values):
    """A wildcard constraint matching exactly these values (nothing when there are none)."""
    return "|".join(re.escape(v) for v in values) or "(?!)"


for figure_spec in figure_registry.FIGURES.values():

    rule:
        name:
            figure_spec.rule
        localrule: True
        input:
            unpack(figure_inputs(figure_spec)),
        output:
            png=report(paths.figure("{study}", figure_spec.pattern, "png"),
                       caption="../report/figure.rst", category="Figures"),
            pdf=paths.figure("{study}", figure_spec.pattern, "pdf"),
        wildcard_constraints:
            **({figure_spec.field: one_of(figure_spec.each(config))} if figure_spec.field else {}),
        params:
            name=figure_name(figure_spec),
            options=figure_options(figure_spec),
            caption=figure_caption(figure_spec),
        log:
            paths.log("{study}", f"figure_{figure_spec.pattern}"),
        shell:
            "rewardseg figure {params.name} --study {input.study:q} {params.options}"
            " --out {output.png:q} > {log} 2>&1"
