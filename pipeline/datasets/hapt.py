"""HAPT v2.1 raw inertial data (UCI dataset 341): smartphone accelerometer and gyroscope.

30 subjects, 61 experiments, 50 Hz, acceleration in g and angular velocity in rad/s, 12
labelled activities (6 basic, 6 postural transitions). The task cuts fixed windows
(``window`` samples every ``step``) inside each labelled segment of the chosen
``activities``: a window never crosses a segment boundary. Channels are named in
``channels``: the raw ``acc_*``/``gyro_*`` axes and, derived per whole recording before
windowing, ``gravity_*`` (Butterworth low-pass at ``gravity_cutoff_hz``, zero-phase) and
``body_acc_*`` (acc minus gravity), as UCI HAR separates them.

Raw folder (``resources/hapt``)::

    RawData/acc_expXX_userYY.txt, RawData/gyro_expXX_userYY.txt, RawData/labels.txt
    activity_labels.txt

Acquired from a tar or zip whose ``RawData`` folder sits anywhere (the re-packed
``HAPT Data Set/RawData`` or the UCI zip's top-level ``RawData``), verified by a content
digest over the RawData files only, named ``RawData/<file>``: the same in both layouts.

A clip is one window: ``path`` is its acc file, ``start`` its first sample (0-based row of
that file), ``segment`` its row in labels.txt (1-based), ``speaker`` the subject (userYY).
"""

from __future__ import annotations

import io
import logging
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline import splits
from pipeline.datasets.base import DataError
from pipeline.download import DownloadError, RemoteFile, content_digest, fetch, safe_extract
from pipeline.modalities.signal import cut_windows

log = logging.getLogger(__name__)

SAMPLE_RATE = 50
#: Activity ids and names as in activity_labels.txt, lower-cased.
ACTIVITIES = {
    1: "walking", 2: "walking_upstairs", 3: "walking_downstairs", 4: "sitting",
    5: "standing", 6: "laying", 7: "stand_to_sit", 8: "sit_to_stand", 9: "sit_to_lie",
    10: "lie_to_sit", 11: "stand_to_lie", 12: "lie_to_stand",
}
AXES = ("x", "y", "z")
#: Every channel name `channels` may list, with its unit.
CHANNEL_UNITS = {
    **{f"acc_{a}": "g" for a in AXES},
    **{f"gyro_{a}": "rad/s" for a in AXES},
    **{f"body_acc_{a}": "g" for a in AXES},
    **{f"gravity_{a}": "g" for a in AXES},
}
RAW_NAME = re.compile(r"^(?P<kind>acc|gyro)_exp(?P<exp>\d+)_user(?P<user>\d+)\.txt$")
LABELS_FILE = "RawData/labels.txt"
GRAVITY_ORDER = 3  # Butterworth order of the gravity low-pass (UCI HAR: 3rd order, 0.3 Hz)


# --- acquisition -------------------------------------------------------------------------

def is_raw_file(name: str) -> bool:
    return name == "labels.txt" or RAW_NAME.match(name) is not None


def rawdata_digest(rawdata: Path) -> tuple[str, int]:
    """Content digest of a RawData folder: sha256 over sorted ``RawData/<name><TAB>sha256``
    lines of its acc, gyro and labels files (see download.content_digest); and the count."""
    files = [(f"RawData/{p.name}", p) for p in rawdata.iterdir()
             if p.is_file() and is_raw_file(p.name)]
    return content_digest(files), len(files)


def _find_rawdata(tree: Path, archive: str) -> Path:
    found = [p.parent for p in tree.rglob("labels.txt")
             if p.parent.name == "RawData" and "__MACOSX" not in p.parts]
    if len(found) == 1:
        return found[0]
    if not found:  # the UCI download may wrap the data in one inner zip
        inner = [p for p in tree.rglob("*.zip") if "__MACOSX" not in p.parts]
        if len(inner) == 1:
            safe_extract(inner[0], inner[0].with_suffix(".x"), "hapt")
            return _find_rawdata(inner[0].with_suffix(".x"), archive)
    raise DownloadError(f"hapt: expected one RawData/labels.txt in {archive}, "
                        f"found {len(found)}")


def read_activity_labels(path: Path) -> dict[int, str]:
    out = {}
    for number, line in enumerate(path.read_text(encoding="ascii").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise DataError(f"{path}: line {number}: expected '<id> <NAME>', got {line!r}")
        out[int(parts[0])] = parts[1].lower()
    return out


# --- parsing -----------------------------------------------------------------------------

def _diagnose(path: Path, columns: int, kind: str) -> DataError:
    """The first malformed line of a whitespace-separated numeric file, as an error."""
    with open(path, encoding="ascii", errors="replace") as fh:
        for number, line in enumerate(fh, 1):
            parts = line.split()
            if len(parts) != columns:
                return DataError(f"{path}: line {number}: expected {columns} {kind} columns, "
                                 f"found {len(parts)} ({line.rstrip()[:80]!r}); the file is "
                                 "truncated or malformed")
            try:
                values = [float(p) if kind == "float" else int(p) for p in parts]
            except ValueError:
                return DataError(f"{path}: line {number}: not {kind} numbers: "
                                 f"{line.rstrip()[:80]!r}")
            if not np.all(np.isfinite(values)):
                return DataError(f"{path}: line {number}: non-finite value: {line.rstrip()!r}")
    return DataError(f"{path}: cannot parse as {columns} {kind} columns")


def read_numeric(path: Path, columns: int, kind: str = "float") -> np.ndarray:
    """A whitespace-separated file of exactly `columns` numbers per line, every line.

    A blank, short, long or non-numeric line raises DataError naming the file and line."""
    if not path.is_file():
        raise DataError(f"missing file {path}")
    data = path.read_bytes()
    lines = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
    dtype = np.float64 if kind == "float" else np.int64
    try:
        frame = pd.read_csv(io.BytesIO(data), sep=r"\s+", header=None, dtype=dtype,
                            skip_blank_lines=False, engine="c")
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
        raise _diagnose(path, columns, kind) from None
    values = frame.to_numpy()
    if (values.shape != (lines, columns)
            or (kind == "float" and not np.isfinite(values).all())):
        raise _diagnose(path, columns, kind)
    return values


def raw_paths(experiment: int, user: int) -> tuple[str, str]:
    """The acc and gyro files of one experiment, relative to the raw folder."""
    tail = f"exp{experiment:02d}_user{user:02d}.txt"
    return f"RawData/acc_{tail}", f"RawData/gyro_{tail}"


def read_labels(root: Path) -> pd.DataFrame:
    """labels.txt as a table: segment (1-based row), experiment, user, activity, start, end."""
    values = read_numeric(root / LABELS_FILE, 5, "int")
    table = pd.DataFrame(values, columns=["experiment", "user", "activity", "start", "end"])
    return table.assign(segment=np.arange(1, len(table) + 1))


def count_rows(path: Path) -> int:
    if not path.is_file():
        raise DataError(f"missing file {path}")
    data = path.read_bytes()
    return data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)


def read_experiment(root: Path, acc_path: str) -> tuple[np.ndarray, np.ndarray]:
    """acc [n, 3] and gyro [n, 3] of one experiment, checked to have the same length."""
    match = RAW_NAME.match(Path(acc_path).name)
    if not match or match["kind"] != "acc":
        raise DataError(f"not a HAPT acc file name (acc_expXX_userYY.txt): {acc_path}")
    gyro_path = str(Path(acc_path).with_name(Path(acc_path).name.replace("acc_", "gyro_", 1)))
    acc = read_numeric(root / acc_path, 3)
    gyro = read_numeric(root / gyro_path, 3)
    if len(acc) != len(gyro):
        raise DataError(f"{root / acc_path} has {len(acc)} samples but {root / gyro_path} has "
                        f"{len(gyro)}: one of them is truncated")
    return acc, gyro


def derive_channels(acc: np.ndarray, gyro: np.ndarray, channels: list[str],
                    cutoff_hz: float) -> np.ndarray:
    """[len(channels), n] float32 of one whole recording; gravity by zero-phase low-pass."""
    unknown = [c for c in channels if c not in CHANNEL_UNITS]
    if unknown:
        raise DataError(f"hapt: unknown channels {unknown}; known: {list(CHANNEL_UNITS)}")
    gravity = None
    if any(c.startswith(("gravity_", "body_acc_")) for c in channels):
        from scipy.signal import butter, filtfilt

        b, a = butter(GRAVITY_ORDER, cutoff_hz, btype="low", fs=SAMPLE_RATE)
        gravity = filtfilt(b, a, acc, axis=0)
    out = np.empty((len(channels), len(acc)), dtype=np.float32)
    for i, name in enumerate(channels):
        kind, axis = name.rsplit("_", 1)
        j = AXES.index(axis)
        source = {"acc": acc, "gyro": gyro, "gravity": gravity}.get(kind)
        out[i] = source[:, j] if source is not None else acc[:, j] - gravity[:, j]
    return out


# --- the task ----------------------------------------------------------------------------

def activity_ids(settings: dict[str, Any]) -> list[int]:
    """The `activities` setting (ids or names, any case) as ids, in the given order."""
    by_name = {name: i for i, name in ACTIVITIES.items()}
    ids = []
    for item in settings["activities"]:
        key = item if isinstance(item, int) else by_name.get(str(item).lower())
        if key not in ACTIVITIES:
            raise DataError(f"hapt.activities: unknown activity {item!r}; use ids 1-12 or "
                            f"names {list(ACTIVITIES.values())}")
        if key in ids:
            raise DataError(f"hapt.activities: {item!r} listed twice")
        ids.append(key)
    if not ids:
        raise DataError("hapt.activities is empty")
    return ids


def window_starts(first: int, last: int, window: int, step: int) -> np.ndarray:
    """0-based starts of the windows inside the 1-based inclusive segment first..last."""
    length = last - first + 1
    if length < window:
        return np.empty(0, dtype=np.int64)
    return (first - 1) + step * np.arange((length - window) // step + 1, dtype=np.int64)


def list_windows(root: Path, settings: dict[str, Any]) -> pd.DataFrame:
    window, step = int(settings["window"]), int(settings["step"])
    if window < 1 or step < 1:
        raise DataError(f"hapt: window ({window}) and step ({step}) must be positive")
    wanted = activity_ids(settings)
    labels = read_labels(root)
    lengths: dict[str, int] = {}
    rows = []
    for seg in labels.itertuples(index=False):
        acc, gyro = raw_paths(seg.experiment, seg.user)
        if acc not in lengths:
            n_acc, n_gyro = count_rows(root / acc), count_rows(root / gyro)
            if n_acc != n_gyro:
                raise DataError(f"{root / acc} has {n_acc} samples but {root / gyro} has "
                                f"{n_gyro}: one of them is truncated")
            lengths[acc] = n_acc
        if not 1 <= seg.start <= seg.end <= lengths[acc]:
            raise DataError(
                f"{root / LABELS_FILE}: row {seg.segment}: segment {seg.start}..{seg.end} "
                f"(1-based, inclusive) is not inside {acc}, which has {lengths[acc]} samples")
        if seg.activity not in ACTIVITIES:
            raise DataError(f"{root / LABELS_FILE}: row {seg.segment}: unknown activity id "
                            f"{seg.activity}")
        if seg.activity not in wanted:
            continue
        for start in window_starts(seg.start, seg.end, window, step):
            rows.append((f"exp{seg.experiment:02d}_user{seg.user:02d}_s{start:06d}", acc,
                         ACTIVITIES[seg.activity], splits.user_id(seg.user), seg.experiment,
                         int(start), seg.segment))
    if not rows:
        raise DataError(f"hapt: no {window}-sample windows of activities {wanted} under {root}")
    table = pd.DataFrame(rows, columns=["clip", "path", "label", "speaker", "experiment",
                                        "start", "segment"])
    if table["clip"].duplicated().any():
        dup = table.loc[table["clip"].duplicated(), "clip"].tolist()[:5]
        raise DataError(f"{root / LABELS_FILE}: overlapping segments give windows twice: {dup}")
    return table


def subject_split(clips: pd.DataFrame, settings: dict[str, Any]) -> pd.Series:
    """Held-out subjects: `test_subjects`, `valid_subjects` (ids); every other one trains."""
    return splits.by_user_numbers(clips, settings["valid_subjects"], settings["test_subjects"])


def load_windows(root: Path, table: pd.DataFrame, settings: dict[str, Any]) -> np.ndarray:
    """float32 [len(table), channels, window], in table row order (by path and start)."""
    channels = list(settings["channels"])
    window = int(settings["window"])
    out = np.empty((len(table), len(channels), window), dtype=np.float32)
    positions = np.arange(len(table))
    starts = table["start"].to_numpy(dtype=np.int64)
    for path, rows in pd.Series(positions).groupby(table["path"].to_numpy()):
        rows = rows.to_numpy()
        acc, gyro = read_experiment(root, str(path))
        signal = derive_channels(acc, gyro, channels, float(settings["gravity_cutoff_hz"]))
        first = starts[rows]
        if first.min() < 0 or first.max() + window > signal.shape[1]:
            raise DataError(f"{root / path}: windows of {window} at starts {first.min()}.."
                            f"{first.max()} do not fit its {signal.shape[1]} samples")
        out[rows] = cut_windows(signal, first, window)
    return out


class Hapt:
    name = "hapt"
    modality = "signal"
    acquisition = "download"
    acquire_keys = ("url", "archive", "rawdata_sha256")  # settings that change the raw data

    def acquire(self, dest: Path, settings: dict[str, Any], mirror: str | None,
                workers: int = 1) -> None:
        remote = RemoteFile(name=settings["archive"], url=settings["url"], known_hash=None)
        expected = settings["rawdata_sha256"]
        with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".hapt-download.") as tmp:
            archive = fetch(self.name, remote, Path(tmp), mirror)
            safe_extract(archive, Path(tmp) / "x", self.name)
            rawdata = _find_rawdata(Path(tmp) / "x", remote.name)
            actual, count = rawdata_digest(rawdata)
            if not expected:
                log.warning("hapt: rawdata_sha256 is empty: the %d RawData files are NOT "
                            "verified (their digest is %s)", count, actual)
            elif actual != expected:
                raise DownloadError(
                    f"hapt: RawData in {remote.name} does not match: expected content digest "
                    f"{expected}, got {actual} ({count} files). The archive is corrupt or "
                    "another version; if you trust it, set hapt.rawdata_sha256 to the new "
                    "digest in config.")
            else:
                log.info("hapt: %d RawData files verified (%s)", count, actual)
            (dest / "RawData").mkdir()
            for path in rawdata.iterdir():
                if path.is_file() and is_raw_file(path.name):
                    shutil.move(str(path), dest / "RawData" / path.name)
            names = rawdata.parent / "activity_labels.txt"
            if names.is_file():
                found = read_activity_labels(names)
                if found != ACTIVITIES:
                    raise DownloadError(f"hapt: activity_labels.txt in {remote.name} names "
                                        f"{found}, expected {ACTIVITIES}")
                shutil.move(str(names), dest / "activity_labels.txt")

    def list_clips(self, root: Path, settings: dict[str, Any]) -> pd.DataFrame:
        return list_windows(Path(root), settings)

    def label_names(self, settings: dict[str, Any]) -> list[str]:
        return [ACTIVITIES[i] for i in activity_ids(settings)]

    def assign_splits(self, clips: pd.DataFrame, settings: dict[str, Any]) -> pd.DataFrame:
        return clips.assign(split=subject_split(clips, settings))

    def speakers_held_out(self, settings: dict[str, Any]) -> bool:
        return True  # held-out subjects: always checked for leaks

    def evaluation_only(self, settings: dict[str, Any]) -> bool:
        return False

    def signal_attrs(self, settings: dict[str, Any]) -> dict[str, Any]:
        channels = list(settings["channels"])
        unknown = [c for c in channels if c not in CHANNEL_UNITS]
        if unknown:
            raise DataError(f"hapt: unknown channels {unknown}; known: {list(CHANNEL_UNITS)}")
        return {"sample_rate": SAMPLE_RATE, "window": int(settings["window"]),
                "step": int(settings["step"]), "channels": channels,
                "units": [CHANNEL_UNITS[c] for c in channels]}

    def load_signals(self, root: Path, table: pd.DataFrame,
                     settings: dict[str, Any]) -> np.ndarray:
        return load_windows(Path(root), table, settings)


DATASET = Hapt()
