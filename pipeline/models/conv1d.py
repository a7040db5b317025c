"""1D convolution over time, mel bands as channels, after the lecture's 1D network."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pipeline.models.base import param
from pipeline.models.receptive_field import receptive_field


@dataclass(frozen=True)
class Conv1dConfig:
    kernel_sizes: tuple[int, ...] = param((10, 10, 10, 10), "Kernel size (steps) per conv layer.",
                                          items={"type": "integer", "minimum": 1})
    channels: tuple[int, ...] = param((100, 100, 160, 160), "Output channels per conv layer.",
                                      items={"type": "integer", "minimum": 1})
    pool_after: int = param(2, "Max pooling before this conv layer.", minimum=0)
    pool_size: int = param(3, "Max-pooling size and stride.", minimum=1)
    dropout: float = param(0.5, "Dropout before the classifier.", minimum=0, maximum=1)


class Conv1dNet(nn.Module):
    """Conv(10,100) -> Conv(10,100) -> MaxPool(3) -> Conv(10,160) -> Conv(10,160) -> GAP."""

    def __init__(self, config: Conv1dConfig, input_shape: tuple[int, int], n_classes: int):
        super().__init__()
        if len(config.kernel_sizes) != len(config.channels):
            raise ValueError("conv1d: kernel_sizes and channels need the same length")
        self.config = config
        bands, frames = input_shape
        layers: list[nn.Module] = []
        width = bands
        for i, (k, c) in enumerate(zip(config.kernel_sizes, config.channels, strict=True)):
            if i == config.pool_after:
                layers.append(nn.MaxPool1d(config.pool_size))
            layers += [nn.Conv1d(width, c, k), nn.ReLU()]
            width = c
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(width, n_classes))
        if self.time_steps_left(frames) < 1:
            raise ValueError(f"conv1d: {frames} frames are too few for kernels "
                             f"{config.kernel_sizes}; use smaller kernel_sizes")

    def time_steps_left(self, frames: int) -> int:
        for i, k in enumerate(self.config.kernel_sizes):
            if i == self.config.pool_after:
                frames //= self.config.pool_size
            frames -= k - 1
        return frames

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, F, T]
        return self.head(self.features(x).mean(dim=2))

    def receptive_field(self, input_shape: tuple[int, int]) -> tuple[int, int]:
        """(frames, bands) seen by one step before global pooling; bands are channels."""
        layers = []
        for i, k in enumerate(self.config.kernel_sizes):
            if i == self.config.pool_after:
                layers.append((self.config.pool_size, self.config.pool_size, 1))
            layers.append((k, 1, 1))
        return receptive_field(layers), input_shape[0]
