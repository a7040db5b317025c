"""Tables and figures across runs: the accuracy table, accuracy vs size, learning curves."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from pipeline.io import atomic_path, write_table  # noqa: E402


def collect_metrics(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """One row per metrics.json: the fields a table needs."""
    rows = []
    for path in paths:
        m = json.loads(Path(path).read_text())
        rf = m.get("receptive_field", {})
        rows.append({
            "dataset": m["dataset"],
            "test_dataset": m.get("test_dataset") or m["dataset"],
            "model": m["model"],
            "seed": m["seed"],
            "test_accuracy": m["test_accuracy"],
            "ci_low": (m.get("accuracy_ci95") or [None, None])[0],
            "ci_high": (m.get("accuracy_ci95") or [None, None])[1],
            "balanced_accuracy": m.get("balanced_accuracy"),
            "macro_f1": m.get("macro_f1"),
            "n_test": m.get("n_test"),
            "parameters": m["parameters"],
            "receptive_field_frames": rf.get("frames"),
            "receptive_field_ms": rf.get("ms"),
            "best_epoch": m.get("best_epoch"),
            "train_seconds": m.get("train_seconds"),
            "train_device": m.get("train_device"),
        })
    return pd.DataFrame(rows)


def accuracy_table(per_run: pd.DataFrame, order: list[str] | None = None) -> pd.DataFrame:
    """Mean, standard deviation and count over seeds per (dataset, test dataset, model)."""
    keys = ["dataset", "test_dataset", "model"]
    grouped = per_run.groupby(keys, sort=False)
    table = grouped.agg(
        test_accuracy=("test_accuracy", "mean"),
        test_accuracy_std=("test_accuracy", "std"),
        n_seeds=("seed", "nunique"),
        ci_low=("ci_low", "mean"),
        ci_high=("ci_high", "mean"),
        balanced_accuracy=("balanced_accuracy", "mean"),
        macro_f1=("macro_f1", "mean"),
        n_test=("n_test", "first"),
        parameters=("parameters", "first"),
        receptive_field_frames=("receptive_field_frames", "first"),
        receptive_field_ms=("receptive_field_ms", "first"),
        train_seconds=("train_seconds", "mean"),
    ).reset_index()
    table["test_accuracy_std"] = table["test_accuracy_std"].fillna(0.0)
    table.insert(2, "evaluation", ["same" if a == b else "cross"
                                   for a, b in zip(table["dataset"], table["test_dataset"],
                                                   strict=True)])
    rank = {name: i for i, name in enumerate(order or [])}
    models = {"dense": 0, "conv1d": 1, "cnn2d": 2}
    table = table.assign(_d=table["dataset"].map(rank).fillna(len(rank)),
                         _e=table["evaluation"].eq("cross"),
                         _m=table["model"].map(models).fillna(9))
    return table.sort_values(["_d", "_e", "test_dataset", "_m"]).drop(
        columns=["_d", "_e", "_m"]).reset_index(drop=True)


def to_markdown(table: pd.DataFrame) -> str:
    shown = table.copy()
    shown["accuracy"] = [
        f"{a:.4f} ± {s:.4f} (n={n})" if n > 1 else f"{a:.4f} [{lo:.3f}, {hi:.3f}]"
        for a, s, n, lo, hi in zip(shown["test_accuracy"], shown["test_accuracy_std"],
                                   shown["n_seeds"], shown["ci_low"], shown["ci_high"],
                                   strict=True)]
    shown["macro_f1"] = shown["macro_f1"].map(lambda v: f"{v:.4f}")
    shown["train_s"] = shown["train_seconds"].map(lambda v: f"{v:.0f}")
    shown["receptive_field_ms"] = shown["receptive_field_ms"].map(
        lambda v: "n/a" if pd.isna(v) else f"{v:.0f}")  # images have no time axis
    columns = ["dataset", "test_dataset", "model", "accuracy", "macro_f1", "parameters",
               "receptive_field_frames", "receptive_field_ms", "train_s"]
    return shown[columns].to_markdown(index=False) + "\n"


def plot_accuracy_vs_parameters(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """The lecture's dense-versus-convolution comparison: accuracy against model size."""
    same = table[table["evaluation"] == "same"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    markers = {"dense": "o", "conv1d": "s", "cnn2d": "^"}
    for dataset, rows in same.groupby("dataset", sort=False):
        line = ax.plot(rows["parameters"], rows["test_accuracy"], ls=":", alpha=0.5)[0]
        for _, row in rows.iterrows():
            ax.errorbar(row["parameters"], row["test_accuracy"], yerr=row["test_accuracy_std"],
                        marker=markers.get(row["model"], "x"), color=line.get_color(),
                        label=f"{dataset} {row['model']}", capsize=3)
    ax.set_xscale("log")
    ax.set_xlabel("Trainable parameters")
    ax.set_ylabel("Test accuracy")
    ax.set_title("Accuracy against model size")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def tabulate_results(metrics_paths: Iterable[str | os.PathLike], csv_out, md_out, figure_out,
                     order: list[str] | None = None) -> pd.DataFrame:
    table = accuracy_table(collect_metrics(metrics_paths), order)
    write_table(csv_out, table)
    with atomic_path(md_out) as tmp:
        tmp.write_text(to_markdown(table))
    plot_accuracy_vs_parameters(table, figure_out)
    return table


def plot_learning_curves(histories: dict[str, str | os.PathLike], title: str,
                         path: str | os.PathLike) -> None:
    """Train and validation accuracy and loss per epoch; one colour per model (first seed)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for (name, hist_path), color in zip(histories.items(), plt.cm.tab10.colors, strict=False):
        h = pd.read_csv(hist_path)
        for ax, metric in zip(axes, ("accuracy", "loss"), strict=True):
            ax.plot(h["epoch"], h[f"train_{metric}"], color=color, ls="--", alpha=0.7,
                    label=f"{name} train")
            ax.plot(h["epoch"], h[f"valid_{metric}"], color=color, label=f"{name} valid")
    for ax, metric in zip(axes, ("Accuracy", "Loss"), strict=True):
        ax.set_xlabel("Epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
