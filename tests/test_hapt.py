"""HAPT raw inertial data: the real archive in ../shared (acquired through a folder and an
HTTP mirror, digest-verified, a corrupted copy refused), windows, subject split, signals; a
synthetic fixture in the UCI zip layout for exact windows and the error paths."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from fixtures.hapt import (
    EXPERIMENTS,
    SEGMENTS,
    acc_values,
    build_uci,
    gyro_values,
    pack_tar,
)

from pipeline.config import load_schema, settings_for
from pipeline.datasets import get_dataset, hapt
from pipeline.datasets.base import DataError
from pipeline.download import DownloadError
from pipeline.io import atomic_dir
from pipeline.splits import check_complete, check_no_leak

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "datasets"
ARCHIVE = SHARED / "hapt" / "hapt-v2.1-rawdata.tar.gz"
DATASET = get_dataset("hapt")
UCI_TEST_SUBJECTS = [2, 4, 9, 10, 12, 13, 18, 20, 24]
BASIC = ["walking", "walking_upstairs", "walking_downstairs", "sitting", "standing", "laying"]
#: The schema's defaults (checked against the schema below): what the workflow passes.
#: The schema's defaults for this dataset (the one place they are written).
DEFAULTS = {k: v for k, v in settings_for("hapt").items()
            if k in load_schema()["properties"]["hapt"]["properties"]
            and k not in ("features", "training", "model_params", "on_bad_audio")}


def settings(**overrides) -> dict:
    """Complete settings, as the workflow passes them (the schema block with defaults)."""
    return {"dataset": "hapt", "name": "hapt", **DEFAULTS, **overrides}


def acquire(dest: Path, s: dict, mirror: str | None) -> None:
    """What the download stage does: fill a temporary folder that becomes `dest` on success."""
    with atomic_dir(dest) as tmp:
        DATASET.acquire(tmp, s, mirror)


# --- the real archive --------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_archive() -> Path:
    if not ARCHIVE.exists():
        pytest.skip(f"real HAPT archive not found at {ARCHIVE} (the read-only ../shared folder)")
    return ARCHIVE


@pytest.fixture(scope="module")
def hapt_raw(real_archive, tmp_path_factory) -> Path:
    """The real archive acquired from the shared folder as a mirror, verified."""
    dest = tmp_path_factory.mktemp("hapt") / "hapt"
    acquire(dest, settings(), mirror=str(SHARED))
    return dest


@pytest.fixture(scope="module")
def hapt_table(hapt_raw):
    s = settings()
    table = DATASET.assign_splits(DATASET.list_clips(hapt_raw, s), s)
    counts = table.groupby(["split", "label"]).size().unstack(fill_value=0)
    print(f"\nHAPT windows per split and activity:\n{counts}\n"
          f"per split: {table['split'].value_counts().to_dict()}, total {len(table)}")
    return table


@pytest.fixture(scope="module")
def real_tree(real_archive, tmp_path_factory) -> Path:
    """The real archive unpacked (read-only for tests: copy before changing)."""
    tree = tmp_path_factory.mktemp("hapt_tree")
    with tarfile.open(real_archive) as tf:
        tf.extractall(tree, filter="data")
    return tree


def test_acquire_keeps_rawdata_only(hapt_raw):
    assert sorted(p.name for p in hapt_raw.iterdir()) == ["RawData", "activity_labels.txt"]
    names = [p.name for p in (hapt_raw / "RawData").iterdir()]
    assert len(names) == 123 and "labels.txt" in names
    assert hapt.rawdata_digest(hapt_raw / "RawData") == (DEFAULTS["rawdata_sha256"], 123)
    assert hapt.read_activity_labels(hapt_raw / "activity_labels.txt") == hapt.ACTIVITIES


def test_acquire_over_http(real_archive, serve, tmp_path):
    dest = tmp_path / "hapt"
    acquire(dest, settings(), mirror=serve(SHARED))
    assert hapt.rawdata_digest(dest / "RawData")[0] == DEFAULTS["rawdata_sha256"]


def test_one_changed_byte_is_refused(real_tree, tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(real_tree, tree)
    victim = tree / "HAPT Data Set" / "RawData" / "gyro_exp17_user09.txt"
    data = bytearray(victim.read_bytes())
    data[1000] = ord("7") if data[1000] != ord("7") else ord("3")
    victim.write_bytes(bytes(data))
    pack_tar(tree, tmp_path / "mirror" / "hapt" / DEFAULTS["archive"], level=1)
    dest = tmp_path / "out" / "hapt"
    with pytest.raises(DownloadError) as err:
        acquire(dest, settings(), mirror=str(tmp_path / "mirror"))
    assert DEFAULTS["rawdata_sha256"] in str(err.value)
    assert "rawdata_sha256" in str(err.value).replace(DEFAULTS["rawdata_sha256"], "")
    assert not dest.exists()


def test_windows_and_split(hapt_table):
    table = hapt_table
    assert table["clip"].is_unique
    assert set(table["label"]) == set(BASIC)
    assert DATASET.label_names(settings()) == BASIC
    # 128-sample windows every 64 inside the 6 basic activities' segments of 30 subjects
    # (UCI HAR, cut from the same recordings, has 7,352 train + 2,947 test windows)
    assert table["split"].value_counts().to_dict() == {"train": 6372, "test": 2996,
                                                         "valid": 1043}
    check_no_leak(table, "speaker")
    check_complete(table)
    by_split = {s: set(g["speaker"]) for s, g in table.groupby("split")}
    assert by_split["test"] == {f"user{u:02d}" for u in UCI_TEST_SUBJECTS}
    assert by_split["valid"] == {"user01", "user11", "user23"}
    assert len(by_split["train"]) == 18


def test_uci_test_subjects_are_the_archives(real_tree):
    ids = (real_tree / "HAPT Data Set" / "Test" / "subject_id_test.txt").read_text().split()
    assert sorted(set(map(int, ids))) == UCI_TEST_SUBJECTS == DEFAULTS["test_subjects"]


def test_signals_real(hapt_raw, hapt_table):
    s = settings()
    shuffled = hapt_table.sample(frac=1, random_state=0).reset_index(drop=True)
    x = DATASET.load_signals(hapt_raw, shuffled, s)
    assert x.shape == (len(hapt_table), 6, 128) and x.dtype == np.float32
    assert np.isfinite(x).all()
    for i in (0, 1234, len(shuffled) - 1):  # compare with the text files, row by row
        row = shuffled.iloc[i]
        acc = np.loadtxt(hapt_raw / row["path"], dtype=np.float32)
        gyro = np.loadtxt(hapt_raw / row["path"].replace("acc_", "gyro_"), dtype=np.float32)
        both = np.concatenate([acc, gyro], axis=1)[row["start"]:row["start"] + 128].T
        np.testing.assert_array_equal(x[i], both)
    # a lying phone measures about 1 g in total, and little rotation
    lying = x[(shuffled["label"] == "laying").to_numpy()]
    assert abs(np.linalg.norm(lying[:, :3].mean(axis=2), axis=1).mean() - 1.0) < 0.1
    assert DATASET.signal_attrs(s) == {
        "sample_rate": 50, "window": 128, "step": 64, "channels": DEFAULTS["channels"],
        "units": ["g", "g", "g", "rad/s", "rad/s", "rad/s"]}


# --- the synthetic UCI-layout fixture ----------------------------------------------------

FIXTURE_SPLIT = {"test_subjects": [2], "valid_subjects": [3]}


@pytest.fixture(scope="module")
def uci(tmp_path_factory):
    return build_uci(tmp_path_factory.mktemp("hapt_uci"))


@pytest.fixture(scope="module")
def uci_raw(uci, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("hapt_uci_raw") / "hapt"
    acquire(dest, settings(rawdata_sha256=uci.digest), mirror=str(uci.mirror))
    return dest


def fixture_settings(**overrides) -> dict:
    return settings(**{**FIXTURE_SPLIT, **overrides})


def expected_windows(activities=(1, 2, 3, 4, 5, 6), window=128, step=64):
    out = []
    for experiment, user, activity, first, last in SEGMENTS:
        if activity not in activities:
            continue
        start = first - 1
        while start + window <= last:
            out.append((experiment, user, hapt.ACTIVITIES[activity], start))
            start += step
    return out


def test_uci_zip_layout_acquires(uci, uci_raw):
    assert sorted(p.name for p in uci_raw.iterdir()) == ["RawData", "activity_labels.txt"]
    assert len(list((uci_raw / "RawData").iterdir())) == 2 * len(EXPERIMENTS) + 1
    table = DATASET.list_clips(uci_raw, fixture_settings())
    columns = ["experiment", "speaker", "label", "start"]
    got = list(table[columns].itertuples(index=False, name=None))
    want = [(e, f"user{u:02d}", label, s) for e, u, label, s in expected_windows()]
    assert got == want and len(want) == 3 + 3 + 1 + 3 + 9 + 9
    assert table.loc[0, "clip"] == "exp01_user01_s000000"
    assert table.loc[0, "path"] == "RawData/acc_exp01_user01.txt"


def test_uci_zip_over_http(uci, serve, tmp_path):
    dest = tmp_path / "hapt"
    acquire(dest, settings(rawdata_sha256=uci.digest), mirror=serve(uci.mirror))
    assert (dest / "RawData" / "labels.txt").is_file()


def test_wrong_digest_is_refused(uci, tmp_path):
    with pytest.raises(DownloadError, match=f"got {uci.digest}"):
        acquire(tmp_path / "hapt", settings(), mirror=str(uci.mirror))
    assert not (tmp_path / "hapt").exists()


def test_empty_digest_skips_check_with_warning(uci, tmp_path, caplog):
    acquire(tmp_path / "hapt", settings(rawdata_sha256=None),
                    mirror=str(uci.mirror))
    assert "NOT verified" in caplog.text and uci.digest in caplog.text


def test_signals_exact_and_in_table_order(uci_raw):
    s = fixture_settings(channels=["gyro_y", "acc_x", "acc_y", "acc_z", "gyro_x"])
    table = DATASET.assign_splits(DATASET.list_clips(uci_raw, s), s)
    table = table.iloc[::-1].reset_index(drop=True)  # any order: rows follow the table
    x = DATASET.load_signals(uci_raw, table, s)
    assert x.shape == (len(table), 5, 128)
    for i, row in table.iterrows():
        user = int(row["speaker"][4:])
        rows = range(row["start"], row["start"] + 128)
        acc = np.array([acc_values(row["experiment"], user, r) for r in rows]).T
        gyro = np.array([gyro_values(row["experiment"], user, r) for r in rows]).T
        np.testing.assert_array_equal(x[i], np.stack([gyro[1], acc[0], acc[1], acc[2],
                                                      gyro[0]]))


def test_fixture_split(uci_raw):
    s = fixture_settings()
    table = DATASET.assign_splits(DATASET.list_clips(uci_raw, s), s)
    assert table.groupby("split")["speaker"].unique().map(sorted).to_dict() == {
        "test": ["user02"], "valid": ["user03"], "train": ["user01"]}
    check_no_leak(table, "speaker")
    with pytest.raises(DataError, match="both validation and test"):
        DATASET.assign_splits(table, fixture_settings(valid_subjects=[2]))


def test_activities_by_name_and_order(uci_raw):
    s = fixture_settings(activities=["LAYING", "walking", 5])
    assert DATASET.label_names(s) == ["laying", "walking", "standing"]
    table = DATASET.list_clips(uci_raw, s)
    assert table["label"].value_counts().to_dict() == {"laying": 9, "walking": 10,
                                                       "standing": 3}
    s = fixture_settings(activities=[7, 8, 9, 10, 11, 12])  # only one short transition here
    with pytest.raises(DataError, match="no 128-sample windows"):
        DATASET.list_clips(uci_raw, s)
    with pytest.raises(DataError, match="unknown activity 'running'"):
        DATASET.label_names(fixture_settings(activities=["running"]))


def _broken_copy(uci_raw: Path, tmp_path: Path) -> Path:
    root = tmp_path / "hapt"
    shutil.copytree(uci_raw, root)
    return root


def test_truncated_recording_is_named(uci_raw, tmp_path):
    root = _broken_copy(uci_raw, tmp_path)
    acc = root / "RawData" / "acc_exp03_user02.txt"
    acc.write_bytes(acc.read_bytes()[:-8])  # cut inside the last line
    s = fixture_settings()
    table = DATASET.list_clips(root, s)
    with pytest.raises(DataError, match=r"acc_exp03_user02\.txt: line 700: expected 3"):
        DATASET.load_signals(root, table, s)
    acc.write_bytes(b"".join(acc.read_bytes().splitlines(keepends=True)[:650]))  # whole lines
    with pytest.raises(DataError, match=r"acc_exp03_user02\.txt has 650 samples but .*"
                                        r"gyro_exp03_user02\.txt has 700"):
        DATASET.list_clips(root, s)


def test_non_numeric_value_is_named(uci_raw, tmp_path):
    root = _broken_copy(uci_raw, tmp_path)
    gyro = root / "RawData" / "gyro_exp01_user01.txt"
    lines = gyro.read_text().splitlines(keepends=True)
    lines[6] = "0.5 abc 0.0\n"
    gyro.write_text("".join(lines))
    s = fixture_settings()
    with pytest.raises(DataError, match=r"gyro_exp01_user01\.txt: line 7: not float"):
        DATASET.load_signals(root, DATASET.list_clips(root, s), s)


def test_label_row_past_the_end_is_named(uci_raw, tmp_path):
    root = _broken_copy(uci_raw, tmp_path)
    labels = root / "RawData" / "labels.txt"
    rows = labels.read_text().splitlines()
    rows[7] = "4 3 1 10 651"  # exp04 has 650 samples
    labels.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"labels\.txt: row 8: segment 10\.\.651 .*"
                                        r"acc_exp04_user03\.txt, which has 650 samples"):
        DATASET.list_clips(root, fixture_settings())
    rows[7] = "4 3 1 300 200"
    labels.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"labels\.txt: row 8: segment 300\.\.200"):
        DATASET.list_clips(root, fixture_settings())
    rows[7] = "4 3 1 10"
    labels.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"labels\.txt: line 8: expected 5 int columns"):
        DATASET.list_clips(root, fixture_settings())


def test_gravity_and_body_acceleration():
    t = np.arange(3000) / hapt.SAMPLE_RATE
    gravity = np.array([0.1, -0.9, 0.4])
    acc = gravity + 0.3 * np.sin(2 * np.pi * 2.0 * t)[:, None]  # 2 Hz motion on every axis
    gyro = np.zeros_like(acc)
    names = ["gravity_x", "gravity_y", "gravity_z", "body_acc_x", "body_acc_y", "body_acc_z",
             "acc_x"]
    out = hapt.derive_channels(acc, gyro, names, 0.3)
    middle = slice(500, 2500)
    np.testing.assert_allclose(out[:3, middle], gravity[:, None] * np.ones((1, 2000)),
                               atol=0.01)
    np.testing.assert_allclose(out[:3] + out[3:6], acc.T, atol=1e-6)
    np.testing.assert_array_equal(out[6], acc[:, 0].astype(np.float32))
    with pytest.raises(DataError, match="unknown channels"):
        hapt.derive_channels(acc, gyro, ["mag_x"], 0.3)
    assert DATASET.signal_attrs(settings(channels=names))["units"] == ["g"] * 7
