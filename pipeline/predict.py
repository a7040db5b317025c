"""Classify new recordings with a trained checkpoint alone.

    python -m pipeline.predict --model results/fsdd/cnn2d/seed-0/model.pt a.wav b.wav --top 3

The checkpoint carries its feature parameters and normalisation, so any sample rate works
(clips are resampled) and no dataset or config is needed.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.features import FeatureParams, LogMel, fit_length, read_clip
from pipeline.training import load_checkpoint, normalise


@dataclass(frozen=True)
class Prediction:
    path: str
    top: list[tuple[str, float]]  # (label, probability), best first
    error: str = ""


class Predictor:
    def __init__(self, model_path: str | Path, device: str = "cpu") -> None:
        self.model, self.ckpt = load_checkpoint(model_path, device)
        self.device = device
        fp = self.ckpt["feature_params"]
        if fp.get("modality") != "audio":
            raise ValueError(f"{model_path} was trained on {fp.get('modality')} data, not audio")
        self.params = FeatureParams.from_dict({k: (None if v == "none" else v)
                                               for k, v in fp.items()})
        self.logmel = LogMel(self.params)
        self.labels = list(self.ckpt["label_names"])

    def predict_file(self, path: str | Path, top: int = 1) -> Prediction:
        wave, reason = read_clip(Path(path), self.params.sample_rate)
        if wave is None:
            return Prediction(str(path), [], reason)
        x = torch.from_numpy(fit_length(wave, self.params.n_samples))[None]
        norm = self.ckpt["normalization"]
        with torch.inference_mode():
            feats = normalise(self.logmel(x), norm["mean"].float(), norm["std"].float())
            probs = torch.softmax(self.model(feats.to(self.device)).float(), dim=1)[0].cpu()
        values, indices = probs.topk(min(top, len(self.labels)))
        return Prediction(str(path), [(self.labels[i], float(v))
                                      for v, i in zip(values, indices, strict=True)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a model.pt written by train_model")
    parser.add_argument("--top", type=int, default=1, help="show the k most likely labels")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("files", nargs="+", help="audio files (WAV, FLAC, ...) at any rate")
    args = parser.parse_args(argv)
    try:
        predictor = Predictor(args.model, args.device)
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        print(f"error: cannot load model {args.model}: {err}", file=sys.stderr)
        return 2
    failed = 0
    for path in args.files:
        result = predictor.predict_file(path, max(1, args.top))
        if result.error:
            failed += 1
            print(f"{path}\terror: {result.error}", file=sys.stderr)
            continue
        shown = "\t".join(f"{label}\t{p:.4f}" for label, p in result.top)
        print(f"{path}\t{shown}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
