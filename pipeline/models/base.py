"""What every model family provides, and how its config documents itself.

A family is a frozen dataclass config whose fields carry `param(...)` metadata (the config
schema for `model_params` is generated from it) and an `nn.Module` built from
(config, input_shape, n_classes) that also reports its receptive field.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import torch


def param(default: Any, doc: str, **schema: Any) -> Any:
    """A config field with its description and JSON-schema constraints (minimum, ...)."""
    return dataclasses.field(default=default, metadata={"doc": doc, "schema": schema})


class ModelModule(Protocol):
    """The interface training and evaluation use besides nn.Module's."""

    def __init__(self, config: Any, input_shape: tuple[int, int], n_classes: int) -> None: ...

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """[B, rows, steps] normalised features -> [B, n_classes] logits."""

    def receptive_field(self, input_shape: tuple[int, int]) -> tuple[int, int]:
        """(steps, rows) of the input that one unit of the last feature layer sees."""
