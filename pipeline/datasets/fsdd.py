"""Free Spoken Digit Dataset v1.0.10: 3,000 recordings, 6 speakers, 10 digits, 8 kHz."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline import splits
from pipeline.datasets.base import DataError
from pipeline.download import DownloadError, RemoteFile, content_digest, fetch, safe_extract

ARCHIVE = RemoteFile(
    name="free-spoken-digit-dataset-1.0.10.tar.gz",
    url="https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/v1.0.10.tar.gz",
    known_hash=None,  # upstream and mirrors pack differently: the recordings are verified instead
)
#: sha256 over sorted "name<TAB>sha256" lines of the 3,000 recordings of v1.0.10.
RECORDINGS_DIGEST = "8dac6ce326e419e9fcfadedf2e4a67d6c08a40968c34bb8fa2b4e27d74753d5a"
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


def assign_standard_or_speaker(clips: pd.DataFrame, settings: dict[str, Any]) -> pd.DataFrame:
    scheme = settings.get("split", "standard")
    if scheme == "standard":
        n_valid = int(settings.get("valid_indices", 5))
        split = clips["index"].map(lambda i: standard_split(i, n_valid))
    elif scheme == "speaker":
        split = splits.speaker_scheme(clips, settings)
    else:
        raise DataError(f"unknown split scheme {scheme!r} (use 'standard' or 'speaker')")
    return clips.assign(split=split)


class FSDD:
    name = "fsdd"
    modality = "audio"
    acquisition = "download"
    sample_rate = 8000
    acquire_keys = ("recordings_sha256",)  # settings that change the raw data

    def acquire(self, dest: Path, settings: dict[str, Any], mirror: str | None) -> None:
        expected = settings.get("recordings_sha256", RECORDINGS_DIGEST)
        with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".fsdd-download.") as tmp:
            archive = fetch(self.name, ARCHIVE, Path(tmp), mirror)
            safe_extract(archive, Path(tmp) / "x", self.name)
            found = sorted(Path(tmp, "x").glob("*/recordings"))
            if len(found) != 1:
                raise DownloadError(f"{self.name}: expected one */recordings folder in "
                                    f"{ARCHIVE.name}, found {len(found)}")
            wavs = [(p.name, p) for p in found[0].glob("*.wav")]
            actual = content_digest(wavs)
            if actual != expected:
                raise DownloadError(
                    f"{self.name}: recordings in {ARCHIVE.name} do not match v1.0.10: "
                    f"expected content digest {expected}, got {actual} ({len(wavs)} files)")
            shutil.move(str(found[0]), dest / "recordings")

    def list_clips(self, root: Path, settings: dict[str, Any]) -> pd.DataFrame:
        return list_recordings(root)

    def label_names(self, settings: dict[str, Any]) -> list[str]:
        return LABELS

    def assign_splits(self, clips: pd.DataFrame, settings: dict[str, Any]) -> pd.DataFrame:
        return assign_standard_or_speaker(clips, settings)


DATASET = FSDD()
