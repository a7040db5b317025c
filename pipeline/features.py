"""The feature cache: every split of a dataset as arrays in one HDF5 file.

Schema (one file per dataset; see README "Feature cache"):
    /{train,valid,test}/features  float32|float16 [N, rows, steps]: log-mels [n_mels, frames],
                                  images [height, width], signals [channels, samples]
    /{split}/labels               int64 [N], index into attrs["label_names"]
    /{split}/clip, speaker, path  utf-8 strings [N]
    attrs: dataset, modality, feature_version, label_names (JSON), norm_mean/norm_std [rows]
           (train split only), and the modality's own attributes (FeatureParams for audio).
           An evaluation-only set (every clip in test; scored with other datasets' models,
           which bring their own normalisation) has evaluation_only = True and no norm_*.
How a modality turns raw data into features lives in pipeline/modalities/.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import torch

from pipeline.datasets import get_dataset
from pipeline.io import Root, as_root, atomic_path, write_table
from pipeline.modalities import get_modality
from pipeline.splits import SPLITS, read_splits

log = logging.getLogger(__name__)

FEATURE_VERSION = 1
BATCH = 256
REJECTED_COLUMNS = ["clip", "path", "split", "reason"]


class BadAudioError(ValueError):
    """Clips that cannot become features; the message names every file and why."""


def _batches(frame: pd.DataFrame, size: int) -> Iterator[pd.DataFrame]:
    for start in range(0, len(frame), size):
        yield frame.iloc[start:start + size]


class _SplitWriter:
    """Writes one split's group batch by batch; keeps running sums for normalisation.

    `reserve` sizes the datasets to the split's row count once (no resize per batch);
    labels and the string columns are written in one call each by `finish`, which also
    trims the datasets if rows were rejected."""

    def __init__(self, h5: h5py.File, split: str, shape: tuple[int, int], dtype: str) -> None:
        g = h5.create_group(split)
        chunk_rows = max(1, min(BATCH, (1 << 20) // (4 * shape[0] * shape[1])))
        self.features = g.create_dataset("features", (0, *shape), maxshape=(None, *shape),
                                         dtype=dtype, chunks=(chunk_rows, *shape))
        self.labels = g.create_dataset("labels", (0,), maxshape=(None,), dtype="int64")
        strings = h5py.string_dtype()
        self.text = {k: g.create_dataset(k, (0,), maxshape=(None,), dtype=strings)
                     for k in ("clip", "speaker", "path")}
        self.sum = np.zeros(shape[0], dtype=np.float64)
        self.sumsq = np.zeros(shape[0], dtype=np.float64)
        self.count = 0
        self.rows = 0
        self._labels: list[np.ndarray] = []
        self._text: dict[str, list[str]] = {k: [] for k in self.text}

    def _datasets(self) -> tuple[h5py.Dataset, ...]:
        return (self.features, self.labels, *self.text.values())

    def reserve(self, rows: int) -> None:
        for ds in self._datasets():
            ds.resize(max(rows, ds.shape[0]), axis=0)

    def append(self, feats: np.ndarray, rows: pd.DataFrame, labels: np.ndarray) -> None:
        n0, n = self.rows, len(feats)
        if n0 + n > self.features.shape[0]:
            self.reserve(n0 + n)
        self.features[n0:n0 + n] = feats
        self.rows += n
        self._labels.append(np.asarray(labels, dtype=np.int64))
        for key, values in self._text.items():
            values += rows[key].astype(str).tolist()
        # float64 per batch, reduced over clips and frames only (as over the whole split)
        as64 = torch.from_numpy(feats).double()
        self.sum += as64.sum(dim=(0, 2)).numpy()
        self.sumsq += as64.square_().sum(dim=(0, 2)).numpy()
        self.count += feats.shape[0] * feats.shape[2]

    def finish(self) -> None:
        for ds in self._datasets():
            if ds.shape[0] != self.rows:
                ds.resize(self.rows, axis=0)
        if self.rows:
            self.labels[:] = np.concatenate(self._labels)
            for key, ds in self.text.items():
                ds[:] = self._text[key]
        self._labels, self._text = [], {k: [] for k in self.text}


def _label_index(table: pd.DataFrame, label_names: list[str], name: str) -> dict[str, int]:
    index = {label: i for i, label in enumerate(label_names)}
    unknown = set(table["label"]) - set(index)
    if unknown:
        raise ValueError(f"{name}: labels {sorted(unknown)} are not in {label_names}")
    return index


def _featurized(rows_all: pd.DataFrame, featurize, workers: int = 2
                ) -> Iterator[tuple[pd.DataFrame, np.ndarray, list[str]]]:
    """(rows, features, reasons) batch by batch, in order. `workers` batches are featurized
    at once and one more waits its turn: while one batch is read (Python, holding the GIL)
    another's features are computed (torch, without it), and the caller writes a third."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        jobs: deque = deque()
        for rows in _batches(rows_all, BATCH):
            jobs.append((rows, pool.submit(featurize, rows)))
            if len(jobs) > workers:
                rows, job = jobs.popleft()
                yield rows, *job.result()
        while jobs:
            rows, job = jobs.popleft()
            yield rows, *job.result()


def _write_split(writer: _SplitWriter, rows_all: pd.DataFrame, featurize, label_index,
                 dtype: str) -> list[dict[str, str]]:
    """Featurize one split batch by batch; returns the rejected rows with their reasons."""
    writer.reserve(len(rows_all))
    rejected = []
    workers = 2 if torch.get_num_threads() > 1 else 1  # compute_features set it to `threads`
    for rows, feats, reasons in _featurized(rows_all, featurize, workers):
        if any(reasons):
            rejected += [{"clip": c, "path": p, "split": s, "reason": r} for c, p, s, r in zip(
                rows["clip"], rows["path"], rows["split"], reasons, strict=True) if r]
            rows = rows[[not r for r in reasons]]
        if len(rows):
            writer.append(np.ascontiguousarray(feats, dtype=dtype), rows,
                          rows["label"].map(label_index).to_numpy())
    writer.finish()
    return rejected


def _check_rejected(name: str, rejected: list[dict[str, str]], on_bad: str) -> None:
    if rejected and on_bad == "fail":
        listing = "\n".join(f"  {r['path']}: {r['reason']}" for r in rejected)
        raise BadAudioError(
            f"{name}: {len(rejected)} clip(s) cannot become features:\n{listing}\n"
            "Fix or remove them, or leave them out with --config on_bad_audio=skip (they are "
            "then listed in rejected.tsv).")


def _norm_stats(train: _SplitWriter, name: str) -> dict[str, Any]:
    """Per-row mean and std over the train split; a constant row (MNIST's blank border)
    must not blow up elsewhere, so every std is floored at 1 % of the largest one."""
    if train.count == 0:
        raise ValueError(f"{name}: the train split has no usable clips")
    mean = train.sum / train.count
    std = np.sqrt(np.maximum(train.sumsq / train.count - mean**2, 0.0))
    std = np.maximum(std, 0.01 * std.max() + 1e-8)
    return {"norm_mean": mean.astype(np.float32), "norm_std": std.astype(np.float32),
            "norm_axis": "per row (mel band, image row or channel), over train clips and "
                         "steps; std floored at 1% of the largest"}


def compute_features(splits_tsv: Path, root: Root, settings: dict[str, Any], out: Path,
                     rejected_tsv: Path, threads: int = 1) -> dict[str, int]:
    """Turn every clip of `splits_tsv` into features in `out` (HDF5, written atomically).
    `root` is the raw folder, or {source: folder} for a composite dataset."""
    name, spec = settings["name"], get_dataset(settings["dataset"])
    torch.set_num_threads(max(1, threads))
    started = time.perf_counter()
    table = read_splits(Path(splits_tsv))
    label_names = spec.label_names(settings)
    label_index = _label_index(table, label_names, name)
    featurize = get_modality(spec.modality).featurizer(spec, as_root(root), table, settings,
                                                       threads)
    dtype = settings["features"].get("dtype", "float32")
    rejected: list[dict[str, str]] = []
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as h5:
        writers = {split: _SplitWriter(h5, split, featurize.shape, dtype) for split in SPLITS}
        for split, writer in writers.items():
            rejected += _write_split(writer, table[table["split"] == split], featurize,
                                     label_index, dtype)
            log.info("%s: %s split, %d clips", name, split, writer.features.shape[0])
        _check_rejected(name, rejected, settings["on_bad_audio"])
        norm = ({"evaluation_only": True} if spec.evaluation_only(settings)
                else _norm_stats(writers["train"], name))
        h5.attrs.update({**featurize.attrs, **norm,
                         "dataset": name, "modality": spec.modality,
                         "feature_version": FEATURE_VERSION,
                         "label_names": json.dumps(label_names)})
        counts = {split: w.features.shape[0] for split, w in writers.items()}
    write_table(rejected_tsv, pd.DataFrame(rejected, columns=REJECTED_COLUMNS))
    elapsed = time.perf_counter() - started
    log.info("%s: %d clips in %.1f s (%.0f clips/s), %d rejected", name, sum(counts.values()),
             elapsed, sum(counts.values()) / max(elapsed, 1e-9), len(rejected))
    return counts


@dataclass
class FeatureSplit:
    """One split held in memory: the training data is small enough for that here."""

    features: torch.Tensor  # float32 [N, rows, steps]
    labels: torch.Tensor  # int64 [N]
    clips: list[str]
    speakers: list[str]


def read_attrs(path: Path) -> dict[str, Any]:
    with h5py.File(path, "r") as h5:
        attrs = dict(h5.attrs)
    attrs["label_names"] = json.loads(attrs["label_names"])
    return attrs


def load_split(path: Path, split: str) -> FeatureSplit:
    with h5py.File(path, "r") as h5:
        g = h5[split]
        return FeatureSplit(
            features=torch.from_numpy(g["features"][:].astype(np.float32)),
            labels=torch.from_numpy(g["labels"][:]),
            clips=[s.decode() for s in g["clip"][:]],
            speakers=[s.decode() for s in g["speaker"][:]],
        )


def describing_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """The attributes that say how features were made (for checkpoints): all but the
    normalisation arrays and the label list, which checkpoints keep in their own fields."""
    skip = {"norm_mean", "norm_std", "norm_axis", "label_names", "dataset"}
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in attrs.items()
            if k not in skip}
