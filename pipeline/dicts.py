"""Small helpers for the plain dicts that config values travel in."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any


def deep_merge(base: dict[str, Any], override: dict[str, Any] | None) -> dict[str, Any]:
    """`base` with `override` laid over it, nested dicts merged key by key (copies)."""
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def strict_fields(cls: type, values: dict[str, Any] | None, what: str) -> dict[str, Any]:
    """`values` as keyword arguments of dataclass `cls`: lists become tuples, an unknown key
    fails with the same message wherever settings become a dataclass."""
    known = [f.name for f in dataclasses.fields(cls)]
    values = dict(values or {})
    extra = sorted(set(values) - set(known))
    if extra:
        raise ValueError(f"{what}: unknown parameters {extra}; known: {sorted(known)}")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
