"""How much of the FSDD -> Speech Commands digits gap is the clips' framing, not the voices?

FSDD's recordings are trimmed close to the word and zero-padded, centred, to the 1-s window,
so about half of an FSDD log-mel's frames are exactly the log floor; Speech Commands' clips
are 1 s of room sound with the word somewhere inside, so at 8 kHz they fill the window and
almost no frame is. This script scores every model of the workflow's cross evaluations on
`sc_digits_sample` twice: on the clips as the pipeline featurises them (these accuracies must
equal the workflow's metrics.json, and are checked), and on the clips trimmed to the speech
that `pipeline.segments.detect_speech` finds (plus `--context` seconds each side, as
`pipeline.predict` keeps around a segment), then centred and zero-padded as FSDD's. Prints
the share of floor frames of each, and the two accuracies per model.

Needs what this workflow run wrote (docs/speaker_independence.md):
    .venv/bin/snakemake --cores 1 --config datasets='[fsdd, tts_digits, sc_digits_sample]' \\
        mirror=../shared/datasets
    .venv/bin/python benchmarks/sc_digits_trimmed.py [--train fsdd tts_digits] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.checkpoint import load_checkpoint, normalise_with  # noqa: E402
from pipeline.config import raw_source, validate  # noqa: E402
from pipeline.features import load_split, read_attrs  # noqa: E402
from pipeline.modalities.audio import FeatureParams, LogMel, fit_length, read_clip  # noqa: E402
from pipeline.segments import detect_speech  # noqa: E402
from pipeline.splits import read_splits  # noqa: E402
from pipeline.training import evaluate  # noqa: E402

TEST = "sc_digits_sample"


def floor_share(features: torch.Tensor, log_offset: float) -> float:
    """Share of frames whose every band is the log floor (all-zero samples)."""
    floor = math.log10(log_offset) + 1e-3
    return float((features <= floor).all(dim=1).float().mean())


def trimmed(wave: np.ndarray, params: FeatureParams, context: float) -> tuple[np.ndarray, bool]:
    """The clip from its first detected speech segment to its last, with `context` seconds
    each side, centred in the window; the whole clip where no speech is found."""
    rate = params.sample_rate
    found = detect_speech(wave, rate, params.hop_length, params.win_length).segments
    if not found:
        return fit_length(wave, params.n_samples), False
    start = max(0, int((found[0].start - context) * rate))
    stop = min(len(wave), int(math.ceil((found[-1].end + context) * rate)))
    return fit_length(wave[start:stop], params.n_samples), True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", nargs="+", default=["fsdd", "tts_digits"])
    parser.add_argument("--models", nargs="+", default=["dense", "conv1d", "cnn2d"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--context", type=float, default=0.1)
    parser.add_argument("--results", type=Path, default=ROOT / "results")
    args = parser.parse_args()
    torch.set_num_threads(1)

    import yaml

    config = validate({**yaml.safe_load((ROOT / "config.yaml").read_text()),
                       "datasets": [*args.train, TEST]})
    raw = ROOT / "resources" / raw_source(config, TEST)
    h5 = args.results / TEST / "features.h5"
    attrs = read_attrs(h5)
    params = FeatureParams.from_attrs(attrs)
    test = load_split(h5, "test")
    table = read_splits(args.results / TEST / "splits.tsv").set_index("clip").loc[test.clips]
    waves, found = [], 0
    for path in table["path"]:
        wave, reason = read_clip(raw / path, params.sample_rate)
        assert wave is not None, f"{path}: {reason}"
        window, ok = trimmed(wave, params, args.context)
        waves.append(window)
        found += ok
    with torch.inference_mode():
        cut = LogMel(params)(torch.from_numpy(np.stack(waves)))
    print(f"{TEST}: {len(waves)} clips, speech found in {found}; floor frames: as featurised "
          f"{floor_share(test.features, params.log_offset):.3f}, trimmed "
          f"{floor_share(cut, params.log_offset):.3f}")
    for train in args.train:
        own = load_split(args.results / train / "features.h5", "test").features
        print(f"{train} test split: floor frames {floor_share(own, params.log_offset):.3f}")
    print(f"\n{'trained on':<12}{'model':<8}{'as featurised':>15}{'trimmed':>10}")
    for train in args.train:
        for model_name in args.models:
            run = args.results / train / model_name / f"seed-{args.seed}"
            model, ckpt = load_checkpoint(run / "model.pt", torch.device("cpu"))
            scores = []
            for features in (test.features, cut):
                x = normalise_with(ckpt, features)
                scores.append(evaluate(model, x, test.labels, torch.device("cpu"))[1])
            logged = json.loads((run / "cross" / TEST / "metrics.json").read_text())
            assert abs(scores[0] - logged["test_accuracy"]) < 1e-6, (run, scores[0], logged)
            print(f"{train:<12}{model_name:<8}{scores[0]:>15.4f}{scores[1]:>10.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
