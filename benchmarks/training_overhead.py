"""Training-loop overhead: the project's `train_model` against a bare PyTorch loop.

    .venv/bin/python benchmarks/training_overhead.py [--features results/fsdd/features.h5]
                     [--epochs 3] [--rounds 2] [--threads 2] [--models dense conv1d cnn2d]

Both train the same model on the same cached features for the same epochs with the same
batch size, optimiser (Adam, StepLR), thread count and per-epoch validation; the bare loop
has no augmentation hook, resume state, best-epoch copies or checkpoint. Runs are interleaved
A B B A ... so that load from other processes hits both alike; the ratio of the medians
(project / bare) is printed per family. Without --features, FSDD features are built from
the shared mirror into a temporary folder first.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pipeline.config import settings_for
from pipeline.datasets import acquire_dataset, split_dataset
from pipeline.features import compute_features
from pipeline.models import build_model
from pipeline.training import evaluate, load_training_data, seed_everything, train_model

MIRROR = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def bare_loop(features: Path, model_name: str, epochs: int, batch_size: int, lr: float) -> float:
    """The textbook loop: seconds for `epochs` epochs, validation after each."""
    data = load_training_data(features)
    gen = seed_everything(0)
    model = build_model(model_name, {}, data.input_shape, len(data.label_names))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=20, gamma=0.1)
    x_train = (data.train.features - data.mean[None, :, None]) / data.std[None, :, None]
    loader = DataLoader(TensorDataset(x_train, data.train.labels), batch_size=batch_size,
                        shuffle=True, generator=gen)
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
        evaluate(model, data.x_valid, data.y_valid, torch.device("cpu"))
        scheduler.step()
    return time.perf_counter() - start


def project(features: Path, model_name: str, epochs: int, settings: dict, out: Path) -> float:
    """Seconds `train_model` spends in its epochs (the sum of its per-epoch times would leave
    out checkpointing, so the whole call is timed minus the data loading it shares)."""
    s = {**settings, "training": {**settings["training"], "epochs": epochs}}
    for name in ("model.pt", "resume.pt", "h.csv"):
        (out / name).unlink(missing_ok=True)
    load = time.perf_counter()
    load_training_data(features)
    load = time.perf_counter() - load
    start = time.perf_counter()
    train_model(features, model_name, s, 0, out / "model.pt", out / "h.csv")
    return time.perf_counter() - start - load


def fsdd_features(tmp: Path) -> Path:
    settings = settings_for("fsdd")
    acquire_dataset(tmp / "fsdd", settings, mirror=str(MIRROR))
    split_dataset(tmp / "fsdd", settings, tmp / "splits.tsv")
    compute_features(tmp / "splits.tsv", tmp / "fsdd", settings, tmp / "features.h5",
                     tmp / "rejected.tsv", threads=2)
    return tmp / "features.h5"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=Path)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=["dense", "conv1d", "cnn2d"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    settings = settings_for("fsdd")
    ts = settings["training"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        features = args.features or fsdd_features(tmp)
        print(f"{features}: {args.epochs} epochs, batch {ts['batch_size']}, "
              f"{args.threads} threads, {args.rounds} rounds A/B interleaved")
        for name in args.models:
            a, b = [], []
            for i in range(args.rounds):  # A B, then B A, ...: neither always goes first
                for which in ("ab" if i % 2 == 0 else "ba"):
                    if which == "a":
                        a.append(project(features, name, args.epochs, settings, tmp))
                    else:
                        b.append(bare_loop(features, name, args.epochs, ts["batch_size"],
                                           ts["learning_rate"]))
            pa, pb = statistics.median(a), statistics.median(b)
            print(f"{name:7s} project {pa:7.2f} s  bare {pb:7.2f} s  ratio {pa / pb:.3f}"
                  f"   (runs: project {[round(x, 2) for x in a]}, "
                  f"bare {[round(x, 2) for x in b]})")


if __name__ == "__main__":
    main()
