"""The report as a person reads it: the accuracy table and each dataset's settings as text on
the page that opens (checked in a real headless browser), `make report` for a run made with
--config, the Summary list, the evaluation rules, and the registry's family order."""

from __future__ import annotations

import html.parser
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT, TINY_TTS
from pipeline import report

VENV = Path(sys.executable).parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

#: One small run with two "datasets" that use different settings: tts_digits with its own
#: batch size (not the global one) and a variant of it whose dense network reads per-band
#: statistics; two families given in the reverse of the registry's order; one cross-dataset
#: evaluation.
CONFIG = [
    "datasets=[tts_digits, tts_stats]",
    "models=[cnn2d, dense]",
    "tts_digits={" + ", ".join(f"{k}: {v}".replace("'", "") for k, v in TINY_TTS.items())
    + ", training: {batch_size: 16, epochs: 2}}",
    "variants={tts_stats: {dataset: tts_digits, model_params: {dense: {input: stats}}}}",
    "cross_evaluations=[{train: tts_digits, test: tts_stats}]",
    # the same test clips scored two ways: a cross evaluation and a model of tts_stats
    "ensembles={mixed: {members: [{dataset: tts_digits, model: cnn2d, test: tts_stats}, "
    "{dataset: tts_stats, model: dense}]}}",
    "training={epochs: 2, batch_size: 32}",
]


def _metrics(dataset, model, seed, acc, test_dataset=None, training=None, **extra):
    return {"dataset": dataset, "test_dataset": test_dataset or dataset, "model": model,
            "seed": seed, "test_accuracy": acc, "accuracy_ci95": [acc - 0.05, acc + 0.05],
            "balanced_accuracy": acc, "macro_f1": acc, "n_test": 100, "parameters": 1234,
            "receptive_field": {"frames": 10, "ms": 115.0}, "train_seconds": 12.3456,
            "feature_params": {"sample_rate": 8000, "n_mels": 40, "feature_version": 1},
            "config": {"training": training or {"epochs": 25, "batch_size": 128}},
            "model_config": {"dropout": 0.2}, **extra}


def _write(tmp_path, metrics):
    paths = []
    for i, m in enumerate(metrics):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_text(json.dumps(m))
    return paths


# --- pipeline.report on its own (fast) ---------------------------------------------------------

def test_family_order_and_markers_come_from_the_model_registry(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "REGISTRY", {"cnn2d": None, "dense": None, "newnet": None})
    paths = _write(tmp_path, [_metrics("d", m, 0, 0.5) for m in
                              ("dense", "mystery", "newnet", "cnn2d")])
    table = report.accuracy_table(report.collect_metrics(paths))
    assert list(table["model"]) == ["cnn2d", "dense", "newnet", "mystery"]
    assert report.family_marker("cnn2d") == report.MARKERS[0]
    assert report.family_marker("newnet") == report.MARKERS[2]
    assert report.family_marker("mystery") == report.DEFAULT_MARKER
    report.plot_accuracy_vs_parameters(table, tmp_path / "size.png")  # unknown family: drawn
    assert (tmp_path / "size.png").stat().st_size > 0


def test_tables_are_rounded_and_settings_are_per_dataset(tmp_path):
    paths = _write(tmp_path, [
        _metrics("a", "dense", 0, 0.9400000000000001),
        _metrics("b", "dense", 0, 0.7, training={"epochs": 25, "batch_size": 16}),
        _metrics("b", "dense", 1, 0.8, training={"epochs": 25, "batch_size": 16}),
        _metrics("a", "dense", 0, 0.3, test_dataset="b"),
    ])
    out = {k: tmp_path / f"out.{k}" for k in ("csv", "md", "png", "html", "settings.html")}
    report.tabulate_results(paths, out["csv"], out["md"], out["png"], order=["a", "b"],
                            html_out=out["html"], settings_out=out["settings.html"])
    assert "0.9400000000000001" not in out["csv"].read_text()
    assert pd.read_csv(out["csv"])["test_accuracy"].iloc[0] == 0.94
    table = out["html"].read_text()
    assert '<td>a</td><td>a</td><td>dense</td><td class="num">0.940</td>' in table
    assert "[0.890, 0.990]" in table and "12 s" in table and "1,234" in table
    assert '<td class="num">0.750</td>' in table and "± 0.071 (n=2)" in table  # 2 seeds of b
    assert "<td>a</td><td>b</td><td>dense</td>" in table  # the cross row
    assert not re.search(r"\d\.\d{5,}", table)
    settings = out["settings.html"].read_text()
    assert settings.index("<td>a</td>") < settings.index("<td>b</td>")
    assert "<b>batch_size 128</b>" in settings and "<b>batch_size 16</b>" in settings
    assert "epochs 25" in settings and "<b>epochs" not in settings  # the same everywhere
    assert "feature_version" not in settings


# --- the workflow, `make report` and the browser (slow) -----------------------------------------

def _link_workflow(workdir: Path) -> None:
    """A project folder as a user has it, whose results are this test's own."""
    for name in ("Snakefile", "config.yaml", "workflow", "pyproject.toml"):
        (workdir / name).symlink_to(ROOT / name)


def _make_report(workdir: Path, config: list[str] | None):
    cmd = ["make", "-f", str(ROOT / "Makefile"), "-C", str(workdir),
           "-o", str(VENV / ".installed"),  # the test's environment is set up: do not rebuild
           "report", f"VENV={VENV}", "CORES=2"]
    if config is not None:
        cmd.append("CONFIG=" + " ".join(shlex.quote(c) for c in config))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """The run a user makes with --config, then `make report` without and with CONFIG."""
    workdir = tmp_path_factory.mktemp("project")
    _link_workflow(workdir)
    run = subprocess.run([str(VENV / "bin" / "snakemake"), "--cores", "2", "--config", *CONFIG],
                         cwd=workdir, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    without = _make_report(workdir, None)
    with_config = _make_report(workdir, CONFIG)
    return workdir, without, with_config


def _chromium(args: list[str], tmp_path: Path) -> str:
    if CHROMIUM is None:
        pytest.skip("no chromium: .ci/run installs Debian's chromium (apt-get install chromium)")
    profile = tmp_path / "chromium-profile"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={profile}", "--virtual-time-budget=10000",
           "--window-size=1366,768", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
         "track", "wbr"}


class _AppText(html.parser.HTMLParser):
    """Text the report app rendered into <div id="app"> (no script or style), and the rows of
    its result tables as lists of cell texts."""

    def __init__(self):
        super().__init__()
        self.depth = 0  # element depth inside #app (0: outside)
        self.skip = 0
        self.text: list[str] = []
        self.tables: list[list[list[str]]] = []
        self.row: list[str] | None = None
        self.cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if self.depth == 0:
            if attrs.get("id") == "app":
                self.depth = 1
            return
        if tag in _VOID:
            return
        self.depth += 1
        if tag in ("script", "style"):
            self.skip += 1
        elif tag == "table" and "results-table" in (attrs.get("class") or ""):
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.row = []
        elif tag in ("td", "th") and self.row is not None:
            self.cell = []

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag):
        if self.depth == 0 or tag in _VOID:
            return
        if tag in ("script", "style"):
            self.skip -= 1
        elif tag in ("td", "th") and self.cell is not None and self.row is not None:
            self.row.append(" ".join("".join(self.cell).split()))
            self.cell = None
        elif tag == "tr" and self.row is not None:
            self.tables[-1].append(self.row)
            self.row = None
        self.depth -= 1

    def handle_data(self, data):
        if self.depth and not self.skip:
            self.text.append(data)
            if self.cell is not None:
                self.cell.append(data)


@pytest.fixture(scope="module")
def page(made, tmp_path_factory):
    """The report page as the browser rendered it (main document, after the app ran)."""
    workdir, _, _ = made
    dom = _chromium(["--dump-dom", (workdir / "results/report.html").as_uri()],
                    tmp_path_factory.mktemp("browser"))
    parsed = _AppText()
    parsed.feed(dom)
    return parsed


@pytest.mark.slow
def test_make_report_builds_the_report_of_the_run_made_with_config(made):
    workdir, without, with_config = made
    # Without CONFIG the report is that of config.yaml's datasets, which this run did not make.
    assert without.returncode != 0
    assert "marked for report but does not exist" in without.stdout + without.stderr
    assert with_config.returncode == 0, with_config.stdout[-3000:] + with_config.stderr[-3000:]
    assert "--config 'datasets=[tts_digits, tts_stats]'" in with_config.stdout  # as make ran it
    assert (workdir / "results/report.html").stat().st_size > 100_000


@pytest.mark.slow
def test_accuracy_table_rows_are_text_on_the_page_that_opens(made, page):
    workdir, _, _ = made
    csv = pd.read_csv(workdir / "results/summary/accuracy.csv")
    assert len(csv) == 2 * 2 + 2 + 1  # 2 datasets x 2 families, 2 cross rows, an ensemble
    assert list(csv["evaluation"]) == ["same"] * 2 + ["cross"] * 2 + ["same"] * 2 + ["ensemble"]
    assert list(csv["model"][:2]) == ["dense", "cnn2d"]  # the registry's order, not config's
    tables = [t for t in page.tables if t and t[0][:3] == ["dataset", "test set", "model"]]
    assert len(tables) == 1, page.tables
    header, *rows = tables[0]
    assert header[3:6] == ["accuracy", "95 % interval", "sd over seeds x folds"]
    assert len(rows) == len(csv)
    for row, want in zip(rows, csv.itertuples(index=False), strict=True):
        assert row[:4] == [want.dataset, want.test_dataset, want.model,
                           f"{want.test_accuracy:.3f}"], row
        assert row[4] == f"[{want.ci_low:.3f}, {want.ci_high:.3f}]"
        assert row[7] == f"{want.parameters:,}"
    text = " ".join(page.text)
    assert not re.search(r"\d\.\d{5,}", " ".join(" ".join(r) for r in rows)), rows
    assert "Spoken-word and digit recognition" in text and "Accuracy" in text


@pytest.mark.slow
def test_overview_shows_the_settings_each_dataset_used(page):
    tables = [t for t in page.tables if t and t[0][0] == "dataset" and "training" in t[0]]
    assert len(tables) == 1, page.tables
    header, *rows = tables[0]
    by_dataset = {r[0]: dict(zip(header, r, strict=True)) for r in rows}
    assert list(by_dataset) == ["tts_digits", "tts_stats"]
    for used in by_dataset.values():
        # tts_digits' own batch size (the variant inherits it), not the global 32
        assert "batch_size 16" in used["training"] and "batch_size 32" not in used["training"]
        assert "epochs 2" in used["training"]  # the --config value, not config.yaml's 15
        assert "sample_rate 8000" in used["features"] and "n_mels 40" in used["features"]
        assert used["models"].index("dense:") < used["models"].index("cnn2d:")
    assert "input flatten" in by_dataset["tts_digits"]["models"]
    assert "input stats" in by_dataset["tts_stats"]["models"]


_PROBE = """<script>
setTimeout(function () {
  var out = {title: null, rows: []};
  var h1 = document.querySelector('#app h1.title');
  if (h1) { out.title = {text: h1.innerText, top: h1.getBoundingClientRect().top}; }
  document.querySelectorAll('#app table.results-table tbody tr').forEach(function (tr) {
    tr.scrollIntoView({block: 'center', inline: 'center'});
    var r = tr.getBoundingClientRect();
    var hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
    out.rows.push({text: tr.innerText, width: r.width, height: r.height,
                   seen: !!hit && tr.contains(hit)});
  });
  var pre = document.createElement('pre');
  pre.id = 'probe';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
}, 3000);
</script>"""


@pytest.mark.slow
def test_table_rows_are_on_screen_and_the_top_of_the_page_is_reachable(made, tmp_path):
    """Layout, not just DOM: a copy of the report with a script that only measures where the
    title and each table row are drawn and what lies on top of them."""
    workdir, _, _ = made
    page_html = (workdir / "results/report.html").read_text()
    end = page_html.rindex("</body>")
    probe = tmp_path / "probe.html"
    probe.write_text(page_html[:end] + _PROBE + page_html[end:])
    dom = _chromium(["--dump-dom", probe.as_uri()], tmp_path)
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, "the probe did not run"
    out = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&")
                     .replace("&lt;", "<").replace("&gt;", ">"))
    assert out["title"]["text"] == "Spoken-word and digit recognition"
    assert out["title"]["top"] >= 0, "the top of the overview is scrolled out of reach"
    assert len(out["rows"]) == 7 + 2  # accuracy rows (6 models, 1 ensemble), settings rows
    for row in out["rows"]:
        assert row["width"] > 0 and row["height"] > 0 and row["seen"], row
        assert row["text"].strip()


@pytest.mark.slow
def test_summary_items_share_one_label_key(made):
    workdir, _, _ = made
    page_html = (workdir / "results/report.html").read_text()
    start = page_html.index("var results = {") + len("var results = ")
    results, _ = json.JSONDecoder().raw_decode(page_html, start)
    summary = {Path(p).name: r for p, r in results.items()
               if p.startswith("results/summary/") and "learning_curves" not in p}
    assert set(summary) == {"accuracy.html", "accuracy.csv", "accuracy_runs.csv",
                            "settings.html", "accuracy_vs_parameters.png"}
    assert {tuple(r["labels"]) for r in summary.values()} == {("result",)}
    assert summary["accuracy.html"]["mime_type"] == "text/html"  # shown in the report's viewer
    cross = [r for p, r in results.items() if "/cross/" in p]
    assert len(cross) == 2 and all(r["job_properties"]["rule"] == "evaluate_cross_dataset"
                                   for r in cross)


@pytest.mark.slow
def test_both_evaluations_write_where_they_did_from_one_definition(made):
    workdir, _, _ = made
    for model in ("dense", "cnn2d"):
        run = workdir / f"results/tts_digits/{model}/seed-0"
        for folder in (run, run / "cross/tts_stats"):
            for name in ("metrics.json", "predictions.csv", "confusion.csv", "confusion.png"):
                assert (folder / name).stat().st_size > 0, folder / name
        cross = json.loads((run / "cross/tts_stats/metrics.json").read_text())
        assert cross["test_dataset"] == "tts_stats" and cross["dataset"] == "tts_digits"
        logs = workdir / "results/logs"
        assert (logs / f"evaluate_model/tts_digits/{model}/seed-0.log").exists()
        assert (logs / f"evaluate_cross_dataset/tts_digits/{model}/seed-0/"
                "tts_stats.log").exists()
    rules = (ROOT / "workflow/rules/evaluation.smk").read_text()
    assert rules.count("evaluate_model.py") == 1 and rules.count("settings=settings_of") == 1


def test_an_ensemble_averages_its_members_and_is_in_the_report(made):
    workdir, _, with_config = made
    out = workdir / "results/ensembles/mixed"
    members = [workdir / "results/tts_digits/cnn2d/seed-0/cross/tts_stats",
               workdir / "results/tts_stats/dense/seed-0"]
    frames = [pd.read_csv(m / "predictions.csv").set_index("clip") for m in members]
    combined = pd.read_csv(out / "predictions.csv").set_index("clip")
    probs = [c for c in combined.columns if c.startswith("p_")]
    assert sorted(combined.index) == sorted(frames[0].index) == sorted(frames[1].index)
    mean = (frames[0].loc[combined.index, probs] + frames[1].loc[combined.index, probs]) / 2
    assert (combined[probs] - mean).abs().to_numpy().max() < 2e-6
    metrics = json.loads((out / "metrics.json").read_text())
    assert [(m["dataset"], m["model"], m["test"]) for m in metrics["members"]] == [
        ("tts_digits", "cnn2d", "tts_stats"), ("tts_stats", "dense", None)]
    hits = (combined["predicted_label"].astype(str) == combined["true_label"].astype(str))
    assert metrics["test_accuracy"] == pytest.approx(hits.mean())
    assert (workdir / "results/logs/evaluate_ensemble/mixed.log").exists()
    page_html = (workdir / "results/report.html").read_text()
    assert "Ensembles" in page_html and with_config.returncode == 0
