# Training: one job per dataset, model family and seed; a GPU-resource rule.


rule train_model:
    input:
        unpack(training_inputs),
    output:
        model=f"{RUN}/model.pt",
        history=f"{RUN}/history.csv",
    log:
        f"results/logs/train_model/{{dataset}}/{{model}}/seed-{{seed}}.log",
    benchmark:
        f"results/benchmarks/train_model/{{dataset}}/{{model}}/seed-{{seed}}.tsv"
    threads: 2
    resources:
        gpu=1,
    params:
        settings=settings_of,
        device=config["device"],
    script:
        "../scripts/train_model.py"
