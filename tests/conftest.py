"""Shared fixtures: the read-only real data in ../shared, a loopback HTTP server, tiny data."""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "datasets"
FSDD_ARCHIVE = SHARED / "fsdd" / "free-spoken-digit-dataset-1.0.10.tar.gz"

#: A small, fast tts_digits set-up: 4 accents x 3 variants = 12 voices, 2 repetitions.
TINY_TTS = {
    "accents": ["en-us", "en", "en-gb-scotland", "en-029"],
    "variants": ["m1", "f1", "klatt"],
    "repetitions": 2,
    "valid_fraction": 0.2,
    "test_fraction": 0.2,
}


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    if not FSDD_ARCHIVE.exists():
        pytest.skip(f"real data not found at {SHARED} (the read-only ../shared folder)")
    return SHARED


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture
def serve():
    """serve(folder) -> base URL of a threaded HTTP server for `folder` on 127.0.0.1."""
    servers = []

    def start(folder: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def write_tone(path: Path, freq: float, rate: int = 8000, seconds: float = 0.5,
               channels: int = 1) -> Path:
    t = np.arange(int(rate * seconds)) / rate
    wave = 0.3 * np.sin(2 * np.pi * freq * t)
    if channels > 1:
        wave = np.stack([wave] * channels, axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave, rate, subtype="PCM_16")
    return path


@pytest.fixture(scope="session")
def tiny_tts(tmp_path_factory) -> Path:
    """A synthesized tiny tts_digits raw folder (espeak-ng), made once per session."""
    from pipeline.config import settings_for
    from pipeline.datasets import acquire_dataset

    dest = tmp_path_factory.mktemp("tts") / "tts_digits"
    acquire_dataset(dest, settings_for("tts_digits", TINY_TTS), workers=2)
    return dest


@pytest.fixture(scope="session")
def tiny_features(tiny_tts, tmp_path_factory) -> tuple[Path, dict]:
    """splits.tsv and features.h5 of the tiny tts set, with settings as the workflow gives."""
    from pipeline.config import settings_for
    from pipeline.datasets import split_dataset
    from pipeline.features import compute_features

    settings = settings_for("tts_digits", TINY_TTS, training={"epochs": 3, "batch_size": 32})
    out = tmp_path_factory.mktemp("features")
    split_dataset(tiny_tts, settings, out / "splits.tsv")
    compute_features(out / "splits.tsv", tiny_tts, settings, out / "features.h5",
                     out / "rejected.tsv")
    return out / "features.h5", settings
