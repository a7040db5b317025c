"""2D CNN on the spectrogram as an image, after the lecture's speech-commands network."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pipeline.models.receptive_field import receptive_field


@dataclass(frozen=True)
class Cnn2dConfig:
    filters: tuple[int, ...] = (12, 24, 48, 48, 48)
    pool_after: tuple[int, ...] = (0, 1, 2)  # 3x3 max pooling, stride 2, after these blocks
    dropout: float = 0.2


class Cnn2dNet(nn.Module):
    """Blocks of 3x3 conv -> batch norm -> ReLU; max pooling over what is left of time."""

    def __init__(self, config: Cnn2dConfig, input_shape: tuple[int, int], n_classes: int):
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        width = 1
        for i, f in enumerate(config.filters):
            layers += [nn.Conv2d(width, f, 3, padding=1), nn.BatchNorm2d(f), nn.ReLU()]
            if i in config.pool_after:
                layers.append(nn.MaxPool2d(3, stride=2, padding=1))
            width = f
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(width, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, F, T]
        h = self.features(x.unsqueeze(1))  # [B, C, F', T']
        h = h.amax(dim=3)  # max over the remaining time axis, as the lecture's network
        return self.head(h.mean(dim=2))  # average over what is left of the bands

    def receptive_field(self, input_shape: tuple[int, int]) -> tuple[int, int]:
        """(frames, bands) seen by one unit of the last conv block (square, so equal)."""
        layers = []
        for i in range(len(self.config.filters)):
            layers.append((3, 1, 1))
            if i in self.config.pool_after:
                layers.append((3, 2, 1))
        rf = receptive_field(layers)
        bands, frames = input_shape
        return min(rf, frames), min(rf, bands)
