"""Resume state: everything a training job needs to continue exactly where it stopped.

Written atomically after every epoch to `resume.pt` beside the model (and kept after the
last epoch, so a finished job whose output Snakemake discarded rebuilds its model.pt without
training). A state from other inputs or settings (another `run_id`) is ignored.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.io import atomic_path


@dataclass
class ResumeState:
    run_id: str
    epoch: int = 0  # epochs completed
    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"valid_accuracy": -1.0})
    modules: dict[str, Any] = field(default_factory=dict)  # state_dicts by name
    rngs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | os.PathLike, run_id: str) -> ResumeState | None:
        """The saved state if it belongs to this run, else None."""
        if not Path(path).exists():
            return None
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("run_id") != run_id:
            return None
        return cls(**state)

    def capture(self, modules: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
        """Record the state of `modules` (model, optimizer, ...) and of every RNG."""
        self.modules = {name: m.state_dict() for name, m in modules.items()}
        self.rngs = {name: g.get_state() for name, g in generators.items()}
        self.rngs.update(torch=torch.get_rng_state(), python=_plain(random.getstate()),
                         numpy=_plain(np.random.get_state()))
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            self.rngs["cuda"] = torch.cuda.get_rng_state()

    def restore(self, modules: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
        for name, m in modules.items():
            m.load_state_dict(self.modules[name])
        for name, g in generators.items():
            g.set_state(self.rngs[name])
        torch.set_rng_state(self.rngs["torch"])
        if "cuda" in self.rngs and torch.cuda.is_available():
            torch.cuda.set_rng_state(self.rngs["cuda"])
        python = self.rngs["python"]
        random.setstate((python[0], tuple(python[1]), python[2]))
        numpy = self.rngs["numpy"]
        np.random.set_state((numpy[0], numpy[1].numpy().astype(np.uint32), *numpy[2:]))

    def save(self, path: str | os.PathLike) -> None:
        with atomic_path(path) as tmp:
            torch.save(self.__dict__, tmp)


def _plain(state):
    """RNG states as lists/ints/tensors only, so weights_only loading accepts them."""
    if isinstance(state, tuple | list):
        return [_plain(s) for s in state]
    if isinstance(state, np.ndarray):
        return torch.from_numpy(state.astype(np.int64))
    return state
