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
