# Getting data: download (or synthesize), verify, and split it.


rule download_dataset:
    output:
        raw=directory("resources/{source}"),
    log:
        "results/logs/download_dataset/{source}.log",
    wildcard_constraints:
        source="|".join(DOWNLOADED),
    localrule: True
    params:
        # What identifies the data (its checksums); where it comes from (`mirror`) is a
        # machine's value that the script reads from config, so moving or dropping a mirror
        # re-runs nothing.
        settings=lambda w: stage_settings(config, w.source, "acquire"),
    script:
        "../scripts/download_dataset.py"


rule synthesize_dataset:
    output:
        raw=directory("resources/{source}"),
    log:
        "results/logs/synthesize_dataset/{source}.log",
    benchmark:
        "results/benchmarks/synthesize_dataset/{source}.tsv"
    wildcard_constraints:
        source="|".join(SYNTHESIZED),
    threads: 2
    params:
        settings=lambda w: stage_settings(config, w.source, "acquire"),
    script:
        "../scripts/download_dataset.py"


rule split_dataset:
    input:
        unpack(raw_data),
    output:
        splits="results/{dataset}/splits.tsv",
    log:
        "results/logs/split_dataset/{dataset}.log",
    params:
        settings=lambda w: stage_settings(config, w.dataset, "split"),
    script:
        "../scripts/split_dataset.py"
