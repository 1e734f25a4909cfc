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


rule class_weights:
    input:
        "data/{dataset}/meta.json",
    output:
        json="data/{dataset}/class_weights_s{smoothing}.json",
        npy="data/{dataset}/class_weights_s{smoothing}.npy",
    params:
        labels=lambda wc: f"data/{wc.dataset}/gtFine/train",
        num_classes=lambda wc, input: len(json.load(open(input[0]))["classes"]),
    log:
        "logs/data/{dataset}_class_weights_s{smoothing}.log",
    shell:
        "rewardseg class-weights {params.labels} --num-classes {params.num_classes}"
        " --smoothing {wildcards.smoothing} --out {output.json} 2> {log}"
