"""What the settings sweeps share: train one run and score it, and run many side by side."""

from __future__ import annotations

import logging
import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.evaluation import evaluate_model
from pipeline.training import train_model


def train_and_score(features: str, settings: dict, seed: int, threads: int, model: str,
                    **labels: Any) -> dict:
    """Train, score the selected checkpoint on the test split; a row with `labels` first."""
    logging.basicConfig(level=logging.WARNING)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = train_model(features, model, settings, seed, Path(tmp) / "model.pt",
                           Path(tmp) / "history.csv", threads=threads)
        metrics = evaluate_model(Path(tmp) / "model.pt", features, Path(tmp) / "eval",
                                 threads=threads)
    return {**labels, "model": model, "seed": seed, "best_epoch": ckpt["epoch"],
            "epochs_trained": ckpt["epochs_trained"],
            "valid_accuracy": round(ckpt["valid_accuracy"], 4),
            "test_accuracy": round(metrics["test_accuracy"], 4),
            "device": ckpt.get("device", ""), "wall_s": round(time.monotonic() - t0, 1)}


def run_sweep(jobs: list[dict], workers: int, out_csv: Path, by: list[str]) -> None:
    """Every job (train_and_score's arguments), `workers` at a time in submission order (a GPU
    takes them side by side); rows go to `out_csv` as they finish, mean/sd/count per `by` to
    `<out_csv stem>_summary.csv` and the screen."""
    rows = []
    context = multiprocessing.get_context("spawn")  # CUDA in the workers
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        for done in as_completed([pool.submit(train_and_score, **job) for job in jobs]):
            rows.append(done.result())
            print(rows[-1], flush=True)
            pd.DataFrame(rows).to_csv(out_csv, index=False)
    table = pd.DataFrame(rows).groupby(by)[["valid_accuracy", "test_accuracy"]]
    summary = table.agg(["mean", "std", "count"]).round(4)
    summary.to_csv(out_csv.with_name(f"{out_csv.stem}_summary.csv"))
    print(summary.to_string())
