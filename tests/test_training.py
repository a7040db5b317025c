"""Training: reproducible with a seed, resumable after a kill, self-describing checkpoints."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from pipeline.training import choose_device, load_checkpoint, train_model

TIMING = ["seconds", "samples_per_second"]


def _settings(settings, epochs=3, **training):
    s = copy.deepcopy(settings)
    s["training"].update(epochs=epochs, **training)
    return s


def _same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_result(tiny_features, tmp_path):
    path, settings = tiny_features
    s = _settings(settings, spec_augment={"time_masks": 1, "freq_masks": 1},
                  time_shift_frames=3)
    a = train_model(path, "dense", s, 7, tmp_path / "a/model.pt", tmp_path / "a/h.csv")
    b = train_model(path, "dense", s, 7, tmp_path / "b/model.pt", tmp_path / "b/h.csv")
    c = train_model(path, "dense", s, 8, tmp_path / "c/model.pt", tmp_path / "c/h.csv")
    assert _same_weights(a["state_dict"], b["state_dict"])
    assert not _same_weights(a["state_dict"], c["state_dict"])
    ha, hb = (pd.read_csv(tmp_path / f"{x}/h.csv").drop(columns=TIMING) for x in "ab")
    pd.testing.assert_frame_equal(ha, hb)


def test_checkpoint_describes_itself_and_loads_weights_only(tiny_features, tmp_path):
    path, settings = tiny_features
    train_model(path, "cnn2d", _settings(settings, 2), 0, tmp_path / "model.pt",
                tmp_path / "history.csv")
    model, ckpt = load_checkpoint(tmp_path / "model.pt")
    assert ckpt["model"] == "cnn2d" and ckpt["label_names"] == [str(d) for d in range(10)]
    assert ckpt["model_config"]["filters"] == [12, 24, 48, 48, 48]
    assert ckpt["feature_params"]["n_mels"] == 40 and ckpt["feature_params"]["modality"] == "audio"
    assert ckpt["normalization"]["mean"].shape == (40,)
    assert 1 <= ckpt["epoch"] <= 2 and ckpt["epochs_trained"] == 2
    assert "state" in ckpt["optimizer"] and ckpt["receptive_field"]["frames"] > 1
    assert ckpt["receptive_field"]["ms"] > 25
    history = pd.read_csv(tmp_path / "history.csv")
    assert list(history.columns) == ["epoch", "train_loss", "train_accuracy", "valid_loss",
                                     "valid_accuracy", "learning_rate", "seconds",
                                     "samples_per_second"]
    assert ckpt["valid_accuracy"] == history["valid_accuracy"].max()
    assert not (tmp_path / "resume.pt").exists()
    assert model(torch.zeros(1, *ckpt["input_shape"])).shape == (1, 10)


def test_learning_rate_drops_after_the_set_epoch(tiny_features, tmp_path):
    path, settings = tiny_features
    train_model(path, "dense", _settings(settings, 4, lr_drop_epoch=2, learning_rate=1e-3), 0,
                tmp_path / "m.pt", tmp_path / "h.csv")
    lr = pd.read_csv(tmp_path / "h.csv")["learning_rate"].tolist()
    assert lr == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4])


def test_resume_after_kill_gives_the_uninterrupted_result(tiny_features, tmp_path):
    path, settings = tiny_features
    s = _settings(settings, 8, spec_augment={"time_masks": 1}, time_shift_frames=2)
    reference = train_model(path, "conv1d", s, 3, tmp_path / "ref/model.pt",
                            tmp_path / "ref/history.csv")

    out = tmp_path / "killed"
    code = ("import sys, json; from pipeline.training import train_model; "
            "train_model(sys.argv[1], 'conv1d', json.loads(sys.argv[2]), 3, sys.argv[3], "
            "sys.argv[4])")
    import json

    proc = subprocess.Popen([sys.executable, "-c", code, str(path), json.dumps(s),
                             str(out / "model.pt"), str(out / "history.csv")],
                            stderr=subprocess.DEVNULL, start_new_session=True)
    resume = out / "resume.pt"
    deadline = time.time() + 300
    epoch = 0
    while time.time() < deadline and proc.poll() is None:
        if resume.exists():
            try:
                epoch = torch.load(resume, weights_only=True)["epoch"]
            except (EOFError, RuntimeError, FileNotFoundError):
                epoch = 0
            if epoch >= 2:
                os.killpg(proc.pid, signal.SIGKILL)
                break
        time.sleep(0.05)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed"
    assert not (out / "model.pt").exists() and resume.exists()

    resumed = train_model(path, "conv1d", s, 3, out / "model.pt", out / "history.csv")
    assert _same_weights(reference["state_dict"], resumed["state_dict"])
    h_ref = pd.read_csv(tmp_path / "ref/history.csv").drop(columns=TIMING)
    h_res = pd.read_csv(out / "history.csv").drop(columns=TIMING)
    pd.testing.assert_frame_equal(h_ref, h_res)
    assert not resume.exists()


def test_resume_state_of_other_settings_is_ignored(tiny_features, tmp_path):
    path, settings = tiny_features
    out = tmp_path / "m"
    out.mkdir()
    torch.save({"run_id": "something else", "epoch": 5}, out / "resume.pt")
    ckpt = train_model(path, "dense", _settings(settings, 2), 0, out / "model.pt",
                       out / "h.csv")
    assert ckpt["epochs_trained"] == 2


def test_device_choice():
    assert choose_device("cpu").type == "cpu"
    expected = "cpu" if not torch.accelerator.is_available() else \
        torch.accelerator.current_accelerator().type
    assert choose_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="not available"):
            choose_device("cuda")
