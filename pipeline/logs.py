"""Send a stage's logging (and any traceback) to its Snakemake log file."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path


class JobStopped(Exception):
    """A job that stopped on request (a signal) after saving what it had; not a failure to
    explain with a traceback. `exit_code` follows the shell's 128 + signal number."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@contextlib.contextmanager
def log_to(path: str | os.PathLike, level: int = logging.INFO,
           append: bool = False) -> Iterator[logging.Logger]:
    """Log to `path` and stderr; an exception is logged with its traceback to `path` and the
    job exits 1.
    A stop request or Ctrl-C ends the job with one line instead. `append` continues the
    file (a resumed job's log goes on where the interrupted one stopped)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    handlers = [logging.FileHandler(path, mode="a" if append else "w"),
                logging.StreamHandler(sys.stderr)]
    root = logging.getLogger()
    for handler in handlers:
        handler.setFormatter(fmt)
        root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
    try:
        yield root
    except JobStopped as stop:
        raise SystemExit(stop.exit_code) from None  # its one line is already logged
    except KeyboardInterrupt:
        root.warning("interrupted (Ctrl-C); nothing of this job was kept")
        raise SystemExit(130) from None
    except Exception:
        # The traceback goes to the job's log only, and the job exits 1: Snakemake prints a
        # failed job's log (`show-failed-logs` in the profiles), so it is shown once, not
        # three times (stderr handler, Python's own print, the log).
        handlers[1].setLevel(logging.CRITICAL + 1)
        root.exception("stage failed")
        raise SystemExit(1) from None
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
