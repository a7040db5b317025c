"""Audio: WAV/FLAC clips -> log-mel spectrograms [n_mels, frames] (torchaudio, batched)."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf
import torch
import torchaudio

from pipeline.dicts import strict_fields


@dataclass(frozen=True)
class FeatureParams:
    """Everything that determines a log-mel spectrogram; stored with the features and models.

    The defaults are the lecture's MATLAB set-up and the single source of the `features`
    defaults (the config schema is checked against them by a test)."""

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
        """From config values; an unknown key fails as everywhere else."""
        return cls(**strict_fields(cls, values, "features"))

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> FeatureParams:
        """From a feature cache's (or checkpoint's) attributes, which hold more keys."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: (None if v == "none" else v.item() if hasattr(v, "item") else v)
                      for k, v in attrs.items() if k in names})

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


class AudioFeaturizer:
    """Reads a batch of clips from disk and turns it into log-mels."""

    def __init__(self, root: Path, settings: dict[str, Any], threads: int) -> None:
        self.root, self.threads = Path(root), threads
        self.params = FeatureParams.from_dict(settings["features"])
        self.logmel = LogMel(self.params)
        self.shape = (self.params.n_mels, self.params.n_frames)
        self.attrs = self.params.as_attrs()

    def __call__(self, rows: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
        waves, reasons = load_waveforms([self.root / p for p in rows["path"]], self.params,
                                        self.threads)
        keep = np.array([not r for r in reasons], dtype=bool)
        with torch.inference_mode():
            feats = self.logmel(torch.from_numpy(waves[keep])).numpy()
        return feats, reasons


class Audio:
    """Clips of sound; rows are mel bands, steps are frames of `hop_ms`."""

    name = "audio"
    #: Attributes that must agree for a model to read another dataset's features.
    compatible_keys = tuple(f.name for f in fields(FeatureParams) if f.name != "dtype")

    def featurizer(self, spec, root: Path, table: pd.DataFrame, settings: dict[str, Any],
                   threads: int = 1) -> AudioFeaturizer:
        return AudioFeaturizer(root, settings, threads)

    def step_ms(self, attrs: dict[str, Any]) -> tuple[float, float] | None:
        """(hop, window) in ms of one step of the model input's time axis."""
        return float(attrs["hop_ms"]), float(attrs["window_ms"])


MODALITY = Audio()
