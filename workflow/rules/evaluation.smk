# Evaluation and summaries: metrics per run, cross-dataset scores, tables and figures.


# A model of {dataset} on the test split of its own dataset, written beside the model.
rule evaluate_model:
    input:
        model=f"{RUN}/model.pt",
        features="results/{dataset}/features.h5",
    output:
        metrics=f"{RUN}/metrics.json",
        predictions=f"{RUN}/predictions.csv",
        confusion=f"{RUN}/confusion.csv",
        figure=report(
            f"{RUN}/confusion.png",
            caption="../report/confusion.rst",
            category="Confusion matrices",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "model": "{model}", "seed": "{seed}"},
        ),
    log:
        f"results/logs/evaluate_model/{{dataset}}/{{model}}/seed-{{seed}}.log",
    params:
        settings=settings_of,
        device=config["device"],
    script:
        "../scripts/evaluate_model.py"


# The same job (params, script) on another dataset's test split: only the features read and
# the folder written (the run's cross/{test}/) differ.
use rule evaluate_model as evaluate_cross_dataset with:
    input:
        model=f"{RUN}/model.pt",
        features="results/{test}/features.h5",
    output:
        metrics=f"{RUN}/cross/{{test}}/metrics.json",
        predictions=f"{RUN}/cross/{{test}}/predictions.csv",
        confusion=f"{RUN}/cross/{{test}}/confusion.csv",
        figure=report(
            f"{RUN}/cross/{{test}}/confusion.png",
            caption="../report/cross.rst",
            category="Cross-dataset evaluation",
            subcategory="{dataset} on {test}",
            labels={
                "trained on": "{dataset}",
                "tested on": "{test}",
                "model": "{model}",
                "seed": "{seed}",
            },
        ),
    log:
        f"results/logs/evaluate_cross_dataset/{{dataset}}/{{model}}/seed-{{seed}}/{{test}}.log",


# Several scored models of the same test clips, their class probabilities averaged.
rule evaluate_ensemble:
    input:
        unpack(ensemble_inputs),
    output:
        metrics="results/ensembles/{ensemble}/metrics.json",
        predictions="results/ensembles/{ensemble}/predictions.csv",
        confusion="results/ensembles/{ensemble}/confusion.csv",
        figure=report(
            "results/ensembles/{ensemble}/confusion.png",
            caption="../report/ensemble.rst",
            category="Ensembles",
            labels={"ensemble": "{ensemble}"},
        ),
    log:
        "results/logs/evaluate_ensemble/{ensemble}.log",
    params:
        members=members_of,
    script:
        "../scripts/evaluate_ensemble.py"


rule plot_learning_curves:
    input:
        histories=expand(
            "results/{{dataset}}/{model}/seed-{seed}/history.csv",
            model=MODELS,
            seed=SEEDS[0],
        ),
    output:
        figure=report(
            "results/summary/learning_curves/{dataset}.png",
            caption="../report/learning_curves.rst",
            category="Learning curves",
            labels={"dataset": "{dataset}"},
        ),
    log:
        "results/logs/plot_learning_curves/{dataset}.log",
    params:
        models=MODELS,
    script:
        "../scripts/plot_learning_curves.py"


# Every item of the Summary category has the same one label key, so the report's list of
# them has one column and no empty cells.
rule tabulate_results:
    input:
        metrics=[t for t in all_targets() if t.endswith("metrics.json")],
    output:
        html=report(
            "results/summary/accuracy.html",
            caption="../report/accuracy.rst",
            category="Summary",
            labels={"result": "accuracy table"},
        ),
        csv=report(
            "results/summary/accuracy.csv",
            caption="../report/accuracy_csv.rst",
            category="Summary",
            labels={"result": "accuracy table (CSV, full precision)"},
        ),
        markdown="results/summary/accuracy.md",
        runs=report(
            "results/summary/accuracy_runs.csv",
            caption="../report/accuracy_runs.rst",
            category="Summary",
            labels={"result": "accuracy per run: each fold and seed (CSV)"},
        ),
        settings=report(
            "results/summary/settings.html",
            caption="../report/settings.rst",
            category="Summary",
            labels={"result": "settings per dataset"},
        ),
        figure=report(
            "results/summary/accuracy_vs_parameters.png",
            caption="../report/accuracy_vs_parameters.rst",
            category="Summary",
            labels={"result": "accuracy vs parameters (figure)"},
        ),
    log:
        "results/logs/tabulate_results/summary.log",
    params:
        order=DATASETS,
    script:
        "../scripts/tabulate_results.py"
