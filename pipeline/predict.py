"""Classify new recordings with a trained checkpoint alone.

    python -m pipeline.predict --model results/fsdd/cnn2d/seed-0/model.pt a.wav long.flac --top 3

The checkpoint carries its feature parameters and normalisation, so any sample rate works
(clips are resampled) and no dataset or config is needed.

A file no longer than the model's window (its `clip_seconds`, e.g. a 0.5-s FSDD recording or
a 1-s clip) is classified whole, centred in the window, on one line:

    a.wav           7       0.9812  1       0.0101

A longer recording is searched for speech (pipeline.segments: a short-time energy detector
relative to the recording's own noise floor) and every segment found is classified on its
own line with its start and end in seconds:

    long.flac       120.05-120.58   7       0.9431
    long.flac       301.20-301.71   3       0.8807

Each segment, with `--context` seconds of the recording on either side, is centred in the
model's window and zero-padded, as short clips were for training. A model trained on trimmed
clips (its feature parameters hold `trim_db`) gets the same trim here: a short file, and a
segment that fits one window, are cut to their speech by `trim_silence` first, exactly as
the feature stage cut the training clips. A segment longer than the window is never cut to
fit: it is classified in windows of the model's length overlapping by half, one line each
with the window's times, and a note on stderr says so. When a long
recording holds no segment, stderr says "no speech found" and the exit status is 1, as for
an unreadable file; a bad model file gives one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pipeline.checkpoint import CheckpointError, load_checkpoint, normalise_with
from pipeline.modalities.audio import FeatureParams, LogMel, fit_length, read_clip, trim_silence
from pipeline.segments import DetectorParams, Segment, detect_speech

#: Windows classified in one forward pass (bounds memory on long recordings).
BATCH = 256


@dataclass(frozen=True)
class Prediction:
    top: list[tuple[str, float]]  # (label, probability), best first
    start: float | None = None  # seconds into the file; None: the whole (short) file
    end: float | None = None


@dataclass
class FileResult:
    path: str
    predictions: list[Prediction] = field(default_factory=list)
    error: str = ""  # unreadable file, or (for a long recording) no speech found
    notes: list[str] = field(default_factory=list)  # stderr remarks that are not failures

    @property
    def whole(self) -> bool:
        return len(self.predictions) == 1 and self.predictions[0].start is None


def check_audio_path(path: Path) -> str:
    """Why a path cannot be an audio file ('' if it may be one): said before libsndfile
    says "System error." about a missing file."""
    if not path.exists():
        return "no such file"
    if path.is_dir():
        return "is a folder, not an audio file"
    try:
        if path.stat().st_size == 0:
            return "the file is empty (0 bytes)"
    except OSError as err:
        return f"cannot read it: {err.strerror or err}"
    if not os.access(path, os.R_OK):
        return "cannot read it: permission denied"
    return ""


class Predictor:
    def __init__(self, model_path: str | Path, device: str = "cpu",
                 detector: DetectorParams | None = None, context: float = 0.1) -> None:
        self.model, self.ckpt = load_checkpoint(model_path, device)
        self.device = device
        fp = self.ckpt.get("feature_params")
        if not isinstance(fp, dict) or "normalization" not in self.ckpt:
            raise CheckpointError(f"{model_path}: checkpoint lacks feature_params or "
                                  "normalization")
        if fp.get("modality") != "audio":
            raise CheckpointError(f"{model_path}: the model was trained on "
                                  f"{fp.get('modality')} data, not audio")
        try:
            self.params = FeatureParams.from_attrs(fp)
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{model_path}: unusable feature_params ({err})") from None
        self.logmel = LogMel(self.params)
        self.labels = [str(x) for x in self.ckpt["label_names"]]
        self.detector = detector or DetectorParams()
        self.context = context

    # -- classification -------------------------------------------------------------------
    def classify(self, windows: np.ndarray, top: int) -> list[list[tuple[str, float]]]:
        """Top-k (label, probability) of each row of a [N, n_samples] array."""
        out = []
        k = min(top, len(self.labels))
        with torch.inference_mode():
            for i in range(0, len(windows), BATCH):
                x = torch.from_numpy(np.ascontiguousarray(windows[i:i + BATCH]))
                feats = normalise_with(self.ckpt, self.logmel(x))
                probs = torch.softmax(self.model(feats.to(self.device)).float(), dim=1).cpu()
                values, indices = probs.topk(k, dim=1)
                out += [[(self.labels[j], float(v)) for v, j in zip(vs, js, strict=True)]
                        for vs, js in zip(values.tolist(), indices.tolist(), strict=True)]
        return out

    def windows_for(self, wave: np.ndarray, seg: Segment
                    ) -> tuple[list[np.ndarray], list[tuple[float, float]], str]:
        """The model inputs for one segment, their (start, end) times, and a note if the
        segment needed more than one window."""
        sr, n = self.params.sample_rate, self.params.n_samples
        a = max(0, int(round((seg.start - self.context) * sr)))
        b = min(len(wave), int(round((seg.end + self.context) * sr)))
        if seg.duration * sr <= n:
            centre = int(round((seg.start + seg.end) / 2 * sr))
            lo, hi = max(a, centre - n // 2), min(b, centre + n - n // 2)
            return ([fit_length(trim_silence(wave[lo:hi], self.params), n)],
                    [(seg.start, seg.end)], "")
        count = math.ceil((b - a - n) / (n / 2)) + 1
        starts = np.round(np.linspace(a, b - n, count)).astype(int)
        note = (f"speech at {seg.start:.2f}-{seg.end:.2f} s lasts {seg.duration:.2f} s, longer "
                f"than the model's {self.params.clip_seconds:g}-s window: classified in "
                f"{count} windows overlapping by half, one line each")
        return ([wave[s:s + n] for s in starts],
                [(round(s / sr, 4), round((s + n) / sr, 4)) for s in starts], note)

    def model_input(self, wave: np.ndarray) -> np.ndarray:
        """A clip that fits the window as the feature stage placed it: trimmed (when the
        model's `trim_db` is set), then centred and zero-padded; [n_samples]."""
        return fit_length(trim_silence(wave, self.params), self.params.n_samples)

    def predict_file(self, path: str | Path, top: int = 1) -> FileResult:
        result = FileResult(str(path))
        reason = check_audio_path(Path(path))
        if reason:
            result.error = reason
            return result
        wave, reason = read_clip(Path(path), self.params.sample_rate)
        if wave is None:
            result.error = reason
            return result
        p = self.params
        detection = detect_speech(wave, p.sample_rate, p.hop_length, p.win_length, self.detector)
        if len(wave) <= p.n_samples:
            # fits the model's window: classified whole, as the model was trained
            result.predictions = [Prediction(t) for t in
                                  self.classify(self.model_input(wave)[None], top)]
            if not detection.segments:
                result.notes.append(
                    f"no part stands out as speech (loudest {detection.peak_db:.1f} dBFS, "
                    f"floor {detection.floor_db:.1f} dBFS); classified whole anyway")
            return result
        if not detection.segments:
            result.error = (f"no speech found in {len(wave) / p.sample_rate:.2f} s: nothing "
                            f"rose {self.detector.start_db:g} dB above the noise floor "
                            f"({detection.floor_db:.1f} dBFS; loudest "
                            f"{detection.peak_db:.1f} dBFS)")
            return result
        windows, times = [], []
        for seg in detection.segments:
            w, t, note = self.windows_for(wave, seg)
            windows += w
            times += t
            if note:
                result.notes.append(note)
        tops = self.classify(np.stack(windows), top)
        result.predictions = [Prediction(t, s, e) for t, (s, e) in zip(tops, times, strict=True)]
        return result


def format_result(result: FileResult) -> tuple[list[str], list[str]]:
    """(stdout lines, stderr lines) for one file."""
    err = [f"{result.path}\tnote: {n}" for n in result.notes]
    if result.error:
        prefix = "" if result.error.startswith("no speech found") else "error: "
        return [], err + [f"{result.path}\t{prefix}{result.error}"]
    out = []
    for pred in result.predictions:
        shown = "\t".join(f"{label}\t{prob:.4f}" for label, prob in pred.top)
        when = "" if pred.start is None else f"{pred.start:.2f}-{pred.end:.2f}\t"
        out.append(f"{result.path}\t{when}{shown}")
    return out, err


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a model.pt written by train_model")
    parser.add_argument("--top", type=int, default=1, help="show the k most likely labels")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--context", type=float, default=0.1,
                        help="seconds of recording kept either side of a segment (default 0.1)")
    parser.add_argument("files", nargs="+", help="audio files (WAV, FLAC, ...) at any rate")
    args = parser.parse_args(argv)
    try:
        predictor = Predictor(args.model, args.device, context=max(0.0, args.context))
    except CheckpointError as err:
        print(f"error: cannot load model: {err}", file=sys.stderr)
        return 2
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as err:  # e.g. bad --device
        reason = " ".join(str(err).split())[:300] or type(err).__name__
        print(f"error: cannot load model {args.model}: {reason}", file=sys.stderr)
        return 2
    failed = 0
    for path in args.files:
        out, err = format_result(predictor.predict_file(path, max(1, args.top)))
        failed += not out
        for line in err:
            print(line, file=sys.stderr, flush=True)
        for line in out:
            print(line, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
