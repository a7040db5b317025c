"""Dataset registry and the data stages: acquire (download or synthesize) and split.

A new dataset is one module here (see base.Dataset) plus a registry line and a schema block.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.datasets import (
    fsdd,
    hapt,
    mnist,
    speech_commands,
    spoken_digits,
    tts_digits,
    wisdm,
)
from pipeline.datasets.base import Dataset
from pipeline.io import Root, as_root, atomic_dir, write_table
from pipeline.splits import SPLITS, check_complete, check_no_leak

REGISTRY: dict[str, Dataset] = {
    "fsdd": fsdd.DATASET,
    "hapt": hapt.DATASET,
    "mnist": mnist.DATASET,
    "speech_commands": speech_commands.DATASET,
    "spoken_digits": spoken_digits.DATASET,
    "tts_digits": tts_digits.DATASET,
    "wisdm": wisdm.DATASET,
}


def get_dataset(name: str) -> Dataset:
    if name not in REGISTRY:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(REGISTRY)}")
    return REGISTRY[name]


def acquire_dataset(dest: str | Path, settings: dict[str, Any], mirror: str | None = None,
                    workers: int = 1) -> None:
    """Fill `dest` with the dataset's verified raw data; `dest` appears only when complete."""
    spec = get_dataset(settings["dataset"])
    with atomic_dir(Path(dest)) as tmp:
        spec.acquire(tmp, settings, mirror or None, workers=workers)


def split_dataset(root: str | Path | Root, settings: dict[str, Any], out: str | Path
                  ) -> pd.DataFrame:
    """List the dataset's clips, assign splits, check them, and write ``splits.tsv``.
    `root` is the raw folder, or {source: folder} for a composite dataset."""
    spec = get_dataset(settings["dataset"])
    clips = spec.list_clips(as_root(root), settings)
    table = spec.assign_splits(clips, settings)
    check_complete(table, spec.evaluation_only(settings))
    if spec.speakers_held_out(settings):
        check_no_leak(table, "speaker")
    order = {name: i for i, name in enumerate(SPLITS)}
    table = table.assign(_o=table["split"].map(order)).sort_values(["_o", "clip"], kind="stable")
    table = table.drop(columns="_o").reset_index(drop=True)
    write_table(out, table)
    return table
