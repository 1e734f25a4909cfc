rule study_config:
    output:
        "results/{study}/study.yaml",
    params:
        study=lambda wc: config,
    log:
        "logs/{study}/study_config.log",
    run:
        import yaml

        with open(output[0], "w") as fh:
            yaml.safe_dump(params.study, fh, sort_keys=False)


rule aggregate:
    input:
        runs=run_results(),
        baseline="results/{study}/runs/baseline.json",
    output:
        metrics="results/{study}/metrics.csv",
        stats="results/{study}/train_stats.csv",
    log:
        "logs/{study}/aggregate.log",
    shell:
        "rewardseg aggregate {input.runs} --baseline {input.baseline}"
        " --out {output.metrics} --stats {output.stats} > {log} 2>&1"


rule report:
    input:
        study="results/{study}/study.yaml",
        metrics="results/{study}/metrics.csv",
        stats="results/{study}/train_stats.csv",
    output:
        figures=report(
            expand("figures/{{study}}/{name}.png", name=FIGURES),
            caption="../report/figures.rst",
            category="Figures",
        ),
        tables=expand("paper/tables/{{study}}/{name}", name=TABLES),
        done="results/{study}/report.done",
    params:
        figures=lambda wc: f"figures/{wc.study}",
        tables=lambda wc: f"paper/tables/{wc.study}",
    log:
        "logs/{study}/report.log",
    shell:
        "rewardseg report --study {input.study} --metrics {input.metrics} --stats {input.stats}"
        " --figures {params.figures} --tables {params.tables} > {log} 2>&1 && touch {output.done}"


rule qualitative:
    input:
        study="results/{study}/study.yaml",
        metrics="results/{study}/metrics.csv",
        runs=lambda wc: expand("work/{study}/{variant}/seed{seed}/run.json", study=wc.study,
                               variant=VARIANTS, seed=SEEDS[0]),
    output:
        png=report("figures/{study}/qualitative.png", caption="../report/qualitative.rst",
                   category="Figures"),
        pdf="figures/{study}/qualitative.pdf",
    params:
        seed=SEEDS[0],
    log:
        "logs/{study}/qualitative.log",
    resources:
        runtime=20,
    shell:
        "rewardseg qualitative --study {input.study} --metrics {input.metrics}"
        " --seed {params.seed} --out {output.png} > {log} 2>&1"


rule notebook:
    input:
        study="results/{study}/study.yaml",
        metrics="results/{study}/metrics.csv",
        stats="results/{study}/train_stats.csv",
    output:
        touch("results/{study}/notebook.done"),
    log:
        notebook="results/{study}/results.ipynb",
    notebook:
        "../notebooks/results.py.ipynb"


rule notebook_html:
    input:
        done="results/{study}/notebook.done",
    output:
        "results/{study}/results.html",
    params:
        notebook=lambda wc, output: os.path.join(os.path.dirname(output[0]), "results.ipynb"),
        outdir=lambda wc, output: os.path.dirname(output[0]),
    log:
        "logs/{study}/notebook_html.log",
    shell:
        "jupyter nbconvert --to html --output-dir {params.outdir} {params.notebook} > {log} 2>&1"


rule overview:
    input:
        studies_with_results,
    output:
        "paper/build/{study}/overview.md",
    log:
        "logs/{study}/overview.log",
    shell:
        "rewardseg overview {input} --out {output} > {log} 2>&1"


rule slides_markdown:
    input:
        template="paper/slides.md",
        study="results/{study}/study.yaml",
        metrics="results/{study}/metrics.csv",
        report="results/{study}/report.done",
        qualitative="figures/{study}/qualitative.png",
        overview="paper/build/{study}/overview.md",
    output:
        "paper/build/{study}/slides.md",
    log:
        "logs/{study}/slides_markdown.log",
    shell:
        "rewardseg slides --template {input.template} --study {input.study}"
        " --metrics {input.metrics} --overview {input.overview} --out {output} > {log} 2>&1"


rule slides_html:
    input:
        "paper/build/{study}/slides.md",
    output:
        "paper/build/{study}/slides.html",
    params:
        marp=MARP_CLI,
    log:
        "logs/{study}/slides_html.log",
    shell:
        "workflow/scripts/render_slides.sh {input} {output} {params.marp} > {log} 2>&1"


rule slides:
    input:
        expand("paper/build/{study}/slides.html", study=STUDY),
