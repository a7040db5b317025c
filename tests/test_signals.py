"""The signal modality end to end on the WISDM fixture: windows cached as [N, channels,
samples] with per-channel train-only normalisation, then the three families (the lecture's
per-time-step dense net, the 1D conv net, the 2D CNN on per-channel spectrograms) through
training and evaluation, with per-subject accuracy."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from fixtures.wisdm import build

from pipeline.config import dataset_settings, validate
from pipeline.datasets import acquire_dataset, split_dataset
from pipeline.evaluation import evaluate_model
from pipeline.features import compute_features, load_split, read_attrs
from pipeline.training import train_model

HAR_MODELS = {"dense": {"input": "timestep", "hidden": [100, 100, 100], "dropout": 0.0},
              "cnn2d": {"stft_window": 16, "stft_hop": 2}}


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    fx = build(tmp_path_factory.mktemp("wisdm_fx"))
    out = tmp_path_factory.mktemp("wisdm_run")
    config = validate({"datasets": ["wisdm"], "wisdm": {**fx.settings,
                                                        "model_params": HAR_MODELS},
                       "training": {"epochs": 2, "batch_size": 16}})
    settings = dataset_settings(config, "wisdm")
    acquire_dataset(out / "raw", settings, mirror=str(fx.mirror))
    split_dataset(out / "raw", settings, out / "splits.tsv")
    compute_features(out / "splits.tsv", out / "raw", settings, out / "features.h5",
                     out / "rejected.tsv")
    return out, settings


def test_windows_are_cached_with_their_schema(cached):
    out, _ = cached
    attrs = read_attrs(out / "features.h5")
    assert attrs["modality"] == "signal" and attrs["sample_rate"] == 20
    assert len(json.loads(attrs["channels"])) == 3
    train = load_split(out / "features.h5", "train")
    assert tuple(train.features.shape[1:]) == (3, 80)
    x = train.features.numpy().astype(np.float64)
    mean, std = x.mean(axis=(0, 2)), x.std(axis=(0, 2))
    np.testing.assert_allclose(attrs["norm_mean"], mean, rtol=1e-4, atol=1e-4)
    floored = np.maximum(std, 0.01 * std.max())  # the documented floor of the cache
    np.testing.assert_allclose(attrs["norm_std"], floored, rtol=1e-3, atol=1e-4)
    with h5py.File(out / "features.h5") as h5:
        speakers = {s.decode() for s in h5["test"]["speaker"][:]}
    assert speakers and not speakers & set(train.speakers)


@pytest.mark.parametrize("family", ["dense", "conv1d", "cnn2d"])
def test_each_family_trains_and_evaluates_on_signals(cached, family, tmp_path):
    out, settings = cached
    ckpt = train_model(out / "features.h5", family, settings, 0, tmp_path / "model.pt",
                       tmp_path / "history.csv")
    assert ckpt["input_shape"] == [3, 80] and ckpt["feature_params"]["modality"] == "signal"
    rf = ckpt["receptive_field"]
    assert rf["ms"] == pytest.approx((rf["frames"] - 1) * 50 + 50)  # 20 Hz: 50 ms a step
    metrics = evaluate_model(tmp_path / "model.pt", out / "features.h5", tmp_path / "eval")
    assert 0 <= metrics["test_accuracy"] <= 1
    per_speaker = metrics["per_speaker"]
    assert set(per_speaker) == set(load_split(out / "features.h5", "test").speakers)
    assert sum(v["n"] for v in per_speaker.values()) == metrics["n_test"]
