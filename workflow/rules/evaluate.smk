# Results: each finished run -> its result JSON; all of them -> the study's tidy tables;
# or, with `--config recorded=DIR`, the study's results restored from its record.


localrules:
    collect_run,
    collect_pretrain,


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
        paths.collect_log("{study}", "{variant}", "{seed}"),
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
        paths.collect_log("{study}", PRETRAIN),
    shell:
        "rewardseg collect {params.work_dir} --out {output} > {log} 2>&1"


# The study as this Snakefile resolved and checked it (common.smk's RESOLVED_STUDY): every
# variant's complete fields, control, label, experiments. The jobs below read it (--study)
# instead of resolving the config again; a changed config changes it (params).
rule resolved_study:
    localrule: True
    output:
        paths.resolved_study("{study}"),
    params:
        # a function: its value is not formatted (the JSON's braces are no wildcards)
        text=lambda wc: f"{RESOLVED_STUDY.to_json()}\n",
    log:
        paths.log("{study}", "resolved_study"),
    run:
        from rewardseg.fileio import write_text_atomic

        write_text_atomic(output[0], params.text)


# The study's results (rewardseg.recorded.RESULT_FILES): made here from the runs, or, with
# `--config recorded=DIR`, restored from a record (then nothing is trained).
if not RECORDED_FROM:

    rule study_config:
        localrule: True
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
        localrule: True
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

    # The qualitative panel's data (rewardseg.figures.qualitative_predictions): the
    # control's and the best reward-tuned variant's predictions where they differ most,
    # from the first seed's finished runs; a small file, recorded with the tables.
    rule predictions:
        localrule: True
        input:
            study=paths.resolved_study("{study}"),
            metrics=paths.study_result("{study}", "metrics.csv"),
            runs=first_seed_runs,
        output:
            paths.study_result("{study}", "predictions.npz"),
        log:
            paths.log("{study}", "predictions"),
        shell:
            "rewardseg predictions --study {input.study:q} --metrics {input.metrics:q}"
            f" --work-root {paths.WORK} --seed {SEEDS[0]} --out {{output:q}} > {{log}} 2>&1"

    # A study with a recorded run (paper/recorded/<study>/): how far this run's numbers are
    # from it (identical on the same CPU kind and thread count); printed at the end.
    rule reproduction:
        localrule: True
        input:
            study=paths.resolved_study("{study}"),
            metrics=paths.study_result("{study}", "metrics.csv"),
            stats=paths.study_result("{study}", "train_stats.csv"),
            recorded=paths.recorded("{study}", "metrics.csv"),
        output:
            md=paths.study_result("{study}", "reproduction.md"),
            json=paths.study_result("{study}", "reproduction.json"),
        params:
            recorded=lambda wc: paths.recorded(wc.study),
        log:
            paths.log("{study}", "reproduction"),
        shell:
            "rewardseg reproduction --recorded {params.recorded:q} --study {input.study:q}"
            " --metrics {input.metrics:q} --stats {input.stats:q}"
            f" --work-root {paths.WORK} --out {{output.md:q}} --json {{output.json:q}}"
            " > {log} 2>&1"

else:

    rule restore_recorded:
        localrule: True
        input:
            [os.path.join(RECORDED_FROM, name) for name in RECORDED_RESULT_FILES],
        output:
            [paths.study_result("{study}", name) for name in RECORDED_RESULT_FILES],
        run:
            import shutil

            for source, target in zip(input, output):
                shutil.copyfile(source, target)
