"""Training: plain functions (seed, device, one epoch, evaluate) and a resumable job driver.

`train_model` reads like a classic PyTorch `main()`: load the data, build the parts, resume
if a state exists, train epoch by epoch (saving the resume state after each), then write the
self-describing checkpoint (pipeline/checkpoint.py) of the best epoch.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from pipeline.checkpoint import (
    CHECKPOINT_FORMAT,
    NORMALISATION_SCOPES,
    normalise,  # noqa: F401 - pipeline.training.normalise, as before
    normalise_scoped,
    save_checkpoint,
)
from pipeline.dicts import strict_fields
from pipeline.features import FeatureSplit, describing_attrs, load_split, read_attrs
from pipeline.io import write_table
from pipeline.logs import JobStopped
from pipeline.modalities import get_modality
from pipeline.models import build_model, count_parameters, make_config
from pipeline.resume import ResumeState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpecAugment:
    time_masks: int = 0
    time_width: int = 10
    freq_masks: int = 0
    freq_width: int = 5


@dataclass(frozen=True)
class NoiseMix:
    probability: float = 0.0
    volume: tuple[float, float] = (0.0, 0.1)
    label: str = "silence"
    source: str | None = None  # another dataset's train split holds the noise class
    snr_db: tuple[float, float] | None = None  # instead of volume


@dataclass(frozen=True)
class Reverb:
    """Room reverberation of the log-mels (see Augment): the share of examples that get it,
    the reverberation time T60 (seconds for the energy to fall 60 dB) and the
    direct-to-reverberant energy ratio, each drawn uniformly per example."""

    probability: float = 0.0
    t60_s: tuple[float, float] = (0.2, 0.8)
    drr_db: tuple[float, float] = (0.0, 10.0)

    def __post_init__(self) -> None:
        lo, hi = self.t60_s
        if not 0 < lo <= hi:
            raise ValueError(f"training.reverb.t60_s: [{lo}, {hi}] is not a range 0 < low <= "
                             "high")
        lo, hi = self.drr_db
        if not lo <= hi:
            raise ValueError(f"training.reverb.drr_db: [{lo}, {hi}] is not a range low <= high")


#: how the best epoch is chosen: by validation accuracy alone (the first epoch to reach the
#: highest), or, among epochs of equal accuracy, by lower validation loss (a validation set
#: that saturates, e.g. at 1.0, then still tells later, better-fitted epochs apart)
SELECTIONS = ("accuracy", "accuracy_then_loss")


def better_epoch(row: dict[str, float], best: dict[str, Any], selection: str) -> bool:
    """Does this epoch's validation beat the best so far?"""
    if row["valid_accuracy"] != best["valid_accuracy"] or selection == "accuracy":
        return row["valid_accuracy"] > best["valid_accuracy"]
    return row["valid_loss"] < best.get("valid_loss", math.inf)


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings; the defaults are the lecture's MATLAB options and the single
    source of the `training` defaults (the schema is checked against them by a test)."""

    epochs: int = 25
    batch_size: int = 128
    learning_rate: float = 3e-4
    lr_drop_epoch: int = 20
    lr_drop_factor: float = 0.1
    weight_decay: float = 0.0
    class_weights: bool = False
    mixed_precision: bool = True
    spec_augment: SpecAugment = SpecAugment()
    time_shift_frames: int = 0
    noise: NoiseMix = NoiseMix()
    reverb: Reverb = Reverb()
    patience: int = 0
    speed: tuple[float, float] = (1.0, 1.0)
    vtlp: tuple[float, float] = (1.0, 1.0)
    gain_db: float = 0.0
    mixup: float = 0.0
    normalisation: str = "train_split"
    rotation_deg: float = 0.0
    selection: str = "accuracy"

    def __post_init__(self) -> None:
        if self.normalisation not in NORMALISATION_SCOPES:
            raise ValueError(f"training.normalisation: {self.normalisation!r} is not one of "
                             f"{list(NORMALISATION_SCOPES)}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"training.selection: {self.selection!r} is not one of "
                             f"{list(SELECTIONS)}")
        for name in ("speed", "vtlp"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"training.{name}: [{lo}, {hi}] is not a range 0 < low <= "
                                 "high")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainSettings:
        """From config values; an unknown key fails as everywhere else."""
        kwargs = strict_fields(cls, values, "training")
        kwargs["spec_augment"] = SpecAugment(**strict_fields(
            SpecAugment, kwargs.get("spec_augment"), "training.spec_augment"))
        kwargs["noise"] = NoiseMix(**strict_fields(NoiseMix, kwargs.get("noise"),
                                                   "training.noise"))
        kwargs["reverb"] = Reverb(**strict_fields(Reverb, kwargs.get("reverb"),
                                                  "training.reverb"))
        return cls(**kwargs)


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return the generator that orders training batches."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    return torch.Generator().manual_seed(seed)


def choose_device(request: str = "auto") -> torch.device:
    """`auto`: the current accelerator (CUDA, MPS, ...) if there is one, else the CPU."""
    if request == "auto":
        if torch.accelerator.is_available():
            return torch.accelerator.current_accelerator()
        return torch.device("cpu")
    device = torch.device(request)
    if device.type != "cpu" and not (torch.accelerator.is_available()
                                     and torch.accelerator.current_accelerator().type
                                     == device.type):
        raise RuntimeError(f"device {request!r} was asked for but is not available here")
    return device


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU tensor moved to `device` without making the host wait: through pinned memory
    and an asynchronous copy (a plain `.to("cuda")` of pageable memory synchronises the
    stream, which leaves a GPU idle between the small steps of a small model)."""
    if device.type == "cpu" or t.device == device:
        return t
    return t.pin_memory().to(device, non_blocking=True)


class Augment:
    """Training-only perturbations from their own seeded generator; never used on evaluation.

    Every draw comes from `generator` (a CPU generator whose state the resume checkpoint
    keeps), so a resumed run perturbs exactly as an uninterrupted one; a perturbation that
    is off draws nothing. `draw` takes one batch's draws (fixed shapes), `apply` does the
    arithmetic where the batch lives, with no host synchronisation, so on a GPU the whole
    training step can be one CUDA graph (`CudaGraphStep`). In order, on a raw (log-mel)
    batch:

    - reverberation (audio), a room's late reverberation in the power domain of each mel
      band: P'[t] = P[t] + g sum_k P[t - k] 10^(-6 k h / T60) for k = 1 .. T60/h frames
      of h seconds (the exponentially decaying energy envelope of Polack's statistical
      room model, one T60 for every band), g set so that the tail holds 10^(-DRR/10) of
      the direct energy; T60 and DRR drawn per example (on the mel power, the features'
      log offset taken off first). A tail smears each frame into the following ones and
      fills the pauses, as a room does to a close-talking recording;
    - noise, mixed in the power domain, log10(10**x + v * 10**n), with n a training example
      of the noise class (e.g. Speech Commands' `silence`, cut from the train-reserved
      background recordings; of this dataset or of `noise.source`), v drawn from `volume`
      or set by a signal-to-noise ratio drawn from `snr_db` (mean powers over all bins);
    - gain: a uniform dB offset in [-gain_db, gain_db], + dB/10 in the log10 domain;
    - rotation (signals): the 3-axis sensor channels of a window (`acc_x/_y/_z`, ...) all
      turned by one random rotation, about a uniformly random axis by an angle uniform in
      [-rotation_deg, rotation_deg]: a phone worn at another angle;
    - speed (tempo) and VTLP: one bilinear resampling of the [rows, steps] plane, the time
      axis stretched about its centre by a factor in `speed` (> 1: faster speech, shorter),
      the mel axis scaled from its lowest band by a factor in `vtlp` (> 1: formants move
      up); positions outside the clip repeat its edge (its padding or top band), so the
      shape stays;

    then normalisation (the train split's statistics, or per utterance) and, on the
    normalised features, time shift and SpecAugment masks (a mask sets a region to the
    mean, 0). `batch` adds mixup: convex combinations of two examples and of their one-hot
    labels (soft targets for the loss).
    """

    def __init__(self, settings: TrainSettings, generator: torch.Generator,
                 mean: torch.Tensor, std: torch.Tensor,
                 noise_bank: torch.Tensor | None = None, n_classes: int | None = None,
                 channels: list[str] | None = None, frame_seconds: float | None = None,
                 log_offset: float = 0.0) -> None:
        self.spec, self.noise, self.shift = (settings.spec_augment, settings.noise,
                                             settings.time_shift_frames)
        self.reverb = settings.reverb
        if self.reverb.probability > 0 and not frame_seconds:
            raise ValueError("training.reverb needs audio features (log-mels with a frame hop, "
                             "hop_ms); these features have none")
        # tail frames: up to the longest T60, where the energy is 60 dB down
        self.tail = (math.ceil(self.reverb.t60_s[1] / frame_seconds)
                     if self.reverb.probability > 0 else 0)
        self.frame_seconds, self.log_offset = frame_seconds, log_offset
        self.speed, self.vtlp = tuple(settings.speed), tuple(settings.vtlp)
        self.gain_db, self.mixup = settings.gain_db, settings.mixup
        self.scope = settings.normalisation
        self.noise_bank = noise_bank if noise_bank is not None and len(noise_bank) else None
        self.mean, self.std = mean, std
        self.generator = generator
        self.n_classes = n_classes
        if self.mixup > 0 and n_classes is None:
            raise ValueError("mixup needs the number of classes (Augment(n_classes=...))")
        self.rotation_deg = settings.rotation_deg
        # index tensors, not lists: a list index is copied to the device on every use
        self.axis_groups = [torch.tensor(g) for g in axis_groups(channels or [])]
        if self.rotation_deg > 0 and not self.axis_groups:
            raise ValueError("training.rotation_deg needs 3-axis signal channels (names ending "
                             f"_x, _y, _z); these features have {channels}")

    def to(self, device: torch.device) -> Augment:
        """Keep the constants beside the batches (random draws stay on the CPU generator)."""
        self.mean, self.std = self.mean.to(device), self.std.to(device)
        if self.noise_bank is not None:
            self.noise_bank = self.noise_bank.to(device)
        self.axis_groups = [g.to(device) for g in self.axis_groups]
        return self

    def _uniform(self, n: int, lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=self.generator)

    def _mask_spans(self, n: int, count: int, width: int, size: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        starts, stops = torch.zeros(count, n, dtype=torch.long), torch.zeros(count, n,
                                                                             dtype=torch.long)
        for i in range(count):
            w = torch.randint(0, width + 1, (n,), generator=self.generator)
            starts[i] = (torch.rand(n, generator=self.generator) * (size - w + 1)).long()
            stops[i] = starts[i] + w
        return starts, stops

    def _turns(self, n: int) -> torch.Tensor:
        """Rodrigues' rotation matrices [n, 3, 3], about random axes by random angles."""
        axis = torch.randn(n, 3, generator=self.generator)
        axis = axis / axis.norm(dim=1, keepdim=True).clamp_min(1e-12)
        angle = self._uniform(n, -self.rotation_deg, self.rotation_deg) * (math.pi / 180.0)
        cross = torch.zeros(n, 3, 3)  # K v = axis x v
        cross[:, 0, 1], cross[:, 0, 2], cross[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
        cross = cross - cross.transpose(1, 2)
        sin, cos = angle.sin()[:, None, None], angle.cos()[:, None, None]
        return torch.eye(3) + sin * cross + (1 - cos) * (cross @ cross)

    def _warp_theta(self, n: int) -> torch.Tensor:
        # grid coordinates in [-1, 1] (align_corners): output (u, v) reads input
        # (u * speed, (v + 1) / warp - 1); u runs over steps (width), v over rows (height)
        speed = self._uniform(n, *self.speed)
        warp = self._uniform(n, *self.vtlp)
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = speed
        theta[:, 1, 1] = 1.0 / warp
        theta[:, 1, 2] = 1.0 / warp - 1.0
        return theta

    def draw(self, shape: tuple[int, ...], mixup: bool = True) -> dict[str, torch.Tensor]:
        """One batch's random draws (CPU tensors), in a fixed order; `shape` is the raw
        batch's [n, rows, steps]. Resume exactness rests on this order never changing."""
        n, rows, steps = shape
        g, d = self.generator, {}
        if self.reverb.probability > 0:
            d["reverb_use"] = torch.rand(n, generator=g) < self.reverb.probability
            d["reverb_t60"] = self._uniform(n, *self.reverb.t60_s)
            d["reverb_drr"] = self._uniform(n, *self.reverb.drr_db)
        if self.noise_bank is not None and self.noise.probability > 0:
            d["noise_use"] = torch.rand(n, generator=g) < self.noise.probability
            d["noise_pick"] = torch.randint(0, len(self.noise_bank), (n,), generator=g)
            lo, hi = self.noise.snr_db or self.noise.volume
            key = "noise_snr" if self.noise.snr_db else "noise_volume"
            d[key] = lo + (hi - lo) * torch.rand(n, generator=g)
        if self.gain_db > 0:
            d["gain"] = self._uniform(n, -self.gain_db, self.gain_db) / 10.0
        if self.rotation_deg > 0:
            d["turn"] = self._turns(n)
        if self.speed != (1.0, 1.0) or self.vtlp != (1.0, 1.0):
            d["theta"] = self._warp_theta(n)
        if self.shift:
            d["shift"] = torch.randint(-self.shift, self.shift + 1, (n,), generator=g)
        if self.spec.time_masks:
            d["time_start"], d["time_stop"] = self._mask_spans(
                n, self.spec.time_masks, self.spec.time_width, steps)
        if self.spec.freq_masks:
            d["freq_start"], d["freq_stop"] = self._mask_spans(
                n, self.spec.freq_masks, self.spec.freq_width, rows)
        if mixup and self.mixup > 0:
            d.update(self._mix_draws(n))
        return d

    def _mix_draws(self, n: int) -> dict[str, torch.Tensor]:
        partner = torch.randperm(n, generator=self.generator)
        # Beta has no torch generator argument: numpy's, seeded from ours (resume-exact)
        seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
        lam = np.random.default_rng(seed).beta(self.mixup, self.mixup, n)
        return {"partner": partner, "lam": torch.from_numpy(lam).float()}

    @property
    def normalises_first(self) -> bool:
        """Whether no perturbation acts before normalisation (reverb, noise, gain, rotation,
        warp) and normalisation is with the train split's statistics: then the split can be
        normalised once, before training (`apply(..., normalised=True)`), with the same
        values, since normalisation is elementwise."""
        return self.scope == "train_split" and not (
            self.reverb.probability > 0
            or (self.noise_bank is not None and self.noise.probability > 0) or self.gain_db > 0
            or self.rotation_deg > 0 or self.speed != (1.0, 1.0) or self.vtlp != (1.0, 1.0))

    def apply(self, raw: torch.Tensor, d: dict[str, torch.Tensor], normalised: bool = False
              ) -> torch.Tensor:
        """A raw (log-mel) training batch and its draws (on its device) -> the augmented,
        normalised model input; `normalised`: the batch is normalised already (allowed when
        `normalises_first`)."""
        if normalised:
            return self._after_normalisation(raw, d)
        if "reverb_use" in d:
            raw = torch.where(d["reverb_use"][:, None, None], self._reverberate(raw, d), raw)
        if "noise_use" in d:
            ln10 = math.log(10.0)
            noise = self.noise_bank[d["noise_pick"]]
            power, noise_power = torch.exp(raw * ln10), torch.exp(noise * ln10)
            if "noise_snr" in d:  # v = P_clip / (P_noise 10^(snr/10)), mean over all bins
                volume = power.mean((1, 2)) / (noise_power.mean((1, 2))
                                               * torch.pow(10.0, d["noise_snr"] / 10.0))
            else:
                volume = d["noise_volume"]
            mixed = torch.log10(power + volume[:, None, None] * noise_power)
            raw = torch.where(d["noise_use"][:, None, None], mixed, raw)
        if "gain" in d:
            raw = raw + d["gain"].to(raw.dtype)[:, None, None]
        if "turn" in d:
            turn = d["turn"].to(raw.dtype)
            raw = raw.clone()
            for group in self.axis_groups:
                raw[:, group] = turn @ raw[:, group]
        if "theta" in d:
            plane = raw.float()[:, None]
            grid = nn.functional.affine_grid(d["theta"], list(plane.shape), align_corners=True)
            out = nn.functional.grid_sample(plane, grid, mode="bilinear",
                                            padding_mode="border", align_corners=True)
            raw = out[:, 0].to(raw.dtype)
        return self._after_normalisation(normalise_scoped(raw, self.mean, self.std, self.scope),
                                         d)

    def _reverberate(self, raw: torch.Tensor, d: dict[str, torch.Tensor]) -> torch.Tensor:
        """Every example of the batch reverberated (see the class docstring): the decaying
        tail as a per-example causal filter over frames, applied as one batched matmul
        with its [steps, steps] Toeplitz matrix (all terms >= 0, so the log stays finite)."""
        steps, tail = raw.shape[-1], self.tail
        k = torch.arange(1, tail + 1, device=raw.device, dtype=torch.float32)
        decay = torch.pow(10.0, -6.0 * k[None, :] * self.frame_seconds
                          / d["reverb_t60"][:, None])  # [n, tail]
        gain = torch.pow(10.0, -d["reverb_drr"] / 10.0) / decay.sum(1)
        taps = torch.cat([torch.ones_like(gain)[:, None], gain[:, None] * decay,
                          torch.zeros_like(gain)[:, None]], 1)  # [n, tail + 2], last: 0
        lag = (torch.arange(steps, device=raw.device)[None, :]
               - torch.arange(steps, device=raw.device)[:, None])  # [source, target]: t - s
        lag = torch.where((lag >= 0) & (lag <= tail), lag, tail + 1)
        toeplitz = taps[:, lag]  # [n, steps (source), steps (target)]
        # the features are log10(mel + log_offset): reverberate the mel power, not the floor
        power = (torch.exp(raw.float() * math.log(10.0)) - self.log_offset).clamp_min(0.0)
        return torch.log10(power @ toeplitz + self.log_offset).to(raw.dtype)

    def _after_normalisation(self, x: torch.Tensor, d: dict[str, torch.Tensor]
                             ) -> torch.Tensor:
        if "shift" in d:
            frames = x.shape[-1]
            index = (torch.arange(frames, device=x.device)[None, :] - d["shift"][:, None]) \
                % frames
            x = x.gather(2, index[:, None, :].expand_as(x))
        for axis, name in ((2, "time"), (1, "freq")):
            if f"{name}_start" not in d:
                continue
            pos = torch.arange(x.shape[axis], device=x.device)[None, :]
            for start, stop in zip(d[f"{name}_start"], d[f"{name}_stop"], strict=True):
                mask = (pos >= start[:, None]) & (pos < stop[:, None])
                x = x.masked_fill(mask[:, None, :] if axis == 2 else mask[:, :, None], 0.0)
        return x

    def apply_mix(self, x: torch.Tensor, labels: torch.Tensor, d: dict[str, torch.Tensor]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixup: each example with a random other of the batch, x' = l x + (1 - l) x[j],
        target l onehot(y) + (1 - l) onehot(y[j]), l ~ Beta(mixup, mixup) per example."""
        lam, partner = d["lam"], d["partner"]
        onehot = nn.functional.one_hot(labels, self.n_classes).float()
        mixed = lam[:, None, None] * x + (1 - lam[:, None, None]) * x[partner]
        target = lam[:, None] * onehot + (1 - lam[:, None]) * onehot[partner]
        return mixed.to(x.dtype), target

    def apply_batch(self, raw: torch.Tensor, labels: torch.Tensor,
                    d: dict[str, torch.Tensor], normalised: bool = False
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(model input, loss target): the target is `labels` itself, or soft targets
        [B, classes] (class probabilities, as CrossEntropyLoss accepts) under mixup."""
        x = self.apply(raw, d, normalised)
        if "lam" in d:
            return self.apply_mix(x, labels, d)
        return x, labels

    def _moved(self, d: dict[str, torch.Tensor], device: torch.device
               ) -> dict[str, torch.Tensor]:
        return {k: to_device(v, device) for k, v in d.items()}

    def __call__(self, raw: torch.Tensor) -> torch.Tensor:
        """Draw for and augment one raw batch (no mixup)."""
        return self.apply(raw, self._moved(self.draw(raw.shape, mixup=False), raw.device))

    def mix(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw for and mix one batch (mixup alone)."""
        return self.apply_mix(x, labels, self._moved(self._mix_draws(x.shape[0]), x.device))

    def batch(self, raw: torch.Tensor, labels: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw for and augment one raw batch, mixup included."""
        return self.apply_batch(raw, labels, self._moved(self.draw(raw.shape), raw.device))


def axis_groups(channels: list[str]) -> list[list[int]]:
    """Row indices of each complete x/y/z channel triple (`acc_x`, `acc_y`, `acc_z`)."""
    rows = {name: i for i, name in enumerate(channels)}
    stems = dict.fromkeys(name[:-2] for name in channels if name.endswith("_x"))
    return [[rows[f"{stem}_{a}"] for a in "xyz"] for stem in stems
            if all(f"{stem}_{a}" in rows for a in "xyz")]


def _autocast(device: torch.device, enabled: bool, cache: bool = True):
    return torch.autocast(device.type, dtype=torch.bfloat16,
                          enabled=enabled and device.type == "cuda", cache_enabled=cache)


class Batches:
    """Shuffled mini-batches of a split that lives on the training device.

    The tensors are moved once, and each batch is gathered there by index, so a GPU never
    waits for per-example collation or host copies. The order is exactly DataLoader's with
    `shuffle=True, generator=generator` (the same draws from the same generator: a base
    seed, the permutation, and the sampler's trailing empty permutation), so CPU runs, and
    resume states written by earlier versions, are unchanged.
    """

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, batch_size: int,
                 generator: torch.Generator, device: torch.device) -> None:
        self.features, self.labels = features.to(device), labels.to(device)
        self.batch_size, self.generator = batch_size, generator

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def indices(self) -> Iterator[torch.Tensor]:
        """Each batch's example indices (on the device), in DataLoader's order."""
        n = len(self.labels)
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)
        order = to_device(torch.randperm(n, generator=self.generator), self.features.device)
        for start in range(0, n, self.batch_size):
            yield order[start:start + self.batch_size]
        torch.randperm(n, generator=self.generator)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for index in self.indices():
            yield self.features[index], self.labels[index]


class TrainStep:
    """One optimisation step on a batch given by its indices into the on-device train split:
    gather, augment, forward, loss, backward, optimiser step, and the epoch's running loss
    and hit count (summed on the device: no host sync per step)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: nn.Module,
                 batches: Batches, augment: Augment, mixed_precision: bool = False) -> None:
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.batches, self.augment, self.mixed_precision = batches, augment, mixed_precision
        self.device = batches.features.device
        # nothing perturbs the raw features: normalise the split once, not every batch
        self.normalised = augment.normalises_first
        if self.normalised:
            batches.features = normalise_scoped(batches.features, augment.mean, augment.std)
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self.correct = torch.zeros((), dtype=torch.int64, device=self.device)

    def draw(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.augment.draw((len(index), *self.batches.features.shape[1:]))

    def body(self, index: torch.Tensor, draws: dict[str, torch.Tensor],
             graph_safe: bool = False) -> None:
        """The step after zero_grad, on device tensors; also what a CUDA graph records."""
        y = self.batches.labels[index]
        x, target = self.augment.apply_batch(self.batches.features[index], y, draws,
                                             self.normalised)
        with _autocast(self.device, self.mixed_precision, cache=not graph_safe):
            logits = self.model(x)
            loss = self.loss_fn(logits.float(), target)
        loss.backward()
        self.optimizer.step()
        self.loss_sum += loss.detach().double() * len(index)
        self.correct += (logits.argmax(1) == y).sum()

    def __call__(self, index: torch.Tensor, draws: dict[str, torch.Tensor]) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.body(index, {k: to_device(v, self.device) for k, v in draws.items()})


class CudaGraphStep:
    """The training step recorded once as a CUDA graph and replayed for every full batch.

    A small model's step is hundreds of short kernels; launched one by one from Python the
    GPU idles between them. Replayed, the step is one launch: the batch's indices and
    draws are copied into the graph's input buffers, asynchronously, and the host runs
    ahead. The first `warmup` full batches run eagerly on a side stream (lazy
    initialisation, the optimiser's state), as CUDA graph capture requires; a batch of
    another size (the last) runs eagerly; the graph is recorded again when the learning
    rate changes (the optimiser's kernels take it as a constant). The optimiser must be
    `capturable`.
    """

    def __init__(self, step: TrainStep, warmup: int = 3) -> None:
        self.step, self.warmup, self.warm = step, warmup, 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.lr: float | None = None
        self.index: torch.Tensor | None = None
        self.draws: dict[str, torch.Tensor] = {}
        self.side = torch.cuda.Stream(step.device)
        self.captures, self.failed = 0, False

    def __call__(self, index: torch.Tensor, draws: dict[str, torch.Tensor]) -> None:
        if len(index) != self.step.batches.batch_size or self.failed:
            self.step(index, draws)
            return
        if self.warm < self.warmup:
            self.side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.side):
                self.step(index, draws)
            torch.cuda.current_stream().wait_stream(self.side)
            self.warm += 1
            return
        lr = float(self.step.optimizer.param_groups[0]["lr"])
        if self.graph is None or lr != self.lr:
            if not self._capture(index, draws):
                self.step(index, draws)
                return
            self.lr = lr
        self.index.copy_(index, non_blocking=True)
        for k, v in draws.items():
            self.draws[k].copy_(v.pin_memory(), non_blocking=True)
        self.graph.replay()

    def _capture(self, index: torch.Tensor, draws: dict[str, torch.Tensor]) -> bool:
        """Record the step; on failure, say why and train on eagerly (False)."""
        device = self.step.device
        self.index = index.clone()
        self.draws = {k: torch.empty_like(v, device=device) for k, v in draws.items()}
        self.graph = None
        self.step.optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self.step.body(self.index, self.draws, graph_safe=True)
        except RuntimeError as err:
            log.warning("CUDA graph capture failed, training on without graphs: %s",
                        " ".join(str(err).split())[:300])
            self.failed = True
            return False
        self.graph = graph
        self.captures += 1
        return True


def train_one_epoch(step: TrainStep | CudaGraphStep, should_stop: Callable[[], bool] | None
                    = None) -> tuple[float, float, int]:
    """One pass over the train split, batch by batch through `step` (eager or a replayed
    CUDA graph). `should_stop` is asked after every batch; when it says so the pass ends
    early.

    Returns (mean loss, accuracy, examples seen)."""
    plain = step.step if isinstance(step, CudaGraphStep) else step
    plain.model.train()
    plain.loss_sum.zero_()
    plain.correct.zero_()
    seen = 0
    for index in plain.batches.indices():
        step(index, plain.draw(index))
        seen += len(index)
        if should_stop is not None and should_stop():
            break
    seen = max(seen, 1)
    return plain.loss_sum.item() / seen, plain.correct.item() / seen, seen


@torch.no_grad()
def evaluate(model: nn.Module, features: torch.Tensor, labels: torch.Tensor | None,
             device: torch.device, batch_size: int = 512, mixed_precision: bool = False
             ) -> tuple[float, float, torch.Tensor]:
    """Loss, accuracy and class probabilities [N, C] of `model` on normalised features."""
    model.eval()
    probs = []
    for start in range(0, len(features), batch_size):
        x = features[start:start + batch_size].to(device)
        with _autocast(device, mixed_precision):
            logits = model(x).float()
        probs.append(torch.softmax(logits, dim=1).cpu())
    p = torch.cat(probs) if probs else torch.zeros(0, 0)
    if labels is None or len(labels) == 0:
        return math.nan, math.nan, p
    loss = nn.functional.nll_loss(torch.log(p.clamp_min(1e-12)), labels).item()
    return loss, (p.argmax(1) == labels).float().mean().item(), p


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def receptive_field_info(model: nn.Module, input_shape: tuple[int, int],
                         feature_params: dict[str, Any]) -> dict[str, Any]:
    """The field in input steps and rows, and in ms where the modality has a time axis."""
    steps, rows = model.receptive_field(input_shape)
    info: dict[str, Any] = {"frames": int(steps), "bands": int(rows),
                            "bands_of": int(input_shape[0]), "ms": None}
    timing = get_modality(feature_params["modality"]).step_ms(feature_params)
    if timing is not None:
        step, span = timing
        info["ms"] = round((steps - 1) * step + span, 3)
    return info


# --------------------------------------------------------------------------- the job driver

@dataclass
class TrainingData:
    train: FeatureSplit  # raw features: augmentation works on them, then normalises
    x_valid: torch.Tensor  # normalised
    y_valid: torch.Tensor
    attrs: dict[str, Any]
    mean: torch.Tensor
    std: torch.Tensor

    @property
    def label_names(self) -> list[str]:
        return self.attrs["label_names"]

    @property
    def channels(self) -> list[str] | None:
        """Signal channel names (None for other modalities)."""
        names = self.attrs.get("channels")
        return json.loads(names) if isinstance(names, str) else names

    @property
    def input_shape(self) -> tuple[int, int]:
        return tuple(self.train.features.shape[1:])

    @property
    def frame_seconds(self) -> float | None:
        """Audio: the log-mels' frame hop in seconds; None for other modalities (a room
        reverberates sound, not sensor windows or images)."""
        if self.attrs.get("modality") != "audio":
            return None
        hop_ms, _ = get_modality("audio").step_ms(self.attrs)
        return hop_ms / 1000.0


def load_training_data(features_h5: str | os.PathLike,
                       normalisation: str = "train_split") -> TrainingData:
    """Raw training features, and validation features normalised as evaluation and predict
    will normalise (`normalisation`: train-split statistics or per utterance)."""
    attrs = read_attrs(Path(features_h5))
    if attrs.get("evaluation_only"):
        raise ValueError(f"{features_h5} is an evaluation-only test set (split: test): it has "
                         "no train split to train on; use it as a cross_evaluations test")
    mean = torch.as_tensor(attrs["norm_mean"], dtype=torch.float32)
    std = torch.as_tensor(attrs["norm_std"], dtype=torch.float32)
    train, valid = load_split(Path(features_h5), "train"), load_split(Path(features_h5), "valid")
    return TrainingData(train, normalise_scoped(valid.features, mean, std, normalisation),
                        valid.labels, attrs, mean, std)


@dataclass
class Trainer:
    """The parts of one training job, built in a fixed order (it fixes the RNG draws)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loss_fn: nn.Module
    loader: Batches
    augment: Augment
    device: torch.device
    step: TrainStep | CudaGraphStep

    def stateful(self) -> dict[str, Any]:
        return {"model": self.model, "optimizer": self.optimizer, "scheduler": self.scheduler}

    def generators(self) -> dict[str, torch.Generator]:
        return {"loader": self.loader.generator, "augment": self.augment.generator}


#: feature attributes a noise source must share with the dataset it is mixed into
NOISE_MATCH = ("modality", "sample_rate", "n_mels", "n_frames", "hop_length", "win_length",
               "n_fft", "f_min", "f_max", "log_offset")


def load_noise_bank(noise_h5: str | os.PathLike, label: str, attrs: dict[str, Any]
                    ) -> torch.Tensor:
    """The raw train-split examples of class `label` in another dataset's feature file
    (`training.noise.source`), refused unless its features are this dataset's kind."""
    theirs = read_attrs(Path(noise_h5))
    differ = [k for k in NOISE_MATCH if str(theirs.get(k)) != str(attrs.get(k))]
    if differ:
        raise ValueError(
            f"training.noise.source: {noise_h5} has other features than this dataset ("
            + ", ".join(f"{k} {theirs.get(k)} vs {attrs.get(k)}" for k in differ)
            + "); give the source variant this dataset's `features` settings")
    names = list(theirs["label_names"])
    if label not in names:
        raise ValueError(f"training.noise.source: {noise_h5} has no class {label!r} "
                         f"(training.noise.label); its classes: {names}")
    split = load_split(Path(noise_h5), "train")
    bank = split.features[split.labels == names.index(label)]
    if not len(bank):
        raise ValueError(f"training.noise.source: {noise_h5} has no train example of "
                         f"{label!r}")
    return bank


def build_trainer(data: TrainingData, model_name: str, model_params: dict[str, Any],
                  ts: TrainSettings, seed: int, device: torch.device,
                  cuda_graphs: bool = True, noise_bank: torch.Tensor | None = None
                  ) -> Trainer:
    """`cuda_graphs`: on a CUDA device, replay each full batch's step as a CUDA graph.
    `noise_bank`: raw noise examples from another dataset (else this one's noise class)."""
    graphs = cuda_graphs and device.type == "cuda"
    loader_gen = seed_everything(seed)
    names = data.label_names
    if noise_bank is None and ts.noise.label in names:
        noise_bank = data.train.features[data.train.labels == names.index(ts.noise.label)]
    augment = Augment(ts, torch.Generator().manual_seed(seed + 1_000_003), data.mean, data.std,
                      noise_bank, n_classes=len(names), channels=data.channels,
                      frame_seconds=data.frame_seconds,
                      log_offset=float(data.attrs.get("log_offset", 0.0))).to(device)
    model = build_model(model_name, model_params, data.input_shape, len(names)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=ts.learning_rate,
                                 weight_decay=ts.weight_decay, capturable=graphs)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=ts.lr_drop_epoch,
                                                gamma=ts.lr_drop_factor)
    weights = None
    if ts.class_weights:
        counts = torch.bincount(data.train.labels, minlength=len(names)).float()
        weights = (counts.sum() / (len(names) * counts.clamp_min(1))).to(device)
    loader = Batches(data.train.features, data.train.labels, ts.batch_size, loader_gen, device)
    # with mixup's soft targets and class weights, CrossEntropyLoss takes the mean over the
    # batch of sum_c w_c p_c (-log q_c); the weights average 1 over the train split
    loss_fn = nn.CrossEntropyLoss(weight=weights)
    step = TrainStep(model, optimizer, loss_fn, loader, augment, ts.mixed_precision)
    return Trainer(model, optimizer, scheduler, loss_fn, loader, augment, device,
                   CudaGraphStep(step) if graphs else step)


def run_epoch(trainer: Trainer, data: TrainingData, ts: TrainSettings, epoch: int,
              should_stop: Callable[[], bool]) -> dict[str, float] | None:
    """Train and validate one epoch; None when a stop request cut it short."""
    t0 = time.perf_counter()
    lr = trainer.optimizer.param_groups[0]["lr"]
    tr_loss, tr_acc, seen = train_one_epoch(trainer.step, should_stop)
    if should_stop():
        return None
    va_loss, va_acc, _ = evaluate(trainer.model, data.x_valid, data.y_valid, trainer.device,
                                  mixed_precision=ts.mixed_precision)
    trainer.scheduler.step()
    seconds = time.perf_counter() - t0
    return {"epoch": epoch, "train_loss": tr_loss, "train_accuracy": tr_acc,
            "valid_loss": va_loss, "valid_accuracy": va_acc, "learning_rate": lr,
            "seconds": seconds, "samples_per_second": seen / seconds}


def record_epoch(state: ResumeState, trainer: Trainer, row: dict[str, float],
                 epochs: int, selection: str = "accuracy") -> None:
    state.epoch = int(row["epoch"])
    state.history.append(row)
    if better_epoch(row, state.best, selection):
        state.best = {"valid_accuracy": row["valid_accuracy"], "epoch": state.epoch,
                      "valid_loss": row["valid_loss"],
                      "state_dict": {k: v.detach().cpu().clone()
                                     for k, v in trainer.model.state_dict().items()},
                      "optimizer": copy.deepcopy(trainer.optimizer.state_dict())}
    recent = state.history[-3:]
    left = sum(h["seconds"] for h in recent) / len(recent) * (epochs - state.epoch)
    log.info("epoch %d/%d  train loss %.4f acc %.4f  valid loss %.4f acc %.4f  lr %.1e  "
             "%.0f samples/s  %.1fs  ~%.0fs left", state.epoch, epochs, row["train_loss"],
             row["train_accuracy"], row["valid_loss"], row["valid_accuracy"],
             row["learning_rate"], row["samples_per_second"], row["seconds"], left)


def plateaued(state: ResumeState, patience: int) -> bool:
    """Early stopping on validation alone: `patience` epochs without a better validation
    epoch than the best so far (by `selection`; 0: never; the lecture's fixed schedule)."""
    if not patience or not state.history:
        return False
    stale = state.epoch - int(state.best["epoch"])
    if stale >= patience:
        log.info("validation accuracy has not improved for %d epochs (best %.4f at epoch %d): "
                 "stopping early", stale, state.best["valid_accuracy"], state.best["epoch"])
        return True
    return False


def assemble_checkpoint(state: ResumeState, trainer: Trainer, data: TrainingData,
                        model_name: str, model_params: dict[str, Any], ts: TrainSettings,
                        seed: int, dataset: str) -> dict[str, Any]:
    feature_params = describing_attrs(data.attrs)
    return {
        "format": CHECKPOINT_FORMAT,
        "model": model_name,
        "model_config": json.loads(json.dumps(dataclasses.asdict(
            make_config(model_name, model_params)))),
        "state_dict": state.best["state_dict"],
        "optimizer": state.best["optimizer"],
        "label_names": list(data.label_names),
        "input_shape": list(data.input_shape),
        "feature_params": feature_params,
        "normalization": {"mean": data.mean, "std": data.std, "scope": ts.normalisation},
        "epoch": int(state.best["epoch"]),
        "epochs_trained": len(state.history),
        "stopped_early": len(state.history) < ts.epochs,
        "valid_accuracy": float(state.best["valid_accuracy"]),
        "parameters": count_parameters(trainer.model),
        "receptive_field": receptive_field_info(trainer.model, data.input_shape,
                                                feature_params),
        "train_seconds": float(sum(h["seconds"] for h in state.history)),
        "device": str(trainer.device),
        "cuda_graphs": isinstance(trainer.step, CudaGraphStep) and trainer.step.captures > 0
        and not trainer.step.failed,
        "seed": int(seed),
        "dataset": dataset,
        "training": json.loads(json.dumps(dataclasses.asdict(ts))),
    }


class Interrupted(JobStopped):
    """A training job stopped by SIGINT/SIGTERM; its resume state is on disk."""


@contextlib.contextmanager
def stop_requests() -> Iterator[Callable[[], int]]:
    """While active, SIGINT and SIGTERM only record a request (the job stops after the
    current batch); yields a function that returns the signal number, or 0."""
    received = {"signal": 0}

    def handler(signum, frame):
        received["signal"] = signum

    try:
        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: leave signals alone
        yield lambda: 0
        return
    try:
        yield lambda: received["signal"]
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def train_model(features_h5: str | os.PathLike, model_name: str, settings: dict[str, Any],
                seed: int, model_out: str | os.PathLike, history_out: str | os.PathLike,
                device: str = "auto", threads: int = 1,
                resume_every_s: float = 10.0, cuda_graphs: bool = True,
                noise_features: str | os.PathLike | None = None) -> dict[str, Any]:
    """Train one model on one dataset with one seed; resumable after a kill or a signal.

    The resume state is written after an epoch once `resume_every_s` seconds have passed
    since the last write (every epoch for slow models; fast ones would spend more time
    writing it than training), and always after the last epoch.

    After every epoch the full state goes to ``resume.pt`` beside `model_out`; a re-run with
    the same inputs continues from it and ends exactly as an uninterrupted run would.
    """
    torch.set_num_threads(max(1, threads))
    ts = TrainSettings.from_dict(settings["training"])
    model_params = settings["model_params"].get(model_name, {})
    make_config(model_name, model_params)  # fail early on unknown parameters
    data = load_training_data(features_h5, ts.normalisation)
    if ts.noise.source and noise_features is None:
        raise ValueError(f"training.noise.source is {ts.noise.source!r}: pass its feature "
                         "file (train_model(noise_features=...); the workflow does)")
    bank = (load_noise_bank(noise_features, ts.noise.label, data.attrs)
            if ts.noise.source else None)
    trainer = build_trainer(data, model_name, model_params, ts, seed, choose_device(device),
                            cuda_graphs, bank)
    resume_path = Path(model_out).with_name("resume.pt")
    run_id = fingerprint(model_name, model_params, dataclasses.asdict(ts), seed,
                         {k: str(v) for k, v in data.attrs.items()}, len(data.train.labels))
    state = ResumeState.load(resume_path, run_id)
    if state is None:
        state = ResumeState(run_id)
    else:
        state.restore(trainer.stateful(), trainer.generators())
        for group in trainer.optimizer.param_groups:  # the state may come from another device
            group["capturable"] = isinstance(trainer.step, CudaGraphStep)
        log.info("resuming %s after epoch %d of %d (%s)", model_name, state.epoch, ts.epochs,
                 resume_path)
    log.info("%s: %d parameters, input %s, %d classes, device %s, %d train / %d valid",
             model_name, count_parameters(trainer.model), data.input_shape,
             len(data.label_names), trainer.device, len(data.train.labels), len(data.y_valid))
    saved, saved_at = state.epoch, time.monotonic()
    with stop_requests() as stopped:
        for epoch in range(state.epoch + 1, ts.epochs + 1):
            if plateaued(state, ts.patience):
                break
            row = run_epoch(trainer, data, ts, epoch, stopped)
            if row is None:
                raise Interrupted(_interrupted(stopped(), saved, resume_path), 128 + stopped())
            record_epoch(state, trainer, row, ts.epochs, ts.selection)
            if time.monotonic() - saved_at >= resume_every_s:
                state.capture(trainer.stateful(), trainer.generators())
                state.save(resume_path)
                saved, saved_at = state.epoch, time.monotonic()
    if saved != state.epoch or not resume_path.exists():
        state.capture(trainer.stateful(), trainer.generators())
        state.save(resume_path)
    checkpoint = assemble_checkpoint(state, trainer, data, model_name, model_params, ts, seed,
                                     settings.get("name", data.attrs.get("dataset", "")))
    save_checkpoint(model_out, checkpoint)
    write_table(history_out, pd.DataFrame(state.history))
    log.info("best epoch %d, valid accuracy %.4f, %.1f s training", checkpoint["epoch"],
             checkpoint["valid_accuracy"], checkpoint["train_seconds"])
    return checkpoint


def _interrupted(signum: int, epoch: int, resume_path: Path) -> str:
    """The one line a stopped job leaves; its exit status is 128 + the signal, as a shell's."""
    name = signal.Signals(signum).name
    kept = (f"resume state after epoch {epoch} kept in {resume_path}" if epoch
            else "no resume state had been written yet, nothing to resume")
    log.warning("stopped by %s: %s; run the workflow again to continue", name, kept)
    return f"training stopped by {name}: {kept}; run the workflow again to continue"
