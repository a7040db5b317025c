"""Signals: multichannel time series (accelerometer, gyroscope) cut into windows
[channels, samples]; rows are channels, steps are samples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.modalities.image import ArrayFeaturizer


def cut_windows(signal: np.ndarray, starts: np.ndarray, window: int) -> np.ndarray:
    """Windows of a [channels, samples] recording at `starts`: [len(starts), channels,
    window] (one fancy index, no Python loop)."""
    return signal[:, np.asarray(starts)[:, None] + np.arange(window)].transpose(1, 0, 2)


class Signal:
    name = "signal"
    compatible_keys = ("sample_rate", "window", "channels")

    def featurizer(self, spec, root: Path, table: pd.DataFrame, settings: dict[str, Any],
                   threads: int = 1) -> ArrayFeaturizer:
        windows = spec.load_signals(Path(root), table, settings)  # float32 [N, C, T]
        attrs = {k: json.dumps(list(v)) if isinstance(v, list | tuple) else v
                 for k, v in spec.signal_attrs(settings).items()}  # lists as JSON, as labels
        return ArrayFeaturizer(np.asarray(windows, dtype=np.float32), attrs)

    def step_ms(self, attrs: dict[str, Any]) -> tuple[float, float] | None:
        period = 1000.0 / float(attrs["sample_rate"])
        return period, period


MODALITY = Signal()
