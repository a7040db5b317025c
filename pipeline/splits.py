"""Split schemes and leakage checks (pure functions on clip tables; datasets use them).

The split stage itself (`pipeline.datasets.split_dataset`) writes one table per dataset,
results/{dataset}/splits.tsv."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import DataError

SPLITS = ("train", "valid", "test")


def by_speaker(clips: pd.DataFrame, valid: list[str], test: list[str]) -> pd.Series:
    """Held-out speakers: named validation and test speakers, every other speaker trains."""
    overlap = set(valid) & set(test)
    if overlap:
        raise DataError(f"speakers {sorted(overlap)} are listed for both validation and test")
    known = set(clips["speaker"])
    missing = (set(valid) | set(test)) - known
    if missing:
        raise DataError(f"held-out speakers {sorted(missing)} are not in the data; "
                        f"known speakers: {sorted(known)}")
    split = pd.Series("train", index=clips.index)
    split[clips["speaker"].isin(valid)] = "valid"
    split[clips["speaker"].isin(test)] = "test"
    return split


def user_id(number: int) -> str:
    """The speaker id of a numbered subject or user (HAPT, WISDM): 7 -> `user07`."""
    return f"user{int(number):02d}"


def by_user_numbers(clips: pd.DataFrame, valid: list[int], test: list[int]) -> pd.Series:
    """Held-out subjects named by number (the speaker column holds `user_id`s)."""
    return by_speaker(clips, [user_id(n) for n in valid], [user_id(n) for n in test])


def check_no_leak(table: pd.DataFrame, column: str = "speaker") -> None:
    """Fail when one `column` value (a speaker, a clip) appears in more than one split."""
    spread = table.groupby(column)["split"].nunique()
    leaked = spread[spread > 1]
    if len(leaked):
        raise DataError(
            f"{len(leaked)} {column}(s) appear in more than one split, e.g. "
            f"{list(leaked.index[:5])}; the split would leak"
        )


def check_complete(table: pd.DataFrame, evaluation_only: bool = False) -> None:
    """Every clip once, in a known split, and no split empty; an evaluation-only table (see
    Dataset.evaluation_only) instead has every clip in the test split."""
    if table["clip"].duplicated().any():
        dup = table.loc[table["clip"].duplicated(), "clip"].tolist()[:5]
        raise DataError(f"clips listed twice: {dup}")
    bad = set(table["split"]) - set(SPLITS)
    if bad:
        raise DataError(f"unknown split names {sorted(bad)}")
    if evaluation_only:
        others = table[table["split"] != "test"]
        if len(others):
            raise DataError(f"an evaluation-only set puts every clip in the test split, but "
                            f"{len(others)} are in {sorted(set(others['split']))}")
    for name in ("test",) if evaluation_only else SPLITS:
        if not (table["split"] == name).any():
            raise DataError(f"split {name!r} is empty; adjust the split settings")


def read_splits(path: Path) -> pd.DataFrame:
    text = {"speaker": str, "clip": str, "path": str, "label": str}
    return pd.read_csv(path, sep="\t", dtype=text, keep_default_na=False)


def by_speaker_fraction(clips: pd.DataFrame, valid_fraction: float, test_fraction: float,
                        seed: int) -> pd.Series:
    """Hold out a seeded share of speakers (at least one each) for validation and test."""
    speakers = sorted(set(clips["speaker"]))
    if len(speakers) < 3:
        raise DataError(f"a speaker split needs at least 3 speakers, found {len(speakers)}")
    order = np.random.default_rng(seed).permutation(len(speakers))
    n_test = max(1, round(test_fraction * len(speakers)))
    n_valid = max(1, round(valid_fraction * len(speakers)))
    test = [speakers[i] for i in order[:n_test]]
    valid = [speakers[i] for i in order[n_test:n_test + n_valid]]
    return by_speaker(clips, valid, test)


def speaker_scheme(clips: pd.DataFrame, settings: dict) -> pd.Series:
    """Named held-out speakers when given, else a seeded share of speakers."""
    if settings.get("test_speakers") or settings.get("valid_speakers"):
        return by_speaker(clips, settings.get("valid_speakers", []),
                          settings.get("test_speakers", []))
    return by_speaker_fraction(clips, settings.get("valid_fraction", 0.15),
                               settings.get("test_fraction", 0.15), settings.get("split_seed", 0))


def speaker_folds(speakers: list[str], folds: int) -> dict[str, int]:
    """Speakers in sorted order dealt round-robin to `folds` folds: deterministic, every
    speaker in exactly one fold (with as many folds as speakers: leave one speaker out)."""
    ordered = sorted(set(speakers))
    if not 2 <= folds <= len(ordered):
        raise DataError(f"speaker_folds: {folds} folds need 2 to {len(ordered)} (the number of "
                        f"speakers: {ordered})")
    return {speaker: i % folds for i, speaker in enumerate(ordered)}


def fold_test_speakers(speakers: list[str], folds: int, fold: int) -> list[str]:
    """The speakers that fold `fold` tests on."""
    if not 0 <= fold < folds:
        raise DataError(f"speaker_folds: fold {fold} does not exist (0 to {folds - 1})")
    return sorted(s for s, f in speaker_folds(speakers, folds).items() if f == fold)
