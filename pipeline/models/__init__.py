"""Model families, chosen by name from an explicit registry (no eval, no import strings).

A new family is one module (a frozen config dataclass with `param` fields and an nn.Module,
see base.py) and one line in REGISTRY; the registry's order is the families' order
everywhere (config schema, tables, figures).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from pipeline.dicts import strict_fields
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


def get_family(name: str) -> Family:
    if name not in REGISTRY:
        raise KeyError(f"unknown model {name!r}; known: {list(REGISTRY)}")
    return REGISTRY[name]


def make_config(name: str, params: dict | None = None):
    """A family's frozen config from plain values (lists become tuples); unknown keys fail."""
    cls = get_family(name).config
    return cls(**strict_fields(cls, params, f"model_params.{name}"))


def build_model(name: str, params: dict | None, input_shape: tuple[int, int],
                n_classes: int) -> nn.Module:
    return get_family(name).module(make_config(name, params), tuple(input_shape), n_classes)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
