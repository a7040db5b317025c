"""Send a stage's logging (and any traceback) to its Snakemake log file."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def log_to(path: str | os.PathLike, level: int = logging.INFO) -> Iterator[logging.Logger]:
    """Log to `path` and stderr; an exception is logged with its traceback, then re-raised."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    handlers = [logging.FileHandler(path, mode="w"), logging.StreamHandler(sys.stderr)]
    root = logging.getLogger()
    for handler in handlers:
        handler.setFormatter(fmt)
        root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
    try:
        yield root
    except BaseException:
        root.exception("stage failed")
        raise
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
