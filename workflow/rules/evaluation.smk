# Evaluation and summaries: metrics per run, cross-dataset scores, tables and figures.


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


rule evaluate_cross_dataset:
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
    params:
        settings=settings_of,
        device=config["device"],
    script:
        "../scripts/evaluate_model.py"


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


rule tabulate_results:
    input:
        metrics=[t for t in all_targets() if t.endswith("metrics.json")],
    output:
        csv=report(
            "results/summary/accuracy.csv",
            caption="../report/accuracy.rst",
            category="Summary",
            labels={"table": "accuracy (CSV)"},
        ),
        markdown="results/summary/accuracy.md",
        figure=report(
            "results/summary/accuracy_vs_parameters.png",
            caption="../report/accuracy_vs_parameters.rst",
            category="Summary",
            labels={"figure": "accuracy vs parameters"},
        ),
    log:
        "results/logs/tabulate_results/summary.log",
    params:
        order=DATASETS,
    script:
        "../scripts/tabulate_results.py"
