"""Training augmentations for unseen voices: speed, VTLP, gain, mixup, reverberation,
per-utterance normalisation. Each keeps shapes, is seeded from the Augment generator,
touches training batches only, and per-utterance normalisation travels in the checkpoint to
evaluate and predict."""

from __future__ import annotations

import contextlib
import copy
import signal

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import pipeline.training as training
from pipeline.checkpoint import load_checkpoint, normalise, normalise_utterance, normalise_with
from pipeline.evaluation import evaluate_model
from pipeline.features import load_split
from pipeline.modalities.audio import FeatureParams, LogMel
from pipeline.predict import Predictor
from pipeline.training import Augment, TrainSettings, train_model

ROWS, STEPS, CLASSES = 40, 97, 10

#: each augmentation alone, at a strength that changes every example
OPTIONS = {
    "speed": {"speed": [0.8, 1.2]},
    "vtlp": {"vtlp": [0.8, 1.2]},
    "gain": {"gain_db": 6.0},
    "mixup": {"mixup": 0.4},
    "reverb": {"reverb": {"probability": 1.0}},
}
FRAME_S = 0.01  # a 10 ms hop, as the audio features'


def _batch(seed: int = 0, n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    raw = torch.randn(n, ROWS, STEPS, generator=g) - 3.0
    return raw, torch.arange(n) % CLASSES


def _augment(seed: int = 0, **training_values) -> Augment:
    ts = TrainSettings.from_dict(training_values)
    return Augment(ts, torch.Generator().manual_seed(seed), torch.full((ROWS,), -3.0),
                   torch.ones(ROWS), n_classes=CLASSES, frame_seconds=FRAME_S,
                   log_offset=1e-6)


def _run(aug: Augment, raw: torch.Tensor, labels: torch.Tensor):
    return aug.batch(raw.clone(), labels)


# ------------------------------------------------------------------ shapes, seeds, defaults

@pytest.mark.parametrize("name", list(OPTIONS))
def test_augmentation_keeps_shapes_and_is_seeded(name):
    raw, labels = _batch()
    plain, _ = _run(_augment(0), raw, labels)
    a, ta = _run(_augment(0, **OPTIONS[name]), raw, labels)
    b, tb = _run(_augment(0, **OPTIONS[name]), raw, labels)
    c, _ = _run(_augment(1, **OPTIONS[name]), raw, labels)
    assert a.shape == raw.shape and a.dtype == raw.dtype
    assert torch.equal(a, b) and torch.equal(ta, tb)  # same generator state, same output
    assert not torch.allclose(a, c)  # another seed, other draws
    assert not torch.allclose(a, plain)  # it does something
    assert torch.isfinite(a).all()


def test_generator_state_decides_not_the_history():
    """What a batch gets depends on the generator state alone: a resumed run (state restored
    from resume.pt) perturbs its next batch exactly as the uninterrupted run does."""
    options = {k: v for o in OPTIONS.values() for k, v in o.items()}
    raw, labels = _batch()
    first = _augment(3, **options)
    _run(first, raw, labels)
    state = first.generator.get_state()
    expected = _run(first, raw, labels)
    resumed = _augment(99, **options)
    resumed.generator.set_state(state)
    got = _run(resumed, raw, labels)
    assert torch.equal(expected[0], got[0]) and torch.equal(expected[1], got[1])


def test_defaults_change_nothing_and_draw_nothing():
    raw, labels = _batch()
    aug = _augment(0)
    before = aug.generator.get_state()
    x, target = _run(aug, raw, labels)
    assert torch.equal(x, normalise(raw, aug.mean, aug.std)) and torch.equal(target, labels)
    assert torch.equal(aug.generator.get_state(), before)


def test_settings_refuse_a_bad_range_or_scope():
    with pytest.raises(ValueError, match="training.speed"):
        TrainSettings.from_dict({"speed": [1.1, 0.9]})
    with pytest.raises(ValueError, match="training.normalisation"):
        TrainSettings.from_dict({"normalisation": "global"})
    with pytest.raises(ValueError, match="training: unknown parameters"):
        TrainSettings.from_dict({"speed_perturb": [0.9, 1.1]})
    with pytest.raises(ValueError, match="training.reverb.t60_s"):
        TrainSettings.from_dict({"reverb": {"t60_s": [0.0, 0.5]}})
    with pytest.raises(ValueError, match="training.reverb.drr_db"):
        TrainSettings.from_dict({"reverb": {"drr_db": [10, 0]}})
    with pytest.raises(ValueError, match="training.reverb: unknown parameters"):
        TrainSettings.from_dict({"reverb": {"rt60": [0.3, 0.5]}})


# ------------------------------------------------------------------------------ semantics

def test_speed_stretches_time_about_the_centre():
    raw = torch.full((1, ROWS, STEPS), -5.0)
    raw[:, :, 48 + 12] = 0.0  # 12 frames after the centre
    x = _augment(0, speed=[2.0, 2.0])(raw)  # twice as fast: half as far from the centre
    peak = x[0].mean(0).argmax().item()
    assert peak == 48 + 6
    assert x.shape == raw.shape and torch.isfinite(x).all()


def test_vtlp_scales_the_mel_axis_from_the_lowest_band():
    raw = torch.full((1, ROWS, STEPS), -5.0)
    raw[:, 10, :] = 0.0
    x = _augment(0, vtlp=[2.0, 2.0])(raw)  # frequencies doubled: band 10 -> band 20
    assert x[0].mean(1).argmax().item() == 20
    y = _augment(0, vtlp=[0.5, 0.5])(raw)  # halved: band 10 -> band 5
    assert y[0].mean(1).argmax().item() == 5


def test_gain_is_one_offset_per_example_within_the_range():
    raw, _ = _batch()
    aug = _augment(0, gain_db=6.0)  # std 1: the offset passes normalisation unchanged
    offset = (aug(raw) - normalise(raw, aug.mean, aug.std)).flatten(1)
    assert torch.allclose(offset, offset[:, :1].expand_as(offset), atol=1e-5)
    assert (offset.abs() <= 0.6 + 1e-6).all() and offset[:, 0].std() > 0


def _reverb(t60: float, drr: float, **extra) -> Augment:
    return _augment(0, reverb={"probability": 1.0, "t60_s": [t60, t60], "drr_db": [drr, drr],
                               **extra})


def test_reverb_leaves_a_tail_that_decays_60_db_in_t60():
    """One loud frame in silence: the frame keeps its power, the frames after it get a tail
    whose level falls by 60 dB over T60 and whose energy is 10^(-DRR/10) of the click's."""
    raw = torch.full((1, ROWS, STEPS), -6.0)  # log10(0 + log_offset): the features' silence
    raw[:, :, 20] = 2.0
    aug = _reverb(0.4, 6.0)
    out = aug.apply(raw, aug._moved(aug.draw(raw.shape), raw.device), normalised=False)
    x = out * aug.std[:, None] + aug.mean[:, None]  # undo normalisation (raw log10 power)
    assert torch.allclose(x[0, :, :20], raw[0, :, :20], atol=1e-4)  # nothing before: causal
    assert torch.allclose(x[0, :, 20], torch.full((ROWS,), 2.0), atol=1e-3)
    tail = x[0, 0, 21:41]  # the first half of T60 (40 frames of 10 ms), far above the floor
    slope = (tail[-1] - tail[0]) / (len(tail) - 1)  # log10 units per frame
    assert slope == pytest.approx(-6.0 * FRAME_S / 0.4, rel=1e-3)
    energy = (torch.pow(10.0, x[0, 0, 21:].double()) - 1e-6).sum()
    assert energy / 100.0 == pytest.approx(10 ** -0.6, rel=1e-2)
    assert torch.allclose(x[0, :, 20 + 41:], raw[0, :, 20 + 41:], atol=1e-4)  # past T60: gone


def test_reverb_fills_pauses_more_with_longer_t60_and_lower_drr():
    raw = torch.full((1, ROWS, STEPS), -6.0)
    raw[:, :, 10:30] = 1.0  # a word, then a pause
    def level_in_pause(t60, drr):
        aug = _reverb(t60, drr)
        return aug(raw)[0, :, 40].mean().item()
    assert level_in_pause(0.6, 0.0) > level_in_pause(0.3, 0.0) > level_in_pause(0.1, 0.0)
    assert level_in_pause(0.6, 0.0) > level_in_pause(0.6, 10.0)


def test_reverb_probability_picks_examples():
    raw, _ = _batch(n=64)
    aug = _augment(0, reverb={"probability": 0.5})
    changed = ~torch.isclose(aug(raw), normalise(raw, aug.mean, aug.std), atol=1e-5).flatten(
        1).all(1)
    assert 16 < changed.sum() < 48


def test_reverb_needs_audio_frames():
    ts = TrainSettings.from_dict({"reverb": {"probability": 0.5}})
    with pytest.raises(ValueError, match="training.reverb needs audio features"):
        Augment(ts, torch.Generator(), torch.zeros(ROWS), torch.ones(ROWS))


def test_gain_cancels_under_utterance_normalisation():
    raw, _ = _batch()
    x = _augment(0, gain_db=6.0, normalisation="utterance")(raw)
    assert torch.allclose(x, normalise_utterance(raw), atol=1e-4)


def test_mixup_is_a_convex_combination_with_soft_targets():
    raw, labels = _batch()
    aug = _augment(0, mixup=0.4)
    plain = normalise(raw, aug.mean, aug.std)
    x, target = aug.batch(raw, labels)
    assert target.shape == (len(labels), CLASSES)
    assert torch.allclose(target.sum(1), torch.ones(len(labels)))
    assert (target >= 0).all() and (target.max(1).values < 1).any()
    # each mixed example is l * own + (1 - l) * partner, l = its target weight on its label
    lam = target[torch.arange(len(labels)), labels]
    for i in range(len(labels)):
        residual = x[i] - lam[i] * plain[i]
        match = [j for j in range(len(labels))
                 if torch.allclose(residual, (1 - lam[i]) * plain[j], atol=1e-4)]
        assert match, i


def test_cross_entropy_takes_mixup_soft_targets():
    logits = torch.randn(6, CLASSES, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    onehot = nn.functional.one_hot(y, CLASSES).float()
    # one-hot soft targets give the hard-label loss
    assert torch.allclose(nn.CrossEntropyLoss()(logits, onehot), nn.CrossEntropyLoss()(logits, y))
    # a mixed target is the mixed loss
    lam, other = 0.7, torch.roll(y, 1)
    target = lam * onehot + (1 - lam) * nn.functional.one_hot(other, CLASSES).float()
    expected = lam * nn.CrossEntropyLoss()(logits, y) + (1 - lam) * nn.CrossEntropyLoss()(
        logits, other)
    assert torch.allclose(nn.CrossEntropyLoss()(logits, target), expected)
    # with class weights: the batch mean of sum_c w_c p_c (-log q_c)
    w = torch.linspace(0.5, 2.0, CLASSES)
    manual = -(w * target * torch.log_softmax(logits, 1)).sum(1).mean()
    assert torch.allclose(nn.CrossEntropyLoss(weight=w)(logits, target), manual)


# ------------------------------------------------------------- training batches only (real)

def _settings(settings, epochs=2, **training_values):
    s = copy.deepcopy(settings)
    s["training"].update(epochs=epochs, **training_values)
    return s


ALL_ON = {"speed": [0.9, 1.1], "vtlp": [0.9, 1.1], "gain_db": 6.0, "mixup": 0.4,
          "time_shift_frames": 3, "spec_augment": {"time_masks": 1, "freq_masks": 1},
          "reverb": {"probability": 0.5}}


def _validation_inputs(monkeypatch, path, settings, out):
    seen = []
    real = training.evaluate

    def spy(model, features, labels, *args, **kwargs):
        seen.append(features.clone())
        return real(model, features, labels, *args, **kwargs)

    monkeypatch.setattr(training, "evaluate", spy)
    ckpt = train_model(path, "dense", settings, 0, out / "model.pt", out / "history.csv")
    monkeypatch.setattr(training, "evaluate", real)
    return seen, ckpt


def test_validation_inputs_never_see_augmentation(tiny_features, tmp_path, monkeypatch):
    path, settings = tiny_features
    off, _ = _validation_inputs(monkeypatch, path, _settings(settings), tmp_path / "off")
    on, ckpt = _validation_inputs(monkeypatch, path, _settings(settings, **ALL_ON),
                                  tmp_path / "on")
    assert len(on) == len(off) == 2
    assert all(torch.equal(a, b) for a, b in zip(on, off, strict=True))
    valid = load_split(path, "valid")
    assert torch.equal(on[0], normalise_with(ckpt, valid.features))
    assert ckpt["training"]["mixup"] == 0.4 and ckpt["training"]["speed"] == [0.9, 1.1]


def test_mixup_trains_with_class_weights(tiny_features, tmp_path):
    path, settings = tiny_features
    ckpt = train_model(path, "dense", _settings(settings, mixup=0.4, class_weights=True), 0,
                       tmp_path / "model.pt", tmp_path / "history.csv")
    history = pd.read_csv(tmp_path / "history.csv")
    assert np.isfinite(history["train_loss"]).all() and ckpt["epochs_trained"] == 2


def test_resume_with_every_augmentation_is_exact(tiny_features, tmp_path, monkeypatch):
    """Stopped after a batch of epoch 2 (as SIGTERM does), the re-run ends with the weights
    and history of an uninterrupted run."""
    path, settings = tiny_features
    s = _settings(settings, 3, **ALL_ON)
    ref = train_model(path, "dense", s, 5, tmp_path / "ref/model.pt", tmp_path / "ref/h.csv")
    calls = {"n": 0}
    batches = len(load_split(path, "train").labels) // settings["training"]["batch_size"] + 1

    @contextlib.contextmanager
    def stop_in_epoch_two():
        def stopped():
            calls["n"] += 1
            return signal.SIGTERM if calls["n"] > batches + 1 else 0
        yield stopped

    monkeypatch.setattr(training, "stop_requests", stop_in_epoch_two)
    with pytest.raises(training.Interrupted):
        train_model(path, "dense", s, 5, tmp_path / "cut/model.pt", tmp_path / "cut/h.csv",
                    resume_every_s=0)
    monkeypatch.undo()
    assert torch.load(tmp_path / "cut/resume.pt", weights_only=True)["epoch"] == 1
    got = train_model(path, "dense", s, 5, tmp_path / "cut/model.pt", tmp_path / "cut/h.csv",
                      resume_every_s=0)
    assert all(torch.equal(ref["state_dict"][k], got["state_dict"][k]) for k in ref["state_dict"])
    timing = ["seconds", "samples_per_second"]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "ref/h.csv").drop(columns=timing),
                                  pd.read_csv(tmp_path / "cut/h.csv").drop(columns=timing))


# -------------------------------------------------------- per-utterance normalisation, end to end

def test_utterance_normalisation_is_per_clip_and_band():
    raw, _ = _batch()
    x = normalise_utterance(raw * 2.0 + 7.0)
    assert x.shape == raw.shape
    assert torch.allclose(x.mean(-1), torch.zeros(x.shape[:2]), atol=1e-4)
    assert torch.allclose(x.std(-1, unbiased=False), torch.ones(x.shape[:2]), atol=1e-3)
    assert torch.allclose(x, normalise_utterance(raw), atol=1e-4)  # gain and scale gone
    flat = torch.zeros(1, ROWS, STEPS)
    assert torch.isfinite(normalise_utterance(flat)).all()


def test_utterance_normalisation_round_trips_through_the_checkpoint(tiny_features, tmp_path,
                                                                   monkeypatch):
    path, settings = tiny_features
    s = _settings(settings, normalisation="utterance")
    seen, _ = _validation_inputs(monkeypatch, path, s, tmp_path)
    valid = load_split(path, "valid")
    assert torch.equal(seen[0], normalise_utterance(valid.features))  # validation

    model, ckpt = load_checkpoint(tmp_path / "model.pt")
    assert ckpt["normalization"]["scope"] == "utterance"
    test = load_split(path, "test")
    assert torch.equal(normalise_with(ckpt, test.features), normalise_utterance(test.features))

    # evaluation: the test probabilities are the model's on per-utterance inputs
    evaluate_model(tmp_path / "model.pt", path, tmp_path / "eval")
    predictions = pd.read_csv(tmp_path / "eval/predictions.csv")
    with torch.no_grad():
        probs = torch.softmax(model(normalise_utterance(test.features)), 1)
    names = ckpt["label_names"]
    got = predictions[[f"p_{n}" for n in names]].to_numpy()
    assert np.allclose(got, probs.numpy(), atol=2e-6)

    # predict: raw audio -> log-mel -> per-utterance -> model, nothing else needed
    params = FeatureParams.from_attrs(ckpt["feature_params"])
    wave = np.random.default_rng(0).standard_normal((2, params.n_samples)).astype(np.float32)
    wave *= 0.05
    top = Predictor(tmp_path / "model.pt").classify(wave, top=len(names))
    with torch.no_grad():
        feats = LogMel(params)(torch.from_numpy(wave))
        expected = torch.softmax(model(normalise_utterance(feats)), 1)
    for row, probs_row in zip(top, expected, strict=True):
        for label, p in row:
            assert p == pytest.approx(probs_row[names.index(label)].item(), abs=1e-5)
    # a checkpoint with the train-split scope gives other inputs: the scope is honoured
    other = dict(ckpt, normalization={**ckpt["normalization"], "scope": "train_split"})
    assert not torch.allclose(normalise_with(other, test.features), normalise_with(ckpt,
                                                                                 test.features))


# ------------------------------------------------------------------ rotation (signals)

SIGNAL_CHANNELS = ["acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z", "pressure"]


def _signal_augment(seed: int = 0, **training_values) -> Augment:
    ts = TrainSettings.from_dict(training_values)
    rows = len(SIGNAL_CHANNELS)
    return Augment(ts, torch.Generator().manual_seed(seed), torch.zeros(rows), torch.ones(rows),
                   n_classes=CLASSES, channels=SIGNAL_CHANNELS)


def test_rotation_turns_each_sensor_rigidly_and_leaves_other_channels():
    raw = torch.randn(16, len(SIGNAL_CHANNELS), 50, generator=torch.Generator().manual_seed(1))
    out = _signal_augment(0, rotation_deg=90.0)(raw.clone())
    assert out.shape == raw.shape and not torch.allclose(out, raw)
    for group in (slice(0, 3), slice(3, 6)):  # lengths of every sample's vector are kept
        torch.testing.assert_close(out[:, group].norm(dim=1), raw[:, group].norm(dim=1))
    torch.testing.assert_close(out[:, 6], raw[:, 6])
    # one rotation per window for both sensors: the angle between acc and gyro is kept
    torch.testing.assert_close((out[:, 0:3] * out[:, 3:6]).sum(1),
                               (raw[:, 0:3] * raw[:, 3:6]).sum(1), atol=1e-4, rtol=1e-4)
    again = _signal_augment(0, rotation_deg=90.0)(raw.clone())
    assert torch.equal(out, again)
    assert not torch.equal(out, _signal_augment(1, rotation_deg=90.0)(raw.clone()))


def test_rotation_stays_within_its_angle():
    raw = torch.zeros(200, len(SIGNAL_CHANNELS), 4)
    raw[:, 0] = 1.0  # the unit x vector
    out = _signal_augment(0, rotation_deg=10.0)(raw)
    cos = out[:, 0, 0]  # x component after rotation = cos of the angle moved
    assert (cos >= np.cos(np.radians(10.0)) - 1e-6).all() and (cos < 1 - 1e-6).any()


def test_rotation_needs_axis_channels():
    ts = TrainSettings.from_dict({"rotation_deg": 15.0})
    with pytest.raises(ValueError, match="rotation_deg needs 3-axis"):
        Augment(ts, torch.Generator(), torch.zeros(ROWS), torch.ones(ROWS),
                channels=None)
