"""The small interface every dataset module implements, so the DAG treats them alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Protocol

import pandas as pd

#: Columns every clip table has; datasets may add more (e.g. repetition index).
CLIP_COLUMNS = ["clip", "path", "label", "speaker"]


class DataError(ValueError):
    """Dataset content or settings that cannot give a trustworthy table."""


class Dataset(Protocol):
    name: str
    modality: Literal["audio", "image"]
    acquisition: Literal["download", "synthesize", "embedded"]

    def acquire(self, dest: Path, settings: dict[str, Any], mirror: str | None) -> None:
        """Fill the empty folder `dest` with verified raw data."""

    def list_clips(self, root: Path, settings: dict[str, Any]) -> pd.DataFrame:
        """One row per clip: CLIP_COLUMNS (+ extras); `path` is relative to `root`."""

    def label_names(self, settings: dict[str, Any]) -> list[str]:
        """Class names in the order of integer labels."""

    def assign_splits(self, clips: pd.DataFrame, settings: dict[str, Any]) -> pd.DataFrame:
        """Return `clips` with a `split` column of train/valid/test."""
