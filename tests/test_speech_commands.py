"""Google Speech Commands: a fixture in the upstream layout, fetched over loopback HTTP through
the real download code; list parsing, speaker leaks, unknown/silence shares, noise reserved
per split, label sets, training-only augmentation, and the workflow end to end."""

from __future__ import annotations

import logging
import math
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
from pipeline.config import ConfigError, dataset_settings, validate
from pipeline.datasets import acquire_dataset, get_dataset
from pipeline.datasets import speech_commands as sc
from pipeline.datasets.base import DataError
from pipeline.download import DownloadError

ROOT = Path(__file__).resolve().parent.parent
DATASET = get_dataset("speech_commands")
TRAIN_NOISES = {"doing_the_dishes", "dude_miaowing", "pink_noise", "white_noise"}


@pytest.fixture(scope="session")
def sc_fixture(tmp_path_factory):
    return build(tmp_path_factory.mktemp("speech_commands_fixture"))


@pytest.fixture(scope="session")
def sc_raw(sc_fixture, tmp_path_factory) -> Path:
    """The fixture archive fetched over HTTP from a mirror, verified, extracted, silence cut."""
    dest = tmp_path_factory.mktemp("speech_commands_raw") / "speech_commands"
    with serving(sc_fixture.mirror) as url:
        acquire_dataset("speech_commands", dest, sc_fixture.settings, mirror=url)
    return dest


def _table(root: Path, settings: dict | None = None) -> pd.DataFrame:
    settings = settings or {}
    return DATASET.assign_splits(DATASET.list_clips(root, settings), settings)


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
        acquire_dataset("speech_commands", tmp_path / "a" / "speech_commands",
                        {**upstream, **sc_fixture.settings})
        assert (tmp_path / "a" / "speech_commands" / "testing_list.txt").is_file()

        dest = tmp_path / "b" / "speech_commands"
        with pytest.raises(DownloadError, match="checksum mismatch"):
            acquire_dataset("speech_commands", dest, {"archive_sha256": {"v0.02": "0" * 64}},
                            mirror=url)
        _assert_nothing_left(dest)

        with caplog.at_level(logging.WARNING):
            acquire_dataset("speech_commands", tmp_path / "d" / "speech_commands",
                            {"archive_sha256": {"v0.02": None}}, mirror=url)
        assert "NOT checked" in caplog.text

    with pytest.raises(DownloadError, match="checksum mismatch"):  # the real archive's default
        acquire_dataset("speech_commands", tmp_path / "c" / "speech_commands", {},
                        mirror=str(sc_fixture.mirror))  # a plain folder mirror


def test_content_checks_without_checksum(sc_fixture, tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(sc_fixture.tree, tree)
    listed = sc.read_list(tree / "testing_list.txt")[0]
    (tree / listed).unlink()
    skip = {"archive_sha256": {"v0.02": "", "v0.01": ""}}
    missing = pytest.raises(DownloadError, match="named in the lists are not in the archive")
    with serving(_mirror_of(tmp_path / "1", tree)) as url, missing:
        acquire_dataset("speech_commands", tmp_path / "x" / "speech_commands", skip,
                        mirror=url)
    _assert_nothing_left(tmp_path / "x" / "speech_commands")

    foreign = pytest.raises(DownloadError, match=r"\['learn'\] are not in v0.01")
    with serving(_mirror_of(tmp_path / "2", sc_fixture.tree, "v0.01")) as url, foreign:
        acquire_dataset("speech_commands", tmp_path / "y" / "speech_commands",
                        {**skip, "version": "v0.01"}, mirror=url)


# -- splits ------------------------------------------------------------------------------


def test_splits_follow_the_official_lists(sc_fixture, sc_raw):
    clips = DATASET.list_clips(sc_raw, {})
    assert set(clips.columns) >= {"clip", "path", "label", "speaker", "word", "utterance"}
    assert all((sc_raw / p).is_file() for p in clips["path"])
    table = DATASET.assign_splits(clips, {})
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
    settings = {"unknown_share": unknown_share, "silence_share": silence_share}
    table = _table(sc_raw, settings)
    for split in splits.SPLITS:
        part = table[table["split"] == split]
        n_commands = part["label"].isin(sc.COMMANDS).sum()
        assert (part["label"] == "unknown").sum() == math.ceil(unknown_share * n_commands - 1e-9)
        assert (part["label"] == "silence").sum() == math.ceil(silence_share * n_commands - 1e-9)
        assert set(part.loc[part["label"] == "unknown", "word"]) <= {"bed", "learn"}


def test_share_draws_are_seeded_and_order_free(sc_raw, caplog):
    clips = DATASET.list_clips(sc_raw, {})
    drawn = set(DATASET.assign_splits(clips, {"split_seed": 0})["clip"])
    shuffled = clips.sample(frac=1.0, random_state=3).reset_index(drop=True)
    assert set(DATASET.assign_splits(shuffled, {"split_seed": 0})["clip"]) == drawn
    assert set(DATASET.assign_splits(clips, {"split_seed": 1})["clip"]) != drawn
    with caplog.at_level(logging.WARNING):
        table = DATASET.assign_splits(clips, {"unknown_share": 5.0})
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
    twelve = DATASET.label_names({})
    assert twelve == sc.COMMANDS + ["unknown", "silence"]
    assert DATASET.label_names({"task": "12class", "version": "v0.01"}) == twelve
    v2 = DATASET.label_names({"task": "35class"})
    assert len(v2) == 35 == len(set(v2)) and v2[:10] == sc.COMMANDS
    assert {"backward", "follow", "forward", "learn", "visual", "sheila"} <= set(v2)
    v1 = DATASET.label_names({"task": "30class", "version": "v0.01"})
    assert len(v1) == 30 and set(v1) == set(v2) - {"backward", "follow", "forward", "learn",
                                                   "visual"}
    for bad in ({"task": "35class", "version": "v0.01"}, {"task": "30class"},
                {"task": "10class"}, {"version": "v0.03"}):
        with pytest.raises(DataError):
            DATASET.label_names(bad)


def test_every_word_task_keeps_all_clips_without_silence(sc_fixture, sc_raw):
    table = _table(sc_raw, {"task": "35class"})
    assert len(table) == sc_fixture.clips
    assert set(table["label"]) == set(WORDS)
    assert set(table["label"]) <= set(DATASET.label_names({"task": "35class"}))
    splits.check_no_leak(table, "speaker")


def test_config_entries():
    config = validate({})
    assert config["speech_commands"]["archive_sha256"]["v0.02"] == sc.VERSIONS["v0.02"].sha256
    assert config["speech_commands"]["archive_sha256"]["v0.01"] == sc.VERSIONS["v0.01"].sha256
    assert config["speech_commands"]["url"]["v0.02"] == sc.VERSIONS["v0.02"].url
    assert {k for k in sc.DEFAULTS} <= set(config["speech_commands"])
    for key, value in sc.DEFAULTS.items():
        assert config["speech_commands"][key] == value, key
    # what --config 'speech_commands={archive_sha256: {v0.02: }}' gives: an empty string
    assert validate({"speech_commands": {"archive_sha256": {"v0.02": ""}}})
    with pytest.raises(ConfigError, match="archive_sha256"):
        validate({"speech_commands": {"archive_sha256": {"v0.02": "abc"}}})
    with pytest.raises(ConfigError, match="task"):
        validate({"speech_commands": {"task": "20class"}})


# -- features and training ---------------------------------------------------------------


def test_augmentation_in_training_only(sc_fixture, sc_raw, tmp_path, monkeypatch):
    import yaml

    from pipeline import training
    from pipeline.features import compute_features, load_split
    from pipeline.splits import split_dataset

    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config.update(datasets=["speech_commands"], training={"epochs": 2, "batch_size": 16})
    config["speech_commands"].update(sc_fixture.settings)
    settings = dataset_settings(validate(config), "speech_commands")
    assert settings["features"]["sample_rate"] == 16000
    assert settings["training"]["noise"]["probability"] > 0
    assert settings["training"]["class_weights"] is True
    split_dataset("speech_commands", sc_raw, settings, tmp_path / "splits.tsv")
    h5_path = tmp_path / "features.h5"
    counts = compute_features("speech_commands", tmp_path / "splits.tsv", sc_raw, settings,
                              h5_path, tmp_path / "rejected.tsv", threads=2)
    with h5py.File(h5_path, "r") as h5:
        assert h5["train/features"].shape[1:] == (40, 97)  # 16 kHz, 25 ms / 10 ms
        labels = np.asarray(h5["train/labels"])
        speakers = [s.decode() for s in h5["train/speaker"][:]]
    silence_index = DATASET.label_names(settings).index("silence")
    bank_speakers = {s for s, y in zip(speakers, labels, strict=True) if y == silence_index}
    assert bank_speakers and bank_speakers <= TRAIN_NOISES

    seen: dict[str, list] = {"batches": [], "bank": []}
    original_init, original_call = training.Augment.__init__, training.Augment.__call__

    def spy_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        seen["bank"].append(None if self.noise_bank is None else len(self.noise_bank))

    def spy_call(self, raw):
        seen["batches"].append(len(raw))
        return original_call(self, raw)

    monkeypatch.setattr(training.Augment, "__init__", spy_init)
    monkeypatch.setattr(training.Augment, "__call__", spy_call)
    run = tmp_path / "run"
    training.train_model(h5_path, "cnn2d", settings, 0, run / "model.pt", run / "history.csv",
                         device="cpu", threads=2)
    assert seen["bank"] == [int((labels == silence_index).sum())]
    assert sum(seen["batches"]) == 2 * counts["train"], "only training examples are augmented"

    def no_augmentation(self, raw):
        raise AssertionError("evaluation must not augment")

    monkeypatch.setattr(training.Augment, "__call__", no_augmentation)
    model, ckpt = training.load_checkpoint(run / "model.pt")
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
