rule collect_run:
    input:
        run="work/{study}/{variant}/seed{seed}/run.json",
        baseline="work/{study}/baseline/run.json",
    output:
        "results/{study}/runs/{variant}/seed{seed}.json",
    params:
        work_dir=lambda wc: f"work/{wc.study}/{wc.variant}/seed{wc.seed}",
        baseline_dir=lambda wc: f"work/{wc.study}/baseline",
    log:
        "logs/{study}/collect/{variant}_seed{seed}.log",
    shell:
        "rewardseg collect {params.work_dir} --baseline-dir {params.baseline_dir}"
        " --out {output} > {log} 2>&1"


rule collect_baseline:
    input:
        "work/{study}/baseline/run.json",
    output:
        "results/{study}/runs/baseline.json",
    params:
        work_dir=lambda wc: f"work/{wc.study}/baseline",
    log:
        "logs/{study}/collect/baseline.log",
    shell:
        "rewardseg collect {params.work_dir} --out {output} > {log} 2>&1"
