"""Adapter: rule train_model -> pipeline.training.train_model."""

from pipeline.logs import log_to
from pipeline.training import train_model

with log_to(snakemake.log[0]):
    train_model(
        snakemake.input.features,
        snakemake.wildcards.model,
        snakemake.params.settings,
        int(snakemake.wildcards.seed),
        snakemake.output.model,
        snakemake.output.history,
        device=snakemake.params.device,
        threads=snakemake.threads,
    )
