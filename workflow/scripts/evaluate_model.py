"""Adapter: rules evaluate_model / evaluate_cross_dataset -> pipeline.evaluation."""

from pathlib import Path

from pipeline.evaluation import evaluate_model
from pipeline.logs import log_to

with log_to(snakemake.log[0]):
    evaluate_model(
        snakemake.input.model,
        snakemake.input.features,
        Path(snakemake.output.metrics).parent,
        config=snakemake.params.settings,
        device=snakemake.params.device,
        threads=snakemake.threads,
    )
