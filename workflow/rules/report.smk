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
