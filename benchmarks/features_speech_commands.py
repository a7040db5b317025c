"""How long the Speech Commands stages take here: measured on a sample, extrapolated.

Features: writes `--clips` (default 2,000) 16-bit 16 kHz mono WAVs in the upstream layout
(``<word>/<speaker>_nohash_<n>.wav``, 1 s, every tenth shorter, as upstream) into a temporary
folder, then runs the real ``pipeline.features.compute_features`` with the dataset's settings
from config.yaml and `--threads` threads (the rule's 2). Prints clips/s, the split between
reading WAVs and computing log-mels, and the time extrapolated to 105,829 clips (every v0.02
clip: the 35class task; 12class featurises about 46,000).

Acquisition (``--acquire``): extraction of the sample packed as tar.gz, and cutting the
silence windows from six 60-s noise recordings.

Training (``--train``): samples/s of one epoch's work per model family on random inputs of
the feature shape, with the dataset's training augmentation, on this machine's CPU; and the
augmentation alone, which runs on the CPU even when the model trains on a GPU.

    .venv/bin/python benchmarks/features_speech_commands.py [--clips 2000] [--threads 2]
        [--acquire] [--train] [--train-batches 8]
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.config import dataset_settings, validate  # noqa: E402
from pipeline.datasets.speech_commands import COMMANDS, SILENCE, UNKNOWN  # noqa: E402
from pipeline.features import compute_features  # noqa: E402
from pipeline.io import write_table  # noqa: E402
from pipeline.modalities.audio import FeatureParams, LogMel, load_waveforms  # noqa: E402

V2_CLIPS = 105_829
TWELVE_CLASS_CLIPS = 46_300  # ~38,500 command clips + 10 % unknown + 10 % silence per split
TRAIN_EXAMPLES_12CLASS = 37_000  # ~80 % of the command clips, + 10 % unknown, + 10 % silence
RATE = 16000


def settings_from_config() -> dict:
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["datasets"] = ["speech_commands"]
    return dataset_settings(validate(config), "speech_commands")


def make_sample(root: Path, n: int, seed: int = 0) -> pd.DataFrame:
    """n clips spread over 12 labels, 100 speakers and the three splits."""
    rng = np.random.default_rng(seed)
    words = COMMANDS + ["bed", "marvin"]
    t = np.arange(RATE) / RATE
    rows = []
    for i in range(n):
        word = words[i % len(words)]
        speaker = f"{rng.integers(0, 2**32):08x}"
        length = RATE if i % 10 else int(rng.integers(RATE // 2, RATE))
        tone = np.sin(2 * np.pi * rng.uniform(100, 3000) * t[:length])
        wave = (0.3 * tone * np.hanning(length) + 0.01 * rng.standard_normal(length))
        rel = f"{word}/{speaker}_nohash_{i % 5}.wav"
        (root / word).mkdir(exist_ok=True)
        sf.write(root / rel, wave.astype(np.float32), RATE, subtype="PCM_16")
        split = "train" if i % 10 < 8 else ("valid" if i % 10 == 8 else "test")
        label = word if word in COMMANDS else UNKNOWN
        if i % 12 == 11:
            label = SILENCE
        rows.append({"clip": rel[:-4], "path": rel, "label": label, "speaker": speaker,
                     "split": split})
    return pd.DataFrame(rows)


def bench_features(n: int, threads: int) -> dict[str, float]:
    settings = settings_from_config()
    params = FeatureParams.from_dict(settings["features"])
    with tempfile.TemporaryDirectory(prefix="sc-bench-") as tmp:
        root = Path(tmp) / "raw"
        root.mkdir()
        t0 = time.perf_counter()
        table = make_sample(root, n)
        write_table(Path(tmp) / "splits.tsv", table)
        print(f"sample: {n} clips of 1 s at 16 kHz written in {time.perf_counter() - t0:.1f} s "
              f"({sum(p.stat().st_size for p in root.rglob('*.wav')) / 1e6:.0f} MB)")

        t0 = time.perf_counter()
        compute_features(Path(tmp) / "splits.tsv", root, settings, Path(tmp) / "features.h5",
                         Path(tmp) / "rejected.tsv", threads=threads)
        total = time.perf_counter() - t0

        paths = [root / p for p in table["path"]]
        torch.set_num_threads(threads)
        t0 = time.perf_counter()
        batches = [load_waveforms(paths[i:i + 256], params, threads)[0]
                   for i in range(0, n, 256)]
        read = time.perf_counter() - t0
        logmel = LogMel(params)
        t0 = time.perf_counter()
        with torch.inference_mode():
            for batch in batches:
                logmel(torch.from_numpy(batch))
        mel = time.perf_counter() - t0
    rate = n / total
    print(f"compute_features: {n} clips in {total:.1f} s = {rate:.0f} clips/s "
          f"({threads} threads; reading+padding {n / read:.0f} clips/s, "
          f"log-mel {n / mel:.0f} clips/s, the rest is HDF5 and bookkeeping)")
    for label, clips in (("every v0.02 clip (35class)", V2_CLIPS),
                         ("12class (~46,300 clips)", TWELVE_CLASS_CLIPS)):
        print(f"extrapolated, {label}: {clips / rate:.0f} s = {clips / rate / 60:.1f} min")
    return {"clips_per_second": rate, "read_per_second": n / read, "mel_per_second": n / mel}


def bench_acquire(n: int) -> None:
    """Extraction (safe_extract of a tar.gz of the sample) and the silence-window cutting."""
    import tarfile

    from pipeline.datasets.speech_commands import NOISE_DIR, cut_silence
    from pipeline.download import safe_extract

    with tempfile.TemporaryDirectory(prefix="sc-bench-") as tmp:
        root = Path(tmp) / "raw"
        root.mkdir()
        make_sample(root, n)
        archive = Path(tmp) / "sample.tar.gz"
        with tarfile.open(archive, "w:gz") as tf:
            for path in sorted(root.rglob("*.wav")):
                tf.add(path, arcname=path.relative_to(root).as_posix())
        t0 = time.perf_counter()
        safe_extract(archive, Path(tmp) / "x")
        rate = n / (time.perf_counter() - t0)
        print(f"extraction: {rate:.0f} clips/s ({archive.stat().st_size / 1e6:.0f} MB tar.gz) "
              f"-> ~{V2_CLIPS / rate / 60:.1f} min for the v0.02 archive")
        noise = root / NOISE_DIR
        noise.mkdir()
        rng = np.random.default_rng(0)
        for k in range(6):
            sf.write(noise / f"noise_{k}.wav", 0.1 * rng.standard_normal(60 * RATE), RATE,
                     subtype="PCM_16")
        t0 = time.perf_counter()
        windows = cut_silence(root, 0.05)
        seconds = time.perf_counter() - t0
        print(f"silence windows: {windows} cut from 6 x 60 s in {seconds:.1f} s")


def bench_training(batches: int, threads: int) -> None:
    from pipeline import training
    from pipeline.models import build_model

    settings = settings_from_config()
    params = FeatureParams.from_dict(settings["features"])
    shape = (params.n_mels, params.n_frames)
    ts = training.TrainSettings.from_dict(settings["training"])
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    raw = torch.randn(ts.batch_size, *shape, generator=gen) - 4.0
    bank = torch.randn(256, *shape, generator=gen) - 5.0
    augment = training.Augment(ts, gen, torch.zeros(shape[0]) - 4.0, torch.ones(shape[0]), bank)
    t0 = time.perf_counter()
    for _ in range(batches * 4):
        augment(raw)
    aug_rate = batches * 4 * ts.batch_size / (time.perf_counter() - t0)
    print(f"augmentation alone (noise p={ts.noise.probability}, shift "
          f"{ts.time_shift_frames}, masks): {aug_rate:.0f} samples/s on the CPU; an epoch of "
          f"~{TRAIN_EXAMPLES_12CLASS} examples needs {TRAIN_EXAMPLES_12CLASS / aug_rate:.0f} s "
          "of it on any device")
    labels = torch.randint(0, 12, (ts.batch_size,), generator=gen)
    for name in ("dense", "conv1d", "cnn2d"):
        model = build_model(name, settings["model_params"][name], shape, 12)
        optimizer = torch.optim.Adam(model.parameters(), lr=ts.learning_rate)
        loss_fn = torch.nn.CrossEntropyLoss()
        model.train()
        t0, seen = time.perf_counter(), 0
        for step in range(batches + 1):
            if step == 1:  # the first batch warms up
                t0, seen = time.perf_counter(), 0
            x = augment(raw)
            optimizer.zero_grad()
            loss_fn(model(x), labels).backward()
            optimizer.step()
            seen += len(labels)
        rate = seen / (time.perf_counter() - t0)
        epoch = TRAIN_EXAMPLES_12CLASS / rate
        print(f"{name:7s} CPU training: {rate:6.0f} samples/s -> ~{epoch / 60:.1f} min per "
              f"12class epoch, ~{epoch * ts.epochs / 3600:.1f} h for {ts.epochs} epochs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--acquire", action="store_true", help="also time extraction")
    parser.add_argument("--train", action="store_true", help="also time training per model")
    parser.add_argument("--train-batches", type=int, default=8)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} threads")
    bench_features(args.clips, args.threads)
    if args.acquire:
        bench_acquire(args.clips)
    if args.train:
        bench_training(args.train_batches, args.threads)


if __name__ == "__main__":
    main()
