"""Adapter: rule train_model -> pipeline.training.train_model, on a GPU of its own.

The log is appended to: a job resumed after an interruption continues its log."""

from pipeline.devices import gpu_slot
from pipeline.logs import log_to
from pipeline.training import train_model

with log_to(snakemake.log[0], append=True), gpu_slot(snakemake.params.device) as slot:
    train_model(
        snakemake.input.features,
        snakemake.wildcards.model,
        snakemake.params.settings,
        int(snakemake.wildcards.seed),
        snakemake.output.model,
        snakemake.output.history,
        device=slot.device,
        threads=snakemake.threads,
        noise_features=snakemake.input.get("noise"),
    )
