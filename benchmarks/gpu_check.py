"""One short device check: train a model on cached features, bf16 autocast on and off.

    .venv/bin/python benchmarks/gpu_check.py --features results/fsdd/features.h5 \
        --model cnn2d --epochs 3 [--device auto]

Prints, per precision setting, the device, samples per second (training) and the best
validation accuracy, so a session with a GPU can record CUDA throughput and check that mixed
precision trains as well as float32. On a CPU, autocast is never used (both rows run fp32).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import pandas as pd
import torch
import yaml

from pipeline.config import dataset_settings, validate
from pipeline.training import choose_device, train_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=Path, required=True)
    parser.add_argument("--dataset", default="fsdd", help="whose settings from config.yaml")
    parser.add_argument("--model", default="cnn2d")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    config = validate(yaml.safe_load(Path("config.yaml").read_text()))
    settings = dataset_settings(config, args.dataset)
    device = choose_device(args.device)
    print(f"torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    for mixed in (False, True):
        settings["training"].update(epochs=args.epochs, mixed_precision=mixed)
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = train_model(args.features, args.model, settings, 0, Path(tmp) / "model.pt",
                               Path(tmp) / "history.csv", device=str(device),
                               threads=args.threads)
            history = pd.read_csv(Path(tmp) / "history.csv")
        steady = history["samples_per_second"].iloc[1:] if len(history) > 1 else \
            history["samples_per_second"]
        print(f"{args.model} bf16-autocast={mixed and device.type == 'cuda'}: "
              f"{steady.median():.0f} samples/s (median after epoch 1), best valid accuracy "
              f"{ckpt['valid_accuracy']:.4f} at epoch {ckpt['epoch']}")


if __name__ == "__main__":
    main()
