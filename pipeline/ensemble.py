"""Soft-voting ensembles: several trained models (families, seeds, training variants) score
the same test clips; the ensemble's class probabilities are the mean of theirs.

Seed-to-seed and configuration-to-configuration differences on an unseen speaker are as
large as the effects being measured (a fold moves ±0.1 between seeds); averaging models
whose errors differ removes part of that variance. The members are chosen in the config
before any of them is scored, never by their test accuracy.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline import provenance
from pipeline.evaluation import score_predictions
from pipeline.io import write_json, write_table

log = logging.getLogger(__name__)

#: Columns of predictions.csv that name a clip and its truth; p_<label> columns follow.
ID_COLUMNS = ("clip", "speaker", "true_label")


@dataclass(frozen=True)
class Member:
    """One scored model: trained on `dataset` (a run name, `name/fold-k` for a fold), of
    family `model` with `seed`, scored on `test` (None: its own test split)."""

    dataset: str
    model: str
    seed: int
    test: str | None = None

    def describe(self) -> str:
        where = f" on {self.test}" if self.test else ""
        return f"{self.dataset} {self.model} seed {self.seed}{where}"


def probability_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith("p_")]


def clip_keys(clips: pd.Series) -> pd.Series:
    """The ids by which members' clips are matched. A composite's clip ids carry their
    source (`fsdd_loso/0_george_0` in fsdd_loso_plus): when every id of a member has the
    same first path component, it is dropped, so a composite's test clips match those of
    its test source's own variants. Ids whose first components differ (Speech Commands'
    `zero/...`, `one/...`) stay whole."""
    parts = clips.astype(str).str.split("/", n=1)
    heads = {p[0] for p in parts}
    if len(heads) == 1 and all(len(p) == 2 for p in parts):
        return parts.str[1]
    return clips.astype(str)


def combine_predictions(frames: Sequence[pd.DataFrame], names: Sequence[str]) -> pd.DataFrame:
    """The mean of the members' class probabilities per clip, in the first member's clip
    order (and with its clip ids), with the predicted label and its probability
    (predictions.csv's columns).

    Every member must have scored exactly the same clips (matched by `clip_keys`) with the
    same true labels and the same label names; otherwise the mean would mix different
    questions, so it is refused."""
    if len(frames) < 2:
        raise ValueError("an ensemble needs at least two members' predictions")
    frames = [f.assign(key=clip_keys(f["clip"])) for f in frames]
    first = frames[0].set_index("key")
    labels = probability_columns(frames[0])
    total = np.zeros((len(first), len(labels)))
    for frame, name in zip(frames, names, strict=True):
        if probability_columns(frame) != labels:
            raise ValueError(f"{name} has classes {probability_columns(frame)}, the first "
                             f"member {labels}: members must share one label set")
        frame = frame.set_index("key")
        missing, extra = first.index.difference(frame.index), frame.index.difference(
            first.index)
        if len(missing) or len(extra) or frame.index.has_duplicates:
            raise ValueError(
                f"{name} scored other clips than the first member ({len(missing)} missing, "
                f"e.g. {list(missing[:3])}; {len(extra)} extra, e.g. {list(extra[:3])}): "
                "members must be scored on the same test clips (the same speaker or fold)")
        frame = frame.loc[first.index]
        wrong = (frame["true_label"].astype(str) != first["true_label"].astype(str))
        if wrong.any():
            raise ValueError(f"{name} labels {int(wrong.sum())} clips differently from the "
                             f"first member, e.g. {list(first.index[wrong][:3])}")
        total += frame[labels].to_numpy(dtype=float)
    mean = total / len(frames)
    names_of = [c.removeprefix("p_") for c in labels]
    out = first.reset_index()[list(ID_COLUMNS)].copy()
    out["true_label"] = out["true_label"].astype(str)
    out["predicted_label"] = [names_of[i] for i in mean.argmax(1)]
    out["probability"] = mean.max(1).round(6)
    for j, column in enumerate(labels):
        out[column] = mean[:, j].round(6)
    return out


def evaluate_ensemble(members: Sequence[Member],
                      predictions: Sequence[str | os.PathLike],
                      metrics: Sequence[str | os.PathLike],
                      out_dir: str | os.PathLike, name: str) -> dict[str, Any]:
    """Combine the members' predictions.csv files (with their metrics.json, in the same
    order as `members`) and write predictions.csv, metrics.json (with every member's own
    accuracy), confusion.csv and confusion.png into `out_dir`."""
    if not len(members) == len(predictions) == len(metrics):
        raise ValueError(f"{len(members)} members, {len(predictions)} predictions files and "
                         f"{len(metrics)} metrics files: one of each per member")
    out_dir = Path(out_dir)
    frames = [pd.read_csv(path, dtype={"true_label": str, "predicted_label": str})
              for path in predictions]
    own = [json.loads(Path(path).read_text()) for path in metrics]
    combined = combine_predictions(frames, [m.describe() for m in members])
    write_table(out_dir / "predictions.csv", combined)

    label_names = [c.removeprefix("p_") for c in probability_columns(combined)]
    index = {label: i for i, label in enumerate(label_names)}
    y_true = combined["true_label"].map(index).to_numpy()
    y_pred = combined["predicted_label"].map(index).to_numpy()
    scores = score_predictions(y_true, y_pred, label_names,
                               combined["speaker"].astype(str).tolist(), out_dir,
                               f"{name}: mean of {len(members)} models")
    seeds = sorted({m.seed for m in members})
    scores.update({
        "dataset": name,
        "test_dataset": own[0].get("test_dataset") or own[0]["dataset"],
        "model": "ensemble",
        "evaluation": "ensemble",
        "seed": "+".join(str(s) for s in seeds),
        "combination": "mean of the members' class probabilities (soft voting)",
        "parameters": int(sum(m["parameters"] for m in own)),
        "train_seconds": float(sum(m.get("train_seconds") or 0.0 for m in own)),
        "members": [{"dataset": m.dataset, "model": m.model, "seed": m.seed, "test": m.test,
                     "test_accuracy": o["test_accuracy"], "parameters": o["parameters"],
                     "git_commit": o.get("git_commit")}
                    for m, o in zip(members, own, strict=True)],
        "member_accuracy_mean": float(np.mean([o["test_accuracy"] for o in own])),
        "versions": provenance.package_versions(),
        "machine": provenance.machine(),
        "git_commit": provenance.git_commit(),
    })
    write_json(out_dir / "metrics.json", scores)
    log.info("%s: %d members (accuracy %.4f on average), ensemble accuracy %.4f "
             "(95%% CI %.4f-%.4f)", name, len(members), scores["member_accuracy_mean"],
             scores["test_accuracy"], *scores["accuracy_ci95"])
    return scores
