"""2D CNN on a spectrogram as an image, after the lecture's speech-commands network.

Audio features already are spectrograms (one plane, bands x frames). For signals
([channels, samples], e.g. accelerometer axes) set `stft_window`: the network then takes a
log power spectrogram of every channel on the fly (Hann window, `stft_hop` apart) and reads
the channels as input planes, as the lecture's 2D CNNs on spectrograms of 1D signals.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pipeline.models.base import param
from pipeline.models.receptive_field import receptive_field


@dataclass(frozen=True)
class Cnn2dConfig:
    filters: tuple[int, ...] = param((12, 24, 48, 48, 48),
                                     "Filters per 3x3 conv block (numF multiples).",
                                     items={"type": "integer", "minimum": 1})
    pool_after: tuple[int, ...] = param((0, 1, 2), "Blocks followed by 3x3 max pooling with "
                                        "stride 2.", items={"type": "integer", "minimum": 0})
    dropout: float = param(0.2, "Dropout before the classifier.", minimum=0, maximum=1)
    stft_window: int = param(0, "0: the input is one spectrogram plane; n > 0: the input is "
                             "[channels, samples] and each channel becomes a log power "
                             "spectrogram with an n-sample Hann window (one plane each).",
                             minimum=0)
    stft_hop: int = param(4, "Hop (samples) of that spectrogram.", minimum=1)


class LogSpectrogram(nn.Module):
    """[B, C, T] signals -> [B, C, window // 2 + 1, frames] log10 power spectrograms."""

    def __init__(self, window: int, hop: int) -> None:
        super().__init__()
        self.window, self.hop = window, hop
        self.register_buffer("hann", torch.hann_window(window), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t = x.shape
        spec = torch.stft(x.reshape(b * c, t).float(), self.window, self.hop,
                          window=self.hann, center=True, pad_mode="constant",
                          return_complex=True)
        power = spec.real**2 + spec.imag**2
        return torch.log10(power + 1e-6).reshape(b, c, *power.shape[1:])


class Cnn2dNet(nn.Module):
    """Blocks of 3x3 conv -> batch norm -> ReLU; max pooling over what is left of time."""

    def __init__(self, config: Cnn2dConfig, input_shape: tuple[int, int], n_classes: int):
        super().__init__()
        self.config = config
        self.frontend = (LogSpectrogram(config.stft_window, config.stft_hop)
                         if config.stft_window else None)
        layers: list[nn.Module] = []
        width = input_shape[0] if self.frontend else 1
        for i, f in enumerate(config.filters):
            layers += [nn.Conv2d(width, f, 3, padding=1), nn.BatchNorm2d(f), nn.ReLU()]
            if i in config.pool_after:
                layers.append(nn.MaxPool2d(3, stride=2, padding=1))
            width = f
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(width, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, rows, steps]
        planes = self.frontend(x) if self.frontend else x.unsqueeze(1)  # [B, P, F, T]
        h = self.features(planes)  # [B, C, F', T']
        h = h.amax(dim=3)  # max over the remaining time axis, as the lecture's network
        return self.head(h.mean(dim=2))  # average over what is left of the bands

    def receptive_field(self, input_shape: tuple[int, int]) -> tuple[int, int]:
        """(steps, rows) seen by one unit of the last conv block. Without a frontend the
        field is square in frames and bands; with one it spans frames of the spectrogram,
        converted to input samples, and every channel."""
        layers = []
        for i in range(len(self.config.filters)):
            layers.append((3, 1, 1))
            if i in self.config.pool_after:
                layers.append((3, 2, 1))
        rf = receptive_field(layers)
        rows, steps = input_shape
        if self.frontend:
            samples = (rf - 1) * self.config.stft_hop + self.config.stft_window
            return min(samples, steps), rows
        return min(rf, steps), min(rf, rows)
