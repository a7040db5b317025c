"""The offline default dataset: espeak-ng digits, deterministic to the byte."""

from __future__ import annotations

import hashlib

import soundfile as sf

from conftest import TINY_TTS
from pipeline.config import settings_for
from pipeline.datasets import acquire_dataset
from pipeline.datasets.tts_digits import utterance_plan


def _digest(folder):
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.glob("*.wav"))))


def test_same_config_same_bytes(tiny_tts, tmp_path):
    again = tmp_path / "tts_digits"
    acquire_dataset(again, settings_for("tts_digits", TINY_TTS), workers=1)
    assert _digest(again / "recordings").hexdigest() == _digest(tiny_tts / "recordings").hexdigest()


def test_clips_are_8k_mono_pcm16_with_fsdd_names(tiny_tts):
    wavs = sorted((tiny_tts / "recordings").glob("*.wav"))
    assert len(wavs) == 4 * 3 * 10 * 2
    info = sf.info(wavs[0])
    assert (info.samplerate, info.channels, info.subtype) == (8000, 1, "PCM_16")
    digit, voice, index = wavs[0].stem.split("_")
    assert digit.isdigit() and index.isdigit() and voice.startswith("en")
    assert 0.1 < info.duration < 2.0


def test_voices_differ_and_plan_is_seeded():
    settings = settings_for("tts_digits", TINY_TTS)
    plan = utterance_plan(settings)
    assert plan["speaker"].nunique() == 12
    assert plan.equals(utterance_plan(settings))
    other = utterance_plan({**settings, "seed": 1})
    assert not plan["rate"].equals(other["rate"])
