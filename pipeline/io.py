"""Atomic file output (a reader never sees a half-written artifact), and raw-data roots."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` only on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=suffix or target.suffix + ".tmp", dir=target.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside `target`; it becomes `target` only on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | os.PathLike, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def write_table(path: str | os.PathLike, frame, **kwargs) -> None:
    """Write a pandas frame as TSV (``.tsv``) or CSV (anything else), atomically."""
    path = Path(path)
    sep = "\t" if path.suffix == ".tsv" else ","
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, sep=sep, index=False, **kwargs)


#: Where a dataset's raw data lies: one folder, or for a composite dataset (e.g.
#: spoken_digits) one folder per source, by source name.
Root = Path | Mapping[str, Path]


def as_root(root: str | os.PathLike | Mapping[str, str | os.PathLike]) -> Root:
    """A raw-data root as the stages take it: a Path, or {source: Path}."""
    if isinstance(root, Mapping):
        return {name: Path(folder) for name, folder in root.items()}
    return Path(root)


def clip_file(root: Root, path: str) -> str:
    """The file of a clip table's `path`: relative to `root`, or for a composite root
    relative to the folder of the source that its first component names
    (``fsdd/recordings/0_george_0.wav`` -> ``{root['fsdd']}/recordings/0_george_0.wav``)."""
    if isinstance(root, Mapping):
        source, _, rest = path.partition("/")
        if source not in root:
            raise KeyError(f"clip path {path!r} names source {source!r}, which has no raw "
                           f"folder here (sources: {sorted(root)})")
        return os.path.join(root[source], rest)
    return os.path.join(root, path)
