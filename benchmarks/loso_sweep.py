"""Which training and feature settings help digits on an unseen FSDD speaker (issue 12)?

    PYTHONPATH=. python benchmarks/loso_sweep.py --mirror ../shared/datasets \
        --work /tmp/loso_sweep --out results/benchmarks/loso_sweep [--jobs 8] [--seeds 0]

Each configuration is a `fsdd_loso`-like variant (config.yaml's, or one below) with a few
training values changed, trained by every listed model family on each of the six
leave-one-speaker-out folds, its selected checkpoint (best validation epoch: repetitions of
the training speakers, never the test speaker) scored on the held-out speaker. Runs go
several at a time (a GPU takes them side by side) in the order listed, so a cut-short sweep
still holds the first configurations complete. Writes loso_sweep.csv (one row a run) and
prints mean +- sd over folds per configuration and model.

Caveat: the folds' test speakers are the only measure of generalisation here (validation
is 0.98-1.00 for every configuration), so picking the best row is picking on test data;
with six speakers, one seed and fold-to-fold swings of +-0.1, differences under ~0.05 in
the mean are not shown to be real.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from pathlib import Path

import pandas as pd
import yaml
from gpu_check import build_features
from sweep import run_sweep

from pipeline.config import stage_settings, validate

LOSO = {"dataset": "fsdd", "split": "speaker_folds", "folds": 6}
TRIM = {"features": {"trim_db": 25}}
#: variants beside config.yaml's (fsdd_loso, fsdd_loso_aug, fsdd_loso_trim)
#: ... each with fsdd_loso_aug's training (set in main)
EXTRA_VARIANTS = {
    "fsdd_loso_trim_aug": {**LOSO, **TRIM},
    "fsdd_loso_trim_vspk": {**LOSO, **TRIM, "fold_valid": "next_speaker"},
}
ALL = ["cnn2d", "conv1d", "dense"]
#: name -> (variant, training overrides, models[, model_params overrides by model])
CONFIGS = {
    "base": ("fsdd_loso", {}, ALL),
    "aug": ("fsdd_loso_aug", {}, ALL),
    "trim": ("fsdd_loso_trim", {}, ALL),
    "trim_aug": ("fsdd_loso_trim_aug", {}, ALL),
    "trim_aug_e40": ("fsdd_loso_trim_aug", {"epochs": 40, "lr_drop_epoch": 30}, ["cnn2d"]),
    "trim_aug_mixup0.2": ("fsdd_loso_trim_aug", {"mixup": 0.2}, ["cnn2d"]),
    "trim_aug_trainnorm_gain6": ("fsdd_loso_trim_aug", {"normalisation": "train_split",
                                                        "gain_db": 6.0}, ["cnn2d"]),
    "trim_aug_wide": ("fsdd_loso_trim_aug", {"speed": [0.8, 1.25], "vtlp": [0.85, 1.15]},
                      ["cnn2d"]),
    "trim_aug_drop0.5": ("fsdd_loso_trim_aug", {}, ["cnn2d"], {"cnn2d": {"dropout": 0.5}}),
    "trim_aug_wd1e-3": ("fsdd_loso_trim_aug", {"weight_decay": 1e-3}, ["cnn2d"]),
    "trim_aug_valid_speaker": ("fsdd_loso_trim_vspk", {}, ["cnn2d"]),
    "trim_aug_masks2": ("fsdd_loso_trim_aug", {"spec_augment": {
        "time_masks": 2, "time_width": 10, "freq_masks": 2, "freq_width": 6}}, ["cnn2d"]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mirror", required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS))
    parser.add_argument("--folds", type=int, nargs="+", default=list(range(6)))
    parser.add_argument("--epochs", type=int, help="cap every run's epochs (a smoke test)")
    args = parser.parse_args()
    raw = yaml.safe_load(Path("config.yaml").read_text())
    aug = raw["variants"]["fsdd_loso_aug"]["training"]
    raw["variants"].update({k: {**v, "training": aug} for k, v in EXTRA_VARIANTS.items()})
    config = validate(raw)
    args.out.mkdir(parents=True, exist_ok=True)
    built: dict[str, tuple[Path, str]] = {}
    jobs = []
    for name in args.configs:
        variant, overrides, models, *params = CONFIGS[name]
        for fold in args.folds:
            run_name = f"{variant}/fold-{fold}"
            key = json.dumps([stage_settings(config, run_name, s) for s in ("split",
                                                                            "features")],
                             sort_keys=True, default=str)
            if key not in built:
                t0 = time.perf_counter()
                features = build_features(config, run_name, args.mirror, args.work,
                                          os.cpu_count() or 1)
                splits = pd.read_csv(features.parent / "splits.tsv", sep="\t")
                speaker = ",".join(sorted(splits.loc[splits["split"] == "test", "speaker"]
                                          .unique()))
                built[key] = (features, speaker)
                print(f"features {run_name}: {time.perf_counter() - t0:.1f} s", flush=True)
            features, speaker = built[key]
            settings = copy.deepcopy(stage_settings(config, run_name, "train"))
            settings["training"].update(overrides)
            if args.epochs:
                settings["training"]["epochs"] = min(args.epochs, settings["training"]["epochs"])
            for model in models:
                s = copy.deepcopy(settings)
                if params and model in params[0]:
                    s["model_params"][model] = {**s["model_params"].get(model, {}),
                                                **params[0][model]}
                jobs += [{"features": str(features), "settings": s, "seed": seed,
                          "threads": args.threads, "model": model, "config": name,
                          "fold": fold, "speaker": speaker} for seed in args.seeds]
    run_sweep(jobs, args.jobs, args.out / "loso_sweep.csv", ["config", "model"])

if __name__ == "__main__":
    main()
