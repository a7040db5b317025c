"""Tables and figures across runs: the accuracy table (CSV, Markdown and an HTML table for
the report), the settings each dataset used, accuracy vs size, learning curves."""

from __future__ import annotations

import html
import json
import os
from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from pipeline.config import split_fold  # noqa: E402
from pipeline.io import atomic_path, write_table  # noqa: E402
from pipeline.models import REGISTRY  # noqa: E402

#: Marker per model family in the accuracy-vs-size figure, in registry order; families
#: beyond these (or not registered) get DEFAULT_MARKER.
MARKERS = ("o", "s", "^", "D", "v", "P", "*", "<", ">")
DEFAULT_MARKER = "x"


def family_rank(model: str) -> int:
    """A family's place in the registry (its canonical order); unknown families go last."""
    families = list(REGISTRY)
    return families.index(model) if model in families else len(families)


def family_marker(model: str) -> str:
    rank = family_rank(model)
    return MARKERS[rank] if model in REGISTRY and rank < len(MARKERS) else DEFAULT_MARKER


def collect_metrics(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """One row per metrics.json: the fields a table needs."""
    rows = []
    for path in paths:
        m = json.loads(Path(path).read_text())
        rf = m.get("receptive_field", {})
        dataset, fold = split_fold(m["dataset"])  # the folds of a variant pool into one row
        test_dataset, _ = split_fold(m.get("test_dataset") or m["dataset"])
        per_speaker = m.get("per_speaker") or {}
        rows.append({
            "dataset": dataset,
            "test_dataset": test_dataset,
            "evaluation": m.get("evaluation") or ("same" if dataset == test_dataset
                                                  else "cross"),
            "model": m["model"],
            "seed": m["seed"],
            "fold": -1 if fold is None else fold,
            "test_speakers": " ".join(sorted(per_speaker)) if len(per_speaker) <= 3
            else f"{len(per_speaker)} speakers",
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
    """Mean, standard deviation and count (n = seeds x folds) per (dataset, test dataset,
    model); the Wilson interval is kept only for a single run, where it means something."""
    keys = ["dataset", "test_dataset", "evaluation", "model"]
    grouped = per_run.groupby(keys, sort=False)
    table = grouped.agg(
        test_accuracy=("test_accuracy", "mean"),
        test_accuracy_std=("test_accuracy", "std"),
        n_seeds=("seed", "nunique"),
        n_folds=("fold", "nunique"),
        n=("test_accuracy", "size"),
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
    pooled = table["n"] > 1
    table.loc[pooled, ["ci_low", "ci_high"]] = float("nan")
    table.loc[table["n_folds"] == 1, "n_folds"] = 0  # not a fold variant (fold -1)
    rank = {name: i for i, name in enumerate(order or [])}
    table = table.assign(_d=table["dataset"].map(rank).fillna(len(rank)),
                         _e=table["evaluation"].map({"same": 0, "cross": 1}).fillna(2),
                         _m=table["model"].map(family_rank))
    return table.sort_values(["_d", "_e", "test_dataset", "_m"]).drop(
        columns=["_d", "_e", "_m"]).reset_index(drop=True)


def to_markdown(table: pd.DataFrame) -> str:
    shown = table.copy()
    shown["accuracy"] = [
        f"{a:.4f} ± {s:.4f} (n={n})" if n > 1 else f"{a:.4f} [{lo:.3f}, {hi:.3f}]"
        for a, s, n, lo, hi in zip(shown["test_accuracy"], shown["test_accuracy_std"],
                                   shown["n"], shown["ci_low"], shown["ci_high"],
                                   strict=True)]
    shown["macro_f1"] = shown["macro_f1"].map(lambda v: f"{v:.4f}")
    shown["train_s"] = shown["train_seconds"].map(lambda v: f"{v:.0f}")
    shown["receptive_field_ms"] = shown["receptive_field_ms"].map(
        lambda v: "n/a" if pd.isna(v) else f"{v:.0f}")  # images have no time axis
    columns = ["dataset", "test_dataset", "model", "accuracy", "macro_f1", "parameters",
               "receptive_field_frames", "receptive_field_ms", "train_s"]
    return shown[columns].to_markdown(index=False) + "\n"


#: Styles for the HTML tables, scoped to their class: they apply where a table is shown on
#: its own (the report's viewer) and inside the report's overview page.
TABLE_STYLE = """<style>
table.results-table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1em;
  font-family: system-ui, sans-serif; }
table.results-table th, table.results-table td { border: 1px solid #ccc; padding: 0.2em 0.5em;
  text-align: left; vertical-align: top; }
table.results-table td.num { text-align: right; font-variant-numeric: tabular-nums;
  white-space: nowrap; }
table.results-table th { background: #f0f0f0; white-space: nowrap; }
table.results-table td.text { min-width: 14em; }
table.results-table.accuracy td { white-space: nowrap; }
</style>
"""


def _html_table(header: list[str], rows: list[list[str]], numeric: set[int] = frozenset(),
                text: set[int] = frozenset(), kind: str = "") -> str:
    """A plain HTML table of cells that are already HTML (escape text before)."""
    classes = f"results-table {kind}".strip()
    out = [f'<table class="{classes}">',
           "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header)
           + "</tr></thead>", "<tbody>"]
    for row in rows:
        cells = "".join(
            f'<td class="num">{c}</td>' if j in numeric
            else f'<td class="text">{c}</td>' if j in text else f"<td>{c}</td>"
            for j, c in enumerate(row))
        out.append(f"<tr>{cells}</tr>")
    out.append("</tbody></table>")
    return "\n".join(out) + "\n"


def _number(value, fmt: str, missing: str = "n/a") -> str:
    return missing if value is None or pd.isna(value) else format(value, fmt)


def _seconds(value) -> str:
    if value is None or pd.isna(value):
        return "n/a"
    if value < 10:
        return f"{value:.1f} s"
    if value < 600:
        return f"{value:.0f} s"
    return f"{value / 60:.0f} min"


def _receptive_field(frames, ms) -> str:
    if frames is None or pd.isna(frames):
        return "n/a"
    if ms is None or pd.isna(ms):  # images: the "frames" are rows
        return f"{frames:.0f} rows"
    return f"{frames:.0f} frames ({ms:.0f} ms)"


def accuracy_html(table: pd.DataFrame) -> str:
    """The accuracy table as a person reads it: rounded, one row per dataset, test set and
    model; the accuracy is the mean over seeds, with their standard deviation beside it
    (an HTML fragment: a style element and a table)."""
    header = ["dataset", "test set", "model", "accuracy", "95 % interval",
              "sd over seeds x folds",
              "macro F1", "parameters", "receptive field", "training time"]
    rows = []
    for r in table.itertuples(index=False):
        spread = f"± {r.test_accuracy_std:.3f} (n={r.n})" if r.n > 1 else "n=1"
        interval = ("n/a" if pd.isna(r.ci_low) or pd.isna(r.ci_high)
                    else f"[{r.ci_low:.3f}, {r.ci_high:.3f}]")
        cells = [r.dataset, r.test_dataset, r.model, f"{r.test_accuracy:.3f}", interval, spread,
                 _number(r.macro_f1, ".3f"), _number(r.parameters, ",.0f"),
                 _receptive_field(r.receptive_field_frames, r.receptive_field_ms),
                 _seconds(r.train_seconds)]
        rows.append([html.escape(str(c)) for c in cells])
    return TABLE_STYLE + _html_table(header, rows, numeric={3, 4, 5, 6, 7, 9}, kind="accuracy")


def _compact(value) -> str:
    """A setting as short text: dicts as `(key value, ...)`, lists as `[a, b]`."""
    if isinstance(value, dict):
        return "(" + ", ".join(f"{k} {_compact(v)}" for k, v in value.items()) + ")"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_compact(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return "-" if value is None else str(value)


#: Feature attributes that describe the file format, not the science.
_FEATURE_SKIP = ("feature_version",)


def dataset_settings_used(metrics_paths: Iterable[str | os.PathLike],
                          order: list[str] | None = None) -> dict[str, dict[str, dict]]:
    """What each dataset's runs actually used, read back from their metrics.json:
    {dataset: {"features": the feature parameters stored in the checkpoint, "training": the
    merged training settings, "models": {family: its model config}}}, datasets in `order`."""
    used: dict[str, dict[str, dict]] = {}
    for path in metrics_paths:
        m = json.loads(Path(path).read_text())
        if (m.get("test_dataset") or m["dataset"]) != m["dataset"]:
            continue  # cross-dataset scores (and ensembles, never named as their test set):
            # the model's own dataset says what it used
        entry = used.setdefault(m["dataset"], {"features": {}, "training": {}, "models": {}})
        for key, value in (m.get("feature_params") or {}).items():
            if key not in _FEATURE_SKIP:
                entry["features"].setdefault(key, value)
        for key, value in ((m.get("config") or {}).get("training") or {}).items():
            entry["training"].setdefault(key, value)
        if m.get("model_config") is not None:
            entry["models"].setdefault(m["model"], m["model_config"])
    rank = {name: i for i, name in enumerate(order or [])}
    names = sorted(used, key=lambda n: (rank.get(n, len(rank)), n))
    return {n: {**used[n], "models": dict(sorted(used[n]["models"].items(),
                                                 key=lambda kv: family_rank(kv[0])))}
            for n in names}


def settings_html(used: dict[str, dict[str, dict]]) -> str:
    """One row per dataset: its features, training settings and model configs; a setting
    whose value differs between the datasets is bold."""

    def differs(section: str, key: str, family: str | None = None) -> bool:
        values = set()
        for entry in used.values():
            group = entry[section] if family is None else entry["models"].get(family)
            if group is not None:
                values.add(_compact(group.get(key)) if key in group else None)
        return len(values) > 1

    def items(group: dict, section: str, family: str | None = None) -> str:
        out = []
        for key, value in group.items():
            text = html.escape(f"{key} {_compact(value)}")
            out.append(f"<b>{text}</b>" if differs(section, key, family) else text)
        return ", ".join(out) or "-"

    rows = []
    for name, entry in used.items():
        models = "<br>".join(f"<i>{html.escape(family)}</i>: "
                             f"{items(config, 'models', family)}"
                             for family, config in entry["models"].items())
        rows.append([html.escape(name), items(entry["features"], "features"),
                     items(entry["training"], "training"), models or "-"])
    return TABLE_STYLE + _html_table(["dataset", "features", "training", "models"], rows,
                                     text={1, 2, 3}, kind="settings")


def plot_accuracy_vs_parameters(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """The lecture's dense-versus-convolution comparison: accuracy against model size."""
    same = table[table["evaluation"] == "same"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for dataset, rows in same.groupby("dataset", sort=False):
        line = ax.plot(rows["parameters"], rows["test_accuracy"], ls=":", alpha=0.5)[0]
        for _, row in rows.iterrows():
            ax.errorbar(row["parameters"], row["test_accuracy"], yerr=row["test_accuracy_std"],
                        marker=family_marker(row["model"]), color=line.get_color(),
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
                     order: list[str] | None = None, html_out=None,
                     settings_out=None, runs_out=None) -> pd.DataFrame:
    """The accuracy table as CSV (full precision, float noise rounded away), Markdown and an
    HTML table (rounded, for the report), the accuracy-vs-size figure and, if asked, an HTML
    table of the settings each dataset used."""
    metrics_paths = list(metrics_paths)
    per_run = collect_metrics(metrics_paths)
    order = list(dict.fromkeys(split_fold(name)[0] for name in order or []))
    table = accuracy_table(per_run, order)
    write_table(csv_out, table.round(10))
    if runs_out is not None:  # one row per run: each fold and seed, with its test speakers
        write_table(runs_out, per_run.sort_values(["dataset", "test_dataset", "model", "fold",
                                                   "seed"]).round(10))
    with atomic_path(md_out) as tmp:
        tmp.write_text(to_markdown(table))
    if html_out is not None:
        with atomic_path(html_out) as tmp:
            tmp.write_text(accuracy_html(table), encoding="utf-8")
    if settings_out is not None:
        with atomic_path(settings_out) as tmp:
            tmp.write_text(settings_html(dataset_settings_used(metrics_paths, order)),
                           encoding="utf-8")
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
