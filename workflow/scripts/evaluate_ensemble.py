"""Adapter: rule evaluate_ensemble -> pipeline.ensemble.evaluate_ensemble."""

from pathlib import Path

from pipeline.ensemble import Member, evaluate_ensemble
from pipeline.logs import log_to

with log_to(snakemake.log[0]):
    evaluate_ensemble(
        [Member(**m) for m in snakemake.params.members],
        snakemake.input.predictions,
        snakemake.input.metrics,
        Path(snakemake.output.metrics).parent,
        name=snakemake.wildcards.ensemble,
    )
