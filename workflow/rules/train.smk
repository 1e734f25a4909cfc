# Training: the CE pretraining (or its released checkpoints) and every variant x seed.
# Only the two training rules are submitted to the cluster under `--profile slurm`.
# A training job's output goes to its log; one line per evaluation goes to the console
# (file descriptor 3, a copy of snakemake's stderr: REWARDSEG_PROGRESS_FD).
# Snakemake removes a job's log before each attempt (retry, requeue, rerun): the training
# rules run `workflow/scripts/logged-attempt.sh LOG ATTEMPTS COMMAND...`, which writes a
# header (attempt N, date, host, SLURM job id, the GPU variables the job sees:
# CUDA_VISIBLE_DEVICES, SLURM_JOB_GPUS, SLURM_STEP_GPUS, GPU_DEVICE_ORDINAL,
# SLURM_GPUS_ON_NODE) and the command's output to LOG and appends both to ATTEMPTS
# (<log stem>.attempts.log, declared nowhere, so every attempt stays).
# The SLURM status-command check runs at start: check_slurm_status_command (common.smk).

# The training rules' command (the job's spec, work folder, processes, threads).
STAGE_COMMAND = (
    "REWARDSEG_PROGRESS_FD=3 bash workflow/scripts/logged-attempt.sh {log:q}"
    " {params.attempts:q} rewardseg stage --spec {params.spec:q}"
    " --work-dir {params.work_dir} --nproc {params.nproc} --threads {threads}"
)


localrules:
    pretrained_weights,


rule pretrained_weights:
    input:
        config["model"]["config"],
    output:
        paths.pretrained_marker("{study}"),
    log:
        paths.log("{study}", "pretrained_weights"),
    shell:
        "rewardseg fetch-pretrained {input} --touch {output} > {log} 2>&1"


if RELEASED:  # downloaded on the submitting machine; the pretrain job evaluates them

    localrules:
        released_checkpoint,

    rule released_checkpoint:
        output:
            paths.checkpoint(paths.pretrain_dir("{study}"), "{step}"),
        params:
            url=lambda wc: RELEASED[int(wc.step)]["url"],
            sha256=lambda wc: RELEASED[int(wc.step)]["sha256"],
        log:
            paths.log("{study}", "released_iter_{step}"),
        shell:
            "rewardseg download {params.url:q} {output} --sha256 {params.sha256} 2> {log}"


if PRETRAIN_PARTS:  # a pretraining trained here stops at each tuning start point

    rule pretrain_part:
        input:
            data=paths.dataset_meta(DATASET),
            model=config["model"]["config"],
            pretrained=pretrained_input,
            previous=previous_pretrain_part,
            weights=pretrain_class_weight_inputs,
        output:
            paths.pretrain_part("{study}", "{step}"),
        params:
            spec=pretrain_spec_json,
            work_dir=lambda wc: paths.pretrain_dir(wc.study),
            nproc=max(1, RESOURCES[PRETRAIN]["gpus"]),
            attempts=lambda wc: paths.attempts_log(paths.pretrain_log(wc.study, wc.step)),
        log:
            paths.pretrain_log("{study}", "{step}"),
        threads: pretrain_part_threads
        priority: 10  # the tuning runs wait for it
        resources:
            gpu=RESOURCES[PRETRAIN]["gpus"],
            runtime=RESOURCES[PRETRAIN]["runtime"],
            mem_mb=RESOURCES[PRETRAIN]["mem_mb"],
            **SLURM,
        shell:
            f"{STAGE_COMMAND} --stop-at {{wildcards.step}} 3>&2"


rule pretrain:
    input:
        data=paths.dataset_meta(DATASET),
        model=config["model"]["config"],
        pretrained=pretrained_input,
        released=released_inputs,
        previous=last_pretrain_part,
        weights=pretrain_class_weight_inputs,
    output:
        paths.run_record(paths.pretrain_dir("{study}")),
    params:
        spec=pretrain_spec_json,
        work_dir=lambda wc: paths.pretrain_dir(wc.study),
        nproc=max(1, RESOURCES[PRETRAIN]["gpus"]),
        attempts=lambda wc: paths.attempts_log(paths.pretrain_log(wc.study)),
    log:
        paths.pretrain_log("{study}"),
    threads: RESOURCES[PRETRAIN]["cpus"]
    priority: 10
    resources:
        gpu=RESOURCES[PRETRAIN]["gpus"],
        runtime=RESOURCES[PRETRAIN]["runtime"],
        mem_mb=RESOURCES[PRETRAIN]["mem_mb"],
        **SLURM,
    shell:
        f"{STAGE_COMMAND} 3>&2"


rule tune:
    input:
        pretrain=tune_start_input,
        weights=class_weight_inputs,
    output:
        paths.run_record(paths.run_dir("{study}", "{variant}", "{seed}")),
    params:
        spec=tune_spec_json,
        work_dir=lambda wc: paths.run_dir(wc.study, wc.variant, wc.seed),
        nproc=max(1, RESOURCES["tune"]["gpus"]),
        attempts=lambda wc: paths.attempts_log(paths.run_log(wc.study, wc.variant, wc.seed)),
    log:
        paths.run_log("{study}", "{variant}", "{seed}"),
    threads: RESOURCES["tune"]["cpus"]
    resources:
        gpu=RESOURCES["tune"]["gpus"],
        runtime=RESOURCES["tune"]["runtime"],
        mem_mb=RESOURCES["tune"]["mem_mb"],
        **SLURM,
    shell:
        f"{STAGE_COMMAND} 3>&2"
