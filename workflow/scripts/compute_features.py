"""Adapter: rule compute_features -> pipeline.features.compute_features."""

from pipeline.config import raw_root
from pipeline.features import compute_features
from pipeline.logs import log_to

with log_to(snakemake.log[0]):
    compute_features(
        snakemake.input.splits,
        raw_root(snakemake.input),
        snakemake.params.settings,
        snakemake.output.features,
        snakemake.output.rejected,
        threads=snakemake.threads,
    )
