"""Modalities: each owns how raw data becomes cached features, the attributes stored with
them, what must match across datasets, and what one step of the model input means.

A fourth modality is one module here with a MODALITY object and a line in REGISTRY.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import pandas as pd

from pipeline.modalities import audio, image, signal


class Featurizer(Protocol):
    shape: tuple[int, ...]  # one example's feature shape [rows, steps]
    attrs: dict[str, Any]  # stored as HDF5 attributes and in checkpoints

    def __call__(self, rows: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
        """Features of the good rows of a batch, and a reason ('' = good) per row."""


class Modality(Protocol):
    name: str
    compatible_keys: tuple[str, ...]

    def featurizer(self, spec, root, table: pd.DataFrame, settings: dict[str, Any],
                   threads: int = 1) -> Featurizer: ...

    def step_ms(self, attrs: dict[str, Any]) -> tuple[float, float] | None:
        """(step, span) in ms of one step of the time axis; None where there is none."""


REGISTRY: dict[str, Modality] = {
    "audio": audio.MODALITY,
    "image": image.MODALITY,
    "signal": signal.MODALITY,
}


def get_modality(name: str) -> Modality:
    if name not in REGISTRY:
        raise KeyError(f"unknown modality {name!r}; known: {sorted(REGISTRY)}")
    return REGISTRY[name]
