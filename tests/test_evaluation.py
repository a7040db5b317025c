"""Evaluation: metrics against hand-computed values, confusion orientation, tables, predict."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import write_tone
from pipeline.evaluation import classification_metrics, confusion_table, evaluate_model
from pipeline.predict import main as predict_main
from pipeline.report import accuracy_table, collect_metrics, to_markdown
from pipeline.training import train_model

NAMES = ["a", "b", "c"]


def test_metrics_by_hand_including_a_class_never_predicted():
    y_true = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    y_pred = np.array([0, 0, 1, 1, 1, 0, 1, 0])  # class c is never predicted
    m = classification_metrics(y_true, y_pred, NAMES)
    assert m["test_accuracy"] == pytest.approx(4 / 8)
    assert m["per_class"]["a"] == pytest.approx(
        {"precision": 2 / 4, "recall": 2 / 3, "f1": 2 * (1 / 2 * 2 / 3) / (1 / 2 + 2 / 3),
         "support": 3})
    assert m["per_class"]["b"]["precision"] == pytest.approx(2 / 4)  # b predicted 4 times
    assert m["per_class"]["b"]["recall"] == 1.0
    assert m["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 3}
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    f1_a, f1_b = 2 * (0.5 * 2 / 3) / (0.5 + 2 / 3), 2 * (0.5 * 1) / (0.5 + 1)
    assert m["macro_f1"] == pytest.approx((f1_a + f1_b + 0) / 3)
    low, high = m["accuracy_ci95"]  # Wilson interval for 4/8
    assert low == pytest.approx(0.2152, abs=1e-3) and high == pytest.approx(0.7848, abs=1e-3)


def test_confusion_rows_are_true_columns_predicted():
    table = confusion_table(np.array([0, 0, 2]), np.array([1, 1, 2]), NAMES)
    assert table.loc["a", "b"] == 2 and table.loc["b", "a"] == 0 and table.loc["c", "c"] == 1
    assert table.index.name == "true_label"


def _metrics(dataset, model, seed, acc, test_dataset=None, params=100):
    return {"dataset": dataset, "test_dataset": test_dataset or dataset, "model": model,
            "seed": seed, "test_accuracy": acc, "accuracy_ci95": [acc - 0.05, acc + 0.05],
            "balanced_accuracy": acc, "macro_f1": acc, "n_test": 100, "parameters": params,
            "receptive_field": {"frames": 10, "ms": 115.0}, "best_epoch": 3,
            "train_seconds": 2.0}


def test_table_with_one_and_several_seeds(tmp_path):
    paths = []
    for i, m in enumerate([_metrics("fsdd", "cnn2d", 0, 0.9), _metrics("fsdd", "cnn2d", 1, 0.8),
                           _metrics("fsdd", "dense", 0, 0.7),
                           _metrics("tts", "dense", 0, 0.5, test_dataset="fsdd")]):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_text(json.dumps(m))
    table = accuracy_table(collect_metrics(paths), order=["fsdd", "tts"])
    assert list(table["model"]) == ["dense", "cnn2d", "dense"]
    cnn = table[table["model"] == "cnn2d"].iloc[0]
    assert cnn["test_accuracy"] == pytest.approx(0.85) and cnn["n_seeds"] == 2
    assert cnn["test_accuracy_std"] == pytest.approx(np.std([0.9, 0.8], ddof=1))
    dense = table.iloc[0]
    assert dense["n_seeds"] == 1 and dense["test_accuracy_std"] == 0.0
    assert list(table["evaluation"]) == ["same", "same", "cross"]
    md = to_markdown(table)
    assert "0.8500 ± 0.0707 (n=2)" in md and "0.7000 [0.650, 0.750]" in md


def test_folds_pool_into_one_row_with_mean_sd_and_n(tmp_path):
    """fsdd_loso: 6 folds x 2 seeds give one row, n = 12, sd over all of them; the per-run
    table keeps every fold with its test speaker."""
    paths, accs = [], []
    speakers = ["george", "jackson", "lucas", "nicolas", "theo", "yweweler"]
    for fold, speaker in enumerate(speakers):
        for seed in (0, 1):
            acc = 0.8 + 0.02 * fold + 0.01 * seed
            accs.append(acc)
            m = {**_metrics(f"fsdd_loso/fold-{fold}", "cnn2d", seed, acc),
                 "per_speaker": {speaker: {"accuracy": acc, "n": 500}}}
            paths.append(tmp_path / f"{fold}-{seed}.json")
            paths[-1].write_text(json.dumps(m))
    per_run = collect_metrics(paths)
    table = accuracy_table(per_run, order=["fsdd_loso"])
    assert len(table) == 1
    row = table.iloc[0]
    assert row["dataset"] == "fsdd_loso" and row["n"] == 12 and row["n_folds"] == 6
    assert row["n_seeds"] == 2
    assert row["test_accuracy"] == pytest.approx(np.mean(accs))
    assert row["test_accuracy_std"] == pytest.approx(np.std(accs, ddof=1))
    assert np.isnan(row["ci_low"])  # a Wilson interval of one run does not describe n = 12
    assert sorted(per_run["test_speakers"]) == sorted(speakers * 2)
    assert f"± {np.std(accs, ddof=1):.4f} (n=12)" in to_markdown(table)


@pytest.fixture(scope="module")
def trained(tiny_features, tmp_path_factory):
    path, settings = tiny_features
    out = tmp_path_factory.mktemp("trained")
    s = {**settings, "training": {**settings["training"], "epochs": 4}}
    train_model(path, "cnn2d", s, 0, out / "model.pt", out / "history.csv")
    return out / "model.pt", path


def test_evaluate_model_writes_everything(trained, tmp_path):
    model, features = trained
    m = evaluate_model(model, features, tmp_path, config={"k": 1})
    for name in ("metrics.json", "predictions.csv", "confusion.csv", "confusion.png"):
        assert (tmp_path / name).stat().st_size > 0
    saved = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("test_accuracy", "balanced_accuracy", "macro_f1", "per_class", "accuracy_ci95",
                "parameters", "receptive_field", "epochs", "train_seconds", "train_device",
                "seed", "config", "versions", "git_commit"):
        assert key in saved
    assert saved["versions"]["torch"].startswith("2.14")
    predictions = pd.read_csv(tmp_path / "predictions.csv", dtype={"true_label": str,
                                                                   "predicted_label": str})
    assert (predictions["true_label"] == predictions["predicted_label"]).mean() == \
        pytest.approx(m["test_accuracy"])
    assert np.allclose(predictions[[f"p_{d}" for d in range(10)]].sum(axis=1), 1, atol=1e-4)
    confusion = pd.read_csv(tmp_path / "confusion.csv", index_col=0)
    assert confusion.to_numpy().sum() == m["n_test"]
    assert np.trace(confusion.to_numpy()) == m["n_correct"]


def test_predict_on_8k_16k_and_a_broken_file(trained, tmp_path, capsys, tiny_tts):
    model, _ = trained
    clip = sorted((tiny_tts / "recordings").glob("3_*.wav"))[0]
    import soundfile as sf
    import torch
    import torchaudio

    wave, rate = sf.read(clip, dtype="float32")
    up = torchaudio.functional.resample(torch.from_numpy(wave), rate, 16000).numpy()
    sf.write(tmp_path / "16k.wav", up, 16000)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00garbage")
    tone = write_tone(tmp_path / "tone.wav", 500)
    code = predict_main(["--model", str(model), "--top", "3", str(clip), str(broken),
                         str(tmp_path / "16k.wav"), str(tone)])
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert code == 1  # one file failed, the others were classified
    assert len(lines) == 3
    assert f"{broken}\terror: unreadable" in err
    first = lines[0].split("\t")
    assert first[0] == str(clip) and len(first) == 7 and first[1] in [str(d) for d in range(10)]
    assert 0 < float(first[2]) <= 1 and float(first[2]) >= float(first[4])
    top_8k, top_16k = lines[0].split("\t")[1], lines[1].split("\t")[1]
    assert top_8k == top_16k  # the same clip at another rate gets the same answer
