"""Noise from another dataset at a random SNR (issue 12): Speech Commands' background noise
mixed into FSDD training, checked where the user would meet a mistake."""

from __future__ import annotations

import copy
import math
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import torch

from conftest import ROOT
from pipeline.config import ConfigError, validate
from pipeline.training import Augment, TrainSettings, train_model

TIMING = ["seconds", "samples_per_second"]


def test_snr_sets_the_clip_to_noise_power_ratio():
    """Clip power 1e-2 and noise power 1e-3 everywhere at 10 dB SNR: the noise is mixed at
    its own level (v = 1), so every bin holds 1.1e-2."""
    ts = TrainSettings.from_dict({"noise": {"probability": 1.0, "snr_db": [10.0, 10.0]}})
    bank = torch.full((3, 4, 6), -3.0)
    augment = Augment(ts, torch.Generator().manual_seed(0), torch.zeros(4), torch.ones(4), bank)
    out = augment(torch.full((5, 4, 6), -2.0))
    assert torch.allclose(out, torch.full_like(out, math.log10(1.1e-2)), atol=1e-5)
    quiet = Augment(TrainSettings.from_dict({"noise": {"probability": 1.0,
                                                       "snr_db": [30.0, 30.0]}}),
                    torch.Generator().manual_seed(0), torch.zeros(4), torch.ones(4), bank)
    assert torch.allclose(quiet(torch.full((5, 4, 6), -2.0)),
                          torch.full((5, 4, 6), math.log10(1.001e-2)), atol=1e-5)


def test_snr_range_is_drawn_per_example_and_seeded():
    ts = TrainSettings.from_dict({"noise": {"probability": 1.0, "snr_db": [0.0, 20.0]}})
    bank = torch.randn(7, 4, 6) - 4
    raw = torch.randn(8, 4, 6) - 2

    def run(seed):
        return Augment(ts, torch.Generator().manual_seed(seed), torch.zeros(4), torch.ones(4),
                       bank)(raw.clone())

    a, b, c = run(1), run(1), run(2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    gain = (a - raw).mean((1, 2))  # louder noise, larger lift: not one level for all
    assert gain.min() > 0 and gain.max() > 1.5 * gain.min()


def _noisy(settings, source="elsewhere"):
    s = copy.deepcopy(settings)
    s["training"].update(epochs=2, noise={"probability": 1.0, "snr_db": [0.0, 10.0],
                                          "label": "9", "source": source})
    return s


def test_training_mixes_noise_from_another_feature_file(tiny_features, tmp_path):
    """The noise class of another file (here: a copy of the tiny set, class 9) changes the
    training, reproducibly; without the file the job says what to pass."""
    path, settings = tiny_features
    other = shutil.copy(path, tmp_path / "noise.h5")
    plain = copy.deepcopy(settings)
    plain["training"].update(epochs=2)
    train_model(path, "dense", plain, 0, tmp_path / "p/model.pt", tmp_path / "p/h.csv")
    for run in ("a", "b"):
        train_model(path, "dense", _noisy(settings), 0, tmp_path / f"{run}/model.pt",
                    tmp_path / f"{run}/h.csv", noise_features=other)
    p, a, b = (pd.read_csv(tmp_path / f"{r}/h.csv").drop(columns=TIMING) for r in "pab")
    pd.testing.assert_frame_equal(a, b)
    assert not p["train_loss"].equals(a["train_loss"])
    with pytest.raises(ValueError, match="noise_features"):
        train_model(path, "dense", _noisy(settings), 0, tmp_path / "c/model.pt",
                    tmp_path / "c/h.csv")


def test_noise_source_with_other_features_is_refused(tiny_features, tiny_tts, tmp_path):
    from conftest import TINY_TTS
    from pipeline.config import settings_for
    from pipeline.datasets import split_dataset
    from pipeline.features import compute_features

    path, settings = tiny_features
    coarse = settings_for("tts_digits", TINY_TTS, features={"n_mels": 20})
    split_dataset(tiny_tts, coarse, tmp_path / "splits.tsv")
    compute_features(tmp_path / "splits.tsv", tiny_tts, coarse, tmp_path / "noise.h5",
                     tmp_path / "rejected.tsv")
    with pytest.raises(ValueError, match="n_mels 20 vs 40"):
        train_model(path, "dense", _noisy(settings), 0, tmp_path / "m/model.pt",
                    tmp_path / "m/h.csv", noise_features=tmp_path / "noise.h5")
    with pytest.raises(ValueError, match="no class 'silence'"):
        s = _noisy(settings)
        s["training"]["noise"]["label"] = "silence"
        train_model(path, "dense", s, 0, tmp_path / "m/model.pt", tmp_path / "m/h.csv",
                    noise_features=path)


def _config(**training):
    import yaml

    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    raw["datasets"] = ["fsdd"]
    raw.setdefault("fsdd", {})["training"] = {"noise": {"probability": 0.5, **training}}
    return raw


@pytest.mark.parametrize("source, message", [
    ("nowhere", "unknown dataset 'nowhere'"),
    ("sc_digits_sample", "no single train split"),  # evaluation-only
    ("fsdd_loso", "no single train split"),  # folds
])
def test_config_refuses_a_noise_source_without_a_train_split(source, message):
    with pytest.raises(ConfigError, match=message):
        validate(_config(source=source))
    validate(_config(source="sc_sample_8k", snr_db=[0, 20]))


def test_workflow_builds_the_noise_source_first(tmp_path):
    """A dry run: FSDD's training job takes the noise source's features as an input."""
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path),
         "--configfile", str(ROOT / "config.yaml"), "--cores", "1", "-n", "--config",
         "datasets=[fsdd_trim_noise]", "models=[dense]"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    train = out[out.index("rule train_model:"):]
    assert "results/sc_sample_8k/features.h5" in train.split("output:")[0]
