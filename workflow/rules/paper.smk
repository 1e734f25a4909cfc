# What is read: the study's tables, the results notebook (executed, and as HTML), the
# cross-study overview and the Marp deck. Figures are workflow/rules/figures.smk.
import shutil

MARP_CLI = "@marp-team/marp-cli@4.5.1"
# `rule all` asks for the rendered deck only where Node.js can render it
HAVE_NODE = shutil.which("npx") is not None
if not HAVE_NODE and workflow.is_main_process:
    logger.warning("Node.js (npx) not found: the slides are built as Marp markdown "
                   f"({paths.build(STUDY, 'slides.md')}) but not rendered to HTML; install "
                   "Node.js >= 18 and run `snakemake slides` to render them.")


localrules:
    tables,
    notebook,
    notebook_html,
    overview,
    slides_markdown,
    slides_html,
    slides,


rule tables:
    input:
        study=paths.resolved_study("{study}"),
        metrics=paths.study_result("{study}", "metrics.csv"),
    output:
        table_outputs("{study}"),
    params:
        out_dir=lambda wc, output: os.path.dirname(output[0]),
    log:
        paths.log("{study}", "tables"),
    shell:
        "rewardseg tables --study {input.study:q} --metrics {input.metrics:q}"
        " --out-dir {params.out_dir:q} > {log} 2>&1"


# The executed notebook is the rule's output and also where snakemake saves it
# (log: notebook=); on failure snakemake removes it like any output, so the traceback
# is in snakemake's own log. It shows every registered figure (rewardseg.figures.names, in
# the registry's order): those that load the trained checkpoints ("runs") from the PNG their
# rule wrote (input `figures`, common.smk's notebook_figure_pngs), the others drawn again
# from the tables.
rule notebook:
    input:
        study=paths.resolved_study("{study}"),
        metrics=paths.study_result("{study}", "metrics.csv"),
        stats=paths.study_result("{study}", "train_stats.csv"),
        figures=notebook_figure_pngs,
    output:
        paths.study_result("{study}", "results.ipynb"),
    log:
        notebook=paths.study_result("{study}", "results.ipynb"),
    notebook:
        "../notebooks/results.py.ipynb"


# The HTML leaves out snakemake's preamble cell (tagged snakemake-job-properties: the job's
# paths on this machine, sys.path, a pickled blob), so it opens with the notebook's title,
# and the code of the cells tagged remove-input (set-up, tables: their outputs stay);
# the executed .ipynb keeps it all as snakemake wrote it.
rule notebook_html:
    input:
        paths.study_result("{study}", "results.ipynb"),
    output:
        paths.study_result("{study}", "results.html"),
    params:
        outdir=lambda wc, output: os.path.dirname(output[0]),
    log:
        paths.log("{study}", "notebook_html"),
    shell:
        "jupyter nbconvert --to html --TagRemovePreprocessor.enabled=True"
        " --TagRemovePreprocessor.remove_cell_tags=snakemake-job-properties"
        " --TagRemovePreprocessor.remove_input_tags=remove-input"
        " --output-dir {params.outdir:q} {input:q} > {log} 2>&1"


rule overview:
    input:
        metrics=studies_with_results,
        study=paths.study_result("{study}", "study.yaml"),  # its controls
    output:
        paths.build("{study}", "overview.md"),
    log:
        paths.log("{study}", "overview"),
    shell:
        "rewardseg overview {input.metrics} --out {output} > {log} 2>&1"


rule slides_markdown:
    input:
        template="paper/slides.md",
        study=paths.resolved_study("{study}"),
        metrics=paths.study_result("{study}", "metrics.csv"),
        figures=lambda wc: figure_outputs(wc.study, exts=("png",)),
        tables=lambda wc: table_outputs(wc.study),
        overview=paths.build("{study}", "overview.md"),
    output:
        paths.build("{study}", "slides.md"),
    log:
        paths.log("{study}", "slides_markdown"),
    shell:
        "rewardseg slides --template {input.template} --study {input.study}"
        " --metrics {input.metrics} --overview {input.overview} --out {output} > {log} 2>&1"


rule slides_html:
    input:
        paths.build("{study}", "slides.md"),
    output:
        paths.build("{study}", "slides.html"),
    params:
        marp=MARP_CLI,
    log:
        paths.log("{study}", "slides_html"),
    shell:
        "workflow/scripts/render_slides.sh {input} {output} {params.marp} > {log} 2>&1"


rule slides:
    input:
        paths.build(STUDY, "slides.html"),
