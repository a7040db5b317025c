"""Google Speech Commands (Warden 2018): 1-s, 16 kHz spoken words for keyword spotting.

v0.02: 105,829 clips of 35 words from 2,618 speakers; v0.01: 64,727 clips of 30 words. CC BY
4.0. The archive holds ``<word>/<speaker>_nohash_<n>.wav``, ``_background_noise_/*.wav``,
``validation_list.txt`` and ``testing_list.txt`` at its top level (no enclosing folder).

Tasks: ``12class`` (the lecture's: 10 commands + ``unknown`` + ``silence``), every word of
the version (``35class`` for v0.02, ``30class`` for v0.01), or ``digits`` (the words zero..nine
only, labelled ``0``..``9`` as FSDD and tts_digits, so their models can be scored on them).
Splits are the official lists; ``silence`` clips are 1-s windows that acquire() cuts from the
background-noise recordings, with whole recordings reserved per split, so the speaker check
also proves no noise leaks. ``split: test`` puts every clip in the test split instead: an
evaluation-only set that nothing trains on, for `cross_evaluations` (docs/speech_commands.md,
docs/speaker_independence.md).
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf

from pipeline import splits
from pipeline.datasets.base import DataError
from pipeline.datasets.fsdd import LABELS as DIGIT_LABELS
from pipeline.download import DownloadError, RemoteFile, fetch, safe_extract

log = logging.getLogger(__name__)

COMMANDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
UNKNOWN, SILENCE = "unknown", "silence"
WORDS_V1 = sorted(COMMANDS + [
    "bed", "bird", "cat", "dog", "eight", "five", "four", "happy", "house", "marvin", "nine",
    "one", "seven", "sheila", "six", "three", "tree", "two", "wow", "zero"])
WORDS_V2 = sorted(WORDS_V1 + ["backward", "follow", "forward", "learn", "visual"])
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
#: Task `digits`: each digit word's label, FSDD's (and tts_digits') label names "0".."9".
DIGIT_LABEL = dict(zip(DIGITS, DIGIT_LABELS, strict=True))
NOISE_DIR = "_background_noise_"
SILENCE_DIR = "_silence_"  # written by acquire(): 1-s windows of the noise recordings
VALID_LIST, TEST_LIST = "validation_list.txt", "testing_list.txt"
NAME = re.compile(r"^(?P<speaker>[^/]+?)_nohash_(?P<utterance>\d+)\.wav$")  # as TF's which_set
SILENCE_NAME = re.compile(r"^(?P<recording>.+)_(?P<window>\d{4,})\.wav$")


@dataclass(frozen=True)
class Version:
    url: str
    sha256: str  # published with torchaudio.datasets.SPEECHCOMMANDS (and TFDS for v0.02)
    bytes: int
    clips: int
    words: list[str]
    task: str  # the every-word task of this version


VERSIONS = {
    "v0.02": Version("http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz",
                     "af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58",
                     2_428_923_189, 105_829, WORDS_V2, "35class"),
    "v0.01": Version("http://download.tensorflow.org/data/speech_commands_v0.01.tar.gz",
                     "743935421bb51cccdb6bdd152e04c5c70274e935c82119ad7faeec31780d811d",
                     1_488_293_908, 64_727, WORDS_V1, "30class"),
}
TASKS = ("12class", "35class", "30class", "digits")
#: split settings: the official lists, or every clip in test (an evaluation-only set).
SPLIT_SCHEMES = ("lists", "test")


def _check_version(cfg: dict[str, Any]) -> str:
    if cfg["version"] not in VERSIONS:
        raise DataError(f"speech_commands: unknown version {cfg['version']!r}; "
                        f"known: {sorted(VERSIONS)}")
    return cfg["version"]


def resolve(settings: dict[str, Any]) -> dict[str, Any]:
    """This dataset's settings (complete, from the config schema), checked for a known
    version and a task that fits it."""
    cfg = settings
    _check_version(cfg)
    task, every_word = cfg["task"], VERSIONS[cfg["version"]].task
    if task not in TASKS:
        raise DataError(f"speech_commands: unknown task {task!r}; known: {list(TASKS)}")
    if task not in ("12class", "digits") and task != every_word:
        raise DataError(f"speech_commands: task {task} does not fit version {cfg['version']} "
                        f"(it has {len(VERSIONS[cfg['version']].words)} words: use "
                        f"{every_word}, 12class or digits)")
    if cfg["split"] not in SPLIT_SCHEMES:
        raise DataError(f"speech_commands: unknown split {cfg['split']!r}; known: "
                        f"{list(SPLIT_SCHEMES)}")
    return cfg


def labels_for(cfg: dict[str, Any]) -> list[str]:
    if cfg["task"] == "12class":
        return COMMANDS + [UNKNOWN, SILENCE]
    if cfg["task"] == "digits":
        return list(DIGIT_LABELS)
    words = VERSIONS[cfg["version"]].words
    return COMMANDS + [w for w in words if w not in COMMANDS]


def label_of(word: str, task: str) -> str | None:
    """A word's label in a task; None where the task leaves the word out (digits: every word
    but zero..nine)."""
    if task == "digits":
        return DIGIT_LABEL.get(word)
    return word if task != "12class" or word in COMMANDS else UNKNOWN


def parse_name(file_name: str) -> dict[str, Any]:
    """``0a7c2a8d_nohash_1.wav`` -> speaker ``0a7c2a8d``, utterance 1."""
    match = NAME.match(file_name)
    if not match:
        raise DataError(f"speech_commands: not an upstream clip name "
                        f"(<speaker>_nohash_<n>.wav): {file_name}")
    return {"speaker": match["speaker"], "utterance": int(match["utterance"])}


def read_list(path: Path) -> list[str]:
    """One ``word/file.wav`` per line (blank lines, CR and a leading ``./`` are tolerated)."""
    if not path.is_file():
        raise DataError(f"speech_commands: {path.name} is missing from {path.parent}")
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        entry = line.strip().removeprefix("./")
        if not entry:
            continue
        word, _, name = entry.partition("/")
        if not word or "/" in name:
            raise DataError(f"speech_commands: {path.name} line {number} is not "
                            f"word/file.wav: {line!r}")
        parse_name(name)
        entries.append(entry)
    return entries


def _word_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))


def _silence_windows(wave: np.ndarray, rate: int, hop_seconds: float) -> list[int]:
    n, hop = rate, max(1, round(hop_seconds * rate))
    return list(range(0, len(wave) - n + 1, hop))


def cut_silence(root: Path, hop_seconds: float = 0.05,
                volume: tuple[float, float] = (1e-4, 1.0)) -> int:
    """Write 1-s windows of every ``_background_noise_/*.wav`` to ``_silence_/<name>_<k>.wav``.

    Windows start every `hop_seconds`; each gets a log-uniform gain in `volume` (seeded by the
    recording's name, so the bytes repeat), as the lecture's MATLAB example scales its
    background segments. Stored as 32-bit float WAV so quiet windows are not quantised away.
    All-zero windows are skipped (the feature stage rejects silent clips)."""
    out = root / SILENCE_DIR
    out.mkdir(exist_ok=True)
    lo, hi = (math.log10(v) for v in volume)
    written = 0
    recordings = sorted((root / NOISE_DIR).glob("*.wav"))
    for path in recordings:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
        wave = data.mean(axis=1)
        seed = int.from_bytes(hashlib.sha256(path.stem.encode()).digest()[:8], "little")
        rng = np.random.default_rng(seed)
        starts = _silence_windows(wave, rate, hop_seconds)
        gains = 10.0 ** rng.uniform(lo, hi, size=len(starts))
        skipped = 0
        for k, (start, gain) in enumerate(zip(starts, gains, strict=True)):
            window = wave[start:start + rate] * np.float32(gain)
            if not np.any(window):
                skipped += 1
                continue
            sf.write(out / f"{path.stem}_{k:04d}.wav", window, rate, subtype="FLOAT")
            written += 1
        log.info("speech_commands: %s: %d silence windows (%d all-zero skipped)", path.name,
                 len(starts) - skipped, skipped)
    if not written:
        raise DownloadError(f"speech_commands: no 1-s silence windows could be cut from "
                            f"{len(recordings)} recording(s) in {NOISE_DIR}/")
    return written


def _unwrap(dest: Path) -> None:
    """Move the content of a single enclosing folder (a re-packed mirror copy) up into dest."""
    if (dest / VALID_LIST).exists():
        return
    inner = [p for p in dest.iterdir() if not p.name.startswith(".")]
    if len(inner) == 1 and inner[0].is_dir() and (inner[0] / VALID_LIST).exists():
        for child in list(inner[0].iterdir()):
            shutil.move(str(child), dest / child.name)
        inner[0].rmdir()


def verify_tree(root: Path, version: str) -> int:
    """Content checks that hold for every real archive; returns the number of word clips."""
    info = VERSIONS[version]
    for name in (VALID_LIST, TEST_LIST):
        if not (root / name).is_file():
            raise DownloadError(f"speech_commands: {name} is not in the archive's top level")
    if not any((root / NOISE_DIR).glob("*.wav")):
        raise DownloadError(f"speech_commands: no {NOISE_DIR}/*.wav in the archive")
    words = [p.name for p in _word_dirs(root)]
    foreign = sorted(set(words) - set(info.words))
    if foreign:
        raise DownloadError(f"speech_commands: words {foreign} are not in {version}; is the "
                            f"archive another version?")
    clips = sum(1 for w in words for _ in (root / w).glob("*.wav"))
    try:
        listed = read_list(root / VALID_LIST) + read_list(root / TEST_LIST)
    except DataError as err:
        raise DownloadError(str(err)) from err
    missing = [e for e in listed if not (root / e).is_file()]
    if missing:
        raise DownloadError(f"speech_commands: {len(missing)} clips named in the lists are not "
                            f"in the archive, e.g. {missing[:3]}")
    return clips


def _assign_recordings(recordings: list[str], cfg: dict[str, Any]) -> dict[str, str]:
    """Noise recording -> split: the configured valid and test ones, every other one trains."""
    reserved = cfg["silence_recordings"]
    valid, test = list(reserved.get("valid", [])), list(reserved.get("test", []))
    both = sorted(set(valid) & set(test))
    if both:
        raise DataError(f"speech_commands: silence_recordings {both} are reserved for both "
                        f"valid and test")
    unknown = sorted((set(valid) | set(test)) - set(recordings))
    if unknown:
        raise DataError(f"speech_commands: silence_recordings {unknown} are not in "
                        f"{NOISE_DIR}/; recordings: {sorted(recordings)}")
    split = {r: "valid" if r in valid else "test" if r in test else "train" for r in recordings}
    empty = [s for s in splits.SPLITS if s not in split.values()]
    if empty:
        raise DataError(f"speech_commands: no background-noise recording left for {empty}; "
                        f"recordings {sorted(recordings)}, reserved {reserved}")
    return split


def _draw_order(clips: pd.Series, seed: int) -> np.ndarray:
    """A seeded order of clips that depends on each clip alone (not on table order)."""
    keys = [hashlib.sha256(f"{seed}/{c}".encode()).hexdigest() for c in clips]
    return np.argsort(np.array(keys), kind="stable")


def draw_shares(table: pd.DataFrame, cfg: dict[str, Any]) -> pd.DataFrame:
    """Keep every command clip and, per split, ceil(share x commands) unknown / silence clips."""
    keep = table["label"].isin(COMMANDS)
    for split in splits.SPLITS:
        in_split = table["split"] == split
        n_commands = int((keep & in_split).sum())
        for label, share in ((UNKNOWN, cfg["unknown_share"]), (SILENCE, cfg["silence_share"])):
            pool = table[in_split & (table["label"] == label)]
            wanted = math.ceil(float(share) * n_commands - 1e-9)
            if wanted > len(pool):
                log.warning("speech_commands: %s split: %d %s clips wanted (%s x %d commands), "
                            "only %d available", split, wanted, label, share, n_commands,
                            len(pool))
            chosen = pool.index[_draw_order(pool["clip"], cfg["split_seed"])[:wanted]]
            keep[chosen] = True
            log.info("speech_commands: %s split: %d commands, %d %s", split, n_commands,
                     min(wanted, len(pool)), label)
    return table[keep]


class SpeechCommands:
    name = "speech_commands"
    modality = "audio"
    acquisition = "download"
    sample_rate = 16000
    #: The settings that change what acquire() writes; the others (task, shares, splits,
    #: features, training) only change later stages and need no new download.
    acquire_keys = ("version", "archive", "url", "archive_sha256", "silence_hop_seconds",
                    "silence_volume")

    def acquire(self, dest: Path, settings: dict[str, Any], mirror: str | None,
                workers: int = 1) -> None:
        cfg = settings  # the acquire stage gets only `acquire_keys` (no task): check the version
        version = _check_version(cfg)
        sha = (cfg["archive_sha256"] or {}).get(version) or None
        url = (cfg["url"] or {}).get(version) or VERSIONS[version].url
        name = (cfg["archive"] or {}).get(version) or f"speech_commands_{version}.tar.gz"
        if sha is None:
            log.warning("speech_commands: archive_sha256.%s is empty: the archive's checksum is "
                        "NOT checked, only its content", version)
        remote = RemoteFile(name=name, url=url, known_hash=f"sha256:{sha}" if sha else None)
        with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".speech_commands.") as tmp:
            archive = fetch(self.name, remote, Path(tmp), mirror)
            log.info("speech_commands: extracting %s (%.1f MB)", archive.name,
                     archive.stat().st_size / 1e6)
            safe_extract(archive, dest, self.name)
        _unwrap(dest)
        clips = verify_tree(dest, version)
        expected = VERSIONS[version].clips
        if clips != expected:
            (log.info if sha else log.warning)(
                "speech_commands: %d word clips (the published %s has %d)", clips, version,
                expected)
        windows = cut_silence(dest, float(cfg["silence_hop_seconds"]),
                              tuple(cfg["silence_volume"]))
        log.info("speech_commands %s: %d word clips, %d silence windows", version, clips,
                 windows)

    def list_clips(self, root: Path, settings: dict[str, Any]) -> pd.DataFrame:
        """Every word clip of the task (label by task; digits: zero..nine only) with the
        official list it is in; in 12class also every silence window. Extra columns: word,
        utterance, list_split."""
        cfg = resolve(settings)
        root = Path(root)
        words = VERSIONS[cfg["version"]].words
        official = {e: "valid" for e in read_list(root / VALID_LIST)}
        for entry in read_list(root / TEST_LIST):
            if entry in official:
                raise DataError(f"speech_commands: {entry} is in both {VALID_LIST} and "
                                f"{TEST_LIST}")
            official[entry] = "test"
        rows = []
        for word_dir in _word_dirs(root):
            word = word_dir.name
            if word not in words:
                raise DataError(f"speech_commands: word folder {word!r} is not a "
                                f"{cfg['version']} word; set `version` to the data's version")
            label = label_of(word, cfg["task"])
            for path in sorted(word_dir.glob("*.wav")):
                rel = f"{word}/{path.name}"
                list_split = official.pop(rel, "train")  # every list entry must exist
                if label is not None:
                    rows.append({"clip": rel.removesuffix(".wav"), "path": rel, "label": label,
                                 **parse_name(path.name), "word": word,
                                 "list_split": list_split})
        if official:
            raise DataError(f"speech_commands: {len(official)} clips in the lists are missing "
                            f"under {root}, e.g. {sorted(official)[:3]}")
        if not rows:
            raise DataError(f"speech_commands: no <word>/*.wav of task {cfg['task']} under "
                            f"{root}")
        if cfg["task"] == "12class":
            windows = sorted((root / SILENCE_DIR).glob("*.wav"))
            if not windows:
                raise DataError(f"speech_commands: no {SILENCE_DIR}/*.wav under {root}; it is "
                                "written when the data is acquired (delete the folder to redo)")
            for path in windows:
                match = SILENCE_NAME.match(path.name)
                if not match:
                    raise DataError(f"speech_commands: unexpected silence file {path.name}")
                rows.append({"clip": f"{SILENCE_DIR}/{path.stem}",
                             "path": f"{SILENCE_DIR}/{path.name}", "label": SILENCE,
                             "speaker": match["recording"], "utterance": int(match["window"]),
                             "word": SILENCE_DIR, "list_split": ""})
        return pd.DataFrame(rows)[["clip", "path", "label", "speaker", "word", "utterance",
                                   "list_split"]]

    def label_names(self, settings: dict[str, Any]) -> list[str]:
        return labels_for(resolve(settings))

    def assign_splits(self, clips: pd.DataFrame, settings: dict[str, Any]) -> pd.DataFrame:
        """Official lists for words, reserved recordings for silence; speakers (and noise
        recordings) checked not to cross splits; in 12class, unknown and silence drawn.
        `split: test`: every clip is test (an evaluation-only set; the lists are not used)."""
        cfg = resolve(settings)
        if cfg["split"] == "test":
            table = clips.assign(split="test").drop(columns="list_split")
            if cfg["task"] == "12class":
                table = draw_shares(table, cfg)
            return table.reset_index(drop=True)
        split = clips["list_split"].copy()
        silence = clips["label"] == SILENCE
        if silence.any():
            recordings = sorted(set(clips.loc[silence, "speaker"]))
            split[silence] = clips.loc[silence, "speaker"].map(
                _assign_recordings(recordings, cfg))
        table = clips.assign(split=split).drop(columns="list_split")
        try:
            splits.check_no_leak(table, "speaker")
        except DataError as err:
            spread = table.groupby("speaker")["split"].nunique()
            leaked = list(spread[spread > 1].index)
            example = table[table["speaker"] == leaked[0]][["path", "split"]]
            raise DataError(
                f"speech_commands: {VALID_LIST} and {TEST_LIST} put speaker(s) in more than one "
                f"split ({err}); speaker {leaked[0]}: "
                + ", ".join(f"{p} ({s})" for p, s in example.head(6).itertuples(index=False))
            ) from err
        if cfg["task"] == "12class":
            table = draw_shares(table, cfg)
        return table.reset_index(drop=True)

    def speakers_held_out(self, settings: dict[str, Any]) -> bool:
        return True  # checked in assign_splits with a message that names the lists

    def evaluation_only(self, settings: dict[str, Any]) -> bool:
        return settings["split"] == "test"


DATASET = SpeechCommands()


# -- scoring on data with thin classes -----------------------------------------------------

#: A class is scored in the "enough training data" subset when its train split holds at least
#: this many clips. On the development sample (SOURCE.md) on/off have 8 and 9, every other
#: 12class label 198 or more.
MIN_TRAIN_CLIPS = 50


def enough_training_data(train_counts: dict[str, int], min_clips: int = MIN_TRAIN_CLIPS
                         ) -> list[str]:
    """The labels with at least `min_clips` training clips, in the order given."""
    return [label for label, n in train_counts.items() if n >= min_clips]


def accuracy_report(predictions: pd.DataFrame, label_names: list[str],
                    train_counts: dict[str, int],
                    min_train_clips: int = MIN_TRAIN_CLIPS) -> dict[str, Any]:
    """Scores of one predictions.csv (true_label, predicted_label per test clip): overall and
    balanced accuracy, per-class recall with counts, and the accuracy on the test clips of
    the classes with at least `min_train_clips` training clips, beside those without."""
    true, pred = predictions["true_label"], predictions["predicted_label"]
    hit = (true == pred)
    per_class = {}
    for label in label_names:
        rows = true == label
        n, k = int(rows.sum()), int(hit[rows].sum())
        per_class[label] = {"train": int(train_counts.get(label, 0)), "test": n, "correct": k,
                            "recall": k / n if n else float("nan"),
                            "predicted": int((pred == label).sum())}
    enough = enough_training_data({lb: train_counts.get(lb, 0) for lb in label_names},
                                  min_train_clips)
    thin = [lb for lb in label_names if lb not in enough]

    def subset(labels: list[str]) -> dict[str, Any]:
        rows = true.isin(labels)
        n, k = int(rows.sum()), int(hit[rows].sum())
        return {"labels": labels, "n": n, "correct": k,
                "accuracy": k / n if n else float("nan")}

    recalls = [c["recall"] for c in per_class.values() if c["test"]]
    return {"n": len(predictions), "correct": int(hit.sum()),
            "accuracy": float(hit.mean()) if len(hit) else float("nan"),
            "balanced_accuracy": float(np.mean(recalls)) if recalls else float("nan"),
            "enough_data": subset(enough), "thin_data": subset(thin),
            "min_train_clips": min_train_clips, "per_class": per_class}
