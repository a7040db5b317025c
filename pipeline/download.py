"""Fetch dataset archives from their URL or a mirror, verify them, and extract them safely.

HTTP(S) goes through pooch (hash check, retries with backoff, temporary file); ``file://``
URLs and plain folders are copied and checked with the same hash code.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tarfile
import urllib.parse
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pooch

log = logging.getLogger(__name__)


class DownloadError(RuntimeError):
    """A download that cannot be trusted: unreachable, missing, corrupt or unsafe."""


@dataclass(frozen=True)
class RemoteFile:
    """One file a dataset needs, as it is published and as a mirror stores it."""

    name: str  # the file name; a mirror holds it as {mirror}/{dataset}/{name}
    url: str  # the upstream URL
    known_hash: str | None = None  # "sha256:<hex>" or "md5:<hex>"; None: content verified later


def resolve_url(dataset: str, remote: RemoteFile, mirror: str | None) -> str:
    """Where to fetch `remote` from: the mirror when one is set, else upstream."""
    if not mirror:
        return remote.url
    parsed = urllib.parse.urlparse(mirror)
    if parsed.scheme in ("http", "https", "file"):
        return f"{mirror.rstrip('/')}/{dataset}/{remote.name}"
    return Path(mirror).expanduser().resolve().joinpath(dataset, remote.name).as_uri()


class _LogProgress:
    """A pooch progress bar that writes a line per 10 % to the log instead of a terminal."""

    def __init__(self, label: str) -> None:
        self.label, self.total, self.n, self._last = label, 0, 0, -1

    def update(self, n: int) -> None:
        self.n += n
        if self.total:
            step = int(10 * self.n / self.total)
            if step != self._last:
                self._last = step
                log.info("%s: %d%% of %.1f MB", self.label, 10 * step, self.total / 1e6)

    def reset(self) -> None:
        self.n, self._last = 0, -1

    def close(self) -> None:
        log.info("%s: %.1f MB received", self.label, self.n / 1e6)


def _check_hash(path: Path, known_hash: str | None, dataset: str, url: str) -> None:
    if not known_hash:
        return
    algorithm, _, expected = known_hash.partition(":")
    actual = pooch.file_hash(str(path), alg=algorithm)
    if actual.lower() != expected.lower():
        raise DownloadError(
            f"{dataset}: checksum mismatch for {url}: expected {algorithm} {expected}, "
            f"got {actual}. The file is corrupt or truncated, or the mirror holds another "
            "version; delete it from the mirror or fix the expected checksum in config."
        )


def fetch(
    dataset: str, remote: RemoteFile, dest_dir: Path, mirror: str | None = None, retries: int = 3
) -> Path:
    """Download `remote` into `dest_dir`, verified; raise DownloadError, leaving nothing, if not."""
    url = resolve_url(dataset, remote, mirror)
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / remote.name
    log.info("%s: fetching %s", dataset, url)
    parsed = urllib.parse.urlparse(url)
    try:
        if parsed.scheme == "file":
            source = Path(urllib.parse.unquote(parsed.path))
            if not source.is_file():
                raise DownloadError(f"{dataset}: {url} does not exist (mirror layout is "
                                    f"{{mirror}}/{dataset}/{remote.name})")
            partial = target.with_name(target.name + ".part")
            shutil.copyfile(source, partial)
            try:
                _check_hash(partial, remote.known_hash, dataset, url)
            except DownloadError:
                partial.unlink(missing_ok=True)
                raise
            partial.replace(target)
        elif parsed.scheme in ("http", "https"):
            fetcher = pooch.create(
                path=dest_dir,
                base_url="",
                registry={remote.name: remote.known_hash},
                urls={remote.name: url},
                retry_if_failed=retries,
            )
            downloader = pooch.HTTPDownloader(progressbar=_LogProgress(dataset), timeout=60)
            fetcher.fetch(remote.name, downloader=downloader)
        else:
            raise DownloadError(f"{dataset}: unsupported URL scheme in {url!r}")
    except DownloadError:
        target.unlink(missing_ok=True)
        raise
    except ValueError as err:  # pooch's hash mismatch
        target.unlink(missing_ok=True)
        raise DownloadError(f"{dataset}: checksum mismatch for {url}: {err}") from err
    except Exception as err:  # HTTP errors, refused connections, timeouts
        target.unlink(missing_ok=True)
        raise DownloadError(f"{dataset}: could not download {url}: {err}") from err
    if remote.known_hash:
        log.info("%s: %s verified (%s)", dataset, remote.name, remote.known_hash)
    else:
        log.info("%s: %s received (no file checksum: its content is verified next)", dataset,
                 remote.name)
    return target


def safe_extract(archive: Path, dest: Path, dataset: str = "") -> None:
    """Extract a tar or zip archive, refusing members that would land outside `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                root = dest.resolve()
                for member in zf.namelist():
                    if not (root / member).resolve().is_relative_to(root):
                        raise DownloadError(f"{dataset}: unsafe path in {archive.name}: {member}")
                zf.extractall(dest)
        else:
            with tarfile.open(archive) as tf:
                tf.extractall(dest, filter="data")
    except DownloadError:
        raise
    except tarfile.FilterError as err:
        raise DownloadError(f"{dataset}: refusing unsafe archive {archive.name}: {err}") from err
    except (tarfile.TarError, EOFError, OSError, zipfile.BadZipFile) as err:
        raise DownloadError(
            f"{dataset}: cannot extract {archive.name} (corrupt or truncated?): {err}"
        ) from err


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_digests(files: Iterable[tuple[str, Path]]) -> dict[str, str]:
    """{name: sha256 of the file's bytes} for (name, path) pairs; names must be unique."""
    digests: dict[str, str] = {}
    for name, path in files:
        if name in digests:
            raise DownloadError(f"two files named {name!r}: content digests need unique names")
        digests[name] = sha256_file(path)
    return digests


def combined_digest(digests: dict[str, str]) -> str:
    """sha256 over sorted ``name<TAB>sha256<LF>`` lines (what `content_digest` computes)."""
    digest = hashlib.sha256()
    for name in sorted(digests):
        digest.update(f"{name}\t{digests[name].lower()}\n".encode())
    return digest.hexdigest()


def content_digest(files: Iterable[tuple[str, Path]]) -> str:
    """sha256 over sorted ``name<TAB>sha256(file)`` lines: independent of how files were packed."""
    return combined_digest(file_digests(files))


def read_sha256sums(path: Path) -> dict[str, str]:
    """{name: sha256} from a file in `sha256sum` format (``<hex>  <name>`` per line)."""
    digests: dict[str, str] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        hexdigest, sep, name = line.partition(" ")
        if not sep or len(hexdigest) != 64 or name[:1] not in (" ", "*"):
            raise ValueError(f"{path}:{number}: not a sha256sum line: {line!r}")
        digests[name[1:]] = hexdigest.lower()
    return digests


@dataclass(frozen=True)
class Differences:
    """How a set of files differs from a reference listing of {name: sha256}."""

    changed: list[str]
    missing: list[str]
    extra: list[str]

    def __bool__(self) -> bool:
        return bool(self.changed or self.missing or self.extra)

    def describe(self, shown: int = 10) -> str:
        """``1 changed: a.wav; 2 missing: b.wav, c.wav`` (at most `shown` names per kind)."""
        parts = []
        for kind, names in (("changed", self.changed), ("missing", self.missing),
                            ("extra", self.extra)):
            if names:
                listed = ", ".join(names[:shown])
                more = f" and {len(names) - shown} more" if len(names) > shown else ""
                parts.append(f"{len(names)} {kind}: {listed}{more}")
        return "; ".join(parts) or "no differences"


def compare_digests(actual: dict[str, str], reference: dict[str, str]) -> Differences:
    """Which names changed content, are missing from `actual`, or are extra in it."""
    return Differences(
        changed=sorted(n for n in actual.keys() & reference.keys() if actual[n] != reference[n]),
        missing=sorted(reference.keys() - actual.keys()),
        extra=sorted(actual.keys() - reference.keys()),
    )
