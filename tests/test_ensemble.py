"""Soft-voting ensembles: the mean of the members' probabilities on the same clips, refusals
when the members scored different clips or classes, the config's checks, the fold-by-fold
plan, and the summary row. (The ensemble of a real run, and its place in the report: see
tests/test_report.py.)"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import ROOT
from pipeline import report
from pipeline.config import ConfigError, ensemble_members, ensemble_runs, validate
from pipeline.ensemble import Member, clip_keys, combine_predictions, evaluate_ensemble

LABELS = ["a", "b", "c"]


def _predictions(probs, clips=None, truth=None):
    probs = np.asarray(probs, dtype=float)
    clips = clips or [f"clip{i}" for i in range(len(probs))]
    truth = truth or ["a", "b", "c", "a"][:len(probs)]
    frame = pd.DataFrame({"clip": clips, "speaker": ["s1", "s1", "s2", "s2"][:len(probs)],
                          "true_label": truth,
                          "predicted_label": [LABELS[i] for i in probs.argmax(1)],
                          "probability": probs.max(1)})
    for j, label in enumerate(LABELS):
        frame[f"p_{label}"] = probs[:, j]
    return frame


A = [[0.6, 0.4, 0.0], [0.1, 0.9, 0.0], [0.5, 0.0, 0.5], [0.4, 0.0, 0.6]]
B = [[0.6, 0.0, 0.4], [0.1, 0.0, 0.9], [0.0, 0.2, 0.8], [0.45, 0.55, 0.0]]
C = [[0.0, 0.55, 0.45], [0.2, 0.3, 0.5], [0.1, 0.1, 0.8], [0.9, 0.1, 0.0]]


def test_the_mean_of_probabilities_decides_not_the_majority():
    out = combine_predictions([_predictions(p) for p in (A, B, C)], ["A", "B", "C"])
    mean = (np.array(A) + np.array(B) + np.array(C)) / 3
    assert np.allclose(out[[f"p_{x}" for x in LABELS]].to_numpy(), mean.round(6))
    assert list(out["predicted_label"]) == [LABELS[i] for i in mean.argmax(1)]
    # clip0: A and B vote a (0.6 each), C votes b; the mean says a with 0.4
    assert out["predicted_label"][0] == "a" and out["probability"][0] == pytest.approx(0.4)
    # clip3: A votes c, B votes b, C votes a by 0.9: the confident member wins
    assert out["predicted_label"][3] == "a"
    assert list(out["clip"]) == [f"clip{i}" for i in range(4)]
    assert list(out["true_label"]) == ["a", "b", "c", "a"]


def test_members_are_matched_clip_by_clip_not_row_by_row():
    shuffled = _predictions(B).iloc[[2, 0, 3, 1]].reset_index(drop=True)
    assert combine_predictions([_predictions(A), shuffled], ["A", "B"]).equals(
        combine_predictions([_predictions(A), _predictions(B)], ["A", "B"]))


def test_a_composites_source_prefixed_ids_match_its_sources_ids():
    plain = _predictions(A)
    composite = _predictions(B, clips=[f"fsdd_loso/clip{i}" for i in range(4)])
    out = combine_predictions([plain, composite], ["plain", "composite"])
    assert list(out["clip"]) == [f"clip{i}" for i in range(4)]  # the first member's ids
    assert out["p_a"][0] == pytest.approx(0.6)
    # ids whose first components differ (Speech Commands' word folders) stay whole
    words = [f"{w}/x_nohash_0" for w in ("zero", "one", "two", "three")]
    assert list(clip_keys(pd.Series(words))) == words
    with pytest.raises(ValueError, match="scored other clips"):
        combine_predictions([_predictions(A, clips=words), plain], ["words", "plain"])


def test_members_that_scored_other_clips_labels_or_classes_are_refused():
    a = _predictions(A)
    with pytest.raises(ValueError, match=r"B scored other clips .*1 missing.*clip3"):
        combine_predictions([a, _predictions(B[:3])], ["A", "B"])
    renamed = _predictions(B, clips=["clip0", "clip1", "clip2", "other"])
    with pytest.raises(ValueError, match=r"1 extra, e.g. \['other'\]"):
        combine_predictions([a, renamed], ["A", "B"])
    with pytest.raises(ValueError, match="labels 1 clips differently"):
        combine_predictions([a, _predictions(B, truth=["a", "b", "c", "b"])], ["A", "B"])
    with pytest.raises(ValueError, match="share one label set"):
        combine_predictions([a, _predictions(B).rename(columns={"p_c": "p_z"})], ["A", "B"])
    with pytest.raises(ValueError, match="at least two"):
        combine_predictions([a], ["A"])


def _member_files(tmp_path, name, probs, accuracy, parameters):
    folder = tmp_path / name
    folder.mkdir()
    _predictions(probs).to_csv(folder / "predictions.csv", index=False)
    (folder / "metrics.json").write_text(json.dumps({
        "dataset": "d/fold-1", "test_dataset": "d/fold-1", "test_accuracy": accuracy,
        "parameters": parameters, "train_seconds": 2.0, "git_commit": "abc"}))
    return folder / "predictions.csv", folder / "metrics.json"


def test_evaluate_ensemble_writes_scores_members_and_a_summary_row(tmp_path):
    files = [_member_files(tmp_path, n, p, acc, par) for n, p, acc, par in
             (("A", A, 0.5, 100), ("B", B, 0.25, 200), ("C", C, 0.75, 300))]
    members = [Member("d/fold-1", "dense", 0), Member("d/fold-1", "cnn2d", 0),
               Member("e/fold-1", "cnn2d", 1)]
    out = tmp_path / "results/ensembles/mix/fold-1"
    metrics = evaluate_ensemble(members, [p for p, _ in files], [m for _, m in files], out,
                                name="mix/fold-1")
    written = json.loads((out / "metrics.json").read_text())
    assert written["test_accuracy"] == metrics["test_accuracy"] == 0.75  # clip1 is wrong
    assert written["n_test"] == 4 and written["per_speaker"]["s1"]["accuracy"] == 0.5
    assert written["model"] == "ensemble" and written["evaluation"] == "ensemble"
    assert written["seed"] == "0+1" and written["parameters"] == 600
    assert [m["test_accuracy"] for m in written["members"]] == [0.5, 0.25, 0.75]
    assert written["member_accuracy_mean"] == pytest.approx(0.5)
    assert {"versions", "machine", "git_commit"} <= set(written)
    assert pd.read_csv(out / "confusion.csv", index_col=0).to_numpy().sum() == 4
    assert (out / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert list(pd.read_csv(out / "predictions.csv").columns) == [
        "clip", "speaker", "true_label", "predicted_label", "probability", "p_a", "p_b", "p_c"]
    with pytest.raises(ValueError, match="one of each per member"):
        evaluate_ensemble(members[:2], [p for p, _ in files], [m for _, m in files], out, "x")

    # two folds of one ensemble pool into one row of the accuracy table, after the models
    other = dict(written, dataset="mix/fold-2", test_accuracy=0.25)
    model = {"dataset": "d/fold-1", "test_dataset": "d/fold-1", "model": "dense", "seed": 0,
             "test_accuracy": 0.5, "parameters": 100}
    paths = []
    for i, m in enumerate((written, other, model)):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_text(json.dumps(m))
    table = report.accuracy_table(report.collect_metrics(paths), ["d"])
    assert list(table["evaluation"]) == ["same", "ensemble"]
    row = table.iloc[1]
    assert (row["dataset"], row["test_dataset"], row["model"]) == ("mix", "d", "ensemble")
    assert row["n"] == 2 and row["n_folds"] == 2 and row["test_accuracy"] == pytest.approx(0.5)
    assert list(report.dataset_settings_used(paths)) == ["d/fold-1"]


def _config(**extra):
    base = yaml.safe_load((ROOT / "config.yaml").read_text())
    base.pop("ensembles", None)
    return {**base, **extra}


LOSO_PAIR = {"members": [{"dataset": "fsdd_loso", "model": "cnn2d"},
                         {"dataset": "fsdd_loso_trim", "model": "cnn2d"}]}


def test_folded_members_ensemble_fold_by_fold_with_every_seed():
    config = validate(_config(datasets=["fsdd_loso", "fsdd_loso_trim"], models=["cnn2d"],
                              seeds=[0, 3], ensembles={"loso": LOSO_PAIR}))
    assert ensemble_runs(config) == [f"loso/fold-{k}" for k in range(6)]
    assert ensemble_members(config, "loso/fold-2") == [
        {"dataset": f"{d}/fold-2", "model": "cnn2d", "seed": s, "test": None}
        for d in ("fsdd_loso", "fsdd_loso_trim") for s in (0, 3)]
    # an ensemble whose datasets or models are not all in the run is left out, as a pair is
    assert ensemble_runs(validate(_config(datasets=["fsdd_loso"], models=["cnn2d"],
                                          ensembles={"loso": LOSO_PAIR}))) == []
    assert ensemble_runs(validate(_config(datasets=["fsdd_loso", "fsdd_loso_trim"],
                                          models=["dense"], ensembles={"loso": LOSO_PAIR}))) == []


def test_one_member_ensembles_its_seeds():
    one = {"members": [{"dataset": "fsdd_loso_trim", "model": "cnn2d"}]}
    config = validate(_config(datasets=["fsdd_loso_trim"], models=["cnn2d"], seeds=[0, 1, 2],
                              ensembles={"seeds": one}))
    assert [m["seed"] for m in ensemble_members(config, "seeds/fold-0")] == [0, 1, 2]
    # with one seed it would be no ensemble: it does not run
    assert ensemble_runs(validate(_config(datasets=["fsdd_loso_trim"], models=["cnn2d"],
                                          ensembles={"seeds": one}))) == []


def test_a_missing_pair_is_refused_only_where_the_ensemble_would_run():
    """Another run may replace cross_evaluations (--config): config.yaml's ensembles over
    datasets it does not run must not stop it."""
    members = {"members": [{"dataset": "fsdd", "model": "cnn2d", "test": "sc_digits_sample"},
                           {"dataset": "fsdd", "model": "dense", "test": "sc_digits_sample"}]}
    config = validate(_config(cross_evaluations=[], ensembles={"sc": members}))
    assert ensemble_runs(config) == []
    with pytest.raises(ConfigError, match=re.escape(
            "pair {train: fsdd, test: sc_digits_sample} scores this model")):
        validate(_config(datasets=["fsdd", "sc_digits_sample"], cross_evaluations=[],
                         ensembles={"sc": members}))


def test_members_scored_on_a_cross_evaluation_test_set():
    members = {"members": [
        {"dataset": "fsdd", "model": "cnn2d", "test": "sc_digits_sample"},
        {"dataset": "fsdd_trim", "model": "cnn2d", "test": "sc_digits_sample_trim"}]}
    config = validate(_config(datasets=["fsdd", "fsdd_trim", "sc_digits_sample",
                                        "sc_digits_sample_trim"], ensembles={"sc": members}))
    assert ensemble_runs(config) == ["sc"]
    assert [m["test"] for m in ensemble_members(config, "sc")] == [
        "sc_digits_sample", "sc_digits_sample_trim"]


@pytest.mark.parametrize(("ensembles", "message"), [
    ({"e": {"members": [{"dataset": "fsdd_lost", "model": "cnn2d"},
                        {"dataset": "fsdd", "model": "cnn2d"}]}}, "unknown dataset 'fsdd_lost'"),
    ({"e": {"members": [{"dataset": "fsdd", "model": "resnet"},
                        {"dataset": "fsdd", "model": "cnn2d"}]}}, "unknown model family"),
    ({"e": {"members": [{"dataset": "tts_digits", "model": "cnn2d", "test": "mnist"},
                        {"dataset": "tts_digits", "model": "dense", "test": "mnist"}]}},
     "no cross_evaluations pair {train: tts_digits, test: mnist}"),
    ({"e": {"members": [{"dataset": "fsdd_loso", "model": "cnn2d"},
                        {"dataset": "fsdd", "model": "cnn2d"}]}}, "different numbers of folds"),
    ({"fsdd_trim": LOSO_PAIR}, "the name of a dataset"),
    ({"e": {"members": [{"dataset": "sc_digits_sample", "model": "cnn2d"},
                        {"dataset": "fsdd", "model": "cnn2d"}]}}, "evaluation-only"),
    ({"E-1": LOSO_PAIR}, "does not match"),
    ({"e": {"members": [{"dataset": "fsdd", "model": "cnn2d", "seed": 2},
                        {"dataset": "fsdd", "model": "dense"}]}}, "'seed' was unexpected"),
])
def test_config_refuses_ensembles_that_cannot_be_scored(ensembles, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(_config(ensembles=ensembles))


def test_workflow_plans_one_ensemble_job_per_fold(tmp_path):
    ensembles = ("ensembles={loso: {members: [{dataset: fsdd_loso, model: cnn2d}, "
                 "{dataset: fsdd_loso_trim, model: cnn2d}]}}")
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path),
         "--configfile", str(ROOT / "config.yaml"), "--cores", "1", "-n", "--config",
         "datasets=[fsdd_loso, fsdd_loso_trim]", "models=[cnn2d]", ensembles],
        capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)\s*$", out[out.index("Job stats:"):], re.M))
    assert jobs["evaluate_ensemble"] == "6" and jobs["train_model"] == "12"
    assert "results/ensembles/loso/fold-5/metrics.json" in out
    assert "results/fsdd_loso_trim/fold-5/cnn2d/seed-0/predictions.csv" in out
