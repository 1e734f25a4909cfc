rule pretrained_weights:
    input:
        config["model"]["config"],
    output:
        "work/{study}/pretrained.txt",
    log:
        "logs/{study}/pretrained_weights.log",
    shell:
        "rewardseg fetch-pretrained {input} --touch {output} > {log} 2>&1"


if RELEASED:

    localrules:
        released_checkpoint,

    rule released_checkpoint:
        output:
            "work/{study}/baseline/iter_{step}.pth",
        params:
            url=lambda wc: RELEASED[int(wc.step)]["url"],
            sha256=lambda wc: RELEASED[int(wc.step)]["sha256"],
        log:
            "logs/{study}/released_iter_{step}.log",
        shell:
            "rewardseg download {params.url:q} {output} --sha256 {params.sha256} 2> {log}"


rule baseline:
    input:
        data=f"data/{DATASET}/meta.json",
        model=config["model"]["config"],
        pretrained=pretrained_input,
        released=lambda wc: expand("work/{study}/baseline/iter_{step}.pth", study=wc.study,
                                   step=list(RELEASED)),
    output:
        "work/{study}/baseline/run.json",
    params:
        spec=baseline_spec_json,
        work_dir=lambda wc: f"work/{wc.study}/baseline",
        nproc=max(1, RESOURCES["baseline"]["gpus"]),
    log:
        "logs/{study}/baseline.log",
    threads: RESOURCES["baseline"]["cpus"]
    resources:
        gpu=RESOURCES["baseline"]["gpus"],
        runtime=RESOURCES["baseline"]["runtime"],
        mem_mb=RESOURCES["baseline"]["mem_mb"],
        **SLURM,
    shell:
        "rewardseg stage --spec {params.spec:q} --work-dir {params.work_dir}"
        " --nproc {params.nproc} --threads {threads} > {log} 2>&1"


rule tune:
    input:
        baseline="work/{study}/baseline/run.json",
        weights=class_weight_inputs,
    output:
        "work/{study}/{variant}/seed{seed}/run.json",
    params:
        spec=tune_spec_json,
        work_dir=lambda wc: f"work/{wc.study}/{wc.variant}/seed{wc.seed}",
        nproc=max(1, RESOURCES["tune"]["gpus"]),
    log:
        "logs/{study}/{variant}/seed{seed}.log",
    threads: RESOURCES["tune"]["cpus"]
    resources:
        gpu=RESOURCES["tune"]["gpus"],
        runtime=RESOURCES["tune"]["runtime"],
        mem_mb=RESOURCES["tune"]["mem_mb"],
        **SLURM,
    shell:
        "rewardseg stage --spec {params.spec:q} --work-dir {params.work_dir}"
        " --nproc {params.nproc} --threads {threads} > {log} 2>&1"
