"""Feature cache: HDF5 schema and attributes, train-only normalisation, bad audio handling."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
import torchaudio

from conftest import write_tone
from pipeline.config import settings_for, validate
from pipeline.features import BadAudioError, compute_features, load_split, read_attrs
from pipeline.modalities.audio import FeatureParams, LogMel, read_clip


def test_hdf5_schema_and_attributes(tiny_features):
    path, settings = tiny_features
    attrs = read_attrs(path)
    assert attrs["modality"] == "audio"
    assert attrs["label_names"] == [str(d) for d in range(10)]
    assert attrs["sample_rate"] == 8000 and attrs["n_mels"] == 40
    assert attrs["win_length"] == 200 and attrs["hop_length"] == 80 and attrs["n_fft"] == 256
    assert attrs["window_ms"] == 25 and attrs["hop_ms"] == 10 and attrs["clip_seconds"] == 1.0
    assert attrs["log_offset"] == pytest.approx(1e-6) and attrs["feature_version"] == 1
    with h5py.File(path) as h5:
        for split in ("train", "valid", "test"):
            g = h5[split]
            n = g["labels"].shape[0]
            assert g["features"].shape == (n, 40, attrs["n_frames"])
            assert g["features"].dtype == np.float32 and g["features"].chunks is not None
            assert g["clip"].shape == g["speaker"].shape == g["path"].shape == (n,)
        assert h5["train"]["labels"].shape[0] == 240 - 4 * 20  # 12 voices x 20 clips, 2+2 held out


def test_features_match_a_direct_torchaudio_computation(tiny_features, tiny_tts):
    path, _ = tiny_features
    test = load_split(path, "test")
    with h5py.File(path) as h5:
        rel = h5["test"]["path"][0].decode()
    wave, rate = sf.read(tiny_tts / rel, dtype="float32")
    params = FeatureParams()
    padded = np.zeros(8000, dtype=np.float32)
    left = (8000 - len(wave)) // 2
    padded[left:left + len(wave)] = wave
    mel = torchaudio.transforms.MelSpectrogram(  # torchaudio itself, not the pipeline's
        sample_rate=8000, n_fft=256, win_length=200, hop_length=80, n_mels=40, center=False,
        power=2.0)
    expected = torch.log10(mel(torch.from_numpy(padded)[None]) + params.log_offset)[0]
    assert torch.allclose(test.features[0], expected, atol=1e-4)
    assert torch.allclose(LogMel(params)(torch.from_numpy(padded)[None])[0], expected,
                          atol=1e-4)


@pytest.mark.parametrize("subtype,channels", [("PCM_16", 1), ("PCM_16", 2), ("PCM_24", 1),
                                              ("FLOAT", 1), ("PCM_U8", 1)])
def test_fast_wav_reading_equals_soundfile(tmp_path, monkeypatch, subtype, channels):
    """Plain 16-bit WAVs are read with the standard library's `wave`, everything else with
    soundfile: both paths give the same samples."""
    from pipeline.modalities import audio

    rng = np.random.default_rng(0)
    data = rng.uniform(-0.5, 0.5, (4000, channels)).astype(np.float32)
    sf.write(tmp_path / "x.wav", data, 16000, subtype=subtype)
    fast, _ = audio.read_clip(tmp_path / "x.wav", 8000)
    monkeypatch.setattr(audio, "FAST_WAV", False)
    slow, _ = audio.read_clip(tmp_path / "x.wav", 8000)
    np.testing.assert_array_equal(fast, slow)


def test_truncated_wav_falls_back_to_soundfile(tmp_path):
    from pipeline.modalities import audio

    sf.write(tmp_path / "x.wav", np.full(800, 0.1), 8000, subtype="PCM_16")
    raw = (tmp_path / "x.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(raw[:-100])
    assert audio._read_pcm16_wav(tmp_path / "cut.wav") is None
    wave, reason = audio.read_clip(tmp_path / "cut.wav", 8000)
    assert (wave is not None and len(wave) == 750) or reason.startswith("unreadable")


def test_normalisation_comes_from_train_only(tiny_features):
    path, _ = tiny_features
    attrs = read_attrs(path)
    train = load_split(path, "train").features.double()
    assert np.allclose(attrs["norm_mean"], train.mean(dim=(0, 2)).numpy(), atol=1e-4)
    assert np.allclose(attrs["norm_std"], train.std(dim=(0, 2), unbiased=False).numpy(),
                       atol=1e-3)
    everything = torch.cat([load_split(path, s).features for s in ("train", "valid", "test")])
    assert not np.allclose(attrs["norm_mean"], everything.double().mean(dim=(0, 2)).numpy(),
                           atol=1e-6)


def test_other_rates_are_resampled_and_stereo_mixed(tmp_path):
    write_tone(tmp_path / "a16k.wav", 440, rate=16000, channels=2)
    wave, reason = read_clip(tmp_path / "a16k.wav", 8000)
    assert reason == "" and wave.ndim == 1 and len(wave) == 4000


def _bad_dataset(tmp_path):
    root = tmp_path / "raw"
    rows = []
    for i, speaker in enumerate(["a", "b", "c"]):
        for digit in range(2):
            name = f"recordings/{digit}_{speaker}_{i}.wav"
            write_tone(root / name, 300 + 100 * digit)
            rows.append({"clip": f"{digit}_{speaker}_{i}", "path": name, "label": str(digit),
                         "speaker": speaker, "split": ["train", "valid", "test"][i]})
    (root / "recordings/9_x_0.wav").write_bytes(b"RIFF not really a wav")
    sf.write(root / "recordings/8_x_0.wav", np.zeros(800), 8000)
    sf.write(root / "recordings/7_x_0.wav", np.zeros(0), 8000)
    sf.write(root / "recordings/6_x_0.wav", np.full(800, np.nan), 8000, subtype="FLOAT")
    for digit in (9, 8, 7, 6):  # unreadable, silent, empty, NaN
        rows.append({"clip": f"{digit}_x_0", "path": f"recordings/{digit}_x_0.wav",
                     "label": str(digit), "speaker": "x", "split": "train"})
    pd.DataFrame(rows).to_csv(tmp_path / "splits.tsv", sep="\t", index=False)
    return root


def test_bad_audio_fails_naming_every_file(tmp_path):
    root = _bad_dataset(tmp_path)
    with pytest.raises(BadAudioError) as err:
        compute_features(tmp_path / "splits.tsv", root, settings_for("fsdd"),
                         tmp_path / "f.h5", tmp_path / "rejected.tsv")
    message = str(err.value)
    for digit, word in ((9, "unreadable"), (8, "silent"), (7, "empty"), (6, "NaN")):
        assert f"recordings/{digit}_x_0.wav: " in message and word in message
    # the advice is valid config, globally and per dataset
    assert "--config on_bad_audio=skip" in message
    assert validate({"on_bad_audio": "skip"})["on_bad_audio"] == "skip"
    assert settings_for("fsdd", {"on_bad_audio": "skip"})["on_bad_audio"] == "skip"
    assert not (tmp_path / "f.h5").exists() and list(tmp_path.glob(".f.h5*")) == []


def test_bad_audio_skipped_and_listed(tmp_path):
    root = _bad_dataset(tmp_path)
    counts = compute_features(tmp_path / "splits.tsv", root,
                              settings_for("fsdd", {"on_bad_audio": "skip"}),
                              tmp_path / "f.h5", tmp_path / "rejected.tsv")
    assert counts == {"train": 2, "valid": 2, "test": 2}
    rejected = pd.read_csv(tmp_path / "rejected.tsv", sep="\t")
    assert sorted(rejected["clip"]) == ["6_x_0", "7_x_0", "8_x_0", "9_x_0"]
    assert set(rejected["split"]) == {"train"}
    with h5py.File(tmp_path / "f.h5") as h5:
        assert "9_x_0" not in [c.decode() for c in h5["train"]["clip"][:]]
        assert np.isfinite(h5["train"]["features"][:]).all()
        assert json.loads(h5.attrs["label_names"])[0] == "0"
