"""Audio -> log-mel spectrograms (torchaudio, batched) and images -> arrays, cached in HDF5.

Schema (one file per dataset; see README "Feature cache"):
    /{train,valid,test}/features  float32|float16 [N, n_mels, frames] (images: [N, H, W])
    /{split}/labels               int64 [N], index into attrs["label_names"]
    /{split}/clip, speaker, path  utf-8 strings [N]
    attrs: modality, feature_version, label_names (JSON), norm_mean/norm_std [n_mels]
           (train split only), and every parameter of FeatureParams.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import soundfile as sf
import torch
import torchaudio

from pipeline.io import atomic_path, write_table
from pipeline.splits import SPLITS, read_splits

log = logging.getLogger(__name__)

FEATURE_VERSION = 1
BATCH = 256


class BadAudioError(ValueError):
    """Clips that cannot become features; the message names every file and why."""


@dataclass(frozen=True)
class FeatureParams:
    """Everything that determines a log-mel spectrogram; stored with the features and models."""

    sample_rate: int = 8000
    clip_seconds: float = 1.0
    window_ms: float = 25.0
    hop_ms: float = 10.0
    n_mels: int = 40
    n_fft: int | None = None  # None: the next power of two above the window
    f_min: float = 0.0
    f_max: float | None = None  # None: Nyquist
    log_offset: float = 1e-6
    dtype: str = "float32"

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FeatureParams:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    @property
    def win_length(self) -> int:
        return int(round(self.sample_rate * self.window_ms / 1000))

    @property
    def hop_length(self) -> int:
        return int(round(self.sample_rate * self.hop_ms / 1000))

    @property
    def fft_size(self) -> int:
        return self.n_fft or 2 ** math.ceil(math.log2(self.win_length))

    @property
    def n_samples(self) -> int:
        return int(round(self.sample_rate * self.clip_seconds))

    @property
    def n_frames(self) -> int:
        # torchaudio frames span n_fft samples when not centred (the window is zero-padded)
        return (self.n_samples - self.fft_size) // self.hop_length + 1

    def as_attrs(self) -> dict[str, Any]:
        out = {k: ("none" if v is None else v) for k, v in asdict(self).items()}
        out.update(win_length=self.win_length, hop_length=self.hop_length, n_fft=self.fft_size,
                   n_samples=self.n_samples, n_frames=self.n_frames,
                   f_max=self.f_max or self.sample_rate / 2)
        return out


class LogMel(torch.nn.Module):
    """log10(mel power + offset), frames without centring, as the lecture's MATLAB example."""

    def __init__(self, params: FeatureParams) -> None:
        super().__init__()
        self.params = params
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=params.sample_rate, n_fft=params.fft_size, win_length=params.win_length,
            hop_length=params.hop_length, f_min=params.f_min, f_max=params.f_max,
            n_mels=params.n_mels, center=False, power=2.0,
        )

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        return torch.log10(self.mel(waveforms) + self.params.log_offset)


def fit_length(wave: np.ndarray, n_samples: int) -> np.ndarray:
    """Centre a clip in a fixed window: zero-pad both sides, or crop the middle."""
    if len(wave) >= n_samples:
        start = (len(wave) - n_samples) // 2
        return wave[start:start + n_samples]
    left = (n_samples - len(wave)) // 2
    return np.pad(wave, (left, n_samples - len(wave) - left))


def read_clip(path: Path, sample_rate: int) -> tuple[np.ndarray | None, str]:
    """Read one file as mono float32 at `sample_rate`; on failure return (None, reason)."""
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
    except Exception as err:  # soundfile raises LibsndfileError, RuntimeError, OSError...
        return None, f"unreadable: {err}"
    wave = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if wave.size == 0:
        return None, "empty: no samples"
    if not np.isfinite(wave).all():
        return None, "contains NaN or infinite samples"
    if not np.any(wave):
        return None, "silent: every sample is zero"
    if rate != sample_rate:
        wave = torchaudio.functional.resample(torch.from_numpy(wave), rate, sample_rate).numpy()
    return wave, ""


def load_waveforms(paths: list[Path], params: FeatureParams, threads: int = 1
                   ) -> tuple[np.ndarray, list[str]]:
    """Read clips in parallel into a [B, n_samples] array; reasons are '' for good clips."""
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        results = list(pool.map(lambda p: read_clip(p, params.sample_rate), paths))
    batch = np.zeros((len(paths), params.n_samples), dtype=np.float32)
    reasons = []
    for i, (wave, reason) in enumerate(results):
        reasons.append(reason)
        if wave is not None:
            batch[i] = fit_length(wave, params.n_samples)
    return batch, reasons


def _batches(frame: pd.DataFrame, size: int) -> Iterator[pd.DataFrame]:
    for start in range(0, len(frame), size):
        yield frame.iloc[start:start + size]


class _SplitWriter:
    """Appends batches to one split's group; keeps running sums for normalisation."""

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

    def append(self, feats: np.ndarray, rows: pd.DataFrame, labels: np.ndarray) -> None:
        n0, n = self.features.shape[0], len(feats)
        for ds in (self.features, self.labels, *self.text.values()):
            ds.resize(n0 + n, axis=0)
        self.features[n0:] = feats
        self.labels[n0:] = labels
        for key, ds in self.text.items():
            ds[n0:] = rows[key].astype(str).tolist()
        as64 = feats.astype(np.float64)
        self.sum += as64.sum(axis=(0, 2))
        self.sumsq += (as64**2).sum(axis=(0, 2))
        self.count += feats.shape[0] * feats.shape[2]


def compute_features(
    dataset: str, splits_tsv: Path, root: Path, settings: dict[str, Any], out: Path,
    rejected_tsv: Path, threads: int = 1,
) -> dict[str, int]:
    """Turn every clip of `splits_tsv` into features in `out` (HDF5, written atomically)."""
    from pipeline.datasets import get_dataset

    spec = get_dataset(settings.get("dataset", dataset))  # a variant's name -> its module
    table = read_splits(Path(splits_tsv))
    label_names = spec.label_names(settings)
    label_index = {name: i for i, name in enumerate(label_names)}
    unknown = set(table["label"]) - set(label_index)
    if unknown:
        raise ValueError(f"{dataset}: labels {sorted(unknown)} are not in {label_names}")
    on_bad = settings.get("on_bad_audio", "fail")
    fparams = settings.get("features", {})
    torch.set_num_threads(max(1, threads))
    started = time.perf_counter()
    rejected: list[dict[str, str]] = []
    counts: dict[str, int] = {}

    with atomic_path(out) as tmp, h5py.File(tmp, "w") as h5:
        if spec.modality == "image":
            images = spec.load_images(Path(root), table, settings)  # [N, H, W] uint8, table order
            shape = images.shape[1:]
            attrs: dict[str, Any] = {"height": shape[0], "width": shape[1], "scale": "x/255"}
        else:
            params = FeatureParams.from_dict(fparams)
            logmel = LogMel(params)
            shape = (params.n_mels, params.n_frames)
            attrs = params.as_attrs()
        dtype = fparams.get("dtype", "float32")
        writers = {}
        for split in SPLITS:
            rows_all = table[table["split"] == split]
            writer = writers[split] = _SplitWriter(h5, split, shape, dtype)
            for rows in _batches(rows_all, BATCH):
                if spec.modality == "image":
                    feats = images[rows.index.to_numpy()].astype(np.float32) / 255.0
                    keep = np.ones(len(rows), dtype=bool)
                else:
                    waves, reasons = load_waveforms([Path(root) / p for p in rows["path"]],
                                                    params, threads)
                    keep = np.array([not r for r in reasons])
                    for (_, row), reason in zip(rows.iterrows(), reasons, strict=True):
                        if reason:
                            rejected.append({"clip": row["clip"], "path": row["path"],
                                             "split": split, "reason": reason})
                    with torch.inference_mode():
                        feats = logmel(torch.from_numpy(waves[keep])).numpy()
                    rows = rows[keep]
                if len(rows):
                    writer.append(feats.astype(dtype), rows,
                                  rows["label"].map(label_index).to_numpy())
            counts[split] = writer.features.shape[0]
            log.info("%s: %s split, %d clips", dataset, split, counts[split])

        if rejected and on_bad == "fail":
            listing = "\n".join(f"  {r['path']}: {r['reason']}" for r in rejected)
            raise BadAudioError(
                f"{dataset}: {len(rejected)} clip(s) cannot become features:\n{listing}\n"
                "Fix or remove them, or set on_bad_audio: skip for this dataset to leave them "
                "out (they are then listed in rejected.tsv)."
            )
        train = writers["train"]
        if train.count == 0:
            raise ValueError(f"{dataset}: the train split has no usable clips")
        mean = train.sum / train.count
        std = np.sqrt(np.maximum(train.sumsq / train.count - mean**2, 0.0))
        # A row that is constant in train (MNIST's blank border) must not blow up elsewhere:
        # floor every std at 1 % of the largest one.
        std = np.maximum(std, 0.01 * std.max() + 1e-8)
        h5.attrs.update({k: v for k, v in attrs.items()})
        h5.attrs["dataset"] = dataset
        h5.attrs["modality"] = spec.modality
        h5.attrs["feature_version"] = FEATURE_VERSION
        h5.attrs["label_names"] = json.dumps(label_names)
        h5.attrs["norm_mean"] = mean.astype(np.float32)
        h5.attrs["norm_std"] = std.astype(np.float32)
        h5.attrs["norm_axis"] = ("per row (mel band or image row), over train clips and frames; "
                                 "std floored at 1% of the largest")

    write_table(rejected_tsv, pd.DataFrame(rejected, columns=["clip", "path", "split", "reason"]))
    elapsed = time.perf_counter() - started
    total = sum(counts.values())
    log.info("%s: %d clips in %.1f s (%.0f clips/s), %d rejected", dataset, total, elapsed,
             total / max(elapsed, 1e-9), len(rejected))
    return counts


@dataclass
class FeatureSplit:
    """One split held in memory: the training data is small enough for that here."""

    features: torch.Tensor  # float32 [N, F, T]
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


def feature_params_from_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """The subset of HDF5 attributes that describes how features were made (for checkpoints)."""
    keep = [f.name for f in fields(FeatureParams)] + [
        "modality", "feature_version", "height", "width", "scale", "n_frames", "n_samples",
        "win_length", "hop_length"]
    out = {}
    for key in keep:
        if key in attrs:
            value = attrs[key]
            out[key] = value.item() if hasattr(value, "item") else value
    return out
