"""The whole DAG through Snakemake on a tiny offline config, then the HTML report."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys

import pandas as pd
import pytest

from conftest import ROOT, TINY_TTS

TINY = [
    "datasets=[tts_digits]",
    # tts_digits' own training block (config.yaml: 15 epochs) wins over the global one
    "tts_digits={" + ", ".join(f"{k}: {v}".replace("'", "") for k, v in TINY_TTS.items())
    + ", training: {epochs: 2}}",
    "training={epochs: 2, batch_size: 32}",
]


def snakemake(workdir, *args, check=True):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir),
           "--configfile", str(ROOT / "config.yaml"), "--cores", "2", "--config", *TINY, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("wf")
    snakemake(workdir)
    return workdir


@pytest.mark.slow
def test_default_dag_produces_every_output(run):
    for model in ("dense", "conv1d", "cnn2d"):
        seed_dir = run / f"results/tts_digits/{model}/seed-0"
        for name in ("model.pt", "history.csv", "metrics.json", "predictions.csv",
                     "confusion.csv", "confusion.png"):
            assert (seed_dir / name).stat().st_size > 0, name
        metrics = json.loads((seed_dir / "metrics.json").read_text())
        assert metrics["model"] == model and metrics["epochs"] == 2
        assert metrics["config"]["training"]["epochs"] == 2
        assert (run / f"results/logs/train_model/tts_digits/{model}/seed-0.log").exists()
        assert (run / f"results/benchmarks/train_model/tts_digits/{model}/seed-0.tsv").exists()
    table = pd.read_csv(run / "results/summary/accuracy.csv")
    assert list(table["model"]) == ["dense", "conv1d", "cnn2d"]
    assert {"dataset", "model", "test_accuracy", "test_accuracy_std", "n_seeds", "parameters",
            "receptive_field_frames", "train_seconds"} <= set(table.columns)
    assert (run / "results/summary/learning_curves/tts_digits.png").exists()
    assert (run / "results/summary/accuracy_vs_parameters.png").exists()
    assert (run / "results/tts_digits/rejected.tsv").exists()


@pytest.mark.slow
def test_rerun_has_nothing_to_do(run):
    proc = snakemake(run, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_report_holds_table_and_figures(run):
    snakemake(run, "--report", "report.html")
    html = (run / "report.html").read_text()
    for name in ("accuracy.html", "accuracy.csv", "settings.html", "accuracy_vs_parameters.png",
                 "tts_digits.png", "confusion.png", "Confusion matrices", "Learning curves"):
        assert name in html, name
    # The tables' content is embedded (base64 data URIs), not linked: the rounded table that
    # the report shows, and the full-precision CSV to download.
    blobs = re.findall(r"data:text/csv;[^,]*base64,([A-Za-z0-9+/=]+)", html)
    assert any(b"test_accuracy" in base64.b64decode(b) for b in blobs)
    tables = re.findall(r"data:text/html;[^,]*base64,([A-Za-z0-9+/=]+)", html)
    assert any(b'<table class="results-table accuracy">' in base64.b64decode(t) for t in tables)
    # ... and the overview page, which the report opens on, holds the accuracy table itself
    # (tests/test_report.py reads it in a browser).
    assert 'results-table accuracy\\">' in html
    pngs = re.findall(r"data:image/png;[^,]*base64,([A-Za-z0-9+/=]+)", html)
    assert len(pngs) >= 5  # 3 confusion matrices, learning curves, accuracy vs parameters
    assert all(base64.b64decode(p)[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
