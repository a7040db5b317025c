"""Score a checkpoint on a test split: predictions, metrics with provenance, confusion matrix."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from scipy.stats import binomtest  # noqa: E402
from sklearn.metrics import (  # noqa: E402
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from pipeline import provenance  # noqa: E402
from pipeline.checkpoint import load_checkpoint, normalise_with  # noqa: E402
from pipeline.features import load_split, read_attrs  # noqa: E402
from pipeline.io import atomic_path, write_json, write_table  # noqa: E402
from pipeline.modalities import get_modality  # noqa: E402
from pipeline.training import choose_device, evaluate  # noqa: E402

log = logging.getLogger(__name__)


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, label_names: list[str]
                           ) -> dict[str, Any]:
    """Accuracy (with a Wilson 95 % interval), balanced accuracy, macro F1, per-class scores."""
    labels = list(range(len(label_names)))
    n, k = len(y_true), int((y_true == y_pred).sum())
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson") if n else None
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    present = sorted(set(y_true.tolist()))
    return {
        "test_accuracy": float(accuracy_score(y_true, y_pred)) if n else float("nan"),
        "accuracy_ci95": [float(ci.low), float(ci.high)] if ci else None,
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)) if n else None,
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro",
                                   zero_division=0)) if n else None,
        "n_test": n,
        "n_correct": k,
        "per_class": {
            name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                   "support": int(s[i])}
            for i, name in enumerate(label_names)
        },
    }


def per_speaker_accuracy(speakers: list[str], y_true: np.ndarray, y_pred: np.ndarray
                         ) -> dict[str, dict[str, float]]:
    """Accuracy per speaker (or subject, voice): how evenly a model serves the people in the
    test split."""
    frame = pd.DataFrame({"speaker": speakers, "hit": y_true == y_pred})
    grouped = frame.groupby("speaker", sort=True)["hit"]
    return {str(k): {"accuracy": float(v.mean()), "n": int(v.size)} for k, v in grouped}


def confusion_table(y_true: np.ndarray, y_pred: np.ndarray, label_names: list[str]
                    ) -> pd.DataFrame:
    """Counts with true classes as rows and predicted classes as columns."""
    cm = confusion_matrix(y_true, y_pred, labels=list(range(len(label_names))))
    frame = pd.DataFrame(cm, index=label_names, columns=label_names)
    frame.index.name = "true_label"
    return frame


def plot_confusion(table: pd.DataFrame, title: str, path: str | os.PathLike) -> None:
    """Counts and row-normalised percentages per cell, as the MATLAB confusion chart."""
    counts = table.to_numpy()
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros_like(counts, dtype=float), where=rows > 0)
    n = len(table)
    size = max(5.0, 0.55 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), table.columns, rotation=45 if n > 10 else 0, ha="right" if n > 10
                  else "center")
    ax.set_yticks(range(n), table.index)
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    ax.set_title(title)
    small = 7 if n > 10 else 9
    for i in range(n):
        for j in range(n):
            if counts[i, j]:
                ax.text(j, i, f"{counts[i, j]}\n{100 * share[i, j]:.0f}%", ha="center",
                        va="center", fontsize=small,
                        color="white" if share[i, j] > 0.5 else "black")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def score_predictions(y_true: np.ndarray, y_pred: np.ndarray, label_names: list[str],
                      speakers: list[str], out_dir: Path, title: str) -> dict[str, Any]:
    """Metrics (with per-speaker accuracy) of predicted class indices, and confusion.csv
    and confusion.png in `out_dir` (a model's evaluation and an ensemble's alike); `title`
    gets the accuracy appended."""
    table = confusion_table(y_true, y_pred, label_names)
    with atomic_path(out_dir / "confusion.csv") as tmp:
        table.to_csv(tmp)
    metrics = classification_metrics(y_true, y_pred, label_names)
    metrics["per_speaker"] = per_speaker_accuracy(speakers, y_true, y_pred)
    plot_confusion(table, f"{title} (accuracy {metrics['test_accuracy']:.3f})",
                   out_dir / "confusion.png")
    return metrics


def check_compatible(ckpt: dict[str, Any], attrs: dict[str, Any], test_name: str) -> None:
    if list(ckpt["label_names"]) != list(attrs["label_names"]):
        raise ValueError(f"model labels {ckpt['label_names']} differ from {test_name}'s "
                         f"{attrs['label_names']}: cannot cross-evaluate")
    theirs = attrs
    ours = ckpt["feature_params"]
    if ours.get("modality") != theirs.get("modality"):
        raise ValueError(f"model was trained on {ours.get('modality')} features, {test_name} "
                         f"holds {theirs.get('modality')} features: cannot cross-evaluate")
    for key in get_modality(ours["modality"]).compatible_keys:
        a, b = ours.get(key), theirs.get(key)
        if a is None and b is None:
            continue
        a = a.item() if hasattr(a, "item") else a
        b = b.item() if hasattr(b, "item") else b
        if str(a) != str(b):
            raise ValueError(f"feature parameter {key} differs: model {a}, {test_name} {b}; "
                             "compute both datasets' features with the same settings")


def evaluate_model(model_pt: str | os.PathLike, features_h5: str | os.PathLike,
                   out_dir: str | os.PathLike, config: dict[str, Any] | None = None,
                   device: str = "auto", title: str = "", threads: int = 1) -> dict[str, Any]:
    """Write predictions.csv, metrics.json, confusion.csv and confusion.png into `out_dir`."""
    torch.set_num_threads(max(1, threads))
    out_dir = Path(out_dir)
    dev = choose_device(device)
    model, ckpt = load_checkpoint(model_pt, dev)
    attrs = read_attrs(Path(features_h5))
    check_compatible(ckpt, attrs, str(attrs.get("dataset", features_h5)))
    test = load_split(Path(features_h5), "test")
    x = normalise_with(ckpt, test.features)
    _, _, probs = evaluate(model, x, test.labels, dev)
    y_true, y_pred = test.labels.numpy(), probs.argmax(1).numpy()
    names = list(ckpt["label_names"])

    predictions = pd.DataFrame({
        "clip": test.clips, "speaker": test.speakers,
        "true_label": [names[i] for i in y_true], "predicted_label": [names[i] for i in y_pred],
        "probability": probs.max(1).values.numpy().round(6),
    })
    for i, name in enumerate(names):
        predictions[f"p_{name}"] = probs[:, i].numpy().round(6)
    write_table(out_dir / "predictions.csv", predictions)

    metrics = score_predictions(y_true, y_pred, names, test.speakers, out_dir,
                                title or f"{ckpt['dataset']} {ckpt['model']}")
    metrics.update({
        "dataset": ckpt["dataset"],
        "test_dataset": str(attrs.get("dataset", "")),
        "model": ckpt["model"],
        "seed": ckpt["seed"],
        "parameters": ckpt["parameters"],
        "receptive_field": ckpt["receptive_field"],
        "best_epoch": ckpt["epoch"],
        "epochs": ckpt["epochs_trained"],
        "valid_accuracy": ckpt["valid_accuracy"],
        "train_seconds": ckpt["train_seconds"],
        "train_device": ckpt["device"],
        "eval_device": str(dev),
        "config": config or {},
        "model_config": ckpt["model_config"],
        "feature_params": ckpt["feature_params"],
        "versions": provenance.package_versions(),
        "machine": provenance.machine(),
        "git_commit": provenance.git_commit(),
    })
    write_json(out_dir / "metrics.json", metrics)
    log.info("%s %s seed %s on %s: accuracy %.4f (95%% CI %.4f-%.4f), macro F1 %.4f",
             ckpt["dataset"], ckpt["model"], ckpt["seed"], metrics["test_dataset"],
             metrics["test_accuracy"], *metrics["accuracy_ci95"], metrics["macro_f1"])
    return metrics
