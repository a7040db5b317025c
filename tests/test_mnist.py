"""MNIST: IDX parsing, verified downloads from a mirror, the embedded subset, the image path."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from pipeline.config import dataset_settings, settings_for, validate
from pipeline.datasets import REGISTRY, acquire_dataset, split_dataset
from pipeline.datasets import mnist as m
from pipeline.datasets.base import DataError
from pipeline.download import DownloadError
from pipeline.evaluation import evaluate_model
from pipeline.features import compute_features
from pipeline.models import build_model
from pipeline.splits import read_splits
from pipeline.training import train_model

ROOT = Path(__file__).resolve().parents[1]
_CANDIDATES = [ROOT / "shared" / "datasets", ROOT.parent / "shared" / "datasets"]
MIRROR = next((p for p in _CANDIDATES if (p / "mnist" / "t10k-labels-idx1-ubyte.gz").is_file()),
              None)
needs_shared = pytest.mark.skipif(MIRROR is None, reason="no ../shared/datasets/mnist here")
T10K_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def defaults(**block):
    """mnist's complete settings from the schema defaults, `block` over its own keys."""
    return settings_for("mnist", block)


def remote(key: str):
    return next(r for f, r in m.remote_files(defaults()) if f is m.FILES[key])


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def mirror_of(tmp_path: Path, **replaced: bytes) -> Path:
    """A mirror folder with the shared files (symlinked), some replaced by other bytes."""
    folder = tmp_path / "mirror" / "mnist"
    folder.mkdir(parents=True)
    for idx in m.FILES.values():
        if idx.name in replaced:
            (folder / idx.name).write_bytes(replaced[idx.name])
        else:
            (folder / idx.name).symlink_to(MIRROR / "mnist" / idx.name)
    return tmp_path / "mirror"


def _labels_with_one_byte_changed() -> bytes:
    payload = bytearray(gzip.decompress((MIRROR / "mnist" / TEST_LABELS).read_bytes()))
    payload[100] = (payload[100] + 1) % 10  # still a valid label: only the md5 can tell
    return gzip.compress(bytes(payload), mtime=0)


TEST_LABELS = "t10k-labels-idx1-ubyte.gz"


# ------------------------------------------------------------------------------- IDX parsing

@needs_shared
def test_reads_the_original_t10k_files():
    images = m.read_images(MIRROR / "mnist" / m.FILES["test_images"].name, 10000)
    labels = m.read_labels(MIRROR / "mnist" / m.FILES["test_labels"].name, 10000)
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert images.max() == 255 and images[:, 0, :].max() == 0  # the top row is always blank
    assert np.bincount(labels).tolist() == T10K_COUNTS
    train_labels = m.read_labels(MIRROR / "mnist" / m.FILES["train_labels"].name, 60000)
    assert len(train_labels) == 60000 and set(np.unique(train_labels)) == set(range(10))


def test_idx_round_trip_gzip_and_plain(tmp_path):
    array = np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28)
    for compress in (True, False):
        path = tmp_path / f"x-{compress}"
        m.write_idx(path, array, compress=compress)
        np.testing.assert_array_equal(m.read_images(path, 3), array)


def test_wrong_magic_names_file_and_both_numbers(tmp_path):
    labels = tmp_path / "labels-as-images.gz"
    m.write_idx(labels, np.zeros(5, dtype=np.uint8))
    with pytest.raises(m.IdxError, match=r"labels-as-images.gz: wrong magic number: "
                                         r"expected 0x00000803, got 0x00000801"):
        m.read_images(labels)
    garbage = tmp_path / "garbage.idx"
    garbage.write_bytes(b"\x12\x34\x56\x78" + bytes(100))
    with pytest.raises(m.IdxError, match="expected 0x00000801, got 0x12345678"):
        m.read_labels(garbage)


def test_truncated_payload_and_truncated_gzip(tmp_path):
    good = tmp_path / "good.gz"
    m.write_idx(good, np.ones((4, 28, 28), dtype=np.uint8))
    payload = gzip.decompress(good.read_bytes())
    short = tmp_path / "short-images.gz"
    short.write_bytes(gzip.compress(payload[:-100]))
    with pytest.raises(m.IdxError, match=r"short-images.gz: truncated: shape \(4, 28, 28\) "
                                         r"needs 3152 bytes, got 3052"):
        m.read_images(short)
    long = tmp_path / "long-images.gz"
    long.write_bytes(gzip.compress(payload + b"\0"))
    with pytest.raises(m.IdxError, match="trailing bytes"):
        m.read_images(long)
    cut = tmp_path / "cut-stream.gz"
    cut.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(m.IdxError, match="cut-stream.gz: cannot decompress"):
        m.read_images(cut)
    header_only = tmp_path / "header.gz"
    header_only.write_bytes(gzip.compress(payload[:10]))
    with pytest.raises(m.IdxError, match="truncated header: expected 16 bytes, got 10"):
        m.read_images(header_only)


def test_wrong_dimensions_and_labels(tmp_path):
    path = tmp_path / "small.gz"
    m.write_idx(path, np.zeros((2, 14, 14), dtype=np.uint8))
    with pytest.raises(m.IdxError, match=r"dimension 1 is 14, expected 28"):
        m.read_images(path)
    m.write_idx(path, np.zeros((2, 28, 28), dtype=np.uint8))
    with pytest.raises(m.IdxError, match="dimension 0 is 2, expected 60000"):
        m.read_images(path, 60000)
    m.write_idx(path, np.array([1, 12], dtype=np.uint8))
    with pytest.raises(m.IdxError, match="labels must be 0-9, found 12"):
        m.read_labels(path)


# --------------------------------------------------------------------- downloads via a mirror

def test_published_content_md5s_are_those_of_the_shared_files():
    """The md5 table is of the decompressed files; the .gz md5s are torchvision's list."""
    assert {f.name: f.md5 for f in m.FILES.values()} == {
        "train-images-idx3-ubyte.gz": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte.gz": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte.gz": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte.gz": "27ae3e4e09519cfbb04c329615203637",
    }
    if MIRROR is not None:
        for idx in m.FILES.values():
            assert hashlib.md5(m.load_idx_bytes(MIRROR / "mnist" / idx.name)).hexdigest() \
                == idx.md5, idx.name


@needs_shared
@pytest.mark.parametrize("how", ["folder", "file-url", "http"])
def test_the_four_shared_files_verify_through_the_download_code(tmp_path, serve, how):
    """train-images there is re-compressed (other .gz bytes, same content): it verifies."""
    mirror = {"folder": str(MIRROR), "file-url": MIRROR.as_uri(), "http": None}[how]
    mirror = mirror or serve(MIRROR)
    raw = tmp_path / "raw"
    acquire_dataset(raw, defaults(source="download"), mirror=mirror)
    manifest = m.read_manifest(raw, defaults(source="download"))
    assert {name: f["content_md5"] for name, f in manifest["files"].items()} == {
        f.name: f.md5 for f in m.FILES.values()}
    for idx in m.FILES.values():
        assert md5(raw / idx.name) == md5(MIRROR / "mnist" / idx.name)
    clips = m.DATASET.list_clips(raw, defaults(source="download"))
    assert len(clips) == 70000
    assert np.bincount(clips.loc[clips["part"] == "t10k", "label"].astype(int)).tolist() \
        == T10K_COUNTS


@needs_shared
def test_a_recompressed_copy_verifies(tmp_path, caplog):
    original = (MIRROR / "mnist" / TEST_LABELS).read_bytes()
    level1 = gzip.compress(gzip.decompress(original), compresslevel=1, mtime=0)
    assert level1 != original
    mirror = mirror_of(tmp_path, **{TEST_LABELS: level1})
    idx = m.FILES["test_labels"]
    with caplog.at_level("INFO", logger="pipeline.datasets.mnist"):
        path, labels, info = m.fetch_verified(idx, remote("test_labels"), tmp_path / "out",
                                              str(mirror))
    assert path.read_bytes() == level1 and info["content_md5"] == idx.md5
    assert np.bincount(labels).tolist() == T10K_COUNTS
    assert "re-compressed" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="pipeline.datasets.mnist"):
        m.fetch_verified(m.FILES["train_labels"], remote("train_labels"), tmp_path / "out",
                         str(mirror))
    assert "the original archive" in caplog.text


@needs_shared
def test_one_changed_byte_in_the_content_fails_naming_file_and_both_md5s(tmp_path):
    changed = _labels_with_one_byte_changed()
    actual = hashlib.md5(gzip.decompress(changed)).hexdigest()
    mirror = mirror_of(tmp_path, **{TEST_LABELS: changed})
    with pytest.raises(DownloadError) as err:
        acquire_dataset(tmp_path / "raw", defaults(source="download"),
                        mirror=str(mirror))
    message = str(err.value)
    assert TEST_LABELS in message and f"expected {m.FILES['test_labels'].md5}" in message
    assert f"md5 {actual}" in message
    assert not (tmp_path / "raw").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["mirror"]  # nothing left behind


@needs_shared
def test_a_truncated_gzip_fails_clearly(tmp_path, serve):
    data = (MIRROR / "mnist" / TEST_LABELS).read_bytes()
    mirror = mirror_of(tmp_path, **{TEST_LABELS: data[: len(data) // 2]})
    with pytest.raises(DownloadError, match=r"mnist: t10k-labels-idx1-ubyte.gz: cannot "
                                            r"decompress \(corrupt or truncated gzip\).*from "
                                            r"http://127\.0\.0\.1"):
        acquire_dataset(tmp_path / "raw", defaults(source="download"),
                        mirror=serve(mirror))
    assert not (tmp_path / "raw").exists()


@needs_shared
def test_a_corrupted_gzip_byte_fails(tmp_path):
    data = bytearray((MIRROR / "mnist" / TEST_LABELS).read_bytes())
    data[len(data) // 2] ^= 0xFF
    mirror = mirror_of(tmp_path, **{TEST_LABELS: bytes(data)})
    with pytest.raises(DownloadError, match=r"t10k-labels-idx1-ubyte.gz.*(cannot decompress|"
                                            r"md5)"):
        m.fetch_verified(m.FILES["test_labels"], remote("test_labels"), tmp_path / "out",
                         str(mirror))
    assert not any((tmp_path / "out").iterdir())


@needs_shared
def test_acquire_fails_cleanly_when_the_mirror_lacks_a_file(tmp_path):
    mirror = mirror_of(tmp_path)
    (mirror / "mnist" / "train-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DownloadError, match="train-images-idx3-ubyte.gz does not exist"):
        acquire_dataset(tmp_path / "raw", defaults(source="download"),
                        mirror=str(mirror))
    assert not (tmp_path / "raw").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["mirror"]


def _tiny_distribution(tmp_path, monkeypatch, n_train=40, n_test=10):
    """A mirror of small IDX files, with FILES patched to their checksums."""
    rng = np.random.default_rng(1)
    folder = tmp_path / "mirror" / "mnist"
    folder.mkdir(parents=True)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": (np.arange(n_test)[::-1] % 10).astype(np.uint8),
    }
    files = {}
    for key, array in arrays.items():
        idx = m.FILES[key]
        path = folder / idx.name
        m.write_idx(path, array)
        files[key] = dataclasses.replace(
            idx, md5=hashlib.md5(gzip.decompress(path.read_bytes())).hexdigest(),
            gz_md5="", count=len(array))
    monkeypatch.setattr(m, "FILES", files)
    return tmp_path / "mirror", arrays


def test_download_source_end_to_end_on_a_tiny_mirror(tmp_path, monkeypatch):
    mirror, arrays = _tiny_distribution(tmp_path, monkeypatch)
    settings = defaults(source="download", valid_count=8)
    acquire_dataset(tmp_path / "raw", settings, mirror=str(mirror))
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == sorted(
        [f.name for f in m.FILES.values()] + [m.MANIFEST])
    table = split_dataset(tmp_path / "raw", settings, tmp_path / "splits.tsv")
    counts = table["split"].value_counts().to_dict()
    assert counts == {"train": 32, "valid": 8, "test": 10}
    assert set(table.loc[table["split"] == "valid", "clip"]) == {
        f"train-{i:05d}" for i in range(32, 40)}
    assert set(table.loc[table["split"] == "test", "clip"]) == {f"t10k-{i:05d}" for i in range(10)}
    assert set(table["speaker"]) == {"unknown"}
    stored = read_splits(tmp_path / "splits.tsv")
    images = m.DATASET.load_images(tmp_path / "raw", stored, settings)
    for row, image in zip(stored.itertuples(), images, strict=True):
        source = arrays["train_images" if row.part == "train" else "test_images"]
        np.testing.assert_array_equal(image, source[row.index])
    assert stored["label"].tolist() == [
        str(arrays["train_labels" if p == "train" else "test_labels"][i])
        for p, i in zip(stored["part"], stored["index"], strict=True)]
    with pytest.raises(DataError, match="holds source 'download' but the config asks for "
                                        "'embedded'"):
        m.DATASET.list_clips(tmp_path / "raw", {"source": "embedded"})


def test_labels_and_images_must_pair(tmp_path, monkeypatch):
    mirror, arrays = _tiny_distribution(tmp_path, monkeypatch)
    path = mirror / "mnist" / m.FILES["test_labels"].name
    m.write_idx(path, arrays["test_labels"][:-1])
    monkeypatch.setitem(m.FILES, "test_labels", dataclasses.replace(
        m.FILES["test_labels"], md5=hashlib.md5(gzip.decompress(path.read_bytes())).hexdigest(),
        count=None))
    with pytest.raises(DownloadError, match="t10k-images-idx3-ubyte.gz holds 10 images but "
                                            "t10k-labels-idx1-ubyte.gz 9 labels"):
        acquire_dataset(tmp_path / "raw", defaults(source="download"),
                        mirror=str(mirror))
    assert not (tmp_path / "raw").exists()


# --------------------------------------------------------------------------- embedded subset

@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    root = tmp_path_factory.mktemp("mnist") / "raw"
    acquire_dataset(root, defaults(source="embedded"))
    return root


def test_embedded_loader_has_5000_images_500_per_class(embedded):
    clips = m.DATASET.list_clips(embedded, {"source": "embedded"})
    assert len(clips) == 5000 and clips["clip"].is_unique
    assert clips["label"].value_counts().to_dict() == {str(d): 500 for d in range(10)}
    assert clips["clip"].iloc[1234] == "embedded-01234"
    images = m.read_images(embedded / m.EMBEDDED_IMAGES, 5000)
    assert images.dtype == np.uint8 and images.max() == 255 and images.min() == 0
    with pytest.raises(DataError, match="holds source 'embedded'"):
        m.DATASET.list_clips(embedded, {"source": "download"})


def test_embedded_split_is_deterministic_and_disjoint(embedded, tmp_path):
    settings = defaults(source="embedded")
    a = split_dataset(embedded, settings, tmp_path / "a.tsv")
    b = split_dataset(embedded, settings, tmp_path / "b.tsv")
    pd.testing.assert_frame_equal(a, b)
    assert (tmp_path / "a.tsv").read_bytes() == (tmp_path / "b.tsv").read_bytes()
    assert a["clip"].is_unique and a.groupby("clip")["split"].nunique().max() == 1
    per_class = a.groupby(["split", "label"]).size().unstack()
    assert (per_class.loc["train"] == 350).all() and (per_class.loc["valid"] == 75).all()
    assert (per_class.loc["test"] == 75).all()
    other = split_dataset(embedded, {**settings, "split_seed": 1}, tmp_path / "c.tsv")
    assert set(other.loc[other["split"] == "test", "clip"]) != set(
        a.loc[a["split"] == "test", "clip"])


# ------------------------------------------------------------------------- the image path

def _small_table(embedded, tmp_path, per_split=(60, 20, 20)):
    table = split_dataset(embedded, defaults(source="embedded"), tmp_path / "all.tsv")
    parts = [table[table["split"] == s].groupby("label").head(n // 10)
             for s, n in zip(("train", "valid", "test"), per_split, strict=True)]
    small = pd.concat(parts).sample(frac=1, random_state=0).reset_index(drop=True)
    small.to_csv(tmp_path / "splits.tsv", sep="\t", index=False)
    return small


def test_load_images_follows_table_order(embedded, tmp_path):
    small = _small_table(embedded, tmp_path)
    images = m.DATASET.load_images(embedded, read_splits(tmp_path / "splits.tsv"), {})
    every = m.read_images(embedded / m.EMBEDDED_IMAGES)
    np.testing.assert_array_equal(images, every[small["index"].to_numpy()])


def test_compute_features_stores_images_in_unit_range(embedded, tmp_path):
    small = _small_table(embedded, tmp_path)
    counts = compute_features(tmp_path / "splits.tsv", embedded, defaults(source="embedded"),
                              tmp_path / "features.h5", tmp_path / "rejected.tsv")
    assert counts == {"train": 60, "valid": 20, "test": 20}
    every = m.read_images(embedded / m.EMBEDDED_IMAGES)
    with h5py.File(tmp_path / "features.h5") as h5:
        assert h5.attrs["modality"] == "image"
        assert (h5.attrs["height"], h5.attrs["width"]) == (28, 28)
        assert h5.attrs["norm_mean"].shape == (28,)
        for split in ("train", "valid", "test"):
            feats = h5[f"{split}/features"][:]
            assert feats.shape[1:] == (28, 28) and feats.min() >= 0 and feats.max() <= 1
            clips = [c.decode() for c in h5[f"{split}/clip"][:]]
            index = small.set_index("clip").loc[clips, "index"].to_numpy()
            np.testing.assert_allclose(feats, every[index] / 255.0, atol=1e-7)
            assert {s.decode() for s in h5[f"{split}/speaker"][:]} == {"unknown"}


def mnist_settings(**training):
    config = validate(yaml.safe_load((ROOT / "config.yaml").read_text()))
    settings = dataset_settings(config, "mnist")
    settings["training"].update(training)
    return config, settings


def test_default_config_runs_mnist_offline_with_fitting_models():
    config, settings = mnist_settings()
    assert "mnist" in config["datasets"] and settings["source"] == "embedded"
    assert REGISTRY["mnist"].modality == "image" and REGISTRY["mnist"].acquisition == "download"
    with pytest.raises(ValueError, match="too few"):  # why mnist overrides conv1d kernels
        build_model("conv1d", config["model_params"]["conv1d"], (28, 28), 10)
    for name in ("dense", "conv1d", "cnn2d"):
        model = build_model(name, settings["model_params"][name], (28, 28), 10).eval()
        with torch.no_grad():
            assert model(torch.rand(3, 28, 28)).shape == (3, 10)


@pytest.mark.parametrize("model", ["dense", "conv1d", "cnn2d"])
def test_image_path_trains_and_evaluates(embedded, tmp_path, model):
    _small_table(embedded, tmp_path)
    compute_features(tmp_path / "splits.tsv", embedded, defaults(source="embedded"),
                     tmp_path / "features.h5", tmp_path / "rejected.tsv")
    _, settings = mnist_settings(epochs=1, batch_size=32)
    run = tmp_path / model
    ckpt = train_model(tmp_path / "features.h5", model, settings, 0, run / "model.pt",
                       run / "history.csv", device="cpu")
    assert ckpt["input_shape"] == [28, 28] and ckpt["feature_params"]["modality"] == "image"
    metrics = evaluate_model(run / "model.pt", tmp_path / "features.h5", run, settings,
                             device="cpu")
    assert metrics["n_test"] == 20 and 0 <= metrics["test_accuracy"] <= 1
    assert metrics["receptive_field"]["ms"] is None

