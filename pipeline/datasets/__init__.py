"""Dataset registry: a new dataset is one module here plus a config entry."""

from __future__ import annotations

from pipeline.datasets import fsdd, tts_digits
from pipeline.datasets.base import Dataset

REGISTRY: dict[str, Dataset] = {
    "fsdd": fsdd.DATASET,
    "tts_digits": tts_digits.DATASET,
}


def get_dataset(name: str) -> Dataset:
    if name not in REGISTRY:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(REGISTRY)}")
    return REGISTRY[name]
