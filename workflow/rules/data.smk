# One data rule per dataset source; each writes data/<name>/meta.json last (the
# completion marker) and is defined only when the study uses that source.
# Credentials (Cityscapes) are read from the environment by `rewardseg prepare` and never
# appear in a command line, log or config.

if SOURCE == "synthetic":

    localrules:
        synthetic_data,

    rule synthetic_data:
        output:
            meta="data/{dataset}/meta.json",
        params:
            root=lambda wc: f"data/{wc.dataset}",
            num_train=config["dataset"].get("num_train", 200),
            num_val=config["dataset"].get("num_val", 32),
            height=config["dataset"].get("height", 96),
            width=config["dataset"].get("width", 192),
            seed=config["dataset"].get("seed", 0),
        log:
            "logs/data/{dataset}.log",
        resources:
            runtime=30,
        shell:
            "rewardseg data {params.root} --num-train {params.num_train} --num-val {params.num_val}"
            " --height {params.height} --width {params.width} --seed {params.seed} --overwrite"
            " 2> {log}"

elif SOURCE == "cityscapes":

    localrules:
        cityscapes_data,

    rule cityscapes_data:
        output:
            meta="data/{dataset}/meta.json",
        params:
            root=lambda wc: f"data/{wc.dataset}",
            options=prepare_options,
        log:
            "logs/data/{dataset}.log",
        threads: 4
        shell:
            "rewardseg prepare cityscapes {params.root} {params.options}"
            " --workers {threads} 2> {log}"

elif SOURCE == "easyportrait":

    localrules:
        easyportrait_data,

    rule easyportrait_data:
        output:
            meta="data/{dataset}/meta.json",
        params:
            root=lambda wc: f"data/{wc.dataset}",
            options=prepare_options,
        log:
            "logs/data/{dataset}.log",
        shell:
            "rewardseg prepare easyportrait {params.root} {params.options} 2> {log}"

elif SOURCE == "mapillary":

    localrules:
        mapillary_data,

    rule mapillary_data:
        output:
            meta="data/{dataset}/meta.json",
        params:
            root=lambda wc: f"data/{wc.dataset}",
            options=prepare_options,
        log:
            "logs/data/{dataset}.log",
        shell:
            "rewardseg prepare mapillary {params.root} {params.options} 2> {log}"


rule class_weights:
    input:
        "data/{dataset}/meta.json",
    output:
        json="data/{dataset}/class_weights_s{smoothing}.json",
        npy="data/{dataset}/class_weights_s{smoothing}.npy",
    params:
        labels=lambda wc, input: os.path.join(f"data/{wc.dataset}", dataset_meta(input[0])["train_labels"]),
        suffix=lambda wc, input: dataset_meta(input[0])["label_suffix"],
        num_classes=lambda wc, input: len(dataset_meta(input[0])["classes"]),
    log:
        "logs/data/{dataset}_class_weights_s{smoothing}.log",
    shell:
        "rewardseg class-weights {params.labels} --num-classes {params.num_classes}"
        " --suffix {params.suffix:q} --smoothing {wildcards.smoothing} --out {output.json} 2> {log}"
