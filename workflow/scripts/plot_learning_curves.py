"""Adapter: rule plot_learning_curves -> pipeline.report.plot_learning_curves."""

from pipeline.logs import log_to
from pipeline.report import plot_learning_curves

with log_to(snakemake.log[0]):
    plot_learning_curves(
        dict(zip(snakemake.params.models, snakemake.input.histories, strict=True)),
        f"Learning curves: {snakemake.wildcards.dataset}",
        snakemake.output.figure,
    )
