# Feature cache: log-mel spectrograms (or images) of every split in one HDF5 file.


rule compute_features:
    input:
        unpack(raw_data),
        splits="results/{dataset}/splits.tsv",
    output:
        features="results/{dataset}/features.h5",
        rejected="results/{dataset}/rejected.tsv",
    log:
        "results/logs/compute_features/{dataset}.log",
    benchmark:
        "results/benchmarks/compute_features/{dataset}.tsv"
    threads: 2
    params:
        settings=lambda w: stage_settings(config, w.dataset, "features"),
    script:
        "../scripts/compute_features.py"
