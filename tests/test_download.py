"""Downloads: real FSDD through the real code over loopback HTTP and file://, and bad input."""

from __future__ import annotations

import io
import re
import shutil
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from pipeline.config import SCHEMA, settings_for
from pipeline.datasets import acquire_dataset, fsdd
from pipeline.download import (
    DownloadError,
    RemoteFile,
    combined_digest,
    content_digest,
    fetch,
    read_sha256sums,
    safe_extract,
)

FSDD_NAME = "free-spoken-digit-dataset-1.0.10.tar.gz"
FSDD = settings_for("fsdd")  # complete settings, defaults from the schema
PUBLISHED = yaml.safe_load(SCHEMA.read_text())["properties"]["fsdd"]["properties"][
    "recordings_sha256"]["default"]


def _repacked(shared: Path, change=(), drop=(), add=()) -> bytes:
    """The shared FSDD archive re-packed with the last byte of `change` members flipped,
    `drop` members left out and `add` (name, bytes) recordings added."""
    out = io.BytesIO()
    with tarfile.open(shared / "fsdd" / FSDD_NAME) as src, \
            tarfile.open(fileobj=out, mode="w:gz", compresslevel=1) as dst:
        for member in src.getmembers():
            base = member.name.rsplit("/", 1)[-1]
            if base in drop:
                continue
            data = src.extractfile(member).read() if member.isfile() else None
            if base in change:
                data = data[:-1] + bytes([data[-1] ^ 1])
            dst.addfile(member, io.BytesIO(data) if data is not None else None)
        folder = next(m.name for m in src.getmembers() if m.name.endswith("/recordings"))
        for name, data in add:
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
    return out.getvalue()


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
    acquire_dataset(dest, FSDD, mirror=serve(shared_datasets))
    wavs = sorted((dest / "recordings").glob("*.wav"))
    assert len(wavs) == 3000
    assert {w.name.split("_")[1] for w in wavs} == {
        "george", "jackson", "lucas", "nicolas", "theo", "yweweler"}


def test_fsdd_from_plain_folder_and_file_url(shared_datasets, tmp_path):
    acquire_dataset(tmp_path / "a" / "fsdd", FSDD, mirror=str(shared_datasets))
    acquire_dataset(tmp_path / "b" / "fsdd", FSDD, mirror=shared_datasets.as_uri())
    a = (tmp_path / "a" / "fsdd" / "recordings")
    b = (tmp_path / "b" / "fsdd" / "recordings")
    assert content_digest((p.name, p) for p in a.glob("*.wav")) == content_digest(
        (p.name, p) for p in b.glob("*.wav"))


def test_manifest_is_the_published_v1_0_10():
    """The committed per-file manifest combines to the schema's default content digest."""
    listed = read_sha256sums(fsdd.PUBLISHED_MANIFEST)
    assert len(listed) == 3000 and all(re.fullmatch(r"\d_[a-z]+_\d+\.wav", n) for n in listed)
    assert combined_digest(listed) == fsdd.published_digest() == PUBLISHED == \
        "8dac6ce326e419e9fcfadedf2e4a67d6c08a40968c34bb8fa2b4e27d74753d5a"
    assert FSDD["recordings_sha256"] == PUBLISHED


def test_one_changed_recording_is_named_once_with_the_key_to_accept_it(shared_datasets,
                                                                       tmp_path):
    """Re-pack the archive with one byte of one WAV changed: the file is named, and how to
    accept such a copy; the same setting then accepts it."""
    mirror = _mirror_with(tmp_path, _repacked(shared_datasets, change={"7_theo_3.wav"}))
    dest = tmp_path / "out" / "fsdd"
    with pytest.raises(DownloadError) as err:
        acquire_dataset(dest, FSDD, mirror=str(mirror))
    message = str(err.value)
    actual = re.search(r"got ([0-9a-f]{64})", message)[1]
    assert "1 changed: 7_theo_3.wav." in message and "missing" not in message
    assert f"expected {PUBLISHED} (fsdd.recordings_sha256)" in message
    assert f"--config 'fsdd={{recordings_sha256: {actual}}}'" in message
    assert message.count(actual) == 2 and message.count(PUBLISHED) == 1
    _assert_nothing_left(dest)
    acquire_dataset(dest, {**FSDD, "recordings_sha256": actual}, mirror=str(mirror))
    assert len(list((dest / "recordings").glob("*.wav"))) == 3000


def test_removed_and_added_recordings_are_named(shared_datasets, tmp_path):
    archive = _repacked(shared_datasets, drop={"3_lucas_12.wav"},
                        add=[("3_lucas_50.wav", b"RIFF")])
    dest = tmp_path / "out" / "fsdd"
    with pytest.raises(DownloadError, match=r"\(3000 files; compared with fsdd-v1\.0\.10\."
                                            r"sha256\): 1 missing: 3_lucas_12\.wav; 1 extra: "
                                            r"3_lucas_50\.wav\. Content digest"):
        acquire_dataset(dest, FSDD, mirror=str(_mirror_with(tmp_path, archive)))
    _assert_nothing_left(dest)


def test_published_data_with_another_configured_digest(shared_datasets, tmp_path):
    other = "ab" * 32
    with pytest.raises(DownloadError, match=rf"are FSDD v1\.0\.10 as published \(content "
                                            rf"digest {PUBLISHED}\), but fsdd.recordings_sha256 "
                                            rf"is set to {other}"):
        acquire_dataset(tmp_path / "out" / "fsdd", {**FSDD, "recordings_sha256": other},
                        mirror=str(shared_datasets))


def test_long_lists_are_shortened():
    listed = fsdd.published_recordings()
    actual = {n: ("0" * 64 if n.startswith("9_") else h) for n, h in listed.items()}
    with pytest.raises(DownloadError, match=r"300 changed: 9_george_0\.wav, .* and 290 more\."):
        fsdd.check_recordings(actual, PUBLISHED, "file:///x")


def test_a_failed_verification_is_reported_once(shared_datasets, tmp_path):
    """Through Snakemake: the message once in the job log, once on the console (Snakemake
    prints the failed job's log), no traceback."""
    mirror = _mirror_with(tmp_path, _repacked(shared_datasets, change={"0_jackson_0.wav"}))
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d",
         str(tmp_path / "wd"), "--configfile", str(ROOT / "config.yaml"), "--cores", "1",
         "resources/fsdd", "--config", "datasets=[fsdd]", f"mirror={mirror}"],
        capture_output=True, text=True)
    assert proc.returncode != 0
    console = proc.stdout + proc.stderr
    log = (tmp_path / "wd" / "results/logs/download_dataset/fsdd.log").read_text()
    for text in (console, log):
        assert text.count("1 changed: 0_jackson_0.wav") == 1, text[-4000:]
        assert "Traceback" not in text
    assert not (tmp_path / "wd" / "resources" / "fsdd").exists()


def test_truncated_archive_fails_cleanly(shared_datasets, tmp_path, serve):
    data = (shared_datasets / "fsdd" / FSDD_NAME).read_bytes()
    mirror = _mirror_with(tmp_path, data[: len(data) // 2])
    dest = tmp_path / "out" / "fsdd"
    with pytest.raises(DownloadError, match=r"fsdd: cannot extract .*corrupt or truncated"):
        acquire_dataset(dest, FSDD, mirror=serve(mirror))
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
        acquire_dataset(dest, FSDD, mirror=serve(tmp_path / "empty"))
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
        acquire_dataset(tmp_path / "fsd", {**FSDD, "dataset": "fsd"})


def test_archive_in_mirror_layout_is_the_upstream_name(shared_datasets, tmp_path):
    """The mirror holds {mirror}/{dataset}/{file name}: a copy elsewhere is not found."""
    mirror = tmp_path / "m"
    (mirror / "other").mkdir(parents=True)
    shutil.copy(shared_datasets / "fsdd" / FSDD_NAME, mirror / "other" / FSDD_NAME)
    with pytest.raises(DownloadError, match=r"fsdd/free-spoken-digit-dataset-1\.0\.10\.tar\.gz"):
        acquire_dataset(tmp_path / "out" / "fsdd", FSDD, mirror=str(mirror))
