# The dataset: one rule for every source. `rewardseg prepare` takes the study's dataset
# block as JSON (rewardseg.data dispatches on its source: one module per source) and
# writes data/<name>/meta.json last, the completion marker. Credentials (Cityscapes) are
# read from the environment by the command and never appear in a command line, log or
# config. Both rules run on the submitting machine (downloads need the internet).
# dataset_json, dataset_meta: common.smk.


localrules:
    dataset,
    class_weights,


rule dataset:
    output:
        paths.dataset_meta("{dataset}"),
    params:
        source=config["dataset"]["source"],
        root=lambda wc: paths.data_root(wc.dataset),
        block=dataset_json,
    log:
        paths.dataset_log("{dataset}"),
    threads: 4  # label conversion processes (Cityscapes' polygons); others use fewer
    shell:
        "rewardseg prepare {params.source} {params.root}"
        " --dataset {params.block:q} --workers {threads} 2> {log}"


rule class_weights:
    input:
        paths.dataset_meta("{dataset}"),
    output:
        json=paths.class_weights(paths.data_root("{dataset}"), "{smoothing}"),
        npy=paths.class_weights(paths.data_root("{dataset}"), "{smoothing}", ext="npy"),
    params:
        labels=lambda wc, input: os.path.join(paths.data_root(wc.dataset),
                                              dataset_meta(input[0])["train_labels"]),
        suffix=lambda wc, input: dataset_meta(input[0])["label_suffix"],
        num_classes=lambda wc, input: len(dataset_meta(input[0])["classes"]),
    log:
        paths.class_weights_log("{dataset}", "{smoothing}"),
    shell:
        "rewardseg class-weights {params.labels} --num-classes {params.num_classes}"
        " --suffix {params.suffix:q} --smoothing {wildcards.smoothing} --out {output.json} 2> {log}"
