"""predict: segments of long recordings, clear errors for bad audio and bad model files."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import FSDD_ARCHIVE, ROOT
from pipeline.checkpoint import CHECKPOINT_FORMAT, save_checkpoint
from pipeline.modalities.audio import FeatureParams
from pipeline.models import build_model
from pipeline.predict import Predictor
from pipeline.segments import detect_speech

SR = 8000
LABELS = [str(i) for i in range(10)]


def make_checkpoint(path: Path, **changes) -> Path:
    """A valid (untrained) dense model in the checkpoint format: the tests need a model that
    loads and answers, not a good one."""
    params = FeatureParams()
    torch.manual_seed(0)
    shape = (params.n_mels, params.n_frames)
    model = build_model("dense", {"hidden": [16]}, shape, len(LABELS))
    ckpt = {
        "format": CHECKPOINT_FORMAT, "model": "dense", "model_config": {"hidden": [16]},
        "state_dict": model.state_dict(), "optimizer": {}, "label_names": LABELS,
        "input_shape": list(shape),
        "feature_params": {"modality": "audio", "dataset": "test", **params.as_attrs()},
        "normalization": {"mean": torch.full((params.n_mels,), -3.0),
                          "std": torch.ones(params.n_mels)},
        "epoch": 1, "epochs_trained": 1, "valid_accuracy": 0.1, "seed": 0, "dataset": "test",
    }
    ckpt.update(changes)
    ckpt = {k: v for k, v in ckpt.items() if v is not None}
    save_checkpoint(path, ckpt)
    return path


@pytest.fixture(scope="module")
def model_pt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("model") / "model.pt")


def noise(seconds: float, level: float = 1e-3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(seconds * SR)) * level).astype(np.float32)


def tone(seconds: float, freq: float = 440.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def place(wave: np.ndarray, clip: np.ndarray, at: float) -> None:
    i = int(round(at * SR))
    wave[i:i + len(clip)] += clip


def write(path: Path, wave: np.ndarray, rate: int = SR) -> Path:
    sf.write(path, wave, rate, subtype="PCM_16")
    return path


def fsdd(*names: str) -> dict[str, np.ndarray]:
    """Recordings read straight out of the real FSDD archive (8 kHz mono)."""
    if not FSDD_ARCHIVE.exists():
        pytest.skip(f"FSDD archive not found at {FSDD_ARCHIVE}")
    out = {}
    with tarfile.open(FSDD_ARCHIVE) as tar:
        for name in names:
            member = f"free-spoken-digit-dataset-1.0.10/recordings/{name}.wav"
            wave, rate = sf.read(tar.extractfile(member), dtype="float32")
            assert rate == SR
            out[name] = wave
    return out


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.predict", *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def rows(stdout: str) -> list[list[str]]:
    return [line.split("\t") for line in stdout.splitlines()]


def times(row: list[str]) -> tuple[float, float]:
    start, end = row[1].split("-")
    return float(start), float(end)


def spans(segments) -> list[float]:
    return [t for s in segments for t in (s.start, s.end)]


# -- the detector -----------------------------------------------------------------------------

def test_detector_finds_bursts_in_noise_and_nothing_in_noise_alone():
    wave = noise(60)
    place(wave, tone(0.5), 10.0)
    place(wave, tone(0.5, 1000), 40.25)
    found = detect_speech(wave, SR, 80, 200).segments
    assert spans(found) == pytest.approx([10.0, 10.5, 40.25, 40.75], abs=0.03)
    assert detect_speech(noise(60), SR, 80, 200).segments == []


def test_detector_merges_short_gaps_drops_clicks_and_survives_digital_silence():
    wave = np.zeros(20 * SR, dtype=np.float32)
    wave[::997] = 1e-4  # faint ticks on digital silence: the floor is -inf-ish
    place(wave, tone(0.3), 5.0)
    place(wave, tone(0.3), 5.4)  # 0.1 s later: the same word
    place(wave, tone(0.02), 12.0)  # a 20-ms click
    found = detect_speech(wave, SR, 80, 200).segments
    assert spans(found) == pytest.approx([5.0, 5.7], abs=0.03)


def test_detector_is_fast_on_ten_minutes():
    wave = noise(600)
    place(wave, tone(0.5), 120.0)
    began = time.perf_counter()
    found = detect_speech(wave, SR, 80, 200).segments
    assert time.perf_counter() - began < 5  # numpy passes over 60,000 frames, not samples
    assert spans(found) == pytest.approx([120.0, 120.5], abs=0.03)


# -- long recordings through the CLI -----------------------------------------------------------

def test_cli_finds_and_classifies_spliced_fsdd_digits(tmp_path, model_pt):
    """Two real FSDD digits in 60 s of low noise: one line each, at the right times."""
    clips = fsdd("7_jackson_0", "3_jackson_0")
    wave = noise(60)
    placed = {"7_jackson_0": 12.0, "3_jackson_0": 41.5}
    for name, at in placed.items():
        place(wave, clips[name], at)
    path = write(tmp_path / "long.wav", wave)
    done = cli("--model", model_pt, "--top", "2", path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    out = rows(done.stdout)
    assert len(out) == 2
    for row, (name, at) in zip(out, placed.items(), strict=True):
        assert row[0] == str(path)
        start, end = times(row)
        assert start == pytest.approx(at, abs=0.1)
        assert end == pytest.approx(at + len(clips[name]) / SR, abs=0.1)
        assert row[2] in LABELS and row[4] in LABELS  # classified, top 2
        assert 0 < float(row[5]) <= float(row[3]) <= 1


def test_cli_ten_minutes_with_a_seven_at_two_minutes(tmp_path, model_pt):
    """Before, the middle second (pure noise) was classified, with no times and no warning."""
    seven = fsdd("7_jackson_0")["7_jackson_0"]
    wave = noise(600, seed=3)
    place(wave, seven, 120.0)
    path = write(tmp_path / "ten_minutes.wav", wave)
    done = cli("--model", model_pt, path)
    assert done.returncode == 0, done.stderr
    (row,) = rows(done.stdout)
    start, end = times(row)
    assert start == pytest.approx(120.0, abs=0.1)
    assert end == pytest.approx(120.0 + len(seven) / SR, abs=0.1)
    assert row[2] in LABELS


def test_cli_long_noise_says_no_speech_found(tmp_path, model_pt):
    path = write(tmp_path / "noise.wav", noise(30))
    done = cli("--model", model_pt, path)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "no speech found" in done.stderr


def test_segment_longer_than_the_window_is_classified_in_windows(tmp_path, model_pt):
    wave = noise(8)
    place(wave, tone(2.5), 3.0)
    predictor = Predictor(model_pt)
    result = predictor.predict_file(write(tmp_path / "long_tone.wav", wave))
    assert not result.error
    assert len(result.notes) == 1 and "longer than the model's" in result.notes[0]
    spans = [(p.start, p.end) for p in result.predictions]
    assert len(spans) >= 5  # 2.7 s with context, 1-s windows overlapping by at least half
    assert all(e - s == pytest.approx(1.0) for s, e in spans)
    assert spans[0][0] <= 3.0 and spans[-1][1] >= 5.5  # the whole segment is covered
    assert all(b[0] - a[0] <= 0.5 + 1e-9 for a, b in zip(spans, spans[1:], strict=False))


# -- short clips keep today's one-line answer --------------------------------------------------

def test_cli_short_clips_keep_one_line_per_file(tmp_path, model_pt):
    clip = fsdd("3_jackson_0")["3_jackson_0"]  # 0.49 s
    short = write(tmp_path / "fsdd.wav", clip)
    one_second = np.zeros(SR, dtype=np.float32)
    one_second[2000:2000 + len(clip)] = clip
    second = write(tmp_path / "one_second_44k.wav",
                   np.interp(np.arange(44100) / 44100, np.arange(SR) / SR, one_second), 44100)
    quiet = write(tmp_path / "noise_1s.wav", noise(1.0))
    done = cli("--model", model_pt, "--top", "3", short, second, quiet)
    assert done.returncode == 0, done.stderr
    out = rows(done.stdout)
    assert [r[0] for r in out] == [str(short), str(second), str(quiet)]
    # a short clip is still answered whole, but a clip with nothing above its floor is noted
    (note,) = done.stderr.splitlines()
    assert note.startswith(f"{quiet}\tnote: no part stands out as speech")
    for row in out:
        assert len(row) == 7  # path, then 3 x (label, probability): no times
        assert row[1] in LABELS and 0 < float(row[2]) <= 1


# -- unreadable audio --------------------------------------------------------------------------

def test_cli_missing_and_empty_audio_say_so(tmp_path, model_pt):
    good = write(tmp_path / "good.wav", fsdd("7_jackson_0")["7_jackson_0"])
    empty = tmp_path / "empty.wav"
    empty.touch()
    missing = tmp_path / "missing.wav"
    done = cli("--model", model_pt, missing, empty, good)
    assert done.returncode == 1
    assert [r[0] for r in rows(done.stdout)] == [str(good)]  # the others are still classified
    err = done.stderr.splitlines()
    assert err == [f"{missing}\terror: no such file",
                   f"{empty}\terror: the file is empty (0 bytes)"]
    assert "System error" not in done.stderr


# -- bad model files ---------------------------------------------------------------------------

class NotAModel:  # torch.save pickles a reference to it; weights_only loading refuses it
    def __init__(self) -> None:
        self.weights = [1, 2, 3]


def _bad_model(kind: str, folder: Path, real: Path) -> Path:
    path = folder / f"{kind}.pt"
    if kind == "missing":
        return path
    if kind == "folder":
        path.mkdir()
    elif kind == "empty":
        path.touch()
    elif kind == "text":
        path.write_text("this is not a model\n")
    elif kind == "tensor":
        torch.save(torch.zeros(3), path)
    elif kind == "object":
        torch.save(NotAModel(), path)
    elif kind == "state_dict":
        torch.save(build_model("dense", {"hidden": [4]}, (40, 97), 10).state_dict(), path)
    elif kind == "other_format":
        torch.save({"format": "someone-else/3", "weights": torch.zeros(2)}, path)
    elif kind == "truncated":
        data = real.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "lacks_state_dict":
        make_checkpoint(path, state_dict=None)
    elif kind == "wrong_weights":
        make_checkpoint(path, model_config={"hidden": [32]})
    elif kind == "image_model":
        make_checkpoint(path, feature_params={"modality": "image"})
    return path


BAD_MODELS = ["missing", "folder", "empty", "text", "tensor", "object", "state_dict",
              "other_format", "truncated", "lacks_state_dict", "wrong_weights", "image_model"]


@pytest.mark.parametrize("kind", BAD_MODELS)
def test_cli_bad_model_file_is_one_clear_line(kind, tmp_path, model_pt):
    audio = write(tmp_path / "a.wav", tone(0.5))
    bad = _bad_model(kind, tmp_path, model_pt)
    done = cli("--model", bad, audio)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: cannot load model") and str(bad) in lines[0]
    assert "Traceback" not in done.stderr
    assert "weights_only" not in done.stderr and "Warning" not in done.stderr
