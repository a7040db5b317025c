"""Spoken digits synthesized on the machine with espeak-ng: the offline default dataset.

Many voices (accents x variants), each utterance with a seeded rate, pitch and intonation
range, resampled to 8 kHz mono 16-bit WAV with FSDD-style names, so every FSDD code path (and
a model trained here) applies unchanged. A voice plays the role of a speaker in splits.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf

from pipeline import splits
from pipeline.datasets.base import DataError
from pipeline.datasets.fsdd import LABELS

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
SAMPLE_RATE = 8000
ESPEAK_RATE = 22050  # what espeak_Initialize reports for its voices
#: The settings that decide what is synthesized (their defaults: the config schema).
VOICE_KEYS = ("accents", "variants", "repetitions", "seed", "rate", "pitch", "range")


def voice_id(accent: str, variant: str) -> str:
    """A file-name-safe speaker id: ``en-gb-scotland+m3`` -> ``en-gb-scotland-m3``."""
    return f"{accent}-{variant}".lower()


def utterance_plan(settings: dict[str, Any]) -> pd.DataFrame:
    """Every clip to make, with its seeded rate, pitch and range; depends on settings alone.

    `range` is drawn last, so adding it left every earlier config's rate and pitch draws as
    they were (and its default [50, 50] is espeak's own, so their audio too).
    """
    cfg = settings
    rows = []
    for accent in cfg["accents"]:
        for variant in cfg["variants"]:
            speaker = voice_id(accent, variant)
            for digit, word in enumerate(WORDS):
                for index in range(int(cfg["repetitions"])):
                    key = f"{cfg['seed']}/{speaker}/{digit}/{index}".encode()
                    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(key).digest()[:8]))
                    rows.append({
                        "clip": f"{digit}_{speaker}_{index}", "label": str(digit),
                        "speaker": speaker, "index": index, "voice": f"{accent}+{variant}",
                        "text": word,
                        "rate": int(rng.integers(cfg["rate"][0], cfg["rate"][1] + 1)),
                        "pitch": int(rng.integers(cfg["pitch"][0], cfg["pitch"][1] + 1)),
                        "range": int(rng.integers(cfg["range"][0], cfg["range"][1] + 1)),
                    })
    if not rows:
        raise DataError("tts_digits: no voices configured (accents x variants is empty)")
    return pd.DataFrame(rows)


def _synthesize_in_fresh_process(utterances: list[tuple[str, str, int, int, int]]
                                 ) -> list[np.ndarray]:
    """Run one batch through ``python -m pipeline.synth`` (see synthesize_batch for why)."""
    with tempfile.TemporaryDirectory(prefix="tts-") as tmp:
        out = Path(tmp) / "waves.npz"
        proc = subprocess.run([sys.executable, "-m", "pipeline.synth", str(out)],
                              input=json.dumps(utterances), capture_output=True, text=True)
        if proc.returncode != 0:
            raise DataError(f"tts_digits: espeak-ng synthesis failed: {proc.stderr[-2000:]}")
        with np.load(out) as data:
            return [data[f"arr_{i}"] for i in range(len(utterances))]


def synthesize(dest: Path, settings: dict[str, Any], workers: int = 1) -> pd.DataFrame:
    """Write every planned clip to ``dest/recordings``; one fresh process per accent."""
    import torch  # here, not at the top: Snakemake imports the registry on every start
    import torchaudio

    plan = utterance_plan(settings)
    out = dest / "recordings"
    out.mkdir(parents=True, exist_ok=True)
    groups = [g for _, g in plan.groupby(plan["voice"].str.split("+").str[0], sort=True)]
    batches = [list(zip(g["voice"], g["text"], g["rate"].astype(int).tolist(),
                        g["pitch"].astype(int).tolist(), g["range"].astype(int).tolist(),
                        strict=True)) for g in groups]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for group, waves in zip(groups, pool.map(_synthesize_in_fresh_process, batches),
                                strict=True):
            for clip, wave in zip(group["clip"], waves, strict=True):
                if wave.size == 0:
                    raise DataError(f"tts_digits: espeak produced no audio for {clip}")
                audio = torch.from_numpy(wave.astype(np.float32) / 32768.0)
                audio = torchaudio.functional.resample(audio, ESPEAK_RATE, SAMPLE_RATE)
                sf.write(out / f"{clip}.wav", audio.clamp(-1, 1).numpy(), SAMPLE_RATE,
                         subtype="PCM_16")
    return plan


class TtsDigits:
    name = "tts_digits"
    modality = "audio"
    acquisition = "synthesize"
    sample_rate = SAMPLE_RATE
    acquire_keys = VOICE_KEYS

    def acquire(self, dest: Path, settings: dict[str, Any], mirror: str | None,
                workers: int = 1) -> None:
        synthesize(dest, settings, workers)

    def list_clips(self, root: Path, settings: dict[str, Any]) -> pd.DataFrame:
        plan = utterance_plan(settings)
        missing = [c for c in plan["clip"] if not (root / "recordings" / f"{c}.wav").exists()]
        if missing:
            raise DataError(f"tts_digits: {len(missing)} planned clips are missing under {root} "
                            f"(e.g. {missing[:3]}); the voice settings changed since synthesis?")
        plan = plan.assign(path="recordings/" + plan["clip"] + ".wav")
        return plan[["clip", "path", "label", "speaker", "index", "voice", "rate", "pitch",
                     "range"]]

    def label_names(self, settings: dict[str, Any]) -> list[str]:
        return LABELS

    def assign_splits(self, clips: pd.DataFrame, settings: dict[str, Any]) -> pd.DataFrame:
        return clips.assign(split=splits.speaker_scheme(clips, settings))

    def speakers_held_out(self, settings: dict[str, Any]) -> bool:
        return True  # voices are always held out whole

    def evaluation_only(self, settings: dict[str, Any]) -> bool:
        return False


DATASET = TtsDigits()
