"""WISDM v1.1: a small raw file in the published format with its defects (tests/fixtures/
wisdm.py), packed as the lab's archive and fetched from a folder mirror: parsing, the count of
skipped records, 80/40 windows with majority labels, the user split, the archive checksum."""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from fixtures.wisdm import BLOCKS, SKIPPED, build

from pipeline.config import load_schema, settings_for
from pipeline.datasets import get_dataset, wisdm
from pipeline.datasets.base import DataError
from pipeline.download import DownloadError
from pipeline.io import atomic_dir
from pipeline.splits import check_complete, check_no_leak

ROOT = Path(__file__).resolve().parent.parent
DATASET = get_dataset("wisdm")
#: The schema's defaults (checked against the schema below): what the workflow passes.
#: The schema's defaults for this dataset (the one place they are written).
DEFAULTS = {k: v for k, v in settings_for("wisdm").items()
            if k in load_schema()["properties"]["wisdm"]["properties"]
            and k not in ("features", "training", "model_params", "on_bad_audio")}


def settings(**overrides) -> dict:
    """Complete settings, as the workflow passes them (the schema block with defaults)."""
    return {"dataset": "wisdm", "name": "wisdm", **DEFAULTS, **overrides}


def acquire(dest: Path, s: dict, mirror: str | None) -> None:
    """What the download stage does: fill a temporary folder that becomes `dest` on success."""
    with atomic_dir(dest) as tmp:
        DATASET.acquire(tmp, s, mirror)


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return build(tmp_path_factory.mktemp("wisdm_fixture"))


@pytest.fixture(scope="module")
def raw(fx, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("wisdm_raw") / "wisdm"
    acquire(dest, settings(**fx.settings), mirror=str(fx.mirror))
    return dest


@pytest.fixture(scope="module")
def table(fx, raw):
    s = settings(**fx.settings)
    return DATASET.assign_splits(DATASET.list_clips(raw, s), s)


def test_acquire_keeps_the_raw_file(raw, fx):
    assert sorted(p.name for p in raw.iterdir()) == sorted([wisdm.ABOUT_FILE, wisdm.RAW_FILE])
    assert (raw / wisdm.RAW_FILE).read_bytes() == fx.raw.read_bytes()


def test_parsing_skips_and_counts_malformed_records(raw, fx, caplog):
    with caplog.at_level(logging.WARNING):
        records, skipped = wisdm.parse_raw(raw / wisdm.RAW_FILE)
    assert skipped == SKIPPED
    assert f"{SKIPPED} unparseable records skipped" in caplog.text
    for user, codes in fx.records.items():
        mine = records[records["user"] == user]
        assert mine["activity"].tolist() == codes
        # x is the record's position among the user's valid records: none lost, none added
        assert mine["x"].tolist() == list(range(len(codes)))
        assert (mine["y"] == user).all()
    assert wisdm.parse_record("33,Jogging,49105962326000,-0.6946377,12.680544,0.50395286") == (
        33, 1, 49105962326000, -0.6946377, 12.680544, 0.50395286)
    for bad in ["33,Jogging,49105962326000,-0.69,12.68,", "33,Jogging,,-0.69,12.68,0.5",
                "33,Jogging,1,-0.69,12.68", "33,Jumping,1,1,2,3", "33,Jogging,1,1,2,3,4",
                "33,Jogging,1,1,2,nan"]:
        assert wisdm.parse_record(bad) is None, bad


def expected_windows(codes: list[int], window: int = 80, step: int = 40):
    """Windows of `codes` with majority labels; ties to the code seen first (reference)."""
    out = []
    for start in range(0, len(codes) - window + 1, step):
        part = codes[start:start + window]
        counts = Counter(part)
        best = max(counts.values())
        label = next(c for c in part if counts[c] == best)
        out.append((start, wisdm.LABELS[label], best / window))
    return out


def test_windows_and_majority_labels(table, fx):
    assert table.attrs.get("skipped_records") == SKIPPED
    assert table["clip"].is_unique
    assert list(table.columns[:4]) == ["clip", "path", "label", "speaker"]
    for user, codes in fx.records.items():
        mine = table[table["user"] == user]
        got = list(zip(mine["start"], mine["label"], mine["majority"], strict=True))
        assert got == expected_windows(codes)
    counts = table.groupby("user").size().to_dict()
    assert counts == {1: 6, 2: 3, 27: 4, 33: 3}  # user 29: 79 records, no window
    user2 = table[table["user"] == 2].set_index("start")
    assert user2.loc[0, "label"] == "upstairs"  # 40 upstairs, 40 downstairs: the first wins
    assert user2.loc[40, "label"] == "downstairs"  # 40 downstairs, 40 standing
    assert user2.loc[0, "majority"] == 0.5


def test_user_split(table, fx):
    check_complete(table)
    check_no_leak(table, "speaker")
    assert table.groupby("split")["user"].unique().map(sorted).to_dict() == {
        "train": [1, 2], "valid": [27], "test": [33]}
    with pytest.raises(DataError, match="both validation and test"):
        DATASET.assign_splits(table, settings(valid_users=[33], test_users=[29, 33]))
    with pytest.raises(DataError, match="not in the data"):
        DATASET.assign_splits(table, settings())  # users 28, 30-32, 34-36 are not in it


def test_signals(raw, table):
    s = settings()
    shuffled = table.sample(frac=1, random_state=1).reset_index(drop=True)
    x = DATASET.load_signals(raw, shuffled, s)
    assert x.shape == (len(table), 3, 80) and x.dtype == np.float32
    for i, row in shuffled.iterrows():
        np.testing.assert_array_equal(x[i, 0], row["start"] + np.arange(80))
        assert (x[i, 1] == row["user"]).all()
    codes = {name: i for i, name in enumerate(wisdm.LABELS)}
    majority_code = np.array([codes[label] for label in shuffled["label"]])
    z_mode = [Counter((x[i, 2] * 2).astype(int).tolist()).most_common(1)[0][1]
              for i in range(len(x))]
    assert np.allclose(np.array(z_mode) / 80, shuffled["majority"])
    assert set(majority_code) <= set(range(6))
    assert DATASET.signal_attrs(s) == {"sample_rate": 20, "window": 80, "step": 40,
                                       "channels": ["acc_x", "acc_y", "acc_z"],
                                       "units": ["m/s^2"] * 3}
    assert DATASET.label_names(s) == ["walking", "jogging", "upstairs", "downstairs",
                                      "sitting", "standing"]


def test_window_settings(raw, fx):
    s = settings(**fx.settings, window=100, step=100)
    table = DATASET.list_clips(raw, s)
    n = {u: (len(c) - 100) // 100 + 1 for u, c in fx.records.items() if len(c) >= 100}
    assert table.groupby("user").size().to_dict() == n
    assert len(DATASET.load_signals(raw, table, s)[0, 0]) == 100


def test_archive_checksum(fx, tmp_path, caplog):
    good = hashlib.sha256(fx.archive.read_bytes()).hexdigest()
    dest = tmp_path / "ok" / "wisdm"
    acquire(dest, settings(archive_sha256=good), mirror=str(fx.mirror))
    assert (dest / wisdm.RAW_FILE).is_file()
    wrong = "0" * 64
    dest = tmp_path / "bad" / "wisdm"
    with pytest.raises(DownloadError, match=f"(?s){wrong}.*{good}.*wisdm.archive_sha256"):
        acquire(dest, settings(archive_sha256=wrong), mirror=str(fx.mirror))
    assert not dest.exists()
    with caplog.at_level(logging.WARNING):
        acquire(tmp_path / "unset" / "wisdm", settings(), mirror=str(fx.mirror))
    assert "archive_sha256 is not set" in caplog.text


def test_missing_raw_file_in_archive(tmp_path, fx):
    from fixtures.hapt import pack_tar

    tree = tmp_path / "tree" / "WISDM_ar_v1.1"
    tree.mkdir(parents=True)
    (tree / "readme.txt").write_text("no data\n")
    pack_tar(tmp_path / "tree", tmp_path / "mirror" / "wisdm" / DEFAULTS["archive"])
    with pytest.raises(DownloadError, match="expected one WISDM_ar_v1.1_raw.txt"):
        acquire(tmp_path / "wisdm", settings(), mirror=str(tmp_path / "mirror"))


def test_blocks_cover_the_protocol():
    """The fixture has train, valid and test users and a user too short for one window."""
    assert min(BLOCKS) <= 28 < max(BLOCKS)
    assert any(sum(n for _, n in b) < 80 for b in BLOCKS.values())
