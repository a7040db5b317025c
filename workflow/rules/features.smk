# Feature cache: log-mel spectrograms (or images) of every split in one HDF5 file.


rule compute_features:
    input:
        splits="results/{dataset}/splits.tsv",
        raw=raw_data,
    output:
        features="results/{dataset}/features.h5",
        rejected="results/{dataset}/rejected.tsv",
    params:
        settings=lambda w: stage_settings(config, w.dataset, "features"),
    log:
        "results/logs/compute_features/{dataset}.log",
    threads: 2
    benchmark:
        "results/benchmarks/compute_features/{dataset}.tsv"
    script:
        "../scripts/compute_features.py"
