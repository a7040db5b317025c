"""Training: plain functions (seed, device, one epoch, evaluate) and a resumable job driver."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pipeline.features import feature_params_from_attrs, load_split, read_attrs
from pipeline.io import atomic_path, write_table
from pipeline.models import build_model, count_parameters, make_config

log = logging.getLogger(__name__)
CHECKPOINT_FORMAT = "spoken-digits-model/1"


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 25
    batch_size: int = 128
    learning_rate: float = 3e-4
    lr_drop_epoch: int = 20
    lr_drop_factor: float = 0.1
    weight_decay: float = 0.0
    class_weights: bool = False
    mixed_precision: bool = True
    spec_augment: dict = dataclasses.field(default_factory=dict)
    time_shift_frames: int = 0
    noise: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainSettings:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


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


def normalise(features: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (features - mean[None, :, None]) / std[None, :, None]


class Augment:
    """Training-only perturbations from their own seeded generator; never used on evaluation.

    Noise is mixed in the power domain of the raw log-mels, log10(10**x + v * 10**n), with n
    a training example of the noise class (e.g. Speech Commands' `silence`, cut from the
    train-reserved background recordings); time shift and SpecAugment masks act on the
    normalised features (a mask sets a region to the train mean, 0).
    """

    def __init__(self, settings: TrainSettings, generator: torch.Generator,
                 mean: torch.Tensor, std: torch.Tensor,
                 noise_bank: torch.Tensor | None = None) -> None:
        spec = settings.spec_augment or {}
        self.time_masks = int(spec.get("time_masks", 0))
        self.time_width = int(spec.get("time_width", 10))
        self.freq_masks = int(spec.get("freq_masks", 0))
        self.freq_width = int(spec.get("freq_width", 5))
        self.shift = int(settings.time_shift_frames)
        noise = settings.noise or {}
        self.noise_probability = float(noise.get("probability", 0.0))
        self.noise_volume = tuple(noise.get("volume", (0.0, 0.1)))
        self.noise_bank = noise_bank if noise_bank is not None and len(noise_bank) else None
        self.mean, self.std = mean, std
        self.generator = generator

    def to(self, device: torch.device) -> Augment:
        """Keep the constants beside the batches (random draws stay on the CPU generator)."""
        self.mean, self.std = self.mean.to(device), self.std.to(device)
        if self.noise_bank is not None:
            self.noise_bank = self.noise_bank.to(device)
        return self

    def _masks(self, x: torch.Tensor, n: int, width: int, axis: int) -> torch.Tensor:
        size = x.shape[axis]
        for _ in range(n):
            w = torch.randint(0, width + 1, (x.shape[0],), generator=self.generator)
            start = (torch.rand(x.shape[0], generator=self.generator) * (size - w + 1)).long()
            pos = torch.arange(size)[None, :]
            mask = ((pos >= start[:, None]) & (pos < (start + w)[:, None])).to(x.device)
            x = x.masked_fill(mask[:, None, :] if axis == 2 else mask[:, :, None], 0.0)
        return x

    def _mix_noise(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        use = torch.rand(n, generator=self.generator) < self.noise_probability
        pick = torch.randint(0, len(self.noise_bank), (n,), generator=self.generator)
        lo, hi = self.noise_volume
        volume = lo + (hi - lo) * torch.rand(n, generator=self.generator)
        rows = use.nonzero().flatten()
        if len(rows) == 0:
            return x
        ln10 = math.log(10.0)
        rows_dev = rows.to(x.device)
        noise = self.noise_bank[pick[rows].to(x.device)]
        gain = volume[rows].to(x.device)[:, None, None]
        mixed = torch.log10(torch.exp(x[rows_dev] * ln10) + gain * torch.exp(noise * ln10))
        x = x.clone()
        x[rows_dev] = mixed
        return x

    def __call__(self, raw: torch.Tensor) -> torch.Tensor:
        """A raw (log-mel) training batch -> the augmented, normalised model input."""
        if self.noise_bank is not None and self.noise_probability > 0:
            raw = self._mix_noise(raw)
        x = normalise(raw, self.mean, self.std)
        if self.shift:
            shifts = torch.randint(-self.shift, self.shift + 1, (x.shape[0],),
                                   generator=self.generator).to(x.device)
            frames = x.shape[-1]
            index = (torch.arange(frames, device=x.device)[None, :] - shifts[:, None]) % frames
            x = x.gather(2, index[:, None, :].expand_as(x))
        x = self._masks(x, self.time_masks, self.time_width, axis=2)
        return self._masks(x, self.freq_masks, self.freq_width, axis=1)


def _autocast(device: torch.device, enabled: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16,
                          enabled=enabled and device.type == "cuda")


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    loss_fn: nn.Module, device: torch.device, prepare=None,
                    mixed_precision: bool = False) -> tuple[float, float, int]:
    """One pass over `loader`; `prepare` maps a raw batch to model input (augment, normalise).

    Returns (mean loss, accuracy, examples)."""
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if prepare is not None:
            x = prepare(x)  # on the device: augmentation must not bottleneck a GPU
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, mixed_precision):
            logits = model(x)
            loss = loss_fn(logits.float(), y)
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
    return total_loss / seen, correct / seen, seen


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


def _plain(config) -> dict[str, Any]:
    """A dataclass as JSON-like values (tuples -> lists), safe for weights_only loading."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def receptive_field_info(model: nn.Module, input_shape: tuple[int, int],
                         feature_params: dict[str, Any]) -> dict[str, Any]:
    frames, bands = model.receptive_field(input_shape)
    info: dict[str, Any] = {"frames": int(frames), "bands": int(bands)}
    if feature_params.get("modality") == "audio":
        hop, win = float(feature_params["hop_ms"]), float(feature_params["window_ms"])
        info["ms"] = round((frames - 1) * hop + win, 3)
        info["bands_of"] = int(feature_params["n_mels"])
    else:
        info["ms"] = None
        info["bands_of"] = int(input_shape[0])
    return info


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu"
                    ) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from a self-describing checkpoint (weights_only: no code is run)."""
    ckpt = torch.load(path, map_location=device, weights_only=True)
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a checkpoint of this pipeline (format "
                         f"{ckpt.get('format')!r})")
    model = build_model(ckpt["model"], ckpt["model_config"], tuple(ckpt["input_shape"]),
                        len(ckpt["label_names"]))
    model.load_state_dict(ckpt["state_dict"])
    model.to(device).eval()
    return model, ckpt


def train_model(features_h5: str | os.PathLike, model_name: str, settings: dict[str, Any],
                seed: int, model_out: str | os.PathLike, history_out: str | os.PathLike,
                device: str = "auto", threads: int = 1) -> dict[str, Any]:
    """Train one model on one dataset with one seed; resumable after a kill.

    After every epoch the full state (model, optimizer, scheduler, every RNG, history, best
    weights) goes to ``resume.pt`` beside `model_out`; a re-run with the same inputs picks it
    up and ends exactly as an uninterrupted run would.
    """
    model_out, history_out = Path(model_out), Path(history_out)
    resume_path = model_out.with_name("resume.pt")
    torch.set_num_threads(max(1, threads))
    ts = TrainSettings.from_dict(settings.get("training", {}))
    model_params = settings.get("model_params", {}).get(model_name, {})
    make_config(model_name, model_params)  # fail early on unknown parameters

    attrs = read_attrs(Path(features_h5))
    label_names = attrs["label_names"]
    mean = torch.as_tensor(attrs["norm_mean"], dtype=torch.float32)
    std = torch.as_tensor(attrs["norm_std"], dtype=torch.float32)
    train, valid = load_split(Path(features_h5), "train"), load_split(Path(features_h5), "valid")
    x_valid = normalise(valid.features, mean, std)
    input_shape = tuple(train.features.shape[1:])
    feature_params = feature_params_from_attrs(attrs)

    dev = choose_device(device)
    loader_gen = seed_everything(seed)
    noise_label = (ts.noise or {}).get("label", "silence")
    noise_bank = None
    if noise_label in label_names:
        noise_bank = train.features[train.labels == label_names.index(noise_label)]
    augment = Augment(ts, torch.Generator().manual_seed(seed + 1_000_003), mean, std,
                      noise_bank).to(dev)
    model = build_model(model_name, model_params, input_shape, len(label_names)).to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=ts.learning_rate,
                                 weight_decay=ts.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=ts.lr_drop_epoch,
                                                gamma=ts.lr_drop_factor)
    weights = None
    if ts.class_weights:
        counts = torch.bincount(train.labels, minlength=len(label_names)).float()
        weights = (counts.sum() / (len(label_names) * counts.clamp_min(1))).to(dev)
    loss_fn = nn.CrossEntropyLoss(weight=weights)
    loader = DataLoader(TensorDataset(train.features, train.labels), batch_size=ts.batch_size,
                        shuffle=True, generator=loader_gen, num_workers=0)
    run_id = fingerprint(model_name, model_params, dataclasses.asdict(ts), seed,
                         {k: str(v) for k, v in attrs.items()}, len(train.labels))

    history: list[dict[str, float]] = []
    best: dict[str, Any] = {"valid_accuracy": -1.0}
    start_epoch = 1
    if resume_path.exists():
        state = torch.load(resume_path, map_location="cpu", weights_only=True)
        if state.get("run_id") == run_id:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            loader_gen.set_state(state["loader_rng"])
            augment.generator.set_state(state["augment_rng"])
            torch.set_rng_state(state["torch_rng"])
            if dev.type == "cuda" and "cuda_rng" in state:
                torch.cuda.set_rng_state(state["cuda_rng"])
            random.setstate(_tuple_state(state["python_rng"]))
            np.random.set_state(_numpy_state(state["numpy_rng"]))
            history, best = state["history"], state["best"]
            start_epoch = state["epoch"] + 1
            log.info("resuming %s from epoch %d (%s)", model_name, start_epoch, resume_path)
        else:
            log.warning("ignoring %s: it belongs to other inputs or settings", resume_path)

    n_params = count_parameters(model)
    log.info("%s: %d parameters, input %s, %d classes, device %s, %d train / %d valid",
             model_name, n_params, input_shape, len(label_names), dev, len(train.labels),
             len(x_valid))
    for epoch in range(start_epoch, ts.epochs + 1):
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        tr_loss, tr_acc, seen = train_one_epoch(model, loader, optimizer, loss_fn, dev, augment,
                                                ts.mixed_precision)
        va_loss, va_acc, _ = evaluate(model, x_valid, valid.labels, dev,
                                      mixed_precision=ts.mixed_precision)
        scheduler.step()
        seconds = time.perf_counter() - t0
        history.append({"epoch": epoch, "train_loss": tr_loss, "train_accuracy": tr_acc,
                        "valid_loss": va_loss, "valid_accuracy": va_acc, "learning_rate": lr,
                        "seconds": seconds, "samples_per_second": seen / seconds})
        if va_acc > best["valid_accuracy"]:
            best = {"valid_accuracy": va_acc, "epoch": epoch,
                    "state_dict": {k: v.detach().cpu().clone()
                                   for k, v in model.state_dict().items()},
                    "optimizer": copy.deepcopy(optimizer.state_dict())}
        left = sum(h["seconds"] for h in history[-3:]) / min(3, len(history))
        log.info("epoch %d/%d  train loss %.4f acc %.4f  valid loss %.4f acc %.4f  lr %.1e  "
                 "%.0f samples/s  %.1fs  ~%.0fs left", epoch, ts.epochs, tr_loss, tr_acc,
                 va_loss, va_acc, lr, seen / seconds, seconds, left * (ts.epochs - epoch))
        state = {"run_id": run_id, "epoch": epoch, "model": model.state_dict(),
                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "loader_rng": loader_gen.get_state(), "augment_rng": augment.generator.get_state(),
                 "torch_rng": torch.get_rng_state(), "python_rng": _list_state(random.getstate()),
                 "numpy_rng": _list_state(np.random.get_state()), "history": history,
                 "best": best}
        if dev.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state()
        with atomic_path(resume_path) as tmp:
            torch.save(state, tmp)

    train_seconds = float(sum(h["seconds"] for h in history))
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "model": model_name,
        "model_config": _plain(make_config(model_name, model_params)),
        "state_dict": best["state_dict"],
        "optimizer": best["optimizer"],
        "label_names": list(label_names),
        "input_shape": list(input_shape),
        "feature_params": feature_params,
        "normalization": {"mean": mean, "std": std},
        "epoch": int(best["epoch"]),
        "epochs_trained": len(history),
        "valid_accuracy": float(best["valid_accuracy"]),
        "parameters": n_params,
        "receptive_field": receptive_field_info(model, input_shape, feature_params),
        "train_seconds": train_seconds,
        "device": str(dev),
        "seed": int(seed),
        "dataset": settings.get("name", attrs.get("dataset", "")),
        "training": dataclasses.asdict(ts),
    }
    with atomic_path(model_out) as tmp:
        torch.save(checkpoint, tmp)
    write_table(history_out, pd.DataFrame(history))
    resume_path.unlink(missing_ok=True)
    log.info("best epoch %d, valid accuracy %.4f, %.1f s training", best["epoch"],
             best["valid_accuracy"], train_seconds)
    return checkpoint


def _list_state(state):
    """RNG states as lists/ints/arrays-as-tensors only, so weights_only loading accepts them."""
    if isinstance(state, tuple | list):
        return [_list_state(s) for s in state]
    if isinstance(state, np.ndarray):
        return torch.from_numpy(state.astype(np.int64))
    return state


def _tuple_state(state):
    return (state[0], tuple(state[1]), state[2])


def _numpy_state(state):
    return (state[0], state[1].numpy().astype(np.uint32), state[2], state[3], state[4])
