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

from pipeline.checkpoint import load_checkpoint
from pipeline.training import TrainSettings, choose_device, train_model

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
    # kept after the last epoch: a re-run whose model.pt was discarded needs no training
    assert torch.load(tmp_path / "resume.pt", weights_only=True)["epoch"] == 2
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
            "sys.argv[4], resume_every_s=0)")
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


def _start_training(path, settings, out, log):
    """A training job in its own process, as the rule's adapter runs it (log_to + train)."""
    import json

    code = ("import sys, json; from pipeline.logs import log_to; "
            "from pipeline.training import train_model\n"
            "with log_to(sys.argv[5], append=True):\n"
            "    train_model(sys.argv[1], 'conv1d', json.loads(sys.argv[2]), 3, sys.argv[3], "
            "sys.argv[4], resume_every_s=0)")
    return subprocess.Popen([sys.executable, "-c", code, str(path), json.dumps(settings),
                             str(out / "model.pt"), str(out / "history.csv"), str(log)],
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_for_epoch(proc, resume, epoch, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            if torch.load(resume, weights_only=True)["epoch"] >= epoch:
                return True
        except (EOFError, RuntimeError, FileNotFoundError, OSError):
            pass
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_state_and_exits_with_one_line(tiny_features, tmp_path, signum):
    """Ctrl-C (SIGINT to the process group) or SIGTERM: the job stops after the current
    batch with one line and status 128 + signal; the re-run continues and its log goes on."""
    path, settings = tiny_features
    s = _settings(settings, 8, spec_augment={"time_masks": 1}, time_shift_frames=2)
    reference = train_model(path, "conv1d", s, 3, tmp_path / "ref/model.pt",
                            tmp_path / "ref/history.csv")
    out, log = tmp_path / "stopped", tmp_path / "train.log"
    out.mkdir()
    proc = _start_training(path, s, out, log)
    assert _wait_for_epoch(proc, out / "resume.pt", 2), "training ended before the signal"
    sent = time.time()
    os.killpg(proc.pid, signum)
    _, stderr = proc.communicate(timeout=60)
    assert time.time() - sent < 30, "the job must stop after the current batch, not run on"
    assert proc.returncode == 128 + signum
    lines = [line for line in stderr.splitlines() if line.strip()]
    # the job's log lines, then exactly one line about the stop, and no traceback
    assert f"stopped by {signal.Signals(signum).name}" in lines[-1], stderr
    assert sum("stopped" in line or "interrupt" in line.lower() for line in lines) == 1
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert not (out / "model.pt").exists()
    kept = torch.load(out / "resume.pt", weights_only=True)["epoch"]
    assert 2 <= kept < 8

    from pipeline.logs import log_to

    with log_to(log, append=True):
        resumed = train_model(path, "conv1d", s, 3, out / "model.pt", out / "history.csv")
    assert _same_weights(reference["state_dict"], resumed["state_dict"])
    text = log.read_text()
    assert "stopped by" in text and f"resuming conv1d after epoch {kept} of 8" in text
    assert text.index("stopped by") < text.index("resuming")


def test_finished_job_rebuilds_its_model_without_training(tiny_features, tmp_path, caplog):
    """Snakemake may discard the outputs of a job that finished while it was being stopped;
    the re-run then rebuilds the same model.pt from resume.pt instead of training again."""
    path, settings = tiny_features
    s = _settings(settings, 2)
    first = train_model(path, "dense", s, 0, tmp_path / "model.pt", tmp_path / "h.csv")
    (tmp_path / "model.pt").unlink()
    (tmp_path / "h.csv").unlink()
    caplog.clear()
    with caplog.at_level("INFO", logger="pipeline.training"):
        again = train_model(path, "dense", s, 0, tmp_path / "model.pt", tmp_path / "h.csv")
    assert not [r for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert _same_weights(first["state_dict"], again["state_dict"])
    assert again["train_seconds"] == first["train_seconds"]


def test_unknown_training_key_fails_like_everywhere_else():
    with pytest.raises(ValueError, match=r"training: unknown parameters \['epoch'\]"):
        TrainSettings.from_dict({"epoch": 3})
    with pytest.raises(ValueError, match=r"training.noise: unknown parameters"):
        TrainSettings.from_dict({"noise": {"volumes": [0, 1]}})


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


def test_patience_stops_on_a_validation_plateau_and_is_recorded(tiny_features, tmp_path):
    path, settings = tiny_features
    # a learning rate this small cannot improve validation accuracy for long
    s = _settings(settings, 12, patience=2, learning_rate=1e-7)
    ckpt = train_model(path, "dense", s, 0, tmp_path / "model.pt", tmp_path / "h.csv")
    history = pd.read_csv(tmp_path / "h.csv")
    best = int(history["valid_accuracy"].idxmax()) + 1
    assert len(history) == best + 2 < 12
    assert ckpt["stopped_early"] and ckpt["training"]["patience"] == 2
    assert ckpt["epoch"] == best
    # a re-run (resume state kept) does not train on past the plateau
    again = train_model(path, "dense", s, 0, tmp_path / "model.pt", tmp_path / "h.csv")
    assert again["epochs_trained"] == len(history)


def test_device_batches_draw_exactly_as_a_shuffled_dataloader():
    """Batches replaced DataLoader: same batches, same generator state after each epoch, so
    CPU results and resume states of earlier versions stay valid."""
    from torch.utils.data import DataLoader, TensorDataset

    from pipeline.training import Batches

    x, y = torch.randn(103, 4, 7), torch.arange(103)
    old_gen, new_gen = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    old = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True, generator=old_gen)
    new = Batches(x, y, 16, new_gen, torch.device("cpu"))
    assert len(new) == len(old) == 7
    for _ in range(3):
        for (xa, ya), (xb, yb) in zip(old, new, strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert torch.equal(old_gen.get_state(), new_gen.get_state())


def test_training_on_an_evaluation_only_set_says_so(tiny_features, tmp_path):
    import h5py

    path, settings = tiny_features
    copy_path = tmp_path / "features.h5"
    copy_path.write_bytes(path.read_bytes())
    with h5py.File(copy_path, "a") as f:
        f.attrs["evaluation_only"] = True
    with pytest.raises(ValueError, match="evaluation-only test set"):
        train_model(copy_path, "dense", settings, 0, tmp_path / "m.pt", tmp_path / "h.csv")


def test_selection_by_loss_among_equal_accuracies():
    """accuracy_then_loss keeps the epoch of lowest validation loss among those of the
    highest accuracy, and early stopping counts from it; accuracy keeps the first."""
    from types import SimpleNamespace

    from pipeline.resume import ResumeState
    from pipeline.training import plateaued, record_epoch

    model = torch.nn.Linear(2, 2)
    trainer = SimpleNamespace(model=model, optimizer=torch.optim.Adam(model.parameters()))
    rows = [(0.90, 0.50), (1.00, 0.30), (1.00, 0.20), (1.00, 0.25), (1.00, 0.10), (1.00, 0.15)]
    best, stopped_after = {}, {}
    for selection in ("accuracy", "accuracy_then_loss"):
        state = ResumeState("run")
        for epoch, (acc, loss) in enumerate(rows, start=1):
            if plateaued(state, patience=2):
                break
            record_epoch(state, trainer, {"epoch": epoch, "valid_accuracy": acc,
                                          "valid_loss": loss, "train_loss": 0.0,
                                          "train_accuracy": 0.0, "learning_rate": 1e-3,
                                          "seconds": 1.0, "samples_per_second": 1.0},
                         len(rows), selection)
        best[selection], stopped_after[selection] = state.best["epoch"], state.epoch
    assert best == {"accuracy": 2, "accuracy_then_loss": 5}
    assert stopped_after == {"accuracy": 4, "accuracy_then_loss": 6}


def test_better_epoch_rules():
    from pipeline.training import better_epoch

    best = {"valid_accuracy": 0.9, "valid_loss": 0.30}
    tie_lower_loss = {"valid_accuracy": 0.9, "valid_loss": 0.20}
    assert not better_epoch(tie_lower_loss, best, "accuracy")
    assert better_epoch(tie_lower_loss, best, "accuracy_then_loss")
    worse_acc = {"valid_accuracy": 0.8, "valid_loss": 0.01}
    assert not better_epoch(worse_acc, best, "accuracy_then_loss")
    with pytest.raises(ValueError, match="selection"):
        TrainSettings.from_dict({"selection": "loss"})


def test_normalising_the_split_once_trains_exactly_as_per_batch(tiny_features, tmp_path,
                                                                 monkeypatch):
    """With nothing acting on the raw features, the train split is normalised once before
    training instead of every batch: the same weights and history, bit for bit."""
    from pipeline import training

    path, settings = tiny_features
    s = _settings(settings, 2, spec_augment={"time_masks": 1}, time_shift_frames=2)
    once = train_model(path, "conv1d", s, 3, tmp_path / "a/model.pt", tmp_path / "a/h.csv")
    monkeypatch.setattr(training.Augment, "normalises_first", property(lambda self: False))
    each = train_model(path, "conv1d", s, 3, tmp_path / "b/model.pt", tmp_path / "b/h.csv")
    assert _same_weights(once["state_dict"], each["state_dict"])
    ha, hb = (pd.read_csv(tmp_path / f"{x}/h.csv").drop(columns=TIMING) for x in "ab")
    pd.testing.assert_frame_equal(ha, hb)
