"""Downloads: real FSDD through the real code over loopback HTTP and file://, and bad input."""

from __future__ import annotations

import io
import shutil
import socket
import tarfile
from pathlib import Path

import pytest

from pipeline.datasets import acquire_dataset
from pipeline.download import DownloadError, RemoteFile, content_digest, fetch, safe_extract

FSDD_NAME = "free-spoken-digit-dataset-1.0.10.tar.gz"


def _mirror_with(tmp_path: Path, archive_bytes: bytes) -> Path:
    mirror = tmp_path / "mirror"
    (mirror / "fsdd").mkdir(parents=True)
    (mirror / "fsdd" / FSDD_NAME).write_bytes(archive_bytes)
    return mirror


def _assert_nothing_left(dest: Path) -> None:
    assert not dest.exists(), "a failed download must leave no output folder"
    leftovers = [p.name for p in dest.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == [], f"temporary files left behind: {leftovers}"


def test_fsdd_over_http_mirror(shared_datasets, serve, tmp_path):
    dest = tmp_path / "out" / "fsdd"
    acquire_dataset("fsdd", dest, {}, mirror=serve(shared_datasets))
    wavs = sorted((dest / "recordings").glob("*.wav"))
    assert len(wavs) == 3000
    assert {w.name.split("_")[1] for w in wavs} == {
        "george", "jackson", "lucas", "nicolas", "theo", "yweweler"}


def test_fsdd_from_plain_folder_and_file_url(shared_datasets, tmp_path):
    acquire_dataset("fsdd", tmp_path / "a" / "fsdd", {}, mirror=str(shared_datasets))
    acquire_dataset("fsdd", tmp_path / "b" / "fsdd", {}, mirror=shared_datasets.as_uri())
    a = (tmp_path / "a" / "fsdd" / "recordings")
    b = (tmp_path / "b" / "fsdd" / "recordings")
    assert content_digest((p.name, p) for p in a.glob("*.wav")) == content_digest(
        (p.name, p) for p in b.glob("*.wav"))


def test_one_changed_recording_fails_with_both_digests(shared_datasets, tmp_path):
    """Re-pack the archive with one byte of one WAV changed: the content digest catches it."""
    out = io.BytesIO()
    with tarfile.open(shared_datasets / "fsdd" / FSDD_NAME) as src, \
            tarfile.open(fileobj=out, mode="w:gz") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read() if member.isfile() else None
            if member.name.endswith("7_theo_3.wav"):
                data = data[:-1] + bytes([data[-1] ^ 1])
            dst.addfile(member, io.BytesIO(data) if data is not None else None)
    mirror = _mirror_with(tmp_path, out.getvalue())
    dest = tmp_path / "out" / "fsdd"
    with pytest.raises(DownloadError) as err:
        acquire_dataset("fsdd", dest, {}, mirror=str(mirror))
    message = str(err.value)
    assert "fsdd" in message and "expected content digest 8dac6ce3" in message and "got " in message
    _assert_nothing_left(dest)


def test_truncated_archive_fails_cleanly(shared_datasets, tmp_path, serve):
    data = (shared_datasets / "fsdd" / FSDD_NAME).read_bytes()
    mirror = _mirror_with(tmp_path, data[: len(data) // 2])
    dest = tmp_path / "out" / "fsdd"
    with pytest.raises(DownloadError, match=r"fsdd: cannot extract .*corrupt or truncated"):
        acquire_dataset("fsdd", dest, {}, mirror=serve(mirror))
    _assert_nothing_left(dest)


def test_wrong_checksum_names_url_and_digests(shared_datasets, tmp_path, serve):
    base = serve(shared_datasets)
    remote = RemoteFile(FSDD_NAME, "unused", known_hash="sha256:" + "0" * 64)
    with pytest.raises(DownloadError) as err:
        fetch("fsdd", remote, tmp_path / "dl", mirror=base)
    message = str(err.value)
    assert f"{base}/fsdd/{FSDD_NAME}" in message
    assert "0" * 64 in message
    assert "f61d9f580130305a411ed222cc19b111ad0efb2e50f85182f224b626db2fb37d" in message
    assert list((tmp_path / "dl").iterdir()) == []


def test_wrong_checksum_from_file_mirror(shared_datasets, tmp_path):
    remote = RemoteFile(FSDD_NAME, "unused", known_hash="md5:" + "1" * 32)
    with pytest.raises(DownloadError, match="checksum mismatch.*expected md5 1111"):
        fetch("fsdd", remote, tmp_path / "dl", mirror=str(shared_datasets))
    assert list((tmp_path / "dl").iterdir()) == []


def test_http_404(tmp_path, serve):
    (tmp_path / "empty").mkdir()
    dest = tmp_path / "out" / "fsdd"
    with pytest.raises(DownloadError, match=r"fsdd: could not download http://127\.0\.0\.1.*404"):
        acquire_dataset("fsdd", dest, {}, mirror=serve(tmp_path / "empty"))
    _assert_nothing_left(dest)


def test_unreachable_mirror(tmp_path):
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dest = tmp_path / "out" / "fsdd"
    with pytest.raises(DownloadError, match=rf"could not download http://127\.0\.0\.1:{port}/"):
        fetch("fsdd", RemoteFile(FSDD_NAME, "x"), dest, mirror=f"http://127.0.0.1:{port}",
              retries=0)
    assert not any(dest.iterdir())


def test_missing_file_in_folder_mirror(tmp_path):
    with pytest.raises(DownloadError, match="does not exist"):
        fetch("fsdd", RemoteFile(FSDD_NAME, "x"), tmp_path / "dl", mirror=str(tmp_path))


@pytest.mark.parametrize("kind", ["dotdot", "symlink"])
def test_path_traversal_is_refused(tmp_path, kind):
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        if kind == "symlink":
            link = tarfile.TarInfo("link")
            link.type, link.linkname = tarfile.SYMTYPE, str(tmp_path)
            tf.addfile(link)
        else:
            info = tarfile.TarInfo("../evil.txt")
            info.size = 4
            tf.addfile(info, io.BytesIO(b"evil"))
    dest = tmp_path / "x"
    with pytest.raises(DownloadError, match="refusing unsafe archive evil.tar.gz"):
        safe_extract(archive, dest, "demo")
    assert not (tmp_path / "evil.txt").exists()


def test_absolute_member_lands_inside_target(tmp_path):
    outside = tmp_path / "abs-evil.txt"
    archive = tmp_path / "abs.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        info = tarfile.TarInfo(str(outside))
        info.size = 4
        tf.addfile(info, io.BytesIO(b"evil"))
    safe_extract(archive, tmp_path / "x", "demo")
    assert not outside.exists()
    assert (tmp_path / "x" / str(outside).lstrip("/")).read_bytes() == b"evil"


def test_unknown_dataset_name(tmp_path):
    with pytest.raises(KeyError, match="unknown dataset 'fsd'"):
        acquire_dataset("fsd", tmp_path / "fsd", {})


def test_archive_in_mirror_layout_is_the_upstream_name(shared_datasets, tmp_path):
    """The mirror holds {mirror}/{dataset}/{file name}: a copy elsewhere is not found."""
    mirror = tmp_path / "m"
    (mirror / "other").mkdir(parents=True)
    shutil.copy(shared_datasets / "fsdd" / FSDD_NAME, mirror / "other" / FSDD_NAME)
    with pytest.raises(DownloadError, match=r"fsdd/free-spoken-digit-dataset-1\.0\.10\.tar\.gz"):
        acquire_dataset("fsdd", tmp_path / "out" / "fsdd", {}, mirror=str(mirror))
