# Getting data: download (or synthesize), verify, and split it.


rule download_dataset:
    output:
        raw=directory("resources/{source}"),
    params:
        settings=lambda w: stage_settings(config, w.source, "acquire"),
        mirror=config["mirror"],
    log:
        "results/logs/download_dataset/{source}.log",
    wildcard_constraints:
        source="|".join(DOWNLOADED),
    localrule: True
    script:
        "../scripts/download_dataset.py"


rule synthesize_dataset:
    output:
        raw=directory("resources/{source}"),
    params:
        settings=lambda w: stage_settings(config, w.source, "acquire"),
    log:
        "results/logs/synthesize_dataset/{source}.log",
    wildcard_constraints:
        source="|".join(SYNTHESIZED),
    threads: 2
    benchmark:
        "results/benchmarks/synthesize_dataset/{source}.tsv"
    script:
        "../scripts/download_dataset.py"


rule split_dataset:
    input:
        raw=raw_data,
    output:
        splits="results/{dataset}/splits.tsv",
    params:
        settings=lambda w: stage_settings(config, w.dataset, "split"),
    log:
        "results/logs/split_dataset/{dataset}.log",
    script:
        "../scripts/split_dataset.py"
