rule baseline:
    input:
        data=f"data/{DATASET}/meta.json",
        model=config["model"]["config"],
    output:
        "work/{study}/baseline/run.json",
    params:
        spec=baseline_spec_json,
        work_dir=lambda wc: f"work/{wc.study}/baseline",
    log:
        "logs/{study}/baseline.log",
    threads: 1
    resources:
        gpus=1,
        runtime=60,
        mem_mb=4000,
    shell:
        "rewardseg stage --spec {params.spec:q} --work-dir {params.work_dir} > {log} 2>&1"


rule tune:
    input:
        baseline="work/{study}/baseline/run.json",
        weights=class_weight_inputs,
    output:
        "work/{study}/{variant}/seed{seed}/run.json",
    params:
        spec=tune_spec_json,
        work_dir=lambda wc: f"work/{wc.study}/{wc.variant}/seed{wc.seed}",
    log:
        "logs/{study}/{variant}/seed{seed}.log",
    threads: 1
    resources:
        gpus=1,
        runtime=60,
        mem_mb=4000,
    shell:
        "rewardseg stage --spec {params.spec:q} --work-dir {params.work_dir} > {log} 2>&1"
