"""Adapter: rule split_dataset -> pipeline.splits.split_dataset."""

from pipeline.logs import log_to
from pipeline.splits import split_dataset

with log_to(snakemake.log[0]):
    split_dataset(
        snakemake.params.settings["dataset"],
        snakemake.input.raw,
        snakemake.params.settings,
        snakemake.output.splits,
    )
