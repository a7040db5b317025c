# Helpers shared by the rules: names of datasets, their settings, and the final targets.

from pipeline.config import (
    cross_pairs,
    dataset_settings,
    ensemble_members,
    ensemble_runs,
    raw_inputs,
    raw_sources,
    run_names,
    stage_settings,
)

DATASETS = run_names(config)  # a speaker_folds variant runs once per fold: name/fold-k
# (evaluation-only sets, e.g. sc_digits_sample, train nothing: CROSS pulls in their features)
MODELS = config["models"]
SEEDS = config["seeds"]
CROSS = cross_pairs(config)
ENSEMBLES = ensemble_runs(config)  # name, or name/fold-k when the members run in folds
DOWNLOADED = raw_sources(config, "download")
SYNTHESIZED = raw_sources(config, "synthesize")
RUN = "results/{dataset}/{model}/seed-{seed}"


wildcard_constraints:
    dataset="[a-z][a-z0-9_]*(/fold-[0-9]+)?",
    ensemble="[a-z][a-z0-9_]*(/fold-[0-9]+)?",
    model="|".join(MODELS),
    seed=r"\d+",


def settings_of(wildcards):
    return dataset_settings(config, wildcards.dataset)


def training_inputs(wildcards):
    # the features, and those of training.noise.source when the noise comes from elsewhere
    inputs = {"features": f"results/{wildcards.dataset}/features.h5"}
    source = settings_of(wildcards)["training"]["noise"]["source"]
    if source:
        inputs["noise"] = f"results/{source}/features.h5"
    return inputs


def raw_data(wildcards):
    # {"raw": resources/<folder>}, or a composite's {"raw_<source>": ...} (use with unpack)
    return raw_inputs(config, wildcards.dataset)


def members_of(wildcards):
    return ensemble_members(config, wildcards.ensemble)


def scored_folder(member):
    # where evaluate_model (own test split) or evaluate_cross_dataset (test) wrote its files
    run = RUN.format(**member)
    return run if member["test"] is None else f"{run}/cross/{member['test']}"


def ensemble_inputs(wildcards):
    # every member's predictions and metrics, in the order of ensemble_members
    folders = [scored_folder(m) for m in members_of(wildcards)]
    return {
        "predictions": [f"{f}/predictions.csv" for f in folders],
        "metrics": [f"{f}/metrics.json" for f in folders],
    }


def all_targets():
    runs = expand(RUN, dataset=DATASETS, model=MODELS, seed=SEEDS)
    cross = [
        f"results/{train}/{model}/seed-{seed}/cross/{test}/metrics.json"
        for train, test in CROSS
        for model in MODELS
        for seed in SEEDS
    ]
    return (
        [f"{run}/metrics.json" for run in runs]
        + cross
        + expand("results/ensembles/{ensemble}/metrics.json", ensemble=ENSEMBLES)
        + expand("results/summary/learning_curves/{dataset}.png", dataset=DATASETS)
        + [
            "results/summary/accuracy.csv",
            "results/summary/accuracy.md",
            "results/summary/accuracy_vs_parameters.png",
        ]
    )
