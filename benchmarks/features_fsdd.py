"""Feature-stage throughput against the read limit, on real FSDD (all 3,000 clips).

    .venv/bin/python benchmarks/features_fsdd.py [--mirror ../shared/datasets] [--threads 2]
        [--repeats 3] [--profile]

Acquires and splits FSDD through the pipeline's own code (from the mirror), then times the
variants below on the same files in ONE process, interleaved (read, bare, stage, stage_sf,
read, ...), and prints the best clips/s of --repeats rounds and the ratios between them (also
the median of the per-round ratios), which hold on a shared, noisy machine where the absolute
numbers do not:

  read      soundfile alone: sf.read of every WAV, one after another (the I/O limit);
  bare      a bare batched loop: read, centre-pad, torchaudio MelSpectrogram + log10 on
            batches of 256, append to an HDF5 dataset (the straightforward implementation);
  stage     pipeline.features.compute_features(threads=--threads): the Snakemake rule's work;
  stage_sf  the same with every file read by soundfile (audio.FAST_WAV = False), to show
            what the plain-WAV fast path adds.

It also checks the stage's features against the bare loop's torchaudio output (max |diff|),
and prints where the time goes: each step timed alone on one thread, and with --profile the
cProfile top entries of one stage run (batches featurized inline, on one thread).
benchmarks/features_16k.py runs the same comparison on 16 kHz one-second clips.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import soundfile as sf
import torch
import torchaudio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline import features  # noqa: E402
from pipeline.config import settings_for  # noqa: E402
from pipeline.datasets import acquire_dataset, split_dataset  # noqa: E402
from pipeline.features import BATCH, compute_features  # noqa: E402
from pipeline.modalities import audio  # noqa: E402
from pipeline.modalities.audio import FeatureParams, LogMel, read_batch  # noqa: E402
from pipeline.splits import SPLITS, read_splits  # noqa: E402


def stage_order(table: pd.DataFrame, root: Path) -> list[str]:
    """The clips' paths in the order compute_features writes them (split by split)."""
    return [os.path.join(root, p) for split in SPLITS
            for p in table.loc[table["split"] == split, "path"]]


def read_only(paths: list[str]) -> None:
    for path in paths:
        sf.read(path, dtype="float32")


def bare_loop(paths: list[str], params: FeatureParams, out: Path) -> np.ndarray:
    """Read, pad, torchaudio log-mel per batch of 256, append to HDF5; returns the features."""
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=params.sample_rate, n_fft=params.fft_size, win_length=params.win_length,
        hop_length=params.hop_length, f_min=params.f_min, f_max=params.f_max,
        n_mels=params.n_mels, center=False, power=2.0)
    size, shape = params.n_samples, (params.n_mels, params.n_frames)
    with h5py.File(out, "w") as h5, torch.inference_mode():
        ds = h5.create_dataset("features", (0, *shape), maxshape=(None, *shape),
                               dtype="float32", chunks=(64, *shape))
        for start in range(0, len(paths), BATCH):
            chunk = paths[start:start + BATCH]
            batch = np.zeros((len(chunk), size), dtype=np.float32)
            for row, path in zip(batch, chunk, strict=True):
                wave, _ = sf.read(path, dtype="float32")
                wave = wave.mean(axis=1) if wave.ndim > 1 else wave
                if len(wave) >= size:
                    row[:] = wave[(len(wave) - size) // 2:][:size]
                else:
                    row[(size - len(wave)) // 2:][:len(wave)] = wave
            feats = torch.log10(mel(torch.from_numpy(batch)) + params.log_offset).numpy()
            ds.resize(start + len(feats), axis=0)
            ds[start:] = feats
        return ds[:]


def stage_soundfile_only(tsv: Path, root: Path, settings: dict[str, Any], tmp: Path,
                         threads: int) -> None:
    """The stage with every file read by soundfile (no plain-WAV fast path)."""
    audio.FAST_WAV = False
    try:
        compute_features(tsv, root, settings, tmp / "features_sf.h5", tmp / "rejected.tsv",
                         threads=threads)
    finally:
        audio.FAST_WAV = True


def check_fast_path(paths: list[str]) -> str:
    """Every file through the plain-WAV fast path and through soundfile: same samples?"""
    fast = same = 0
    for path in paths:
        got = audio._read_pcm16_wav(path)
        if got is not None:
            fast += 1
            data, rate = sf.read(path, dtype="float32")
            same += rate == got[1] and np.array_equal(data, got[0])
    return (f"{fast} of {len(paths)} files read by the plain-WAV fast path, {same} of them "
            "bit-identical to soundfile")


def stage_features(path: Path) -> np.ndarray:
    with h5py.File(path) as h5:
        return np.concatenate([h5[s]["features"][:] for s in SPLITS])


def breakdown(paths: list[str], params: FeatureParams, tmp: Path) -> list[tuple[str, float]]:
    """Each step alone on one thread: (name, CPU seconds per 1,000 clips)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    n = len(paths)
    steps: list[tuple[str, float]] = []

    def timed(name: str, fn: Callable[[], Any]) -> Any:  # CPU time: less noisy when shared
        start = time.process_time()
        result = fn()
        steps.append((name, (time.process_time() - start) * 1000 / n))
        return result

    def read_all() -> list[tuple[np.ndarray, list[str], np.ndarray]]:
        return [read_batch(paths[i:i + BATCH], params) for i in range(0, n, BATCH)]

    timed("sf.read alone", lambda: read_only(paths))
    audio.FAST_WAV = False
    timed("read_batch, soundfile only (read, check, centre)", read_all)
    audio.FAST_WAV = True
    batches = timed("read_batch, plain-WAV fast path (read, check, centre)", read_all)
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=params.sample_rate, n_fft=params.fft_size, win_length=params.win_length,
        hop_length=params.hop_length, f_min=params.f_min, f_max=params.f_max,
        n_mels=params.n_mels, center=False, power=2.0)
    logmel = LogMel(params)
    with torch.inference_mode():
        timed("torchaudio MelSpectrogram + log10 (before)",
              lambda: [torch.log10(mel(torch.from_numpy(w)) + params.log_offset)
                       for w, _, _ in batches])
        timed("LogMel, every frame", lambda: [logmel(torch.from_numpy(w)) for w, _, _ in batches])
        feats = timed("LogMel, padding frames skipped",
                      lambda: [logmel(torch.from_numpy(w), s).numpy() for w, _, s in batches])

    def stats64() -> None:  # what the writer keeps per batch
        for f in feats:
            t = torch.from_numpy(f).double()
            t.sum(dim=(0, 2)), t.square_().sum(dim=(0, 2))

    timed("norm sums, float64 per batch", stats64)
    shape = feats[0].shape[1:]

    def write() -> None:
        with h5py.File(tmp / "write.h5", "w") as h5:
            ds = h5.create_dataset("f", (n, *shape), maxshape=(None, *shape), dtype="float32",
                                   chunks=(64, *shape))
            text = h5.create_dataset("path", (n,), maxshape=(None,), dtype=h5py.string_dtype())
            row = 0
            for f in feats:
                ds[row:row + len(f)] = f
                row += len(f)
            text[:] = paths

    timed("HDF5 write (preallocated) + strings", write)
    torch.set_num_threads(threads)
    return steps


def profile_stage(tsv: Path, root: Path, settings: dict[str, Any], tmp: Path) -> str:
    """cProfile sees the main thread only, so the stage's batches are featurized inline."""
    def inline(rows_all: pd.DataFrame, featurize, workers: int = 2):
        for rows in features._batches(rows_all, BATCH):
            yield rows, *featurize(rows)

    threaded, features._featurized = features._featurized, inline
    prof = cProfile.Profile(time.process_time)
    try:
        prof.runcall(compute_features, tsv, root, settings, tmp / "features.h5",
                     tmp / "rejected.tsv", threads=1)
    finally:
        features._featurized = threaded
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(14)
    lines = out.getvalue().splitlines()
    start = next(i for i, line in enumerate(lines) if "ncalls" in line)
    site = str(Path(np.__file__).parents[1]) + "/"
    return "\n".join("    " + line.replace(str(ROOT) + "/", "").replace(site, "")[:110]
                     for line in lines[start - 4:] if line.strip())


def compare(table: pd.DataFrame, root: Path, settings: dict[str, Any], tmp: Path,
            threads: int, repeats: int, profile: bool, label: str) -> float:
    """Time the variants interleaved on the same files, print the ratios; the stage's best
    clips/s."""
    tsv = tmp / "splits.tsv"
    table.to_csv(tsv, sep="\t", index=False)
    params = FeatureParams.from_dict(settings["features"])
    paths = stage_order(table, root)
    n = len(paths)
    variants: dict[str, Callable[[], Any]] = {
        "read": lambda: read_only(paths),
        "bare": lambda: bare_loop(paths, params, tmp / "bare.h5"),
        "stage": lambda: compute_features(tsv, root, settings, tmp / "features.h5",
                                          tmp / "rejected.tsv", threads=threads),
        "stage_sf": lambda: stage_soundfile_only(tsv, root, settings, tmp, threads),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            torch.set_num_threads(threads)
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    rate = {k: n / min(v) for k, v in times.items()}
    paired = {k: float(np.median(np.array(times["read"]) / np.array(v)))
              for k, v in times.items()}
    print(f"{label}: {n} clips, {threads} threads, best of {repeats}, interleaved")
    for name in variants:
        spread = ", ".join(f"{n / t:.0f}" for t in times[name])
        print(f"  {name:9s}{rate[name]:7.0f} clips/s   (runs: {spread})")
    print("  ratios of best times (median of the per-round ratios in brackets):")
    for a, b in (("stage", "read"), ("stage_sf", "read"), ("bare", "read")):
        print(f"    {a} / {b} = {rate[a] / rate[b]:.2f} ({paired[a]:.2f})")
    print(f"    stage / bare = {rate['stage'] / rate['bare']:.2f} "
          f"({paired['stage'] / paired['bare']:.2f})")
    reference = bare_loop(paths, params, tmp / "bare.h5")
    for name in ("features", "features_sf"):
        diff = np.abs(stage_features(tmp / f"{name}.h5") - reference).max()
        print(f"  max |{name} - torchaudio| over all log-mels: {diff:.2e}")
    print(f"  {check_fast_path(paths)}")
    print("  where the time goes (each step alone, 1 thread, CPU ms per 1,000 clips):")
    for name, ms in breakdown(paths, params, tmp):
        print(f"    {ms * 1000:7.0f}  {name}")
    if profile:
        print("  cProfile of one stage run, batches featurized inline on one thread, top "
              "entries by own CPU time:")
        print(profile_stage(tsv, root, settings, tmp))
    print(f"  numpy {np.__version__}, torch {torch.__version__}, "
          f"torchaudio {torchaudio.__version__}, cores {os.cpu_count()}")
    return rate["stage"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mirror", default=str(ROOT.parent / "shared" / "datasets"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    settings = settings_for("fsdd")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        acquire_dataset(tmp / "fsdd", settings, mirror=args.mirror)
        split_dataset(tmp / "fsdd", settings, tmp / "splits.tsv")
        table = read_splits(tmp / "splits.tsv")
        compare(table, tmp / "fsdd", settings, tmp, args.threads, args.repeats, args.profile,
                "FSDD (8 kHz)")


if __name__ == "__main__":
    main()
