"""Free Spoken Digit Dataset v1.0.10: 3,000 recordings, 6 speakers, 10 digits, 8 kHz."""

from __future__ import annotations

import functools
import logging
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline import splits
from pipeline.datasets.base import DataError
from pipeline.download import (
    DownloadError,
    RemoteFile,
    combined_digest,
    compare_digests,
    fetch,
    file_digests,
    read_sha256sums,
    resolve_url,
    safe_extract,
)

log = logging.getLogger(__name__)

ARCHIVE = RemoteFile(
    name="free-spoken-digit-dataset-1.0.10.tar.gz",
    url="https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/v1.0.10.tar.gz",
    known_hash=None,  # upstream and mirrors pack differently: the recordings are verified instead
)
#: sha256 of each of the 3,000 published v1.0.10 recordings (sha256sum format, file names as
#: in recordings/); their combined digest is the schema default of fsdd.recordings_sha256.
PUBLISHED_MANIFEST = Path(__file__).with_name("fsdd-v1.0.10.sha256")
LABELS = [str(d) for d in range(10)]
NAME = re.compile(r"^(?P<label>\d)_(?P<speaker>[a-z]+)_(?P<index>\d+)\.wav$")


def parse_name(file_name: str) -> dict[str, Any]:
    match = NAME.match(file_name)
    if not match:
        raise DataError(f"not an FSDD-style file name ({{digit}}_{{speaker}}_{{index}}.wav): "
                        f"{file_name}")
    return {"label": match["label"], "speaker": match["speaker"], "index": int(match["index"])}


def list_recordings(root: Path) -> pd.DataFrame:
    """Clip table of every ``recordings/*.wav`` under root (FSDD naming)."""
    rows = []
    for path in sorted((root / "recordings").glob("*.wav")):
        rows.append({"clip": path.stem, "path": f"recordings/{path.name}", **parse_name(path.name)})
    if not rows:
        raise DataError(f"no recordings/*.wav under {root}")
    return pd.DataFrame(rows)[["clip", "path", "label", "speaker", "index"]]


def standard_split(index: int, valid_indices: int = 5) -> str:
    """The dataset authors' split (index 0-4 test), validation taken from train by index."""
    if index < 5:
        return "test"
    return "valid" if index < 5 + valid_indices else "train"


def fold_split(clips: pd.DataFrame, folds: int, fold: int, valid: str,
               valid_indices: int) -> pd.Series:
    """Fold `fold` of `folds` over speakers: its speakers are the test split. Validation is
    `repetitions` 5 .. 5+n-1 of every other speaker (all other speakers train), or
    `next_speaker`: the next fold's speakers (held out whole; one speaker fewer trains).
    Either way model selection never sees a test speaker."""
    speakers = clips["speaker"].tolist()
    test = splits.fold_test_speakers(speakers, folds, fold)
    if valid == "next_speaker":
        held = splits.fold_test_speakers(speakers, folds, (fold + 1) % folds)
        split = clips["speaker"].map(lambda s: "valid" if s in held else "train")
    else:
        split = clips["index"].map(lambda i: "valid" if 5 <= i < 5 + valid_indices else "train")
    split[clips["speaker"].isin(test)] = "test"
    splits.check_no_leak(clips.assign(split=split.where(split == "test", "rest")), "speaker")
    return split


def assign_standard_or_speaker(clips: pd.DataFrame, settings: dict[str, Any]) -> pd.DataFrame:
    scheme = settings["split"]
    if scheme == "standard":
        n_valid = int(settings["valid_indices"])
        split = clips["index"].map(lambda i: standard_split(i, n_valid))
    elif scheme == "speaker":
        split = splits.speaker_scheme(clips, settings)
    elif scheme == "speaker_folds":
        if "fold" not in settings:
            raise DataError("fsdd: split speaker_folds runs as one job per fold "
                            "(<name>/fold-<k>); this run names no fold")
        split = fold_split(clips, int(settings["folds"]), int(settings["fold"]),
                           settings["fold_valid"], int(settings["valid_indices"]))
    else:
        raise DataError(f"unknown split scheme {scheme!r}")
    return clips.assign(split=split)


@functools.cache
def published_recordings() -> dict[str, str]:
    """{file name: sha256} of the published v1.0.10 recordings."""
    return read_sha256sums(PUBLISHED_MANIFEST)


def published_digest() -> str:
    """The content digest of the published v1.0.10 recordings (from the manifest)."""
    return combined_digest(published_recordings())


def check_recordings(actual: dict[str, str], expected: str, url: str) -> None:
    """Accept the recordings {name: sha256} if their content digest is `expected`; else raise
    one DownloadError that names the files differing from v1.0.10 and the key to set."""
    digest = combined_digest(actual)
    differences = compare_digests(actual, published_recordings())
    if digest == expected:
        if differences:  # a modified copy the config accepts on purpose
            log.warning("fsdd: using recordings that differ from v1.0.10 as published, as "
                        "fsdd.recordings_sha256 accepts: %s", differences.describe())
        return
    where = f"the recordings in {ARCHIVE.name} ({url})"
    accept = (f"If this copy is meant to be used, accept it by setting fsdd.recordings_sha256 to "
              f"its digest: --config 'fsdd={{recordings_sha256: {digest}}}'.")
    if not differences:
        raise DownloadError(
            f"fsdd: {where} are FSDD v1.0.10 as published (content digest {digest}), but "
            f"fsdd.recordings_sha256 is set to {expected}; remove that setting to use them.")
    raise DownloadError(
        f"fsdd: {where} differ from FSDD v1.0.10 as published ({len(actual)} files; compared "
        f"with {PUBLISHED_MANIFEST.name}): {differences.describe()}. Content digest expected "
        f"{expected} (fsdd.recordings_sha256), got {digest}. {accept}")


class FSDD:
    name = "fsdd"
    modality = "audio"
    acquisition = "download"
    sample_rate = 8000
    acquire_keys = ("recordings_sha256",)  # settings that change the raw data

    def acquire(self, dest: Path, settings: dict[str, Any], mirror: str | None,
                workers: int = 1) -> None:
        expected = settings["recordings_sha256"]
        url = resolve_url(self.name, ARCHIVE, mirror)
        with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".fsdd-download.") as tmp:
            archive = fetch(self.name, ARCHIVE, Path(tmp), mirror)
            safe_extract(archive, Path(tmp) / "x", self.name)
            found = sorted(Path(tmp, "x").glob("*/recordings"))
            if len(found) != 1:
                raise DownloadError(f"{self.name}: expected one */recordings folder in "
                                    f"{ARCHIVE.name}, found {len(found)}")
            actual = file_digests((p.name, p) for p in found[0].glob("*.wav"))
            check_recordings(actual, expected, url)
            shutil.move(str(found[0]), dest / "recordings")

    def list_clips(self, root: Path, settings: dict[str, Any]) -> pd.DataFrame:
        return list_recordings(root)

    def label_names(self, settings: dict[str, Any]) -> list[str]:
        return LABELS

    def assign_splits(self, clips: pd.DataFrame, settings: dict[str, Any]) -> pd.DataFrame:
        return assign_standard_or_speaker(clips, settings)

    def speakers_held_out(self, settings: dict[str, Any]) -> bool:
        # speaker_folds with validation repetitions shares speakers between train and valid
        # only; its test speakers are checked in fold_split
        return settings["split"] == "speaker" or (
            settings["split"] == "speaker_folds" and settings["fold_valid"] == "next_speaker")

    def evaluation_only(self, settings: dict[str, Any]) -> bool:
        return False


DATASET = FSDD()
