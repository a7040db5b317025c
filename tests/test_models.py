"""Model families: shapes, parameter counts, receptive fields, and that each can learn."""

from __future__ import annotations

import pytest
import torch

from pipeline.models import REGISTRY, build_model, count_parameters, make_config
from pipeline.models.receptive_field import receptive_field

SHAPE = (40, 97)  # 40 mel bands x 97 frames: 1 s at 8 kHz, 25 ms / 10 ms


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_output_shape(name):
    model = build_model(name, {}, SHAPE, 10)
    assert model(torch.randn(4, *SHAPE)).shape == (4, 10)


def test_parameter_counts_follow_the_layers():
    dense = build_model("dense", {"hidden": [64, 32, 16], "input": "stats"}, SHAPE, 10)
    assert count_parameters(dense) == (80 * 64 + 64) + (64 * 32 + 32) + (32 * 16 + 16) + (16 * 10
                                                                                          + 10)
    conv = build_model("conv1d", {}, SHAPE, 10)
    expected = (40 * 100 * 10 + 100) + (100 * 100 * 10 + 100) + (100 * 160 * 10 + 160) + (
        160 * 160 * 10 + 160) + (160 * 10 + 10)
    assert count_parameters(conv) == expected
    cnn = build_model("cnn2d", {}, SHAPE, 12)
    filters, width, total = [12, 24, 48, 48, 48], 1, 0
    for f in filters:
        total += width * f * 9 + f + 2 * f  # conv weights + bias + batch-norm scale and shift
        width = f
    assert count_parameters(cnn) == total + 48 * 12 + 12


def test_receptive_fields():
    assert receptive_field([(3, 1, 1)] * 2) == 5
    assert receptive_field([(3, 1, 1), (3, 2, 1), (3, 1, 1)]) == 9
    conv = build_model("conv1d", {}, SHAPE, 10)
    # conv10 -> conv10 -> pool3 (stride 3) -> conv10 -> conv10: 1 + 9 + 9 + 2 + 3*9 + 3*9
    assert conv.receptive_field(SHAPE) == (75, 40)
    cnn = build_model("cnn2d", {}, SHAPE, 10)
    frames, bands = cnn.receptive_field(SHAPE)
    assert frames == 61 and bands == 40  # 61 > 40 bands: capped at the input


def test_short_inputs_are_refused_with_advice():
    with pytest.raises(ValueError, match="too few"):
        build_model("conv1d", {}, (28, 28), 10)
    build_model("conv1d", {"kernel_sizes": [3, 3, 3, 3]}, (28, 28), 10)


def test_unknown_parameter_is_an_error():
    with pytest.raises(ValueError, match="unknown parameters"):
        make_config("cnn2d", {"filter": [1]})
    with pytest.raises(KeyError, match="unknown model"):
        make_config("rnn", {})


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_each_family_overfits_a_small_batch(name):
    torch.manual_seed(0)
    x, y = torch.randn(16, *SHAPE), torch.arange(16) % 4
    model = build_model(name, {"dropout": 0.0}, SHAPE, 4)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
    model.eval()
    assert (model(x).argmax(1) == y).float().mean() == 1.0


def test_lecture_har_networks_have_the_lecture_parameter_counts():
    """The lecture's HAR table: dense 68,606 and 1D conv 520,486 parameters at WISDM's
    80 samples x 3 axes, 6 classes (channels as rows, samples as steps)."""
    dense = build_model("dense", {"input": "timestep", "hidden": [100, 100, 100],
                                  "dropout": 0.0}, (3, 80), 6)
    assert count_parameters(dense) == 68_606
    assert count_parameters(build_model("conv1d", {}, (3, 80), 6)) == 520_486
    cnn = build_model("cnn2d", {"stft_window": 32, "stft_hop": 4}, (6, 128), 6)
    assert cnn(torch.randn(2, 6, 128)).shape == (2, 6)
    assert cnn.receptive_field((6, 128)) == (128, 6)


def test_a_new_family_is_one_module_and_a_registry_line(tiny_features, tmp_path, monkeypatch):
    """Register a tiny family (config dataclass + module) and run it through config
    validation, training, evaluation and the checkpoint, touching nothing else."""
    import dataclasses

    from torch import nn

    from pipeline import models
    from pipeline.config import _schema, validate
    from pipeline.evaluation import evaluate_model
    from pipeline.models.base import param
    from pipeline.training import train_model

    @dataclasses.dataclass(frozen=True)
    class TinyConfig:
        width: int = param(8, "Hidden units.", minimum=1)

    class TinyNet(nn.Module):
        def __init__(self, config, input_shape, n_classes):
            super().__init__()
            rows, steps = input_shape
            self.net = nn.Sequential(nn.Flatten(1), nn.Linear(rows * steps, config.width),
                                     nn.ReLU(), nn.Linear(config.width, n_classes))

        def forward(self, x):
            return self.net(x)

        def receptive_field(self, input_shape):
            return input_shape[1], input_shape[0]

    monkeypatch.setitem(models.REGISTRY, "tiny", models.Family(TinyConfig, TinyNet))
    _schema.cache_clear()
    try:
        config = validate({"models": ["tiny"], "model_params": {"tiny": {"width": 4}}})
        assert config["model_params"]["tiny"] == {"width": 4}
        path, settings = tiny_features
        s = {**settings, "training": {**settings["training"], "epochs": 1},
             "model_params": {"tiny": {"width": 4}}}
        ckpt = train_model(path, "tiny", s, 0, tmp_path / "model.pt", tmp_path / "h.csv")
        assert ckpt["model"] == "tiny" and ckpt["model_config"] == {"width": 4}
        metrics = evaluate_model(tmp_path / "model.pt", path, tmp_path / "eval")
        assert metrics["model"] == "tiny" and 0 <= metrics["test_accuracy"] <= 1
    finally:
        monkeypatch.undo()
        _schema.cache_clear()
