"""Splits: deterministic, complete, and leak-free where speakers allow it."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.config import settings_for
from pipeline.datasets import acquire_dataset, split_dataset
from pipeline.datasets.base import DataError
from pipeline.splits import check_no_leak, read_splits

STANDARD = settings_for("fsdd")


@pytest.fixture(scope="module")
def fsdd_root(shared_datasets, tmp_path_factory):
    dest = tmp_path_factory.mktemp("fsdd") / "fsdd"
    acquire_dataset(dest, STANDARD, mirror=str(shared_datasets))
    return dest


def test_fsdd_standard_split(fsdd_root, tmp_path):
    table = split_dataset(fsdd_root, STANDARD, tmp_path / "s.tsv")
    assert len(table) == 3000
    assert table["speaker"].nunique() == 6
    counts = table["split"].value_counts()
    assert counts["test"] == 300 and counts["valid"] == 300 and counts["train"] == 2400
    assert set(table.loc[table["split"] == "test", "index"]) == {0, 1, 2, 3, 4}
    assert not table["clip"].duplicated().any()
    assert read_splits(tmp_path / "s.tsv").equals(table.astype({"label": str}))


def test_fsdd_speaker_split_has_no_leak(fsdd_root, tmp_path):
    settings = settings_for("fsdd", {"split": "speaker", "valid_speakers": ["theo"],
                                     "test_speakers": ["george", "nicolas"]})
    table = split_dataset(fsdd_root, settings, tmp_path / "s.tsv")
    check_no_leak(table, "speaker")
    assert set(table.loc[table["split"] == "test", "speaker"]) == {"george", "nicolas"}
    assert set(table.loc[table["split"] == "valid", "speaker"]) == {"theo"}
    assert (table["split"] == "test").sum() == 1000


def test_split_table_is_identical_across_runs(fsdd_root, tmp_path):
    split_dataset(fsdd_root, STANDARD, tmp_path / "a.tsv")
    split_dataset(fsdd_root, STANDARD, tmp_path / "b.tsv")
    assert (tmp_path / "a.tsv").read_bytes() == (tmp_path / "b.tsv").read_bytes()


def test_unknown_held_out_speaker_is_an_error(fsdd_root, tmp_path):
    with pytest.raises(DataError, match="not in the data"):
        split_dataset(fsdd_root, settings_for("fsdd", {"split": "speaker",
                                                       "test_speakers": ["alice"]}),
                      tmp_path / "s.tsv")
    assert not (tmp_path / "s.tsv").exists()


def test_leak_check_catches_a_speaker_in_two_splits():
    table = pd.DataFrame({"clip": ["a", "b", "c"], "speaker": ["x", "x", "y"],
                          "split": ["train", "test", "valid"]})
    with pytest.raises(DataError, match="more than one split"):
        check_no_leak(table)


def test_tts_voices_are_held_out_whole(tiny_tts, tmp_path):
    from conftest import TINY_TTS

    settings = settings_for("tts_digits", TINY_TTS)
    a = split_dataset(tiny_tts, settings, tmp_path / "a.tsv")
    check_no_leak(a, "speaker")
    assert set(a["split"]) == {"train", "valid", "test"}
    assert a["speaker"].nunique() == 12
    b = split_dataset(tiny_tts, settings, tmp_path / "b.tsv")
    assert a.equals(b)


def test_speaker_folds_test_every_speaker_once_and_never_leak(fsdd_root, tmp_path):
    """fsdd_loso: 6 folds; in each, one speaker is the test split, the others train and
    validate (repetitions 5-9); across folds every speaker is tested exactly once."""
    from pipeline.config import dataset_settings, run_names, validate

    config = validate({"datasets": ["fsdd_loso"], "variants": {"fsdd_loso": {
        "dataset": "fsdd", "split": "speaker_folds", "folds": 6}}})
    names = run_names(config)
    assert names == [f"fsdd_loso/fold-{k}" for k in range(6)]
    tested = []
    for name in names:
        settings = dataset_settings(config, name)
        assert settings["fold"] == int(name[-1]) and settings["group"] == "fsdd_loso"
        table = split_dataset(fsdd_root, settings, tmp_path / f"{name[-1]}.tsv")
        test = set(table.loc[table["split"] == "test", "speaker"])
        assert not test & set(table.loc[table["split"] != "test", "speaker"])
        assert len(test) == 1 and (table["split"] == "test").sum() == 500
        valid = table[table["split"] == "valid"]
        assert set(valid["index"]) == {5, 6, 7, 8, 9} and valid["speaker"].nunique() == 5
        tested += sorted(test)
    assert sorted(tested) == sorted(set(tested)) == [
        "george", "jackson", "lucas", "nicolas", "theo", "yweweler"]
    # the other validation: the next fold's speaker, held out whole (no speaker in two splits)
    rotating = dataset_settings(validate({"datasets": ["v"], "variants": {"v": {
        "dataset": "fsdd", "split": "speaker_folds", "fold_valid": "next_speaker"}}}),
        "v/fold-5")
    table = split_dataset(fsdd_root, rotating, tmp_path / "r.tsv")
    check_no_leak(table, "speaker")
    assert set(table.loc[table["split"] == "valid", "speaker"]) == {"george"}
    assert set(table.loc[table["split"] == "test", "speaker"]) == {"yweweler"}


def test_fold_count_must_fit_the_speakers(fsdd_root, tmp_path):
    settings = settings_for("fsdd", {"split": "speaker_folds", "folds": 7})
    with pytest.raises(DataError, match="7 folds need 2 to 6"):
        split_dataset(fsdd_root, {**settings, "fold": 0}, tmp_path / "s.tsv")
