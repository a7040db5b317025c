"""Find the spoken parts of a recording: a short-time energy detector with hysteresis.

A recording is cut into frames of the model's hop (10 ms by default) and each frame's power
is averaged over the model's analysis window (25 ms), in dB relative to full scale. The
recording's *noise floor* is a low percentile of those levels (the 10th: the quietest tenth
of the recording is taken to be background), so the detector adapts to the gain and noise of
each file and needs no absolute level. Then, with hysteresis:

* a region is a run of frames louder than ``floor + stop_db`` (6 dB), and it counts only
  if some frame in it reaches ``floor + start_db`` (12 dB): a word's quiet edges stay
  attached to it, but a bump of noise that never gets loud does not start a segment;
* neither threshold is allowed below ``loudest - range_db`` (40 dB), so a recording with
  digital silence (a floor near -inf) does not turn every faint noise into speech;
* regions less than ``merge_gap_ms`` (200 ms) apart are merged (the closure in "six", or
  "eight"'s final "t", is one word), and merged regions shorter than ``min_speech_ms``
  (60 ms) are dropped (clicks).

The work is a few numpy passes over arrays of frame levels (60,000 frames for ten minutes),
no per-sample Python. The floor is estimated from the recording itself, so it needs some
non-speech in it: a clip trimmed tightly around a word may be louder than its own
"floor" everywhere and show no segment (about 5 % of FSDD's clips rise less than 12 dB above
their 10th percentile); `pipeline.predict` therefore classifies a clip that fits the model's
window whole, as before, and uses the detector only for longer recordings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DetectorParams:
    floor_percentile: float = 10.0
    start_db: float = 12.0
    stop_db: float = 6.0
    range_db: float = 40.0
    merge_gap_ms: float = 200.0
    min_speech_ms: float = 60.0


@dataclass(frozen=True)
class Segment:
    start: float  # seconds
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Detection:
    segments: list[Segment]
    floor_db: float  # the recording's noise floor, dB relative to full scale
    peak_db: float  # its loudest frame


def frame_levels(wave: np.ndarray, hop: int, window: int) -> np.ndarray:
    """Power in dB (full scale = 0 dB) of frames `hop` samples apart, each averaged over
    about `window` samples (a centred moving average of whole hops)."""
    n = len(wave) // hop
    if n == 0:
        return np.full(1, 10 * np.log10(np.mean(np.square(wave, dtype=np.float64)) + 1e-12))
    blocks = np.square(wave[:n * hop].reshape(n, hop), dtype=np.float64).mean(axis=1)
    k = max(1, int(round(window / hop)))
    if k > 1:
        # centred moving average; edges average over the hops that exist
        kernel = np.ones(k)
        blocks = (np.convolve(blocks, kernel, mode="same")
                  / np.convolve(np.ones(n), kernel, mode="same"))
    return 10 * np.log10(blocks + 1e-12)


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) indices of the runs of True in a boolean array."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def detect_speech(wave: np.ndarray, sample_rate: int, hop: int, window: int,
                  params: DetectorParams = DetectorParams()) -> Detection:
    """The spoken segments of a mono recording, in seconds, in order."""
    levels = frame_levels(np.asarray(wave, dtype=np.float32), hop, window)
    floor = float(np.percentile(levels, params.floor_percentile))
    peak = float(levels.max())
    high = max(floor + params.start_db, peak - params.range_db)
    low = max(floor + params.stop_db, peak - params.range_db)
    if peak < high:
        return Detection([], floor, peak)
    starts, ends = _runs(levels > low)
    loudest = np.maximum.reduceat(levels, starts)  # runs are non-empty and in order
    keep = loudest >= high
    starts, ends = starts[keep], ends[keep]
    if len(starts) == 0:
        return Detection([], floor, peak)
    frame_s = hop / sample_rate
    gap = int(np.ceil(params.merge_gap_ms / 1000 / frame_s))
    # merge: a new group begins where the silence before a region is at least `gap` frames
    new = np.concatenate(([True], starts[1:] - ends[:-1] >= gap))
    g_start = starts[new]
    g_end = np.maximum.reduceat(ends, np.flatnonzero(new))
    long_enough = (g_end - g_start) * frame_s >= params.min_speech_ms / 1000
    total = len(wave) / sample_rate
    segments = [Segment(round(float(s * frame_s), 4), round(min(total, float(e * frame_s)), 4))
                for s, e in zip(g_start[long_enough], g_end[long_enough], strict=True)]
    return Detection(segments, floor, peak)
