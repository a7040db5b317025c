"""spoken_digits: several digit sources, one label set; fsdd_loso_plus (FSDD's leave-one-
speaker-out folds with tts_digits voices added to training only)."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, write_tone
from pipeline import splits
from pipeline.config import (
    ConfigError,
    dataset_settings,
    raw_inputs,
    raw_root,
    run_names,
    stage_settings,
    validate,
)
from pipeline.datasets import fsdd, split_dataset, spoken_digits, tts_digits
from pipeline.datasets.base import DataError
from pipeline.features import compute_features, read_attrs
from pipeline.io import clip_file
from pipeline.modalities.audio import read_clip

FSDD_SPEAKERS = ["george", "jackson", "lucas", "nicolas", "theo", "yweweler"]
TTS = {"accents": ["en-us", "en", "en-029"], "variants": ["m1", "f1"], "repetitions": 1}
LOSO = {"dataset": "fsdd", "split": "speaker_folds", "folds": 6}
PLUS = {"dataset": "spoken_digits", "sources": ["fsdd_loso", "tts_digits"],
        "test_sources": ["fsdd_loso"]}
SC_SPEAKERS = {"train": ["0a1b2c3d", "1b2c3d4e"], "valid": ["2c3d4e5f"], "test": ["3d4e5f60"]}


def config(variants: dict | None = None, **top) -> dict:
    return validate({"datasets": ["fsdd_loso_plus"], "tts_digits": TTS,
                     "variants": {"fsdd_loso": LOSO, "fsdd_loso_plus": PLUS, **(variants or {})},
                     **top})


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, Path]:
    """Tiny raw folders in each source's layout: FSDD (6 speakers x 10 digits x 8
    repetitions of 0.1-s tones), tts_digits (the planned clips of TTS: 6 voices), and
    Speech Commands v0.02 at 16 kHz (the ten digit words and two other words, 4 speakers)."""
    base = tmp_path_factory.mktemp("spoken")
    for s, speaker in enumerate(FSDD_SPEAKERS):
        for digit in range(10):
            for index in range(8):
                write_tone(base / "fsdd" / "recordings" / f"{digit}_{speaker}_{index}.wav",
                           200 + 20 * digit + s, seconds=0.1)
    plan = tts_digits.utterance_plan(dataset_settings(config(), "tts_digits"))
    for clip, label in zip(plan["clip"], plan["label"], strict=True):
        write_tone(base / "tts_digits" / "recordings" / f"{clip}.wav", 300 + 10 * int(label),
                   seconds=0.1)
    sc = base / "speech_commands"
    lists: dict[str, list[str]] = {"valid": [], "test": []}
    for split, speakers in SC_SPEAKERS.items():
        for speaker in speakers:
            for word in [*spoken_digits.speech_commands.DIGITS, "bed", "yes"]:
                rel = f"{word}/{speaker}_nohash_0.wav"
                write_tone(sc / rel, 440, rate=16000, seconds=1.0)
                if split in lists:
                    lists[split].append(rel)
    (sc / "validation_list.txt").write_text("\n".join(lists["valid"]) + "\n")
    (sc / "testing_list.txt").write_text("\n".join(lists["test"]) + "\n")
    return {"fsdd_loso": base / "fsdd", "fsdd": base / "fsdd",
            "fsdd_speakers": base / "fsdd", "tts_digits": base / "tts_digits",
            "sc_digits": sc}


def split_of(cfg: dict, name: str, roots: dict[str, Path], tmp_path: Path) -> pd.DataFrame:
    settings = stage_settings(cfg, name, "split")
    mine = {source: roots[source] for source in settings["sources"]}
    return split_dataset(mine, settings, tmp_path / "splits.tsv")


def test_loso_plus_runs_fsdd_loso_folds_with_tts_voices_in_training_only(roots, tmp_path):
    cfg = config()
    assert run_names(cfg) == [f"fsdd_loso_plus/fold-{k}" for k in range(6)]
    tested: list[str] = []
    voices = set(tts_digits.utterance_plan(dataset_settings(cfg, "tts_digits"))["speaker"])
    for k in range(6):
        table = split_of(cfg, f"fsdd_loso_plus/fold-{k}", roots, tmp_path)
        test = table[table["split"] == "test"]
        assert set(test["source"]) == {"fsdd_loso"}
        assert sorted(set(test["speaker"])) == splits.fold_test_speakers(FSDD_SPEAKERS, 6, k)
        tested += sorted(set(test["speaker"]))
        # no test speaker anywhere else; every tts voice in one split, never test
        rest = set(table.loc[table["split"] != "test", "speaker"])
        assert not set(test["speaker"]) & rest
        tts = table[table["source"] == "tts_digits"]
        assert set(tts["speaker"]) == voices and set(tts["split"]) == {"train"}
        assert (tts.groupby("speaker")["split"].nunique() == 1).all()
        # the FSDD part is fsdd_loso's fold k, clip for clip
        loso = fsdd.DATASET.assign_splits(fsdd.list_recordings(roots["fsdd"]),
                                          dataset_settings(cfg, f"fsdd_loso/fold-{k}"))
        mine = table[table["source"] == "fsdd_loso"]
        assert dict(zip(mine["clip"], mine["split"], strict=True)) == dict(
            zip("fsdd_loso/" + loso["clip"], loso["split"], strict=True))
    assert sorted(tested) == FSDD_SPEAKERS  # every FSDD speaker tested exactly once


def test_source_column_ids_and_paths(roots, tmp_path):
    table = split_of(config(), "fsdd_loso_plus/fold-2", roots, tmp_path)
    assert table["source"].value_counts().to_dict() == {"fsdd_loso": 480, "tts_digits": 60}
    for source in ("fsdd_loso", "tts_digits"):
        part = table[table["source"] == source]
        assert part["clip"].str.startswith(f"{source}/").all()
        assert part["path"].str.startswith(f"{source}/recordings/").all()
    mapping = {"fsdd_loso": roots["fsdd"], "tts_digits": roots["tts_digits"]}
    assert all(Path(clip_file(mapping, p)).is_file() for p in table["path"])
    # written and read back with the column
    back = splits.read_splits(tmp_path / "splits.tsv")
    assert back["source"].tolist() == table["source"].tolist()
    with pytest.raises(KeyError, match="no raw folder"):
        clip_file({"fsdd": roots["fsdd"]}, "tts_digits/recordings/x.wav")


def test_labels_are_the_digits_in_every_source(roots, tmp_path):
    table = split_of(config(), "fsdd_loso_plus/fold-0", roots, tmp_path)
    assert spoken_digits.DATASET.label_names({}) == fsdd.LABELS == [str(d) for d in range(10)]
    for source in ("fsdd_loso", "tts_digits"):
        part = table[table["source"] == source]
        assert sorted(set(part["label"])) == fsdd.LABELS
        # the label is the digit the file name says (both sources name clips {digit}_...)
        names = part["clip"].str.split("/").str[1]
        assert (names.str.split("_").str[0] == part["label"]).all()


def test_speech_commands_digits_join_resampled_to_the_feature_rate(roots, tmp_path):
    cfg = config({"sc_digits": {"dataset": "speech_commands", "task": "digits"},
                  "digits_mix": {"dataset": "spoken_digits",
                                 "sources": ["fsdd_speakers", "sc_digits", "tts_digits"],
                                 "test_sources": ["fsdd_speakers", "sc_digits"],
                                 "extra_valid_fraction": 0.3},
                  "fsdd_speakers": {"dataset": "fsdd", "split": "speaker",
                                    "valid_speakers": ["theo"], "test_speakers": ["george"]}},
                 datasets=["digits_mix"])
    table = split_of(cfg, "digits_mix", roots, tmp_path)
    sc = table[table["source"] == "sc_digits"]
    assert len(sc) == 40 and sorted(set(sc["label"])) == fsdd.LABELS  # bed, yes left out
    assert sc.groupby("split")["speaker"].agg(lambda s: sorted(set(s))).to_dict() == SC_SPEAKERS
    assert set(table.loc[table["split"] == "test", "speaker"]) == {"george", *SC_SPEAKERS["test"]}
    # an extra source with extra_valid_fraction: whole voices in validation, none in test
    tts = table[table["source"] == "tts_digits"]
    assert tts.groupby("speaker")["split"].nunique().max() == 1
    assert tts.drop_duplicates("speaker")["split"].value_counts().to_dict() == {
        "train": 4, "valid": 2}
    settings = stage_settings(cfg, "digits_mix", "features")
    assert spoken_digits.DATASET.speakers_held_out(settings)  # all three hold speakers out
    mapping = {s: roots[s] for s in settings["sources"]}
    counts = compute_features(tmp_path / "splits.tsv", mapping, settings,
                              tmp_path / "features.h5", tmp_path / "rejected.tsv")
    assert sum(counts.values()) == len(table)
    attrs = read_attrs(tmp_path / "features.h5")
    assert attrs["sample_rate"] == 8000 and attrs["label_names"] == fsdd.LABELS
    with h5py.File(tmp_path / "features.h5") as h5:
        clips = [c.decode() for c in h5["test"]["clip"][:]]
        one = h5["test"]["features"][clips.index(sc[sc["split"] == "test"]["clip"].iloc[0])]
    assert one.shape == (40, 97)
    # the 16-kHz clip is read at 8 kHz: 1 s is 8,000 samples, the 440-Hz tone kept
    wave, reason = read_clip(clip_file(mapping, sc["path"].iloc[0]), 8000)
    assert reason == "" and len(wave) == 8000
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spectrum) * 8000 / len(wave) - 440) <= 2


def test_default_composite_holds_every_speaker_out(roots, tmp_path):
    cfg = validate({"datasets": ["spoken_digits"], "tts_digits": TTS})
    settings = stage_settings(cfg, "spoken_digits", "split")
    assert settings["sources"] == ["fsdd", "tts_digits"]
    assert spoken_digits.DATASET.speakers_held_out(settings)
    table = split_of(cfg, "spoken_digits", roots, tmp_path)  # split_dataset checks no leak
    assert (table.groupby("speaker")["split"].nunique() == 1).all()
    assert set(table.loc[table["source"] == "fsdd", "split"]) == {"train"}
    assert set(table.loc[table["split"] == "test", "source"]) == {"tts_digits"}


def test_a_test_source_that_shares_speakers_fails(roots, tmp_path):
    cfg = validate({"datasets": ["spoken_digits"], "tts_digits": TTS,
                    "spoken_digits": {"test_sources": ["fsdd", "tts_digits"]}})  # fsdd standard
    with pytest.raises(DataError, match="test speakers .* also in train or validation"):
        split_of(cfg, "spoken_digits", roots, tmp_path)


def test_one_speaker_name_in_two_sources_fails(roots, tmp_path):
    cfg = validate({"datasets": ["twice"], "tts_digits": TTS, "variants": {
        "fsdd_speakers": {"dataset": "fsdd", "split": "speaker", "test_speakers": ["theo"],
                          "valid_speakers": ["lucas"]},
        "twice": {"dataset": "spoken_digits", "sources": ["fsdd_speakers", "fsdd"],
                  "test_sources": ["fsdd_speakers"]}}})
    with pytest.raises(DataError, match="is in sources fsdd_speakers and fsdd"):
        split_of(cfg, "twice", roots, tmp_path)


def test_config_refuses_what_cannot_work():
    sc_test = {"dataset": "speech_commands", "task": "digits", "split": "test"}
    cases = {
        # the cross-dataset test set must never train
        "evaluation-only": {"sc_digits_sample": sc_test, "fsdd_loso_plus": {
            **PLUS, "sources": ["fsdd_loso", "sc_digits_sample"]}},
        "labels": {"sc12": {"dataset": "speech_commands"}, "fsdd_loso_plus": {
            **PLUS, "sources": ["fsdd_loso", "sc12"]}},
        "is not in sources": {"fsdd_loso_plus": {**PLUS, "test_sources": ["fsdd"]}},
        "must be a test source": {"fsdd_loso_plus": {**PLUS, "test_sources": ["tts_digits"]}},
        "at most one": {"loso2": LOSO, "fsdd_loso_plus": {
            **PLUS, "sources": ["fsdd_loso", "loso2"]}},
        "unknown dataset": {"fsdd_loso_plus": {**PLUS, "sources": ["fsdd_loso", "nope"]}},
        "itself a composite": {"fsdd_loso_plus": {**PLUS, "sources": ["fsdd_loso",
                                                                      "spoken_digits"]}},
    }
    for message, variants in cases.items():
        with pytest.raises(ConfigError, match=re.escape(message)):
            config(variants)
    with pytest.raises(ConfigError, match=r"spoken_digits: Additional properties"):
        validate({"spoken_digits": {"source": ["fsdd"]}})
    # the composite's own defaults (fsdd an extra source) are checked only where it runs
    folded = {"fsdd": {"split": "speaker_folds"}}
    assert validate(folded)["fsdd"]["split"] == "speaker_folds"
    with pytest.raises(ConfigError, match="spoken_digits.test_sources: fsdd runs in folds"):
        validate({**folded, "datasets": ["spoken_digits"]})


def test_raw_inputs_name_one_folder_per_source():
    cfg = config({"sc_sample": {"dataset": "speech_commands", "task": "digits",
                                "archive": {"v0.02": "speech_commands_sample.tar.gz"}},
                  "plus_sc": {**PLUS, "sources": ["fsdd_loso", "tts_digits", "sc_sample"]}})
    assert raw_inputs(cfg, "fsdd_loso_plus/fold-4") == {
        "raw_fsdd_loso": "resources/fsdd", "raw_tts_digits": "resources/tts_digits"}
    assert raw_inputs(cfg, "plus_sc/fold-0")["raw_sc_sample"] == "resources/sc_sample"
    assert raw_inputs(cfg, "fsdd_loso/fold-1") == {"raw": "resources/fsdd"}
    named = {**raw_inputs(cfg, "fsdd_loso_plus/fold-4"), "splits": "results/x/splits.tsv"}
    assert raw_root(named) == {"fsdd_loso": "resources/fsdd", "tts_digits": "resources/tts_digits"}
    assert raw_root({"raw": "resources/fsdd", "splits": "s.tsv"}) == "resources/fsdd"
    settings = dataset_settings(cfg, "fsdd_loso_plus/fold-4")
    assert settings["source_settings"]["fsdd_loso"]["fold"] == 4
    assert "fold" not in settings["source_settings"]["tts_digits"]


def test_workflow_plans_every_source_folder(tmp_path):
    """A dry run in an empty folder: FSDD is downloaded and tts_digits synthesized once, then
    six folds are split, featurized, trained and scored."""
    with_config = ["--config", "datasets=[fsdd_loso_plus]", "models=[cnn2d]"]
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d",
         str(tmp_path), "--configfile",
         str(ROOT / "config.yaml"), "--cores", "1", "-n", *with_config],
        capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)\s*$", out[out.index("Job stats:"):], re.M))
    assert {k: jobs.get(k) for k in ("download_dataset", "synthesize_dataset", "split_dataset",
                                     "train_model")} == {
        "download_dataset": "1", "synthesize_dataset": "1", "split_dataset": "6",
        "train_model": "6"}


def test_real_fsdd_folds_with_tts_voices(shared_datasets, roots, tmp_path):
    """The real 3,000 FSDD recordings: fold k tests one speaker's 500 clips, exactly as
    fsdd_loso; the tts voices add training clips only."""
    with tarfile.open(shared_datasets / "fsdd" / "free-spoken-digit-dataset-1.0.10.tar.gz") as tf:
        members = [m for m in tf.getmembers() if "/recordings/" in m.name and m.isfile()]
        for m in members:
            m.name = "recordings/" + Path(m.name).name
        tf.extractall(tmp_path / "fsdd", members=members, filter="data")
    real = {**roots, "fsdd_loso": tmp_path / "fsdd"}
    cfg = config()
    seen = []
    for k in range(6):
        table = split_of(cfg, f"fsdd_loso_plus/fold-{k}", real, tmp_path)
        counts = table.groupby(["source", "split"]).size().to_dict()
        assert counts == {("fsdd_loso", "test"): 500, ("fsdd_loso", "train"): 2250,
                          ("fsdd_loso", "valid"): 250, ("tts_digits", "train"): 60}
        seen += sorted(set(table.loc[table["split"] == "test", "speaker"]))
    assert seen == FSDD_SPEAKERS
