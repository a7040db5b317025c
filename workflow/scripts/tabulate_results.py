"""Adapter: rule tabulate_results -> pipeline.report.tabulate_results."""

from pipeline.logs import log_to
from pipeline.report import tabulate_results

with log_to(snakemake.log[0]):
    tabulate_results(
        snakemake.input.metrics,
        snakemake.output.csv,
        snakemake.output.markdown,
        snakemake.output.figure,
        order=snakemake.params.order,
        html_out=snakemake.output.html,
        settings_out=snakemake.output.settings,
        runs_out=snakemake.output.runs,
    )
