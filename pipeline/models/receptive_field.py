"""Receptive field of a stack of convolutions and poolings, along one axis.

The lecture asks for it and no common tool reports it, so every model lists its layers as
(kernel, stride, dilation) per axis and this computes how many input steps one output sees.
"""

from __future__ import annotations

from collections.abc import Iterable


def receptive_field(layers: Iterable[tuple[int, int, int]]) -> int:
    """Input steps seen by one output step: rf += (k - 1) * d * jump; jump *= stride."""
    rf, jump = 1, 1
    for kernel, stride, dilation in layers:
        rf += (kernel - 1) * dilation * jump
        jump *= stride
    return rf
