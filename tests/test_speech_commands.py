"""Google Speech Commands: a fixture in the upstream layout, fetched over loopback HTTP through
the real download code; list parsing, speaker leaks, unknown/silence shares, noise reserved
per split, label sets, training-only augmentation, and the workflow end to end."""

from __future__ import annotations

import hashlib
import logging
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from fixtures.speech_commands import NOISES, WORDS, build, pack, serving

from pipeline import splits
from pipeline.config import (
    ConfigError,
    dataset_settings,
    raw_source,
    settings_for,
    stage_settings,
    validate,
)
from pipeline.datasets import acquire_dataset, get_dataset, split_dataset
from pipeline.datasets import speech_commands as sc
from pipeline.datasets.base import DataError
from pipeline.download import DownloadError

ROOT = Path(__file__).resolve().parent.parent
DATASET = get_dataset("speech_commands")
#: The real development sample (6,659 clips; ../shared/datasets/speech_commands/SOURCE.md).
SAMPLE_ARCHIVE = ROOT.parent / "shared" / "datasets" / "speech_commands" / \
    "speech_commands_sample.tar.gz"
SAMPLE_SHA256 = "462662aec70fecd16dd6b9f0d8ab73b59e505ab428b7236834c565a4eec8d879"
#: SOURCE.md's per-word table: train, validation, test clips of the ten commands.
SAMPLE_COMMANDS = {
    "yes": (450, 69, 142), "no": (471, 62, 128), "up": (489, 72, 100),
    "down": (495, 70, 96), "left": (495, 65, 101), "right": (487, 68, 106),
    "on": (8, 1, 371), "off": (9, 1, 371), "stop": (471, 60, 130), "go": (468, 63, 130),
}
SAMPLE_WORD_CLIPS, SAMPLE_SPEAKERS = 6659, 1795
TRAIN_NOISES = {"doing_the_dishes", "dude_miaowing", "pink_noise", "white_noise"}


def settings(**block) -> dict:
    """speech_commands' complete settings from the schema defaults, `block` over them."""
    return settings_for("speech_commands", block)


def acquire(dest: Path, block: dict, mirror: str | None = None) -> None:
    acquire_dataset(dest, settings(**block), mirror=mirror)


@pytest.fixture(scope="session")
def sc_fixture(tmp_path_factory):
    return build(tmp_path_factory.mktemp("speech_commands_fixture"))


@pytest.fixture(scope="session")
def sc_raw(sc_fixture, tmp_path_factory) -> Path:
    """The fixture archive fetched over HTTP from a mirror, verified, extracted, silence cut."""
    dest = tmp_path_factory.mktemp("speech_commands_raw") / "speech_commands"
    with serving(sc_fixture.mirror) as url:
        acquire(dest, sc_fixture.settings, mirror=url)
    return dest


def _table(root: Path, block: dict | None = None) -> pd.DataFrame:
    cfg = settings(**(block or {}))
    return DATASET.assign_splits(DATASET.list_clips(root, cfg), cfg)


def _mirror_of(tmp_path: Path, tree: Path, version: str = "v0.02") -> Path:
    mirror = tmp_path / "mirror"
    pack(tree, mirror / "speech_commands" / f"speech_commands_{version}.tar.gz")
    return mirror


def _assert_nothing_left(dest: Path) -> None:
    assert not dest.exists(), "a failed download must leave no output folder"
    assert [p.name for p in dest.parent.iterdir() if p.name.startswith(".")] == []


# -- names and lists ---------------------------------------------------------------------


def test_parse_name_and_read_list(tmp_path):
    assert sc.parse_name("0a7c2a8d_nohash_12.wav") == {"speaker": "0a7c2a8d", "utterance": 12}
    for bad in ("0a7c2a8d_12.wav", "0a7c2a8d_nohash_x.wav", "0a7c2a8d_nohash_1.mp3"):
        with pytest.raises(DataError, match="not an upstream clip name"):
            sc.parse_name(bad)
    good = tmp_path / "validation_list.txt"
    good.write_bytes(b"right/bb05582b_nohash_3.wav\r\n\n./yes/0a7c2a8d_nohash_0.wav\n")
    assert sc.read_list(good) == ["right/bb05582b_nohash_3.wav", "yes/0a7c2a8d_nohash_0.wav"]
    bad = tmp_path / "testing_list.txt"
    bad.write_text("right/bb05582b_nohash_3.wav\nright/sub/bb05582b_nohash_3.wav\n")
    with pytest.raises(DataError, match="line 2"):
        sc.read_list(bad)
    with pytest.raises(DataError, match="missing"):
        sc.read_list(tmp_path / "nothing.txt")


# -- acquisition -------------------------------------------------------------------------


def test_acquire_over_http_gives_upstream_tree_and_silence(sc_fixture, sc_raw):
    assert (sc_raw / "validation_list.txt").is_file() and (sc_raw / "testing_list.txt").is_file()
    assert sorted(p.name for p in sc._word_dirs(sc_raw)) == sorted(WORDS)
    assert sum(1 for _ in sc_raw.glob("*/*_nohash_*.wav")) == sc_fixture.clips
    assert not list(sc_raw.glob("*.tar.gz"))
    assert [p.name for p in sc_raw.parent.iterdir()] == ["speech_commands"]
    windows = sorted((sc_raw / sc.SILENCE_DIR).glob("*.wav"))
    per_recording = (4 * 16000 - 16000) // 800 + 1  # 4-s recordings, 1-s windows, 50-ms hop
    assert len(windows) == len(NOISES) * per_recording
    info = sf.info(windows[0])
    assert (info.samplerate, info.frames, info.subtype) == (16000, 16000, "FLOAT")
    levels = [np.abs(sf.read(w, dtype="float32")[0]).max() for w in windows]
    assert min(levels) < 0.01 * max(levels), "window gains should span the volume range"


def test_upstream_url_setting_and_checksums(sc_fixture, tmp_path, caplog):
    with serving(sc_fixture.mirror) as url:
        upstream = {"url": {"v0.02": f"{url}/speech_commands/speech_commands_v0.02.tar.gz"}}
        acquire(tmp_path / "a" / "speech_commands", {**upstream, **sc_fixture.settings})
        assert (tmp_path / "a" / "speech_commands" / "testing_list.txt").is_file()

        dest = tmp_path / "b" / "speech_commands"
        with pytest.raises(DownloadError, match="checksum mismatch"):
            acquire(dest, {"archive_sha256": {"v0.02": "0" * 64}}, mirror=url)
        _assert_nothing_left(dest)

        with caplog.at_level(logging.WARNING):
            acquire(tmp_path / "d" / "speech_commands", {"archive_sha256": {"v0.02": None}},
                    mirror=url)
        assert "NOT checked" in caplog.text

    with pytest.raises(DownloadError, match="checksum mismatch"):  # the real archive's default
        acquire(tmp_path / "c" / "speech_commands", {},
                mirror=str(sc_fixture.mirror))  # a plain folder mirror


def test_content_checks_without_checksum(sc_fixture, tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(sc_fixture.tree, tree)
    listed = sc.read_list(tree / "testing_list.txt")[0]
    (tree / listed).unlink()
    skip = {"archive_sha256": {"v0.02": "", "v0.01": ""}}
    missing = pytest.raises(DownloadError, match="named in the lists are not in the archive")
    with serving(_mirror_of(tmp_path / "1", tree)) as url, missing:
        acquire(tmp_path / "x" / "speech_commands", skip, mirror=url)
    _assert_nothing_left(tmp_path / "x" / "speech_commands")

    foreign = pytest.raises(DownloadError, match=r"\['learn'\] are not in v0.01")
    with serving(_mirror_of(tmp_path / "2", sc_fixture.tree, "v0.01")) as url, foreign:
        acquire(tmp_path / "y" / "speech_commands", {**skip, "version": "v0.01"},
                mirror=url)


# -- splits ------------------------------------------------------------------------------


def test_splits_follow_the_official_lists(sc_fixture, sc_raw):
    clips = DATASET.list_clips(sc_raw, settings())
    assert set(clips.columns) >= {"clip", "path", "label", "speaker", "word", "utterance"}
    assert all((sc_raw / p).is_file() for p in clips["path"])
    table = DATASET.assign_splits(clips, settings())
    splits.check_complete(table)
    splits.check_no_leak(table, "speaker")
    words = table[table["word"] != sc.SILENCE_DIR]
    for split, list_name in (("valid", "validation_list.txt"), ("test", "testing_list.txt")):
        listed = set(sc.read_list(sc_raw / list_name))
        assert set(words.loc[words["split"] == split, "path"]) <= listed
        commands = {e for e in listed if e.split("/")[0] in sc.COMMANDS}
        assert set(words.loc[(words["split"] == split) & words["label"].isin(sc.COMMANDS),
                             "path"]) == commands
    for split, speakers in sc_fixture.speakers.items():
        assert set(words.loc[words["split"] == split, "speaker"]) == set(speakers)


def test_a_speaker_in_two_splits_fails_loudly(sc_fixture, sc_raw, tmp_path):
    root = tmp_path / "speech_commands"
    shutil.copytree(sc_raw, root)
    train_speaker = sc_fixture.speakers["train"][0]
    with open(root / "validation_list.txt", "a") as fh:
        fh.write(f"go/{train_speaker}_nohash_0.wav\n")
    with pytest.raises(DataError, match=f"more than one split.*speaker {train_speaker}"):
        _table(root)

    shutil.copy(sc_raw / "validation_list.txt", root / "validation_list.txt")
    entry = sc.read_list(root / "testing_list.txt")[0]
    with open(root / "validation_list.txt", "a") as fh:
        fh.write(f"{entry}\n")
    with pytest.raises(DataError, match="in both validation_list.txt and testing_list.txt"):
        _table(root)

    shutil.copy(sc_raw / "validation_list.txt", root / "validation_list.txt")
    (root / entry).unlink()
    with pytest.raises(DataError, match="clips in the lists are missing"):
        _table(root)


@pytest.mark.parametrize("unknown_share, silence_share", [(0.1, 0.1), (0.15, 0.5), (0.0, 0.0)])
def test_unknown_and_silence_shares(sc_raw, unknown_share, silence_share):
    table = _table(sc_raw, {"unknown_share": unknown_share, "silence_share": silence_share})
    for split in splits.SPLITS:
        part = table[table["split"] == split]
        n_commands = part["label"].isin(sc.COMMANDS).sum()
        assert (part["label"] == "unknown").sum() == math.ceil(unknown_share * n_commands - 1e-9)
        assert (part["label"] == "silence").sum() == math.ceil(silence_share * n_commands - 1e-9)
        assert set(part.loc[part["label"] == "unknown", "word"]) <= {"bed", "learn"}


def test_share_draws_are_seeded_and_order_free(sc_raw, caplog):
    clips = DATASET.list_clips(sc_raw, settings())
    drawn = set(DATASET.assign_splits(clips, settings(split_seed=0))["clip"])
    shuffled = clips.sample(frac=1.0, random_state=3).reset_index(drop=True)
    assert set(DATASET.assign_splits(shuffled, settings(split_seed=0))["clip"]) == drawn
    assert set(DATASET.assign_splits(clips, settings(split_seed=1))["clip"]) != drawn
    with caplog.at_level(logging.WARNING):
        table = DATASET.assign_splits(clips, settings(unknown_share=5.0))
    assert "only" in caplog.text and "unknown" in caplog.text
    assert (table["label"] == "unknown").sum() == (clips["label"] == "unknown").sum()


def test_noise_recordings_are_reserved_per_split(sc_raw):
    table = _table(sc_raw)
    silence = table[table["label"] == "silence"]
    by_split = silence.groupby("split")["speaker"].agg(set).to_dict()
    assert by_split["valid"] == {"running_tap"} and by_split["test"] == {"exercise_bike"}
    assert by_split["train"] and by_split["train"] <= TRAIN_NOISES
    # every window of every recording sits in that recording's split, before any draw
    everything = _table(sc_raw, {"silence_share": 1000.0})
    spread = everything[everything["label"] == "silence"].groupby("speaker")["split"]
    assert spread.nunique().max() == 1
    assert set(spread.first()) == set(splits.SPLITS)

    custom = {"silence_recordings": {"valid": ["pink_noise", "white_noise"],
                                     "test": ["dude_miaowing"]}, "silence_share": 1000.0}
    silence = _table(sc_raw, custom).query("label == 'silence'")
    assert set(silence.loc[silence["split"] == "valid", "speaker"]) == {"pink_noise",
                                                                        "white_noise"}
    assert set(silence.loc[silence["split"] == "train", "speaker"]) == {
        "doing_the_dishes", "exercise_bike", "running_tap"}
    for reserved, message in (
        ({"valid": ["pink_noise"], "test": ["pink_noise"]}, "both valid and test"),
        ({"valid": ["vacuum_cleaner"], "test": []}, "not in _background_noise_"),
        ({"valid": NOISES[:3], "test": NOISES[3:]}, r"left for \['train'\]"),
    ):
        with pytest.raises(DataError, match=message):
            _table(sc_raw, {"silence_recordings": reserved})


# -- label sets --------------------------------------------------------------------------


def test_label_sets():
    twelve = DATASET.label_names(settings())
    assert twelve == sc.COMMANDS + ["unknown", "silence"]
    assert DATASET.label_names(settings(task="12class", version="v0.01")) == twelve
    v2 = DATASET.label_names(settings(task="35class"))
    assert len(v2) == 35 == len(set(v2)) and v2[:10] == sc.COMMANDS
    assert {"backward", "follow", "forward", "learn", "visual", "sheila"} <= set(v2)
    v1 = DATASET.label_names(settings(task="30class", version="v0.01"))
    assert len(v1) == 30 and set(v1) == set(v2) - {"backward", "follow", "forward", "learn",
                                                   "visual"}
    for bad in ({"task": "35class", "version": "v0.01"}, {"task": "30class"},
                {"task": "10class"}, {"version": "v0.03"}):
        with pytest.raises(DataError):
            DATASET.label_names({**settings(), **bad})


def test_every_word_task_keeps_all_clips_without_silence(sc_fixture, sc_raw):
    table = _table(sc_raw, {"task": "35class"})
    assert len(table) == sc_fixture.clips
    assert set(table["label"]) == set(WORDS)
    assert set(table["label"]) <= set(DATASET.label_names(settings(task="35class")))
    splits.check_no_leak(table, "speaker")


def test_config_entries():
    config = validate({})
    block = config["speech_commands"]
    for version, info in sc.VERSIONS.items():
        assert block["archive_sha256"][version] == info.sha256
        assert block["url"][version] == info.url
        assert block["archive"][version] == f"speech_commands_{version}.tar.gz"
    assert (block["version"], block["task"]) == ("v0.02", "12class")
    assert block["silence_recordings"] == {"valid": ["running_tap"], "test": ["exercise_bike"]}
    assert set(sc.SpeechCommands.acquire_keys) <= set(block)
    # what --config 'speech_commands={archive_sha256: {v0.02: }}' gives: an empty string
    assert validate({"speech_commands": {"archive_sha256": {"v0.02": ""}}})
    with pytest.raises(ConfigError, match="archive_sha256"):
        validate({"speech_commands": {"archive_sha256": {"v0.02": "abc"}}})
    with pytest.raises(ConfigError, match="task"):
        validate({"speech_commands": {"task": "20class"}})


def test_sample_variant_in_config_yaml():
    """speech_commands_sample: the real sample's archive name and sha256 are config values of
    the variant; it gets its own raw folder and the acquire stage sees only acquire_keys."""
    import yaml

    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["datasets"] = ["speech_commands_sample"]
    config = validate(config)
    cfg = dataset_settings(config, "speech_commands_sample")
    assert (cfg["dataset"], cfg["name"]) == ("speech_commands", "speech_commands_sample")
    assert cfg["archive"]["v0.02"] == SAMPLE_ARCHIVE.name
    assert cfg["archive_sha256"]["v0.02"] == SAMPLE_SHA256
    assert raw_source(config, "speech_commands_sample") == "speech_commands_sample"
    assert raw_source(config, "speech_commands") == "speech_commands"
    acquire_only = stage_settings(config, "speech_commands_sample", "acquire")
    assert "task" not in acquire_only and acquire_only["archive"]["v0.02"] == SAMPLE_ARCHIVE.name
    assert DATASET.label_names(cfg) == sc.COMMANDS + ["unknown", "silence"]


# -- the real sample ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample(shared_datasets, tmp_path_factory):
    """The real sample acquired from the mirror folder exactly as the workflow does (variant
    settings of config.yaml; silence windows every 0.25 s instead of 0.05 s to keep it
    quick), then split: (settings, raw folder, splits table)."""
    import yaml

    if not SAMPLE_ARCHIVE.is_file():
        pytest.skip(f"the Speech Commands sample is not at {SAMPLE_ARCHIVE}")
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["datasets"] = ["speech_commands_sample"]
    config["variants"]["speech_commands_sample"]["silence_hop_seconds"] = 0.25
    config = validate(config)
    cfg = dataset_settings(config, "speech_commands_sample")
    out = tmp_path_factory.mktemp("sample")
    raw = out / "speech_commands_sample"
    # each stage with exactly the settings the workflow gives it (acquire: acquire_keys only)
    acquire_dataset(raw, stage_settings(config, "speech_commands_sample", "acquire"),
                    mirror=str(shared_datasets))
    table = split_dataset(raw, stage_settings(config, "speech_commands_sample", "split"),
                          out / "splits.tsv")
    return cfg, raw, table


def test_accuracy_report_sets_thin_classes_apart():
    labels = ["yes", "on", "unknown"]
    frame = pd.DataFrame({
        "true_label": ["yes", "yes", "yes", "on", "on", "unknown"],
        "predicted_label": ["yes", "yes", "on", "unknown", "on", "unknown"]})
    report = sc.accuracy_report(frame, labels, {"yes": 400, "on": 8, "unknown": 198})
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert report["enough_data"] == {"labels": ["yes", "unknown"], "n": 4, "correct": 3,
                                     "accuracy": 0.75}
    assert report["thin_data"] == {"labels": ["on"], "n": 2, "correct": 1, "accuracy": 0.5}
    assert report["per_class"]["on"] == {"train": 8, "test": 2, "correct": 1, "recall": 0.5,
                                         "predicted": 2}
    assert sc.enough_training_data({"a": 49, "b": 50}) == ["b"]


def _which_set(name: str) -> str:
    """The dataset's own split rule, which_set(filename, 10, 10) of the v0.02 README."""
    speaker = re.sub(r"_nohash_.*$", "", name)
    p = (int(hashlib.sha1(speaker.encode()).hexdigest(), 16) % 2**27) * (100.0 / (2**27 - 1))
    return "valid" if p < 10 else "test" if p < 20 else "train"


def test_real_sample_acquired_and_split(sample):
    cfg, raw, table = sample
    assert sum(1 for _ in raw.glob("*/*_nohash_*.wav")) == SAMPLE_WORD_CLIPS
    assert sorted(p.name for p in sc._word_dirs(raw)) == sc.WORDS_V2
    assert not list(raw.parent.glob("*.tar.gz")) and not list(raw.parent.glob(".speech*"))
    # splits: the sample's own lists, which follow the dataset's hash rule; no speaker leaks
    splits.check_complete(table)
    splits.check_no_leak(table, "speaker")
    words = table[table["word"] != sc.SILENCE_DIR]
    assert (words["path"].str.split("/").str[1].map(_which_set) == words["split"]).all()
    for word, counts in SAMPLE_COMMANDS.items():
        got = words[words["word"] == word]["split"].value_counts()
        assert tuple(int(got.get(s, 0)) for s in splits.SPLITS) == counts, word
    # labels: the 12 classes; unknown is every other word; silence is cut noise
    assert set(table["label"]) == set(DATASET.label_names(cfg))
    assert (words["label"] == words["word"].where(words["word"].isin(sc.COMMANDS),
                                                  "unknown")).all()
    # unknown: ceil(0.1 x commands) wanted; train and valid have fewer other-word clips
    # (198 and 19 of the 25 words), so all of them are taken
    unknown = {"train": 198, "valid": 19, "test": math.ceil(0.1 * 1675)}
    for split in splits.SPLITS:
        part = table[table["split"] == split]
        commands = int(part["label"].isin(sc.COMMANDS).sum())
        assert commands == sum(c[splits.SPLITS.index(split)] for c in SAMPLE_COMMANDS.values())
        assert (part["label"] == "silence").sum() == math.ceil(0.1 * commands - 1e-9)
        assert (part["label"] == "unknown").sum() == unknown[split]
    silence = table[table["label"] == "silence"]
    assert silence.groupby("split")["speaker"].agg(set).to_dict() == {
        "train": TRAIN_NOISES, "valid": {"running_tap"}, "test": {"exercise_bike"}}
    info = sf.info(raw / silence["path"].iloc[0])
    assert (info.samplerate, info.frames, info.subtype) == (16000, 16000, "FLOAT")


def test_real_sample_features_on_a_subset(sample, tmp_path):
    """The feature stage on 10 clips per label and split (short clips and silence included):
    every clip is kept, and short clips are centred and zero-padded to 1 s."""
    from pipeline.features import compute_features, load_split
    from pipeline.io import write_table

    cfg, raw, table = sample
    subset = table.groupby(["split", "label"], group_keys=False).head(10)
    lengths = {p: sf.info(raw / p).frames for p in table.loc[table["split"] == "train", "path"]}
    short = [p for p, n in lengths.items() if n < 12000][:5]
    subset = pd.concat([subset, table[table["path"].isin(short)]]).drop_duplicates("clip")
    write_table(tmp_path / "splits.tsv", subset)
    counts = compute_features(tmp_path / "splits.tsv", raw, cfg, tmp_path / "features.h5",
                              tmp_path / "rejected.tsv", threads=2)
    assert counts == subset["split"].value_counts().to_dict()
    assert pd.read_csv(tmp_path / "rejected.tsv", sep="\t").empty
    train = load_split(tmp_path / "features.h5", "train")
    assert tuple(train.features.shape[1:]) == (40, 97) and bool(train.features.isfinite().all())
    floor = math.log10(cfg["features"]["log_offset"])
    clips = list(train.clips)
    for path in short:
        x = train.features[clips.index(path.removesuffix(".wav"))]
        assert float(x[:, 0].max()) == pytest.approx(floor, abs=1e-3)  # zero padding
        assert float(x[:, -1].max()) == pytest.approx(floor, abs=1e-3)
        assert float(x[:, 48].max()) > floor + 1  # the word in the middle


# -- features and training ---------------------------------------------------------------


def test_augmentation_in_training_only(sc_fixture, sc_raw, tmp_path, monkeypatch):
    import yaml

    from pipeline import training
    from pipeline.checkpoint import load_checkpoint
    from pipeline.features import compute_features, load_split

    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config.update(datasets=["speech_commands"], training={"epochs": 2, "batch_size": 16})
    config["speech_commands"].update(sc_fixture.settings)
    cfg = dataset_settings(validate(config), "speech_commands")
    assert cfg["features"]["sample_rate"] == 16000
    assert cfg["training"]["noise"]["probability"] > 0
    assert cfg["training"]["class_weights"] is True
    split_dataset(sc_raw, cfg, tmp_path / "splits.tsv")
    h5_path = tmp_path / "features.h5"
    counts = compute_features(tmp_path / "splits.tsv", sc_raw, cfg, h5_path,
                              tmp_path / "rejected.tsv", threads=2)
    with h5py.File(h5_path, "r") as h5:
        assert h5["train/features"].shape[1:] == (40, 97)  # 16 kHz, 25 ms / 10 ms
        labels = np.asarray(h5["train/labels"])
        speakers = [s.decode() for s in h5["train/speaker"][:]]
    silence_index = DATASET.label_names(cfg).index("silence")
    bank_speakers = {s for s, y in zip(speakers, labels, strict=True) if y == silence_index}
    assert bank_speakers and bank_speakers <= TRAIN_NOISES

    seen: dict[str, list] = {"batches": [], "bank": []}
    original_init, original_apply = training.Augment.__init__, training.Augment.apply

    def spy_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        seen["bank"].append(None if self.noise_bank is None else len(self.noise_bank))

    def spy_apply(self, raw, draws, *args):  # every augmented batch passes here
        seen["batches"].append(len(raw))
        return original_apply(self, raw, draws, *args)

    monkeypatch.setattr(training.Augment, "__init__", spy_init)
    monkeypatch.setattr(training.Augment, "apply", spy_apply)
    run = tmp_path / "run"
    training.train_model(h5_path, "cnn2d", cfg, 0, run / "model.pt", run / "history.csv",
                         device="cpu", threads=2)
    assert seen["bank"] == [int((labels == silence_index).sum())]
    assert sum(seen["batches"]) == 2 * counts["train"], "only training examples are augmented"

    def no_augmentation(self, *args):
        raise AssertionError("evaluation must not augment")

    monkeypatch.setattr(training.Augment, "apply", no_augmentation)
    monkeypatch.setattr(training.Augment, "draw", no_augmentation)
    model, ckpt = load_checkpoint(run / "model.pt")
    valid = load_split(h5_path, "valid")
    x = training.normalise(valid.features, ckpt["normalization"]["mean"],
                           ckpt["normalization"]["std"])
    first = training.evaluate(model, x, valid.labels, training.choose_device("cpu"))
    second = training.evaluate(model, x, valid.labels, training.choose_device("cpu"))
    assert first[1] == second[1] and bool((first[2] == second[2]).all())
    assert abs(first[1] - ckpt["valid_accuracy"]) < 1e-6


@pytest.mark.slow
def test_workflow_end_to_end_on_the_fixture(sc_fixture, tmp_path):
    snakemake = Path(sys.executable).with_name("snakemake")
    work = tmp_path / "work"
    work.mkdir()
    with serving(sc_fixture.mirror) as url:
        proc = subprocess.run(
            [str(snakemake), "-s", str(ROOT / "Snakefile"), "--directory", str(work),
             "--configfile", str(ROOT / "config.yaml"), "--cores", "2", "--config",
             "datasets=[speech_commands]", f"mirror={url}",
             f"speech_commands={{archive_sha256: {{v0.02: {sc_fixture.sha256}}}}}",
             "training={epochs: 1, batch_size: 32}"],
            cwd=work, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    results = work / "results"
    for model in ("dense", "conv1d", "cnn2d"):
        run = results / "speech_commands" / model / "seed-0"
        for name in ("metrics.json", "confusion.png", "confusion.csv", "predictions.csv",
                     "model.pt", "history.csv"):
            assert (run / name).is_file(), run / name
        confusion = pd.read_csv(run / "confusion.csv", index_col=0)
        assert list(confusion.index) == sc.COMMANDS + ["unknown", "silence"]
    assert (results / "summary" / "learning_curves" / "speech_commands.png").is_file()
    assert (results / "summary" / "accuracy.csv").is_file()
    assert (results / "benchmarks" / "compute_features" / "speech_commands.tsv").is_file()
    table = splits.read_splits(results / "speech_commands" / "splits.tsv")
    splits.check_no_leak(table, "speaker")


# -- digits: an evaluation-only test set for FSDD and tts_digits models --------------------

#: A tiny v0.02 tree: digit words and two others; speaker aaaa0001 trains (by the lists),
#: bbbb0002 is in testing_list.txt, cccc0003 in validation_list.txt. Seconds per clip.
DIGIT_TREE = {"zero/aaaa0001_nohash_0.wav": 1.0, "zero/bbbb0002_nohash_0.wav": 0.5,
              "one/aaaa0001_nohash_0.wav": 1.0, "nine/cccc0003_nohash_0.wav": 1.0,
              "yes/aaaa0001_nohash_0.wav": 1.0, "bed/dddd0004_nohash_0.wav": 1.0}
#: SOURCE.md's per-word clip counts of the sample's digits (315 clips, every one kept).
SAMPLE_DIGITS = {"zero": 32, "one": 34, "two": 27, "three": 34, "four": 27, "five": 29,
                 "six": 37, "seven": 25, "eight": 38, "nine": 32}


def _digit_tree(root: Path) -> Path:
    from conftest import write_tone

    for i, (rel, seconds) in enumerate(DIGIT_TREE.items()):
        write_tone(root / rel, 300 + 100 * i, rate=16000, seconds=seconds)
    (root / "validation_list.txt").write_text("nine/cccc0003_nohash_0.wav\n")
    (root / "testing_list.txt").write_text("zero/bbbb0002_nohash_0.wav\n")
    return root


def _sample_config(datasets: list[str] | None = None) -> dict:
    """config.yaml, validated, with `datasets` (if given) as on the command line."""
    import yaml

    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    return validate({**config, **({"datasets": datasets} if datasets else {})})


def test_digits_task_keeps_zero_to_nine_labelled_as_fsdd(tmp_path):
    from pipeline.datasets import fsdd

    root = _digit_tree(tmp_path / "speech_commands")
    digits = settings(task="digits")
    assert DATASET.label_names(digits) == fsdd.LABELS == \
        get_dataset("tts_digits").label_names(settings_for("tts_digits"))
    assert sc.resolve(settings(task="digits", version="v0.01"))["task"] == "digits"
    # split: lists (the default): the official lists, the other words left out
    table = _table(root, {"task": "digits"}).set_index("clip")
    assert sorted(table.index) == sorted(r.removesuffix(".wav") for r in DIGIT_TREE
                                         if r.split("/")[0] in sc.DIGITS)
    assert (table["label"] == table["word"].map(
        {"zero": "0", "one": "1", "nine": "9"})).all()
    assert table["split"].to_dict() == {
        "zero/aaaa0001_nohash_0": "train", "zero/bbbb0002_nohash_0": "test",
        "one/aaaa0001_nohash_0": "train", "nine/cccc0003_nohash_0": "valid"}
    assert not DATASET.evaluation_only(digits)
    # split: test: the same clips, every one a test clip; an evaluation-only set
    test_only = settings(task="digits", split="test")
    assert DATASET.evaluation_only(test_only)
    written = split_dataset(root, test_only, tmp_path / "splits.tsv")
    assert sorted(written["clip"]) == sorted(table.index) and set(written["split"]) == {"test"}
    assert (written.set_index("clip")["label"] == table["label"]).all()
    with pytest.raises(DataError, match="split 'train' is empty"):
        splits.check_complete(written)
    with pytest.raises(DataError, match="every clip in the test split"):
        splits.check_complete(written.assign(split=["train"] + ["test"] * 3), True)
    with pytest.raises(DataError, match="unknown split"):
        DATASET.label_names({**digits, "split": "all"})


def test_digits_features_at_8_khz_have_fsdds_shape_and_no_train_statistics(tmp_path):
    from pipeline.features import compute_features, load_split, read_attrs
    from pipeline.modalities.audio import FeatureParams

    root = _digit_tree(tmp_path / "speech_commands")
    cfg = settings(task="digits", split="test", features={"sample_rate": 8000})
    split_dataset(root, cfg, tmp_path / "splits.tsv")
    counts = compute_features(tmp_path / "splits.tsv", root, cfg, tmp_path / "features.h5",
                              tmp_path / "rejected.tsv")
    assert counts == {"train": 0, "valid": 0, "test": 4}
    attrs = read_attrs(tmp_path / "features.h5")
    fsdd = FeatureParams.from_dict(settings_for("fsdd")["features"])
    assert FeatureParams.from_attrs(attrs).as_attrs() == fsdd.as_attrs()
    assert attrs["sample_rate"] == 8000
    assert attrs["evaluation_only"] and "norm_mean" not in attrs and "norm_std" not in attrs
    test = load_split(tmp_path / "features.h5", "test")
    assert tuple(test.features.shape[1:]) == (fsdd.n_mels, fsdd.n_frames) == (40, 97)
    floor = math.log10(cfg["features"]["log_offset"])
    by_clip = dict(zip(test.clips, test.features, strict=True))
    whole = by_clip["zero/aaaa0001_nohash_0"]  # 1 s at 16 kHz: exactly the 1-s window at 8 kHz
    assert float(whole[:, 0].max()) > floor + 1 and float(whole[:, -1].max()) > floor + 1
    half = by_clip["zero/bbbb0002_nohash_0"]  # 0.5 s: centred, zero-padded as FSDD's clips
    assert float(half[:, 0].max()) == pytest.approx(floor, abs=1e-3)
    assert float(half[:, -1].max()) == pytest.approx(floor, abs=1e-3)
    assert float(half[:, 48].max()) > floor + 1


def test_sc_digits_sample_variant_is_opt_in_and_shares_the_sample_download():
    from pipeline.config import cross_pairs, evaluation_only, raw_sources, run_names
    from pipeline.modalities.audio import FeatureParams

    default = _sample_config()
    assert run_names(default) == ["tts_digits", "mnist"]
    assert all("sc_digits_sample" not in pair for pair in cross_pairs(default))
    config = _sample_config(["fsdd", "tts_digits", "sc_digits_sample"])
    assert run_names(config) == ["fsdd", "tts_digits"]  # nothing trains on it
    assert {("fsdd", "sc_digits_sample"), ("tts_digits", "sc_digits_sample")} <= \
        set(cross_pairs(config))
    cfg = dataset_settings(config, "sc_digits_sample")
    assert (cfg["dataset"], cfg["task"], cfg["split"]) == ("speech_commands", "digits", "test")
    assert evaluation_only(config, "sc_digits_sample")
    assert not evaluation_only(config, "speech_commands_sample")
    for other in ("fsdd", "tts_digits"):  # the feature parameters that cross evaluation checks
        theirs = dataset_settings(config, other)
        assert FeatureParams.from_dict(cfg["features"]) == \
            FeatureParams.from_dict(theirs["features"])
        assert DATASET.label_names(cfg) == get_dataset(other).label_names(theirs)
    # the same archive and checksum as speech_commands_sample: one download, one folder
    assert raw_source(config, "sc_digits_sample") == "speech_commands_sample"
    assert "sc_digits_sample" not in raw_sources(config, "download")
    moved = _sample_config(["speech_commands_sample"])
    moved["variants"]["sc_digits_sample"]["archive_sha256"] = {"v0.02": "0" * 64}
    assert raw_source(moved, "sc_digits_sample") == "sc_digits_sample"
    # evaluation-only: never a training set, and never run without a pair testing on it
    with pytest.raises(ConfigError, match=r"datasets\[1\]: sc_digits_sample is evaluation-only"):
        _sample_config(["mnist", "sc_digits_sample"])
    import yaml

    bad = yaml.safe_load((ROOT / "config.yaml").read_text())
    bad.update(datasets=["fsdd", "sc_digits_sample"],
               cross_evaluations=[{"train": "sc_digits_sample", "test": "fsdd"}])
    with pytest.raises(ConfigError, match=r"cross_evaluations\[0\].train: sc_digits_sample"):
        validate(bad)


def _job_counts(output: str) -> dict[str, int]:
    table = output[output.index("Job stats:"):].split("\n\n")[0]
    rows = [line.split() for line in table.splitlines()[3:]]
    return {row[0]: int(row[1]) for row in rows if len(row) == 2 and row[1].isdigit()}


def test_workflow_builds_only_features_and_cross_scores_for_an_evaluation_only_set(tmp_path):
    snakemake = Path(sys.executable).with_name("snakemake")

    def dry_run(*config: str) -> str:
        proc = subprocess.run(
            [str(snakemake), "-n", "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
             "--configfile", str(ROOT / "config.yaml"), "--cores", "1", "--config", *config],
            cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc.stdout + proc.stderr

    default = dry_run("mirror=")
    assert "sc_digits_sample" not in default and "speech_commands" not in default
    assert "evaluate_cross_dataset" not in _job_counts(default)
    out = dry_run("datasets=[tts_digits, sc_digits_sample]", "mirror=/nowhere")
    assert _job_counts(out) == {
        "download_dataset": 1, "synthesize_dataset": 1, "split_dataset": 2,
        "compute_features": 2, "train_model": 3, "evaluate_model": 3,
        "evaluate_cross_dataset": 3, "plot_learning_curves": 1, "tabulate_results": 1,
        "all": 1, "total": 18}
    assert "output: resources/speech_commands_sample" in out
    assert "results/sc_digits_sample/features.h5" in out
    for model in ("dense", "conv1d", "cnn2d"):
        assert f"results/tts_digits/{model}/seed-0/cross/sc_digits_sample/metrics.json" in out
        assert f"results/sc_digits_sample/{model}" not in out


def test_real_sample_digits_score_a_model_of_fsdds_feature_shape(sample, tiny_features,
                                                                 tmp_path):
    """The sample's 315 digit clips (SOURCE.md) through the workflow's stages with the
    settings of config.yaml's sc_digits_sample: every one a test clip at FSDD's 8 kHz log-mel
    shape, and a model trained on 8-kHz digits (tiny tts_digits) scored on them."""
    from pipeline.evaluation import check_compatible, evaluate_model
    from pipeline.features import compute_features, read_attrs
    from pipeline.training import train_model

    _, raw, _ = sample
    config = _sample_config(["fsdd", "sc_digits_sample"])
    table = split_dataset(raw, stage_settings(config, "sc_digits_sample", "split"),
                          tmp_path / "splits.tsv")
    assert len(table) == sum(SAMPLE_DIGITS.values()) == \
        sum(1 for w in sc.DIGITS for _ in (raw / w).glob("*.wav"))
    assert table["word"].value_counts().to_dict() == SAMPLE_DIGITS
    assert set(table["split"]) == {"test"}
    assert (table["label"] == table["word"].map(lambda w: str(sc.DIGITS.index(w)))).all()
    h5_path = tmp_path / "features.h5"
    counts = compute_features(tmp_path / "splits.tsv", raw,
                              stage_settings(config, "sc_digits_sample", "features"), h5_path,
                              tmp_path / "rejected.tsv", threads=2)
    assert counts == {"train": 0, "valid": 0, "test": 315}
    assert pd.read_csv(tmp_path / "rejected.tsv", sep="\t").empty
    attrs = read_attrs(h5_path)
    assert (attrs["sample_rate"], attrs["n_samples"], attrs["n_frames"]) == (8000, 8000, 97)
    # a model of FSDD's features (its settings' parameters and labels) can read them
    from pipeline.modalities.audio import FeatureParams

    fsdd = FeatureParams.from_dict(dataset_settings(config, "fsdd")["features"])
    check_compatible({"label_names": attrs["label_names"],
                      "feature_params": {**fsdd.as_attrs(), "modality": "audio"}},
                     attrs, "sc_digits_sample")
    # ... and one trained (tiny tts_digits at 8 kHz) is scored on every clip
    features, tts = tiny_features
    s = {**tts, "training": {**tts["training"], "epochs": 2}}
    train_model(features, "dense", s, 0, tmp_path / "model.pt", tmp_path / "history.csv",
                device="cpu")
    metrics = evaluate_model(tmp_path / "model.pt", h5_path, tmp_path / "cross", device="cpu")
    assert metrics["test_dataset"] == "sc_digits_sample" and metrics["dataset"] == "tts_digits"
    assert metrics["n_test"] == 315 and 0.0 <= metrics["test_accuracy"] <= 1.0
    assert {k: v["support"] for k, v in metrics["per_class"].items()} == {
        str(i): SAMPLE_DIGITS[w] for i, w in enumerate(sc.DIGITS)}
    assert sum(v["n"] for v in metrics["per_speaker"].values()) == 315
    predictions = pd.read_csv(tmp_path / "cross" / "predictions.csv", dtype=str)
    assert len(predictions) == 315
    assert set(predictions["true_label"]) == set(map(str, range(10)))
    # a 16-kHz cache of the same clips is refused, naming the parameter
    from pipeline.io import write_table

    eight = stage_settings(config, "sc_digits_sample", "features")
    sixteen = {**eight, "features": {**eight["features"], "sample_rate": 16000}}
    write_table(tmp_path / "subset.tsv", table.head(20))
    compute_features(tmp_path / "subset.tsv", raw, sixteen, tmp_path / "16k.h5",
                     tmp_path / "16k.tsv")
    with pytest.raises(ValueError, match="sample_rate differs"):
        evaluate_model(tmp_path / "model.pt", tmp_path / "16k.h5", tmp_path / "x", device="cpu")
