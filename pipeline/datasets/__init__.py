"""Dataset registry: a new dataset is one module here plus a config entry."""

from __future__ import annotations

from pipeline.datasets import fsdd, mnist, speech_commands, tts_digits
from pipeline.datasets.base import Dataset

REGISTRY: dict[str, Dataset] = {
    "fsdd": fsdd.DATASET,
    "mnist": mnist.DATASET,
    "speech_commands": speech_commands.DATASET,
    "tts_digits": tts_digits.DATASET,
}


def get_dataset(name: str) -> Dataset:
    if name not in REGISTRY:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(REGISTRY)}")
    return REGISTRY[name]


def acquire_dataset(name: str, dest, settings: dict, mirror: str | None = None,
                    workers: int = 1) -> None:
    """Fill `dest` with the dataset's verified raw data; `dest` appears only when complete."""
    from pathlib import Path

    from pipeline.io import atomic_dir

    spec = get_dataset(name)
    with atomic_dir(Path(dest)) as tmp:
        if spec.acquisition == "synthesize":
            spec.acquire(tmp, settings, mirror, workers=workers)
        else:
            spec.acquire(tmp, settings, mirror or None)
