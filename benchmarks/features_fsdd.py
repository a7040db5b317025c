"""Feature-stage throughput on real FSDD: batched torchaudio vs a per-file librosa-style loop.

    .venv/bin/python benchmarks/features_fsdd.py [--mirror ../shared/datasets] [--threads 2]

Downloads FSDD through the pipeline's own code (from the mirror), then times
pipeline.features.compute_features on all 3,000 clips and prints clips per second.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.config import stage_settings, validate
from pipeline.datasets import acquire_dataset
from pipeline.features import FeatureParams, LogMel, fit_length, read_clip
from pipeline.features import compute_features as cache_features
from pipeline.splits import read_splits, split_dataset


def per_file_loop(root: Path, paths: list[str], params: FeatureParams) -> float:
    """The naive way: one file, one transform call at a time (for comparison)."""
    logmel = LogMel(params)
    start = time.perf_counter()
    with torch.inference_mode():
        for rel in paths:
            wave, _ = read_clip(root / rel, params.sample_rate)
            logmel(torch.from_numpy(fit_length(wave, params.n_samples))[None])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mirror", default=str(Path(__file__).resolve().parents[2] / "shared"
                                                / "datasets"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    config = validate({"datasets": ["fsdd"]})
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        acquire_dataset("fsdd", tmp / "fsdd", {}, mirror=args.mirror)
        split_dataset("fsdd", tmp / "fsdd", stage_settings(config, "fsdd", "split"),
                      tmp / "splits.tsv")
        settings = stage_settings(config, "fsdd", "features")
        start = time.perf_counter()
        counts = cache_features("fsdd", tmp / "splits.tsv", tmp / "fsdd", settings,
                                tmp / "features.h5", tmp / "rejected.tsv", threads=args.threads)
        batched = time.perf_counter() - start
        n = sum(counts.values())
        table = read_splits(tmp / "splits.tsv")
        sample = table["path"].tolist()[:600]
        loop = per_file_loop(tmp / "fsdd", sample, FeatureParams.from_dict(settings["features"]))
    print(f"batched compute_features: {n} clips in {batched:.2f} s = {n / batched:.0f} clips/s "
          f"({args.threads} threads, HDF5 write included)")
    print(f"per-file loop (600 clips, no HDF5): {len(sample) / loop:.0f} clips/s")
    print(f"numpy {np.__version__}, torch {torch.__version__}")


if __name__ == "__main__":
    main()
