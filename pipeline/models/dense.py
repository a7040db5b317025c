"""Fully connected network on a fixed-size vector: per-band statistics or the flat input."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn


@dataclass(frozen=True)
class DenseConfig:
    hidden: tuple[int, ...] = (256, 128, 64)  # three hidden layers + output = 4 dense layers
    input: Literal["stats", "flatten"] = "flatten"  # stats: mean and std over time per band
    dropout: float = 0.2


class DenseNet(nn.Module):
    def __init__(self, config: DenseConfig, input_shape: tuple[int, int], n_classes: int):
        super().__init__()
        self.config = config
        bands, frames = input_shape
        width = 2 * bands if config.input == "stats" else bands * frames
        layers: list[nn.Module] = []
        for size in config.hidden:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(config.dropout)]
            width = size
        layers.append(nn.Linear(width, n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, F, T]
        if self.config.input == "stats":
            x = torch.cat([x.mean(dim=2), x.std(dim=2)], dim=1)
        else:
            x = x.flatten(1)
        return self.net(x)

    def receptive_field(self, input_shape: tuple[int, int]) -> tuple[int, int]:
        """(frames, bands): every output sees the whole input."""
        bands, frames = input_shape
        return frames, bands
