"""The offline default dataset: espeak-ng digits, deterministic to the byte."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from conftest import TINY_TTS
from pipeline.config import ConfigError, settings_for
from pipeline.datasets import acquire_dataset
from pipeline.datasets.tts_digits import ESPEAK_RATE, _synthesize_in_fresh_process, utterance_plan


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


def test_range_is_drawn_after_rate_and_pitch():
    """Adding `range` must not move any existing config's rate and pitch draws."""
    settings = settings_for("tts_digits", {**TINY_TTS, "repetitions": 1})
    assert settings["range"] == [50, 50]
    default = utterance_plan(settings)
    wide = utterance_plan({**settings, "range": [0, 100]})
    assert default[["clip", "rate", "pitch"]].equals(wide[["clip", "rate", "pitch"]])
    assert set(default["range"]) == {50}
    assert wide["range"].between(0, 100).all() and wide["range"].nunique() > 10
    assert wide.equals(utterance_plan({**settings, "range": [0, 100]}))
    assert not wide["range"].equals(utterance_plan({**settings, "range": [0, 100],
                                                    "seed": 1})["range"])
    with pytest.raises(ConfigError):
        settings_for("tts_digits", {"range": [0, 101]})


def _f0_spread(wave, rate=ESPEAK_RATE):
    """Max - min of a crude autocorrelation F0 track (Hz) over the voiced 40-ms frames."""
    wave = wave.astype(float)
    n = int(0.04 * rate)
    frames = [wave[i:i + n] - wave[i:i + n].mean() for i in range(0, len(wave) - n, n // 2)]
    loud = 0.1 * max(float(f @ f) for f in frames)
    lo, hi = rate // 400, rate // 60
    f0 = []
    for frame in frames:
        ac = np.correlate(frame, frame, "full")[n - 1:]
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[0] > loud and ac[lag] > 0.5 * ac[0]:
            f0.append(rate / lag)
    return max(f0) - min(f0)


def test_range_reaches_the_audio():
    """Each utterance in its own fresh process, as the pipeline runs them: espeak's state
    carries over between utterances of one process, so only first utterances compare."""
    voice, word = "en+f1", "zero"
    flat, wide, mid = (_synthesize_in_fresh_process([(voice, word, 175, 50, r)])[0]
                       for r in (0, 100, 50))
    assert not np.array_equal(flat, wide)
    assert _f0_spread(wide) > 3 * _f0_spread(flat)  # range moves the contour
    default = subprocess.run(
        [sys.executable, "-c", "import sys; from pipeline.synth import Espeak; "
         f"sys.stdout.buffer.write(Espeak.get().say({word!r}, {voice!r}).tobytes())"],
        capture_output=True, check=True).stdout
    assert mid.tobytes() == default  # range 50 is espeak's default: old configs, same bytes
