"""features.trim_db: clips cut to their speech before they are centred in the window.

The trim keeps the word (and pauses inside it) and drops leading and trailing silence;
off (the default) changes nothing, not even the stored attributes; the feature stage,
checkpoints and predict agree on it; a cross evaluation refuses a model and a test set
that differ in it; the config refuses a bad value."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import TINY_TTS
from pipeline.config import ConfigError, settings_for, validate
from pipeline.evaluation import check_compatible
from pipeline.features import compute_features, describing_attrs, load_split, read_attrs
from pipeline.io import clip_file
from pipeline.modalities.audio import (
    FeatureParams,
    LogMel,
    fit_length,
    read_batch,
    read_clip,
    trim_silence,
)
from pipeline.splits import read_splits

SR = 8000
TRIM = FeatureParams(trim_db=25.0)


def tone(seconds: float, freq: float = 440.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(round(seconds * SR))) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(seconds: float, level: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(round(seconds * SR))) * level).astype(np.float32)


def span(part: np.ndarray, wave: np.ndarray) -> tuple[int, int]:
    """Where `part`, a slice of `wave` (trim_silence returns one), lies in it."""
    assert np.shares_memory(part, wave)
    start = (part.__array_interface__["data"][0] - wave.__array_interface__["data"][0])
    start //= wave.itemsize
    assert np.array_equal(wave[start:start + len(part)], part)
    return start, start + len(part)


def test_trim_keeps_the_speech_and_drops_digital_silence():
    wave = np.concatenate([np.zeros(2000, np.float32), tone(0.3), np.zeros(3000, np.float32)])
    start, stop = span(trim_silence(wave, TRIM), wave)
    # the whole word (2000-4400) is kept, and the cut lies within one frame (200 samples,
    # every 80) of its edges
    assert 2000 - 200 < start <= 2000 and 4400 <= stop < 4400 + 200


def test_trim_drops_quiet_room_sound_but_keeps_a_pause_inside_the_word():
    wave = noise(1.0, 3e-4)  # about -70 dBFS against a tone at -13.5 dBFS
    wave[2000:3600] += tone(0.2)
    wave[4400:5200] += tone(0.1, 880.0)  # a second syllable 0.1 s later
    start, stop = span(trim_silence(wave, TRIM), wave)
    assert 2000 - 200 < start <= 2000 and 5200 <= stop < 5200 + 200
    # the pause between the syllables (room sound) stays: only the ends are cut


def test_a_lower_threshold_cuts_more_and_a_clip_without_silence_is_whole():
    wave = np.concatenate([tone(0.1, amp=0.01), tone(0.3), tone(0.1, amp=0.01)])
    # the quiet parts are 29.5 dB below the loud one
    assert len(trim_silence(wave, FeatureParams(trim_db=40.0))) == len(wave)
    start, stop = span(trim_silence(wave, FeatureParams(trim_db=20.0)), wave)
    assert 800 - 200 < start <= 800 and 3200 <= stop < 3200 + 200
    full = tone(0.5)
    assert trim_silence(full, TRIM) is not None and len(trim_silence(full, TRIM)) == len(full)
    short = tone(0.01)  # shorter than one 25-ms frame: left as it is
    assert trim_silence(short, TRIM) is short


def test_off_changes_nothing():
    wave = np.concatenate([np.zeros(1000, np.float32), tone(0.3), noise(0.2, 1e-3)])
    params = FeatureParams()
    assert params.trim_db is None
    assert trim_silence(wave, params) is wave
    # the stored attributes are those of before trim_db existed, and such attributes (an
    # older cache or checkpoint) read back as untrimmed
    attrs = params.as_attrs()
    assert "trim_db" not in attrs
    assert FeatureParams.from_attrs(attrs).trim_db is None
    assert FeatureParams.from_attrs(attrs).as_attrs() == attrs
    trimmed = TRIM.as_attrs()
    assert trimmed["trim_db"] == 25.0 and FeatureParams.from_attrs(trimmed).trim_db == 25.0
    assert {k: v for k, v in trimmed.items() if k != "trim_db"} == attrs


def test_read_batch_trims_before_centring(tmp_path):
    import soundfile as sf

    wave = np.concatenate([np.zeros(3000, np.float32), tone(0.2), np.zeros(400, np.float32)])
    sf.write(tmp_path / "a.wav", wave, SR, subtype="PCM_16")
    read, _ = read_clip(tmp_path / "a.wav", SR)
    plain, _, spans = read_batch([tmp_path / "a.wav"], FeatureParams())
    assert np.array_equal(plain[0], fit_length(read, SR))
    assert tuple(spans[0]) == ((SR - len(read)) // 2, (SR - len(read)) // 2 + len(read))
    cut, _, spans = read_batch([tmp_path / "a.wav"], TRIM)
    kept = trim_silence(read, TRIM)
    assert len(kept) < len(read)
    assert np.array_equal(cut[0], fit_length(kept, SR))
    # the word is centred once its silence is gone
    nz = np.flatnonzero(cut[0])
    assert abs((nz[0] + nz[-1]) / 2 - SR / 2) < 120


@pytest.fixture(scope="module")
def trimmed_features(tiny_tts, tmp_path_factory):
    settings = settings_for("tts_digits", TINY_TTS, features={"trim_db": 25})
    out = tmp_path_factory.mktemp("trimmed")
    from pipeline.datasets import split_dataset

    split_dataset(tiny_tts, settings, out / "splits.tsv")
    compute_features(out / "splits.tsv", tiny_tts, settings, out / "features.h5",
                     out / "rejected.tsv")
    return out / "features.h5", out / "splits.tsv"


def test_feature_stage_records_the_trim_and_predict_featurises_identically(
        trimmed_features, tiny_features, tiny_tts, tmp_path):
    from test_predict import make_checkpoint

    from pipeline.predict import Predictor

    path, splits = trimmed_features
    attrs = read_attrs(path)
    assert attrs["trim_db"] == 25
    assert "trim_db" not in read_attrs(tiny_features[0])  # the untrimmed cache: as before
    test = load_split(path, "test")
    table = read_splits(splits)
    rel = table.set_index("clip").loc[test.clips[0], "path"]
    wave, _ = read_clip(clip_file(tiny_tts, rel), SR)
    params = FeatureParams.from_attrs(attrs)
    assert params.trim_db == 25
    expected = LogMel(params)(torch.from_numpy(fit_length(trim_silence(wave, params), SR))[None])
    assert torch.allclose(test.features[0], expected[0], atol=1e-5)
    # the same clips untrimmed: some differ (espeak's words have quiet edges)
    untrimmed = load_split(tiny_features[0], "test")
    assert untrimmed.clips == test.clips
    assert not torch.allclose(untrimmed.features, test.features, atol=1e-3)
    # a checkpoint carries the cache's attributes; predict trims as the feature stage did
    model = make_checkpoint(tmp_path / "model.pt",
                            feature_params={"modality": "audio", **describing_attrs(attrs)})
    predictor = Predictor(model)
    assert predictor.params == params
    with torch.inference_mode():
        seen = predictor.logmel(torch.from_numpy(predictor.model_input(wave))[None])
    assert torch.allclose(seen[0], test.features[0], atol=1e-5)


def test_cross_evaluation_refuses_a_different_trim(trimmed_features, tiny_features):
    trimmed, plain = read_attrs(trimmed_features[0]), read_attrs(tiny_features[0])

    def ckpt(attrs):
        return {"label_names": attrs["label_names"], "feature_params": describing_attrs(attrs)}

    check_compatible(ckpt(trimmed), trimmed, "trimmed")
    check_compatible(ckpt(plain), plain, "plain")
    with pytest.raises(ValueError, match="trim_db differs: model 25, plain None"):
        check_compatible(ckpt(trimmed), plain, "plain")
    with pytest.raises(ValueError, match="trim_db differs: model None, trimmed 25"):
        check_compatible(ckpt(plain), trimmed, "trimmed")


@pytest.mark.parametrize("value", [0, -10, "loud", [25]])
def test_config_refuses_a_bad_trim(value):
    with pytest.raises(ConfigError, match=r"config key features\.trim_db"):
        validate({"features": {"trim_db": value}})
    with pytest.raises(ConfigError, match=r"config key variants\.x\.features\.trim_db"):
        validate({"variants": {"x": {"dataset": "fsdd", "features": {"trim_db": value}}}})


def test_config_default_is_off_and_cli_strings_are_read():
    assert validate({})["features"]["trim_db"] is None
    assert validate({"features": {"trim_db": "25"}})["features"]["trim_db"] == 25
    config = validate({"fsdd": {"features": {"trim_db": 30}}})
    assert config["fsdd"]["features"]["trim_db"] == 30
