"""The interface every dataset module implements, so the DAG treats them alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd

from pipeline.errors import DataError

#: Columns every clip table has; datasets may add more (e.g. repetition index).
CLIP_COLUMNS = ["clip", "path", "label", "speaker"]

__all__ = ["CLIP_COLUMNS", "DataError", "Dataset", "ImageDataset", "SignalDataset"]


class Dataset(Protocol):
    """Settings arrive complete: the dataset's schema block with its defaults filled in,
    plus `dataset`, `name` (the variant), `features`, `training`, `model_params`."""

    name: str
    modality: Literal["audio", "image", "signal"]  # a key of pipeline.modalities.REGISTRY
    # rule download_dataset / synthesize_dataset; "composite": nothing of its own to acquire,
    # it reads the raw folders of its sources (settings `sources`; see spoken_digits.py)
    acquisition: Literal["download", "synthesize", "composite"]
    acquire_keys: tuple[str, ...]  # settings that change the raw data (re-acquire on change)

    def acquire(self, dest: Path, settings: dict[str, Any], mirror: str | None,
                workers: int = 1) -> None:
        """Fill the empty folder `dest` with verified raw data."""

    def list_clips(self, root: Path, settings: dict[str, Any]) -> pd.DataFrame:
        """One row per clip: CLIP_COLUMNS (+ extras); `path` is relative to `root`. (A
        composite gets {source: folder} as `root`, and paths `{source}/...`: see
        pipeline.io.clip_file.)"""

    def label_names(self, settings: dict[str, Any]) -> list[str]:
        """Class names in the order of integer labels."""

    def assign_splits(self, clips: pd.DataFrame, settings: dict[str, Any]) -> pd.DataFrame:
        """Return `clips` with a `split` column of train/valid/test."""

    def speakers_held_out(self, settings: dict[str, Any]) -> bool:
        """Whether these settings promise that no speaker is in two splits (then checked)."""

    def evaluation_only(self, settings: dict[str, Any]) -> bool:
        """Whether these settings put every clip in the test split: a set that only scores
        other datasets' models (`cross_evaluations`), is never trained on, and whose
        feature cache has no train statistics (then checked)."""


class ImageDataset(Dataset, Protocol):
    def load_images(self, root: Path, table: pd.DataFrame, settings: dict[str, Any]
                    ) -> np.ndarray:
        """uint8 [len(table), height, width] in the row order of `table`."""


class SignalDataset(Dataset, Protocol):
    def signal_attrs(self, settings: dict[str, Any]) -> dict[str, Any]:
        """sample_rate, window, step, channels (names), ... stored with the features."""

    def load_signals(self, root: Path, table: pd.DataFrame, settings: dict[str, Any]
                     ) -> np.ndarray:
        """float32 [len(table), channels, window] in the row order of `table`."""
