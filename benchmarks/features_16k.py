"""Feature-stage throughput on 16 kHz one-second clips (Speech Commands), against the read limit.

    .venv/bin/python benchmarks/features_16k.py [--sample ../shared/datasets/speech_commands/
        speech_commands_sample.tar.gz] [--synth N] [--threads 2] [--repeats 3] [--profile]

By default extracts the real Speech Commands sample (6,659 one-word clips, 16-bit 16 kHz mono,
586 of them shorter than 1 s) into a temporary folder; with --synth N it writes N clips in the
same layout instead (1 s of tone and noise, every tenth shorter, as upstream). The splits
table is built by hand (12class labels: the ten commands, every other word `unknown`), then
benchmarks/features_fsdd.py's comparison runs on it: soundfile alone, a bare batched loop and
compute_features, interleaved in one process, best of --repeats, with the ratios, a check
against torchaudio, and where the time goes. Ends with the time 105,829 clips (all of v0.02)
would take at the stage's rate.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tarfile
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from features_fsdd import ROOT, compare  # noqa: E402

from pipeline.config import settings_for  # noqa: E402
from pipeline.datasets.speech_commands import COMMANDS, UNKNOWN  # noqa: E402

RATE = 16000
V2_CLIPS = 105_829
SAMPLE = ROOT.parent / "shared" / "datasets" / "speech_commands" / "speech_commands_sample.tar.gz"


def table_for(paths: list[str]) -> pd.DataFrame:
    """clip, path, label, speaker, split for `<word>/<speaker>_nohash_<n>.wav` paths."""
    rows = []
    for rel in paths:
        word, name = rel.split("/")
        split = ("train", "train", "train", "train", "train", "train", "train", "train",
                 "valid", "test")[zlib.crc32(name.encode()) % 10]
        rows.append({"clip": rel[:-4], "path": rel,
                     "label": word if word in COMMANDS else UNKNOWN,
                     "speaker": name.split("_")[0], "split": split})
    return pd.DataFrame(rows)


def extract_sample(archive: Path, root: Path) -> list[str]:
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".wav")
                   and not m.name.startswith("_")]
        tar.extractall(root, members=members, filter="data")
    return sorted(m.name for m in members)


def synthesize(root: Path, n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    words = COMMANDS + ["bed", "marvin"]
    t = np.arange(RATE) / RATE
    paths = []
    for i in range(n):
        word = words[i % len(words)]
        length = RATE if i % 10 else int(rng.integers(RATE // 2, RATE))
        tone = np.sin(2 * np.pi * rng.uniform(100, 3000) * t[:length])
        wave = 0.3 * tone * np.hanning(length) + 0.01 * rng.standard_normal(length)
        rel = f"{word}/{rng.integers(0, 2**32):08x}_nohash_{i % 5}.wav"
        (root / word).mkdir(exist_ok=True)
        sf.write(root / rel, wave.astype(np.float32), RATE, subtype="PCM_16")
        paths.append(rel)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample", type=Path, default=SAMPLE)
    parser.add_argument("--synth", type=int, default=0, help="write N synthetic clips instead")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    settings = settings_for("speech_commands", {"features": {"sample_rate": RATE}})
    with tempfile.TemporaryDirectory(prefix="bench16k-") as tmp:
        tmp = Path(tmp)
        root = tmp / "raw"
        root.mkdir()
        if args.synth:
            paths, label = synthesize(root, args.synth), "synthetic 1-s clips, 16 kHz"
        else:
            paths, label = extract_sample(args.sample, root), "Speech Commands sample, 16 kHz"
        table = table_for(paths)
        stage = compare(table, root, settings, tmp, args.threads, args.repeats, args.profile,
                        label)
    print(f"at the stage's best rate, all {V2_CLIPS:,} v0.02 clips take "
          f"{V2_CLIPS / stage:.0f} s")


if __name__ == "__main__":
    main()
