"""WISDM v1.1 activity recognition (Fordham WISDM lab): one phone accelerometer at 20 Hz.

36 users, 6 activities, x/y/z acceleration in m/s^2 (as in the file). The raw file
``WISDM_ar_v1.1_raw.txt`` holds records ``user,activity,timestamp,x,y,z;`` one per line,
but the published file has malformed lines: several records on one line, trailing commas,
empty fields, a missing z value, lines without the final ``;``, blank lines. Records are
therefore split on ``;`` and line ends alike; a record that does not give exactly a user id,
a known activity, an integer timestamp and three finite numbers (a trailing comma is
tolerated) is skipped and counted (logged, and kept in ``clips.attrs["skipped_records"]``).

Protocol of the lecture's source (Ackermann's Keras HAR tutorial): windows of ``window``
(80) records every ``step`` (40) over each user's records in file order, labelled by the
majority activity (a tie goes to the activity that occurs first in the window); users
29-36 test, the rest train, ``valid_users`` taken from the training users.

Raw folder (``resources/wisdm``): ``WISDM_ar_v1.1_raw.txt`` (+ the about file when the
archive has it). A clip is one window: ``user``, ``start`` (index into that user's valid
records in file order), ``majority`` (share of the window with the label's activity).
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline import splits
from pipeline.datasets.base import DataError
from pipeline.download import DownloadError, RemoteFile, fetch, safe_extract
from pipeline.modalities.signal import cut_windows

log = logging.getLogger(__name__)

SAMPLE_RATE = 20
RAW_FILE = "WISDM_ar_v1.1_raw.txt"
ABOUT_FILE = "WISDM_ar_v1.1_raw_about.txt"
#: Activities in the file's spelling; labels are their lower-case names, in this order.
ACTIVITIES = ["Walking", "Jogging", "Upstairs", "Downstairs", "Sitting", "Standing"]
LABELS = [a.lower() for a in ACTIVITIES]
CHANNELS = ["acc_x", "acc_y", "acc_z"]
UNITS = "m/s^2"
_ACTIVITY_INDEX = {name: i for i, name in enumerate(LABELS)}


def parse_record(text: str) -> tuple[int, int, int, float, float, float] | None:
    """(user, activity index, timestamp, x, y, z) of one record, or None if unparseable."""
    fields = [f.strip() for f in text.split(",")]
    if len(fields) == 7 and fields[6] == "":  # a trailing comma
        fields.pop()
    if len(fields) != 6:
        return None
    try:
        user, stamp = int(fields[0]), int(fields[2])
        x, y, z = float(fields[3]), float(fields[4]), float(fields[5])
    except ValueError:
        return None
    activity = _ACTIVITY_INDEX.get(fields[1].lower())
    if activity is None or user < 1 or not all(map(math.isfinite, (x, y, z))):
        return None
    return user, activity, stamp, x, y, z


def parse_raw(path: Path) -> tuple[pd.DataFrame, int]:
    """The valid records of a WISDM raw file in file order, and how many were skipped.

    Columns: user, activity (index into LABELS), timestamp, x, y, z."""
    if not path.is_file():
        raise DataError(f"missing file {path}")
    text = path.read_text(encoding="latin-1")
    records, skipped = [], 0
    for token in text.replace("\r", "").replace("\n", ";").split(";"):
        if not token.strip():
            continue  # blank lines, the end of a line ending in ';'
        record = parse_record(token)
        if record is None:
            skipped += 1
        else:
            records.append(record)
    if not records:
        raise DataError(f"{path}: no parseable records ({skipped} skipped)")
    table = pd.DataFrame(records, columns=["user", "activity", "timestamp", "x", "y", "z"])
    table = table.astype({"user": np.int64, "activity": np.int64, "timestamp": np.int64,
                          "x": np.float32, "y": np.float32, "z": np.float32})
    (log.warning if skipped else log.info)(
        "wisdm: %s: %d records, %d unparseable records skipped", path.name, len(table), skipped)
    return table, skipped


def window_starts(length: int, window: int, step: int) -> np.ndarray:
    if length < window:
        return np.empty(0, dtype=np.int64)
    return step * np.arange((length - window) // step + 1, dtype=np.int64)


def majority(codes: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of codes [k, window]: the most frequent code (ties: the one seen first in the
    row) and its share of the row."""
    onehot = codes[:, :, None] == np.arange(n_classes)  # [k, window, classes]
    counts = onehot.sum(axis=1)
    first = np.where(onehot.any(axis=1), onehot.argmax(axis=1), codes.shape[1])
    best = counts.max(axis=1, keepdims=True)
    first = np.where(counts == best, first, codes.shape[1] + 1)
    winner = first.argmin(axis=1)
    return winner, best[:, 0] / codes.shape[1]


def make_windows(records: pd.DataFrame, window: int, step: int) -> pd.DataFrame:
    """One row per window of each user's records (file order): clip, user, start, label."""
    if window < 1 or step < 1:
        raise DataError(f"wisdm: window ({window}) and step ({step}) must be positive")
    parts = []
    for user, rows in records.groupby("user", sort=True):
        codes = rows["activity"].to_numpy()
        starts = window_starts(len(codes), window, step)
        if not len(starts):
            log.warning("wisdm: user %d has %d records, fewer than one window", user,
                        len(codes))
            continue
        winner, share = majority(codes[starts[:, None] + np.arange(window)], len(LABELS))
        parts.append(pd.DataFrame({
            "clip": [f"user{user:02d}_s{s:06d}" for s in starts],
            "label": np.asarray(LABELS)[winner],
            "speaker": splits.user_id(user),
            "user": user,
            "start": starts,
            "majority": share,
        }))
    if not parts:
        raise DataError(f"wisdm: no user has {window} records")
    return pd.concat(parts, ignore_index=True)


def list_windows(root: Path, settings: dict[str, Any]) -> pd.DataFrame:
    records, skipped = parse_raw(root / RAW_FILE)
    table = make_windows(records, int(settings["window"]), int(settings["step"]))
    table.insert(1, "path", RAW_FILE)
    table = table[["clip", "path", "label", "speaker", "user", "start", "majority"]]
    table.attrs["skipped_records"] = skipped
    log.info("wisdm: %d windows of %d records every %d from %d users", len(table),
             settings["window"], settings["step"], table["user"].nunique())
    return table


def user_split(clips: pd.DataFrame, settings: dict[str, Any]) -> pd.Series:
    return splits.by_user_numbers(clips, settings["valid_users"], settings["test_users"])


def load_windows(root: Path, table: pd.DataFrame, settings: dict[str, Any]) -> np.ndarray:
    """float32 [len(table), 3, window] (x, y, z), in table row order."""
    window = int(settings["window"])
    records, _ = parse_raw(root / RAW_FILE)
    by_user = {user: rows[["x", "y", "z"]].to_numpy(np.float32).T
               for user, rows in records.groupby("user", sort=True)}
    out = np.empty((len(table), len(CHANNELS), window), dtype=np.float32)
    users = table["user"].to_numpy(dtype=np.int64)
    starts = table["start"].to_numpy(dtype=np.int64)
    for user in np.unique(users):
        rows = np.flatnonzero(users == user)
        signal = by_user.get(int(user))
        first = starts[rows]
        if signal is None or first.min() < 0 or first.max() + window > signal.shape[1]:
            have = 0 if signal is None else signal.shape[1]
            raise DataError(f"{root / RAW_FILE}: user {user} has {have} records; windows of "
                            f"{window} at starts up to {first.max()} do not fit (was the "
                            "table made from another file or window?)")
        out[rows] = cut_windows(signal, first, window)
    return out


class Wisdm:
    name = "wisdm"
    modality = "signal"
    acquisition = "download"
    acquire_keys = ("url", "archive", "archive_sha256")  # settings that change the raw data

    def acquire(self, dest: Path, settings: dict[str, Any], mirror: str | None,
                workers: int = 1) -> None:
        sha = settings["archive_sha256"]
        remote = RemoteFile(name=settings["archive"], url=settings["url"],
                            known_hash=f"sha256:{sha}" if sha else None)
        if not sha:
            log.warning("wisdm: archive_sha256 is not set: %s is NOT verified; set "
                        "wisdm.archive_sha256 to its sha256 once you trust a copy",
                        remote.name)
        with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".wisdm-download.") as tmp:
            try:
                archive = fetch(self.name, remote, Path(tmp), mirror)
            except DownloadError as err:
                if sha and "checksum" in str(err):
                    raise DownloadError(f"{err} (config key wisdm.archive_sha256)") from err
                raise
            safe_extract(archive, Path(tmp) / "x", self.name)
            found = [p for p in Path(tmp, "x").rglob(RAW_FILE) if "__MACOSX" not in p.parts]
            if len(found) != 1:
                raise DownloadError(f"wisdm: expected one {RAW_FILE} in {remote.name}, "
                                    f"found {len(found)}")
            shutil.move(str(found[0]), dest / RAW_FILE)
            about = found[0].parent / ABOUT_FILE
            if about.is_file():
                shutil.move(str(about), dest / ABOUT_FILE)

    def list_clips(self, root: Path, settings: dict[str, Any]) -> pd.DataFrame:
        return list_windows(Path(root), settings)

    def label_names(self, settings: dict[str, Any]) -> list[str]:
        return LABELS

    def assign_splits(self, clips: pd.DataFrame, settings: dict[str, Any]) -> pd.DataFrame:
        return clips.assign(split=user_split(clips, settings))

    def speakers_held_out(self, settings: dict[str, Any]) -> bool:
        return True  # held-out users: always checked for leaks

    def evaluation_only(self, settings: dict[str, Any]) -> bool:
        return False

    def signal_attrs(self, settings: dict[str, Any]) -> dict[str, Any]:
        return {"sample_rate": SAMPLE_RATE, "window": int(settings["window"]),
                "step": int(settings["step"]), "channels": CHANNELS,
                "units": [UNITS] * len(CHANNELS)}

    def load_signals(self, root: Path, table: pd.DataFrame,
                     settings: dict[str, Any]) -> np.ndarray:
        return load_windows(Path(root), table, settings)


DATASET = Wisdm()
