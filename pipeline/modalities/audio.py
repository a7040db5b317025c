"""Audio: WAV/FLAC clips -> log-mel spectrograms [n_mels, frames] (torchaudio, batched)."""

from __future__ import annotations

import functools
import math
import wave as wavfile
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
from pipeline.io import Root, clip_file


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
    trim_db: float | None = None  # None: clips are placed as read (see trim_silence)

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
        """HDF5 attributes (None written as "none"). `trim_db` is written only when set, so
        untrimmed features carry exactly the attributes they had before it existed (and
        older caches and checkpoints, which lack it, read back as untrimmed)."""
        out = {k: ("none" if v is None else v) for k, v in asdict(self).items()
               if not (k == "trim_db" and v is None)}
        out.update(win_length=self.win_length, hop_length=self.hop_length, n_fft=self.fft_size,
                   n_samples=self.n_samples, n_frames=self.n_frames,
                   f_max=self.f_max or self.sample_rate / 2)
        return out


class LogMel(torch.nn.Module):
    """log10(mel power + offset), frames without centring, as the lecture's MATLAB example.

    The numbers of ``torchaudio.transforms.MelSpectrogram(center=False, power=2.0)`` and
    log10 (its Hann window and HTK filterbank are used as they are), within float32
    rounding, in about a third of the time on a CPU: the power is re^2 + im^2 (no hypot),
    the filterbank product is one matrix multiply over all frames, the log is written
    straight into the [n_mels, frames] layout, batches are cut into chunks of CHUNK clips
    so the spectra stay in cache, and frames that hold only zeros (the padding of a short
    clip) are not transformed: their value is log10(offset) exactly as computed."""

    CHUNK = 64

    def __init__(self, params: FeatureParams) -> None:
        super().__init__()
        self.params = params
        reference = torchaudio.transforms.MelSpectrogram(
            sample_rate=params.sample_rate, n_fft=params.fft_size, win_length=params.win_length,
            hop_length=params.hop_length, f_min=params.f_min, f_max=params.f_max,
            n_mels=params.n_mels, center=False, power=2.0,
        )
        self.register_buffer("window", reference.spectrogram.window)
        self.register_buffer("fb", reference.mel_scale.fb)  # [n_fft // 2 + 1, n_mels]

    def _logmel(self, x: torch.Tensor, out: torch.Tensor) -> None:
        p = self.params
        spec = torch.stft(x, p.fft_size, p.hop_length, p.win_length, self.window,
                          center=False, return_complex=True)
        power = spec.real.square().addcmul_(spec.imag, spec.imag)  # [b, freq, frames]
        mel = torch.matmul(power.transpose(1, 2), self.fb)  # [b, frames, n_mels]
        torch.log10(mel.add_(p.log_offset).transpose(1, 2), out=out)

    def forward(self, waveforms: torch.Tensor, spans: np.ndarray | None = None
                ) -> torch.Tensor:
        """[..., samples] -> [..., n_mels, frames]. `spans` [clips, 2] (start, stop) may say
        where each clip's samples lie, all others being zero (found from the data if not)."""
        p = self.params
        flat = waveforms.reshape(-1, waveforms.shape[-1])
        n, size = flat.shape
        frames = (size - p.fft_size) // p.hop_length + 1
        out = flat.new_empty((n, p.n_mels, frames))
        lo, hi = self._frame_ranges(flat, frames, spans)
        if (lo == 0).all() and (hi == frames).all():
            for i in range(0, n, self.CHUNK):
                self._logmel(flat[i:i + self.CHUNK], out[i:i + self.CHUNK])
            return out.reshape(*waveforms.shape[:-1], p.n_mels, frames)
        silent = out.new_zeros(1).add_(p.log_offset).log10_()  # what an all-zero frame gives
        out.fill_(silent.item())
        order = np.argsort(lo - hi, kind="stable")  # the most frames first
        for i in range(0, n, self.CHUNK):
            group = order[i:i + self.CHUNK]
            f0, f1 = int(lo[group].min()), int(hi[group].max())
            if f1 > f0:
                rows = torch.from_numpy(group)
                part = flat.new_empty((len(group), p.n_mels, f1 - f0))
                span = slice(f0 * p.hop_length, (f1 - 1) * p.hop_length + p.fft_size)
                self._logmel(flat[rows, span], part)
                out[rows, :, f0:f1] = part
        return out.reshape(*waveforms.shape[:-1], p.n_mels, frames)

    def _frame_ranges(self, flat: torch.Tensor, frames: int, spans: np.ndarray | None
                      ) -> tuple[np.ndarray, np.ndarray]:
        """Per clip, the frames [lo, hi) that touch a sample inside its span."""
        p = self.params
        if spans is None:
            nonzero = flat.detach().cpu().numpy() != 0
            found = nonzero.any(axis=1)
            first = np.where(found, nonzero.argmax(axis=1), 0)
            stop = np.where(found, nonzero.shape[1] - nonzero[:, ::-1].argmax(axis=1), 0)
        else:
            first, stop = np.asarray(spans[:, 0]), np.asarray(spans[:, 1])
        lo = np.maximum((first - p.fft_size) // p.hop_length + 1, 0)
        hi = np.minimum((stop - 1) // p.hop_length + 1, frames)
        return lo, np.where(stop > first, hi, lo)


def fit_length(wave: np.ndarray, n_samples: int) -> np.ndarray:
    """Centre a clip in a fixed window: zero-pad both sides, or crop the middle."""
    if len(wave) >= n_samples:
        start = (len(wave) - n_samples) // 2
        return wave[start:start + n_samples]
    left = (n_samples - len(wave)) // 2
    return np.pad(wave, (left, n_samples - len(wave) - left))


def trim_silence(wave: np.ndarray, params: FeatureParams) -> np.ndarray:
    """The clip from its first to its last frame within `params.trim_db` dB of its loudest
    frame (leading and trailing silence cut; the middle, pauses included, kept); the clip
    itself when `trim_db` is None or the clip is shorter than one frame.

    Frames are the log-mels' own: `win_length` samples every `hop_length` samples, from
    the first sample, and a frame's level is its mean power in dB. The kept part starts
    where the first loud frame starts and ends where the last one ends (with the clip's
    last samples when that is its last frame). The threshold is relative to the clip's
    own peak, as librosa.effects.trim's `top_db`, so it needs no absolute level; a clip
    with digital silence around the word (FSDD's padding, zeros at -inf dB) loses exactly
    that. torchaudio.functional.vad (SoX's detector) does not fit here: it needs 0.35 s of
    lead-in to estimate the noise and returns nothing for every FSDD clip tried."""
    db = params.trim_db
    win, hop = params.win_length, params.hop_length
    if db is None or len(wave) < win:
        return wave
    n = (len(wave) - win) // hop + 1
    energy = np.concatenate(([0.0], np.cumsum(np.square(wave, dtype=np.float64))))
    starts = np.arange(n) * hop
    power = (energy[starts + win] - energy[starts]) / win
    level = 10 * np.log10(np.maximum(power, 1e-20))
    loud = np.flatnonzero(level >= level.max() - db)
    first, last = int(loud[0]), int(loud[-1])
    stop = len(wave) if last == n - 1 else last * hop + win
    return wave[first * hop:stop]


def _place(wave: np.ndarray, row: np.ndarray) -> tuple[int, int]:
    """fit_length(wave, len(row)) written into `row` (already zero); returns where it lies."""
    n, size = len(wave), len(row)
    if n >= size:
        start = (n - size) // 2
        row[:] = wave[start:start + size]
        return 0, size
    left = (size - n) // 2
    row[left:left + n] = wave
    return left, left + n


@functools.lru_cache(maxsize=16)
def _resampler(orig: int, new: int) -> torchaudio.transforms.Resample:
    """Resampling kernels are built once per rate pair (the same kernel as
    torchaudio.functional.resample on float32 input)."""
    return torchaudio.transforms.Resample(orig, new, dtype=torch.float32)


#: Read plain 16-bit PCM WAVs with the standard library's `wave` (see _read_pcm16_wav);
#: False: soundfile only.
FAST_WAV = True


def _read_pcm16_wav(path: str | Path) -> tuple[np.ndarray, int] | None:
    """(samples, rate) of a plain 16-bit PCM WAV, read with the standard library's `wave`
    module; the samples are what soundfile returns (int16 / 32768 in float32, exactly),
    [frames] or [frames, channels]. Any other file (another sample width, WAVE_FORMAT_
    EXTENSIBLE, compressed, truncated, not a WAV) gives None and soundfile reads it (and
    words any error). FSDD and Speech Commands are such files (every one bit-identical to
    soundfile's: benchmarks/features_fsdd.py checks); soundfile's per-call overhead is
    about three times what this takes, and it is most of the feature stage's time."""
    try:
        with wavfile.open(str(path), "rb") as w:
            if w.getsampwidth() != 2 or w.getcomptype() != "NONE":
                return None
            frames, channels, rate = w.getnframes(), w.getnchannels(), w.getframerate()
            raw = w.readframes(frames)
    except (wavfile.Error, EOFError, OSError, ValueError):
        return None
    if len(raw) != frames * channels * 2 or rate < 1:
        return None
    samples = np.frombuffer(raw, "<i2").astype(np.float32)
    samples *= np.float32(1 / 32768)
    return (samples if channels == 1 else samples.reshape(-1, channels)), rate


def read_clip(path: str | Path, sample_rate: int) -> tuple[np.ndarray | None, str]:
    """Read one file as mono float32 at `sample_rate`; on failure return (None, reason).
    Plain 16-bit WAVs are parsed here, every other file is read by soundfile."""
    fast = _read_pcm16_wav(path) if FAST_WAV else None
    if fast is not None:
        data, rate = fast
    else:
        try:
            data, rate = sf.read(path, dtype="float32")
        except Exception as err:  # soundfile raises LibsndfileError, RuntimeError, OSError...
            return None, f"unreadable: {err}"
    wave = data.mean(axis=1) if data.ndim > 1 else data
    if wave.size == 0:
        return None, "empty: no samples"
    with np.errstate(over="ignore"):  # huge float samples: checked one by one below
        energy = float(np.dot(wave, wave))  # finite, > 0: all samples finite, not all zero
    if not (0.0 < energy < math.inf):
        if not np.isfinite(wave).all():
            return None, "contains NaN or infinite samples"
        if not wave.any():
            return None, "silent: every sample is zero"
    if rate != sample_rate:
        with torch.inference_mode():
            wave = _resampler(rate, sample_rate)(torch.from_numpy(wave)).numpy()
    return wave, ""


def read_batch(paths: list[str | Path], params: FeatureParams, threads: int = 1
               ) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Read clips into a [B, n_samples] array, each trimmed by trim_silence (when
    `params.trim_db` is set) and centred by fit_length; reasons are '' for good clips, and
    spans [B, 2] say where each clip lies (all zero outside).
    `threads` > 1 reads in a pool, which only pays where decoding is slow (FLAC,
    resampling): soundfile's per-file Python work holds the GIL."""
    batch = np.zeros((len(paths), params.n_samples), dtype=np.float32)
    spans = np.zeros((len(paths), 2), dtype=np.int64)
    rate = params.sample_rate
    if threads > 1:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            results = list(pool.map(lambda p: read_clip(p, rate), paths))
    else:
        results = (read_clip(p, rate) for p in paths)
    reasons = []
    for i, (wave, reason) in enumerate(results):
        reasons.append(reason)
        if wave is not None:
            spans[i] = _place(trim_silence(wave, params), batch[i])
    return batch, reasons, spans


def load_waveforms(paths: list[str | Path], params: FeatureParams, threads: int = 1
                   ) -> tuple[np.ndarray, list[str]]:
    """Read clips into a [B, n_samples] array (each trimmed and centred as read_batch does);
    reasons are '' for good clips."""
    batch, reasons, _ = read_batch(paths, params, threads)
    return batch, reasons


class AudioFeaturizer:
    """Reads a batch of clips from disk and turns it into log-mels.

    Reading is sequential within a batch: the stage overlaps batches instead (see
    pipeline.features._featurized), so one batch is read while another's log-mels are
    computed in torch, which does not hold the GIL."""

    def __init__(self, root: Root, settings: dict[str, Any], threads: int) -> None:
        self.root, self.threads = root, threads
        self.params = FeatureParams.from_dict(settings["features"])
        self.logmel = LogMel(self.params)
        self.shape = (self.params.n_mels, self.params.n_frames)
        self.attrs = self.params.as_attrs()

    def __call__(self, rows: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
        paths = [clip_file(self.root, p) for p in rows["path"]]
        waves, reasons, spans = read_batch(paths, self.params)
        if any(reasons):
            keep = np.array([not r for r in reasons], dtype=bool)
            waves, spans = waves[keep], spans[keep]
        with torch.inference_mode():
            feats = self.logmel(torch.from_numpy(waves), spans).numpy()
        return feats, reasons


class Audio:
    """Clips of sound; rows are mel bands, steps are frames of `hop_ms`."""

    name = "audio"
    #: Attributes that must agree for a model to read another dataset's features.
    compatible_keys = tuple(f.name for f in fields(FeatureParams) if f.name != "dtype")

    def featurizer(self, spec, root: Root, table: pd.DataFrame, settings: dict[str, Any],
                   threads: int = 1) -> AudioFeaturizer:
        return AudioFeaturizer(root, settings, threads)

    def step_ms(self, attrs: dict[str, Any]) -> tuple[float, float] | None:
        """(hop, window) in ms of one step of the model input's time axis."""
        return float(attrs["hop_ms"]), float(attrs["window_ms"])


MODALITY = Audio()
