# Figures: one rule per figure registered in rewardseg.figures (a family such as
# exp_{experiment} gets one wildcard rule), each calling `rewardseg figure NAME` and
# declaring its PNG (in the snakemake report, with the figure's own caption) and its PDF.
# A new figure is a registered function in src/rewardseg/figures/; nothing here changes.
# Each rule is local (`localrule: True`: a `localrules:` list cannot name generated rules).
# Its input functions (figure_inputs, figure_options, ...) are in common.smk.

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
