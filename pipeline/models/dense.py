"""Fully connected network on a fixed-size vector: per-band statistics or the flat input."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from pipeline.models.base import param


@dataclass(frozen=True)
class DenseConfig:
    hidden: tuple[int, ...] = param((256, 128, 64), "Hidden layer widths.",
                                    items={"type": "integer", "minimum": 1})
    input: Literal["stats", "flatten", "timestep"] = param(
        "flatten", "flatten: the whole input; stats: mean and std over time per row; "
        "timestep: the hidden stack on every time step's rows, then flatten (the lecture's "
        "HAR network)")
    dropout: float = param(0.2, "Dropout after each hidden layer.", minimum=0, maximum=1)


class DenseNet(nn.Module):
    def __init__(self, config: DenseConfig, input_shape: tuple[int, int], n_classes: int):
        super().__init__()
        self.config = config
        bands, frames = input_shape
        width = {"stats": 2 * bands, "flatten": bands * frames, "timestep": bands}[config.input]
        layers: list[nn.Module] = []
        for size in config.hidden:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(config.dropout)]
            width = size
        if config.input == "timestep":  # the same stack on every step, then one classifier
            layers.append(nn.Flatten(1))
            width *= frames
        layers.append(nn.Linear(width, n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, F, T]
        if self.config.input == "stats":
            x = torch.cat([x.mean(dim=2), x.std(dim=2)], dim=1)
        elif self.config.input == "timestep":
            x = x.transpose(1, 2)  # [B, steps, rows]: Linear acts on each step's rows
        else:
            x = x.flatten(1)
        return self.net(x)

    def receptive_field(self, input_shape: tuple[int, int]) -> tuple[int, int]:
        """(steps, rows): a hidden unit sees the whole input, or one step (`timestep`)."""
        bands, frames = input_shape
        return (1 if self.config.input == "timestep" else frames), bands
