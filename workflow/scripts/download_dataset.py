"""Adapter: rules download_dataset / synthesize_dataset -> pipeline.datasets.acquire_dataset.

`mirror` comes from config, not params: where data is fetched from must not make Snakemake
re-run a job whose data is verified by its checksums (which are params).

A failed verification (DownloadError, DataError) is a verdict on the data, not a bug: its
message is written once, without a traceback, to the job log and the script exits 1. The log
is the one place it is reported: Snakemake prints a failed job's log (`show-failed-logs` in
the profiles), so it appears once on the console as well. Any other exception keeps its
traceback (pipeline.logs.log_to).
"""

import sys
import time

from pipeline.datasets import acquire_dataset
from pipeline.datasets.base import DataError
from pipeline.download import DownloadError
from pipeline.logs import log_to

failure = None
with log_to(snakemake.log[0]):
    try:
        acquire_dataset(
            snakemake.output.raw,
            snakemake.params.settings,
            mirror=snakemake.config.get("mirror") or None,
            workers=snakemake.threads,
        )
    except (DownloadError, DataError) as err:
        failure = err
if failure is not None:
    with open(snakemake.log[0], "a") as log:
        log.write(f"{time.strftime('%H:%M:%S')} ERROR {type(failure).__name__}: {failure}\n")
    sys.exit(1)
