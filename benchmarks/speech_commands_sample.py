"""Scores and timings of a Speech Commands run, with the classes that lack training data apart.

Reads what the workflow wrote for one dataset or variant (default `speech_commands_sample`,
the real 6,659-clip sample of ../shared/datasets/speech_commands):

- ``results/{name}/splits.tsv``: clips per label and split;
- ``results/{name}/*/seed-{seed}/predictions.csv``: every test clip's true and predicted label;
- ``.../history.csv`` and ``metrics.json``: seconds and samples/s per epoch;
- ``results/logs/compute_features/{name}.log``: the clips/s the feature stage logged.

Prints, per model: overall and balanced test accuracy; the accuracy on the test clips of the
classes with at least `--min-train-clips` training clips (on the sample: the ten classes other
than on/off, which have 8 and 9); on/off apart with their counts; recall per class beside the
lecture's ~95 %; and the time per epoch with an extrapolation to the full v0.02 dataset.
The scoring is `pipeline.datasets.speech_commands.accuracy_report`.

    .venv/bin/python benchmarks/speech_commands_sample.py [--name speech_commands_sample]
        [--results results] [--seed 0] [--min-train-clips 50] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.datasets.speech_commands import (  # noqa: E402
    COMMANDS,
    MIN_TRAIN_CLIPS,
    SILENCE,
    UNKNOWN,
    VERSIONS,
    accuracy_report,
)

#: Full v0.02, 12class (README "Speech Commands: the real run"): every clip is featurised
#: when the cache holds all words; the 12class train split has about 37,000 examples.
V2_CLIPS = VERSIONS["v0.02"].clips
TWELVE_CLASS_CLIPS = 46_300
TRAIN_EXAMPLES_12CLASS = 37_000
#: The lecture's MATLAB example: about 95 % per class on validation (its confusion chart).
LECTURE_PER_CLASS = 0.95


def pct(x: float) -> str:
    return "-" if x != x else f"{100 * x:.1f}"


def feature_rate(log_path: Path) -> float | None:
    """The clips/s of the last completed feature run in a compute_features log."""
    if not log_path.is_file():
        return None
    rates = re.findall(r"clips in [\d.]+ s \((\d+) clips/s\)", log_path.read_text())
    return float(rates[-1]) if rates else None


def model_runs(results: Path, name: str, seed: int) -> dict[str, Path]:
    runs = {}
    for pred in sorted((results / name).glob(f"*/seed-{seed}/predictions.csv")):
        runs[pred.parent.parent.name] = pred.parent
    order = {"dense": 0, "conv1d": 1, "cnn2d": 2}
    return dict(sorted(runs.items(), key=lambda kv: (order.get(kv[0], 9), kv[0])))


def summarise(results: Path, name: str, seed: int, min_train_clips: int) -> dict:
    splits = pd.read_csv(results / name / "splits.tsv", sep="\t")
    counts = splits.groupby(["label", "split"]).size().unstack(fill_value=0)
    train_counts = counts.get("train", pd.Series(dtype=int)).to_dict()
    labels = COMMANDS + [UNKNOWN, SILENCE]
    out = {"name": name, "seed": seed,
           "counts": {lb: {s: int(counts.loc[lb].get(s, 0)) if lb in counts.index else 0
                           for s in ("train", "valid", "test")} for lb in labels},
           "models": {}}
    for model, run in model_runs(results, name, seed).items():
        report = accuracy_report(pd.read_csv(run / "predictions.csv"), labels, train_counts,
                                 min_train_clips)
        metrics = json.loads((run / "metrics.json").read_text())
        history = pd.read_csv(run / "history.csv")
        report.update(
            parameters=metrics.get("parameters"), valid_accuracy=metrics.get("valid_accuracy"),
            best_epoch=metrics.get("best_epoch"), epochs=int(len(history)),
            train_seconds=metrics.get("train_seconds"),
            epoch_seconds=float(statistics.median(history["seconds"])),
            samples_per_second=float(statistics.median(history["samples_per_second"])),
            training=metrics.get("config", {}).get("training"),
            model_config=metrics.get("model_config"))
        out["models"][model] = report
    rate = feature_rate(results / "logs" / "compute_features" / f"{name}.log")
    out["feature_clips_per_second"] = rate
    return out


def print_report(s: dict) -> None:
    models = s["models"]
    if not models:
        print(f"no predictions.csv under results/{s['name']}/*/seed-{s['seed']}/")
        return
    first = next(iter(models.values()))
    enough, thin = first["enough_data"]["labels"], first["thin_data"]["labels"]
    print(f"# {s['name']}, seed {s['seed']}: test accuracy\n")
    print(f"Classes with >= {first['min_train_clips']} training clips: {', '.join(enough)}; "
          f"apart: {', '.join(thin) or 'none'}.\n")
    print("| model | parameters | test accuracy | balanced | "
          f"{len(enough)} classes with training data | "
          + " | ".join(thin) + " | valid accuracy (best epoch) |")
    print("| --- | ---: | ---: | ---: | ---: |" + " ---: |" * len(thin) + " ---: |")
    for model, r in models.items():
        e = r["enough_data"]
        thin_cells = " | ".join(
            f"{pct(r['per_class'][lb]['recall'])} ({r['per_class'][lb]['correct']}/"
            f"{r['per_class'][lb]['test']}; {r['per_class'][lb]['train']} train)"
            for lb in thin)
        print(f"| {model} | {r['parameters']:,} | {pct(r['accuracy'])} ({r['correct']}/{r['n']})"
              f" | {pct(r['balanced_accuracy'])} | **{pct(e['accuracy'])}** "
              f"({e['correct']}/{e['n']}) | {thin_cells} | {pct(r['valid_accuracy'])} "
              f"({r['best_epoch']}) |")
    print("\n## Recall per class (%), test split\n")
    print("| class | train | valid | test | " + " | ".join(models) +
          " | lecture (MATLAB, validation) |")
    print("| --- | ---: | ---: | ---: |" + " ---: |" * len(models) + " ---: |")
    for lb, c in s["counts"].items():
        cells = " | ".join(pct(r["per_class"][lb]["recall"]) for r in models.values())
        mark = "" if lb in enough else " (thin)"
        print(f"| {lb}{mark} | {c['train']} | {c['valid']} | {c['test']} | {cells} | "
              f"~{100 * LECTURE_PER_CLASS:.0f} |")
    print("\n## Time on this machine, and the full v0.02 dataset extrapolated\n")
    rate = s["feature_clips_per_second"]
    if rate:
        print(f"compute_features: {rate:.0f} clips/s -> every v0.02 clip ({V2_CLIPS:,}): "
              f"{V2_CLIPS / rate / 60:.1f} min; 12class (~{TWELVE_CLASS_CLIPS:,} clips): "
              f"{TWELVE_CLASS_CLIPS / rate / 60:.1f} min\n")
    print("| model | epochs | s/epoch (median) | samples/s (median) | training s | "
          f"full 12class, {TRAIN_EXAMPLES_12CLASS:,} examples/epoch, same epochs |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for model, r in models.items():
        full_h = TRAIN_EXAMPLES_12CLASS * r["epochs"] / r["samples_per_second"] / 3600
        train_s = r["train_seconds"]
        print(f"| {model} | {r['epochs']} | {r['epoch_seconds']:.1f} | "
              f"{r['samples_per_second']:.0f} | {train_s:.0f} | {full_h:.1f} h |"
              if train_s is not None else f"| {model} | {r['epochs']} | - | - | - | - |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", default="speech_commands_sample")
    parser.add_argument("--results", type=Path, default=ROOT / "results")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-train-clips", type=int, default=MIN_TRAIN_CLIPS)
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    summary = summarise(args.results, args.name, args.seed, args.min_train_clips)
    print_report(summary)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
