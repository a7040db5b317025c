"""Adapter: rule compute_features -> pipeline.features.compute_features."""

from pipeline.features import compute_features
from pipeline.logs import log_to

with log_to(snakemake.log[0]):
    compute_features(
        snakemake.input.splits,
        snakemake.input.raw,
        snakemake.params.settings,
        snakemake.output.features,
        snakemake.output.rejected,
        threads=snakemake.threads,
    )
