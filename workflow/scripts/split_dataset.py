"""Adapter: rule split_dataset -> pipeline.datasets.split_dataset."""

from pipeline.config import raw_root
from pipeline.datasets import split_dataset
from pipeline.logs import log_to

with log_to(snakemake.log[0]):
    split_dataset(raw_root(snakemake.input), snakemake.params.settings, snakemake.output.splits)
