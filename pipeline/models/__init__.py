"""Model families, chosen by name from an explicit registry (no eval, no import strings)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from torch import nn

from pipeline.models.cnn2d import Cnn2dConfig, Cnn2dNet
from pipeline.models.conv1d import Conv1dConfig, Conv1dNet
from pipeline.models.dense import DenseConfig, DenseNet


@dataclass(frozen=True)
class Family:
    config: type
    module: type


REGISTRY: dict[str, Family] = {
    "dense": Family(DenseConfig, DenseNet),
    "conv1d": Family(Conv1dConfig, Conv1dNet),
    "cnn2d": Family(Cnn2dConfig, Cnn2dNet),
}


def make_config(name: str, params: dict[str, Any] | None = None):
    """A family's frozen config from plain values (lists become tuples); unknown keys fail."""
    if name not in REGISTRY:
        raise KeyError(f"unknown model {name!r}; known: {sorted(REGISTRY)}")
    cls = REGISTRY[name].config
    known = {f.name for f in dataclasses.fields(cls)}
    params = dict(params or {})
    extra = set(params) - known
    if extra:
        raise ValueError(f"model {name}: unknown parameters {sorted(extra)}; "
                         f"known: {sorted(known)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in params.items()})


def build_model(name: str, params: dict[str, Any] | None, input_shape: tuple[int, int],
                n_classes: int) -> nn.Module:
    return REGISTRY[name].module(make_config(name, params), tuple(input_shape), n_classes)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
