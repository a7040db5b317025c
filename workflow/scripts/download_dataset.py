"""Adapter: rules download_dataset / synthesize_dataset -> pipeline.datasets.acquire_dataset."""

from pipeline.datasets import acquire_dataset
from pipeline.logs import log_to

with log_to(snakemake.log[0]):
    acquire_dataset(
        snakemake.wildcards.source,
        snakemake.output.raw,
        snakemake.params.settings,
        mirror=snakemake.params.get("mirror") or None,
        workers=snakemake.threads,
    )
