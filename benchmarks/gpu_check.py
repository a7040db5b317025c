"""The device check: CUDA training with bf16 autocast on and off, throughput, GPU use, accuracy.

    PYTHONPATH=. python benchmarks/gpu_check.py --mirror ../shared/datasets \
        --work /tmp/gpu_check --out results/benchmarks/gpu_check [--epochs 15] \
        [--runs fsdd:cnn2d:60 mnist_full:cnn2d:10] [--modes graphs:fp32 eager:fp32]

Builds the features (FSDD, HAPT, MNIST, ... from the mirror) with the pipeline's own stage
functions (as the workflow's rules call them), then trains each `dataset:model[:epochs]`
pair with the config's settings in each mode (`graphs` or `eager`: the training step
replayed as a CUDA graph, or launched op by op; `fp32` or `bf16` autocast), and scores the
selected checkpoint on the test split. While each training runs, `nvidia-smi` is sampled
every 100 ms; utilisation and memory are summarised over the training epochs (from the end
of the first epoch, which holds cuDNN's autotuning, to the end of the last). Rows go to
`gpu_check.csv` in `--out` as they finish. On a machine without a GPU it runs on the CPU,
with no nvidia-smi figures (autocast is used on CUDA only).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

from pipeline.config import raw_source, stage_settings, validate
from pipeline.datasets import acquire_dataset, split_dataset
from pipeline.evaluation import evaluate_model
from pipeline.features import compute_features
from pipeline.training import choose_device, train_model

RUNS = [("fsdd", "cnn2d"), ("fsdd", "conv1d"), ("fsdd", "dense"),
        ("hapt", "conv1d"), ("hapt", "cnn2d")]


def build_features(config: dict, name: str, mirror: str, work: Path, workers: int) -> Path:
    """results/{name}/features.h5 under `work`, made as the rules make it."""
    out = work / name / "features.h5"
    if out.exists():
        return out
    # one raw folder per download, shared by variants and folds (as the rules share it)
    raw, splits = work / "resources" / raw_source(config, name), work / name / "splits.tsv"
    out.parent.mkdir(parents=True, exist_ok=True)
    if not raw.exists():
        acquire_dataset(raw, stage_settings(config, name, "acquire"), mirror=mirror,
                        workers=workers)
    split_dataset(raw, stage_settings(config, name, "split"), splits)
    compute_features(splits, raw, stage_settings(config, name, "features"), out,
                     work / name / "rejected.tsv", threads=workers)
    return out


class GpuSampler:
    """nvidia-smi's utilisation (%) and memory used (MiB), with the local time of each."""

    def __init__(self, period_ms: int = 100) -> None:
        self.rows: list[tuple[float, float, float]] = []
        self.proc = None
        if shutil.which("nvidia-smi"):
            self.proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                 "--format=csv,noheader,nounits", "-lms", str(period_ms)],
                stdout=subprocess.PIPE, text=True)
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                util, mem = (float(v) for v in line.split(","))
            except ValueError:
                continue
            self.rows.append((time.monotonic(), util, mem))

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait()

    def between(self, start: float, end: float) -> dict[str, float]:
        inside = [(u, m) for t, u, m in self.rows if start <= t <= end]
        if not inside:
            return {"gpu_util_mean": float("nan"), "gpu_util_median": float("nan"),
                    "gpu_mem_max_mib": float("nan"), "smi_samples": 0}
        util = pd.Series([u for u, _ in inside])
        return {"gpu_util_mean": util.mean(), "gpu_util_median": util.median(),
                "gpu_mem_max_mib": max(m for _, m in inside), "smi_samples": len(inside)}


class EpochTimes(logging.Handler):
    """The time each epoch's log line is written (the end of that epoch)."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("epoch "):
            self.times.append(time.monotonic())


def run_one(features: Path, dataset: str, model: str, config: dict, epochs: int, mixed: bool,
            device: torch.device, threads: int, batch_size: int | None = None,
            graphs: bool = True) -> dict:
    settings = stage_settings(config, dataset, "train")
    settings["training"].update(epochs=epochs, mixed_precision=mixed, patience=0)
    if batch_size:
        settings["training"]["batch_size"] = batch_size
    epochs_log = EpochTimes()
    logger = logging.getLogger("pipeline.training")
    logger.setLevel(logging.INFO)
    logger.propagate = False  # the epoch lines are timed, not printed
    logger.addHandler(epochs_log)
    sampler = GpuSampler()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.monotonic()
            ckpt = train_model(features, model, settings, 0, Path(tmp) / "model.pt",
                               Path(tmp) / "history.csv", device=str(device), threads=threads,
                               cuda_graphs=graphs)
            wall = time.monotonic() - start
            history = pd.read_csv(Path(tmp) / "history.csv")
            metrics = evaluate_model(Path(tmp) / "model.pt", features, Path(tmp) / "eval",
                                     device=str(device), threads=threads)
    finally:
        sampler.stop()
        logger.removeHandler(epochs_log)
    steady = history.iloc[1:] if len(history) > 1 else history
    window = (epochs_log.times[0], epochs_log.times[-1]) if len(epochs_log.times) > 1 else \
        (start, start + wall)
    return {
        "dataset": dataset, "model": model, "bf16_autocast": mixed and device.type == "cuda",
        "cuda_graphs": ckpt["cuda_graphs"],
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "epochs": len(history), "batch_size": settings["training"]["batch_size"],
        "train_samples_per_s": round(float(steady["samples_per_second"].median()), 1),
        "epoch_seconds": round(float(steady["seconds"].median()), 4),
        "train_wall_s": round(wall, 2),
        **{k: round(float(v), 1) for k, v in sampler.between(*window).items()},
        "torch_peak_mem_mib": round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        if device.type == "cuda" else float("nan"),
        "best_epoch": ckpt["epoch"], "valid_accuracy": round(ckpt["valid_accuracy"], 4),
        "test_accuracy": round(metrics["test_accuracy"], 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mirror", required=True, help="folder with fsdd/ and hapt/ archives")
    parser.add_argument("--work", type=Path, required=True, help="where features are built")
    parser.add_argument("--out", type=Path, required=True, help="where gpu_check.csv goes")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--batch-size", type=int, help="instead of the config's")
    parser.add_argument("--runs", nargs="*", default=[f"{d}:{m}" for d, m in RUNS],
                        help="dataset:model[:epochs] (epochs: instead of --epochs)")
    parser.add_argument("--modes", nargs="*", default=["graphs:fp32", "graphs:bf16"],
                        help="graphs|eager:fp32|bf16, each run in each mode")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    config = validate(yaml.safe_load(Path("config.yaml").read_text()))
    device = choose_device(args.device)
    print(f"torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
          flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    features = {}
    for pair in args.runs:
        dataset = pair.split(":")[0]
        if dataset not in features:
            t0 = time.perf_counter()
            features[dataset] = build_features(config, dataset, args.mirror, args.work,
                                               args.threads)
            print(f"features {dataset}: {time.perf_counter() - t0:.1f} s", flush=True)
    rows = []
    for pair in args.runs:
        dataset, model, *epochs = pair.split(":")
        for mode in args.modes:
            steps, precision = mode.split(":")
            row = run_one(features[dataset], dataset, model, config,
                          int(epochs[0]) if epochs else args.epochs, precision == "bf16",
                          device, args.threads, args.batch_size, graphs=steps == "graphs")
            rows.append(row)
            print(json.dumps(row), flush=True)
            pd.DataFrame(rows).to_csv(args.out / "gpu_check.csv", index=False)
    if shutil.which("nvidia-smi"):
        (args.out / "nvidia-smi.txt").write_text(
            subprocess.run(["nvidia-smi"], capture_output=True, text=True).stdout)
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
