# Results: each finished run -> its result JSON; all of them -> the study's tidy tables.


localrules:
    collect_run,
    collect_pretrain,
    study_config,
    aggregate,


rule collect_run:
    input:
        run=paths.run_record(paths.run_dir("{study}", "{variant}", "{seed}")),
        pretrain=paths.run_record(paths.pretrain_dir("{study}")),
    output:
        paths.run_result("{study}", "{variant}", "{seed}"),
    params:
        work_dir=lambda wc: paths.run_dir(wc.study, wc.variant, wc.seed),
        pretrain_dir=lambda wc: paths.pretrain_dir(wc.study),
    log:
        paths.log("{study}", "collect/{variant}_seed{seed}"),
    shell:
        "rewardseg collect {params.work_dir} --pretrain-dir {params.pretrain_dir}"
        " --out {output} > {log} 2>&1"


rule collect_pretrain:
    input:
        paths.run_record(paths.pretrain_dir("{study}")),
    output:
        paths.pretrain_result("{study}"),
    params:
        work_dir=lambda wc: paths.pretrain_dir(wc.study),
    log:
        paths.log("{study}", f"collect/{PRETRAIN}"),
    shell:
        "rewardseg collect {params.work_dir} --out {output} > {log} 2>&1"


rule study_config:
    output:
        paths.study_result("{study}", "study.yaml"),
    params:
        study=lambda wc: config,
    log:
        paths.log("{study}", "study_config"),
    run:
        import yaml

        with open(output[0], "w") as fh:
            yaml.safe_dump(params.study, fh, sort_keys=False)


rule aggregate:
    input:
        runs=run_results(),
        pretrain=paths.pretrain_result("{study}"),
    output:
        metrics=paths.study_result("{study}", "metrics.csv"),
        stats=paths.study_result("{study}", "train_stats.csv"),
    log:
        paths.log("{study}", "aggregate"),
    shell:
        "rewardseg aggregate {input.runs} --pretrain {input.pretrain}"
        " --out {output.metrics} --stats {output.stats} > {log} 2>&1"
