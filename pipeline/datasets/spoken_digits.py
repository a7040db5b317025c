"""Spoken digits from several sources, one label set ("0".."9"): a composite dataset.

`sources` names datasets or variants whose labels are the ten digits (fsdd, tts_digits,
speech_commands with `task: digits`, or variants of them). Each source's raw folder is its
own (the workflow passes {source: resources/<its raw folder>}); nothing is acquired here.
Clip ids and paths get the source's name as their first component (`fsdd_loso/0_george_0`,
`fsdd_loso/recordings/0_george_0.wav`), and a `source` column says where each clip is from.
Every clip is resampled to the composite's `features.sample_rate` by the feature stage, so
sources of other rates (Speech Commands: 16 kHz) mix with 8-kHz ones.

Splits: a source in `test_sources` keeps the split its own settings give (a speaker_folds
source runs fold k in fold k of the composite, so `sources: [fsdd_loso, tts_digits]` has
fsdd_loso's folds); every other source only adds voices to train (and, with
`extra_valid_fraction`, whole held-out voices to validation), never a test clip. Checked:
no speaker name in two sources, no test speaker in train or validation, and, where every
test source promises it, no speaker in two splits at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.datasets import fsdd, speech_commands, tts_digits
from pipeline.datasets.base import DataError

LABELS = fsdd.LABELS
#: Datasets that can be a source: audio of the ten digits (speech_commands: `task: digits`).
SOURCES = {spec.name: spec for spec in (fsdd.DATASET, tts_digits.DATASET,
                                         speech_commands.DATASET)}


def _source(settings: dict[str, Any], source: str) -> tuple[Any, dict[str, Any]]:
    """(dataset module, split-stage settings) of one source, as the config resolved them."""
    own = settings["source_settings"].get(source)
    if own is None or own["dataset"] not in SOURCES:
        raise DataError(f"{settings['name']}: source {source!r} is not a dataset or variant of "
                        f"{sorted(SOURCES)}")
    spec = SOURCES[own["dataset"]]
    if spec.label_names(own) != LABELS:
        raise DataError(f"{settings['name']}: source {source} has labels "
                        f"{spec.label_names(own)}, not the digits {LABELS} (speech_commands: "
                        f"set task: digits)")
    if spec.evaluation_only(own):
        raise DataError(f"{settings['name']}: source {source} is evaluation-only (every clip "
                        f"in its test split); nothing trains on it")
    return spec, own


def _prefixed(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    return frame.assign(clip=source + "/" + frame["clip"].astype(str),
                        path=source + "/" + frame["path"].astype(str), source=source)


def _own(part: pd.DataFrame, source: str) -> pd.DataFrame:
    """A source's rows as its own module listed them: ids without the prefix, its columns."""
    cut = len(source) + 1
    own = part.drop(columns="source").dropna(axis=1, how="all")
    return own.assign(clip=own["clip"].str[cut:], path=own["path"].str[cut:])


def extra_split(speakers: pd.Series, valid_fraction: float, seed: int) -> pd.Series:
    """An extra source's split: train, except a seeded share of its speakers (held out
    whole, at least one when the share is above 0) for validation. Never test."""
    names = sorted(set(speakers))
    n_valid = max(1, round(valid_fraction * len(names))) if valid_fraction > 0 else 0
    if n_valid >= len(names):
        raise DataError(f"extra_valid_fraction {valid_fraction} leaves no training speaker "
                        f"among {len(names)}")
    order = np.random.default_rng(seed).permutation(len(names))
    valid = {names[i] for i in order[:n_valid]}
    return speakers.map(lambda s: "valid" if s in valid else "train")


class SpokenDigits:
    name = "spoken_digits"
    modality = "audio"
    acquisition = "composite"
    acquire_keys: tuple[str, ...] = ()  # the sources' raw folders are theirs

    def acquire(self, dest: Path, settings: dict[str, Any], mirror: str | None,
                workers: int = 1) -> None:
        raise DataError("spoken_digits has no raw data of its own: it reads its sources' "
                        "raw folders")

    def list_clips(self, root: Mapping[str, Path], settings: dict[str, Any]) -> pd.DataFrame:
        if not isinstance(root, Mapping):
            raise DataError(f"{settings['name']}: a composite dataset reads one raw folder per "
                            f"source ({settings['sources']}), got one folder: {root}")
        parts, owner = [], {}
        for source in settings["sources"]:
            spec, own = _source(settings, source)
            if source not in root:
                raise DataError(f"{settings['name']}: no raw folder given for source {source}")
            clips = spec.list_clips(Path(root[source]), own)
            for speaker in set(clips["speaker"]):
                if speaker in owner:
                    raise DataError(f"{settings['name']}: speaker {speaker!r} is in sources "
                                    f"{owner[speaker]} and {source}; per-speaker splits and "
                                    f"metrics need distinct names")
                owner[speaker] = source
            parts.append(_prefixed(clips, source))
        table = pd.concat(parts, ignore_index=True)
        first = ["clip", "path", "label", "speaker", "source"]
        return table[first + [c for c in table.columns if c not in first]]

    def label_names(self, settings: dict[str, Any]) -> list[str]:
        return LABELS

    def assign_splits(self, clips: pd.DataFrame, settings: dict[str, Any]) -> pd.DataFrame:
        tested = set(settings["test_sources"])
        split = pd.Series("", index=clips.index, dtype=object)
        for source in settings["sources"]:
            rows = clips["source"] == source
            if source in tested:
                spec, own = _source(settings, source)
                mine = spec.assign_splits(_own(clips[rows], source).copy(), own)
                by_clip = dict(zip(source + "/" + mine["clip"], mine["split"], strict=True))
                split[rows] = clips.loc[rows, "clip"].map(by_clip).to_numpy()
            else:
                split[rows] = extra_split(clips.loc[rows, "speaker"],
                                          float(settings["extra_valid_fraction"]),
                                          int(settings["split_seed"])).to_numpy()
        table = clips.assign(split=split)
        check_sources(table, tested)
        return table

    def speakers_held_out(self, settings: dict[str, Any]) -> bool:
        """Extra sources hold voices out whole; so the composite does when every test
        source does (fsdd_loso's validation repetitions of training speakers do not)."""
        return all(SOURCES[own["dataset"]].speakers_held_out(own)
                   for source, own in settings["source_settings"].items()
                   if source in settings["test_sources"])

    def evaluation_only(self, settings: dict[str, Any]) -> bool:
        return False


def check_sources(table: pd.DataFrame, test_sources: set[str]) -> None:
    """What a composite promises whatever its sources' own schemes: test clips come from the
    test sources only, and no test speaker is in train or validation."""
    stray = table[(table["split"] == "test") & ~table["source"].isin(test_sources)]
    if len(stray):
        raise DataError(f"{len(stray)} test clips from extra sources "
                        f"{sorted(set(stray['source']))}, e.g. {stray['clip'].iloc[0]}")
    test = set(table.loc[table["split"] == "test", "speaker"])
    crossing = sorted(test & set(table.loc[table["split"] != "test", "speaker"]))
    if crossing:
        raise DataError(f"test speakers {crossing[:5]} are also in train or validation "
                        f"({len(crossing)} in all); give the source a speaker split")


DATASET = SpokenDigits()
