"""The model checkpoint format: what `model.pt` holds, how it is saved, loaded and fed.

A checkpoint describes itself, so evaluation and `predict` need nothing but the file:

    format          CHECKPOINT_FORMAT
    model           family name (a key of pipeline.models.REGISTRY)
    model_config    the family's config as plain values
    state_dict      the best epoch's weights (by validation accuracy)
    optimizer       the optimizer state at that epoch
    label_names     class names in label order
    input_shape     [rows, steps] of one model input (bands x frames, channels x samples, ...)
    feature_params  how the input was made (the feature cache's attributes)
    normalization   {"mean": [rows], "std": [rows]} over the train split, and "scope":
                    "train_split" (those statistics; the default when absent) or "utterance"
                    (each clip by its own per-row mean and std over time)
    epoch, epochs_trained, valid_accuracy, parameters, receptive_field, train_seconds,
    device, seed, dataset, training (the TrainSettings used)

Everything is tensors, numbers, strings, lists and dicts, so `torch.load(weights_only=True)`
reads it without running code.
"""

from __future__ import annotations

import os
import pickle
import warnings
from typing import Any

import torch
from torch import nn

from pipeline.io import atomic_path
from pipeline.models import build_model

CHECKPOINT_FORMAT = "spoken-digits-model/1"


class CheckpointError(ValueError):
    """A file that is not a readable checkpoint of this pipeline; the message says why."""


#: How features are standardised (`training.normalisation`, checkpoint normalization.scope).
NORMALISATION_SCOPES = ("train_split", "utterance")


def normalise(features: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Per-row standardisation [N, rows, steps] with the train split's statistics."""
    return (features - mean[None, :, None]) / std[None, :, None]


def normalise_utterance(features: torch.Tensor) -> torch.Tensor:
    """Each example [rows, steps] by its own per-row mean and std over the steps (cepstral
    mean and variance normalisation per clip); a row's std is floored at 1 % of the clip's
    largest, as the train-split statistics are, so flat rows are not blown up."""
    features = features.float()
    mean = features.mean(dim=-1, keepdim=True)
    std = features.std(dim=-1, keepdim=True, unbiased=False)
    floor = (0.01 * std.amax(dim=-2, keepdim=True)).clamp_min(1e-6)
    return (features - mean) / torch.maximum(std, floor)


def normalise_scoped(features: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                     scope: str = "train_split") -> torch.Tensor:
    """Standardise raw features [N, rows, steps] as `scope` says: with the train split's
    per-row statistics, or each clip by its own (`utterance`; mean and std unused)."""
    if scope == "utterance":
        return normalise_utterance(features)
    if scope != "train_split":
        raise ValueError(f"unknown normalisation scope {scope!r}; known: "
                         f"{list(NORMALISATION_SCOPES)}")
    return normalise(features, mean, std)


def save_checkpoint(path: str | os.PathLike, checkpoint: dict[str, Any]) -> None:
    if checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"refusing to save a checkpoint without format {CHECKPOINT_FORMAT!r}")
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


def _first_sentence(err: BaseException) -> str:
    """A one-line reason from an exception, without advice to load unsafely."""
    text = " ".join(str(err).split())
    if not text:
        return type(err).__name__
    for stop in (". ", "; "):
        if stop in text:
            text = text[:text.index(stop)]
    if "weights_only" in text:
        return type(err).__name__
    return text[:200]


def _kind_of_file(path: str | os.PathLike) -> str:
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head.startswith(b"PK"):
        return "zip"
    if head[:1] == b"\x80":
        return "pickle"
    return "other"


def read_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu"
                    ) -> dict[str, Any]:
    """The checkpoint's contents, or CheckpointError with one line saying what is wrong.

    Loading is weights_only: a file that needs arbitrary code to load is refused, never
    retried unsafely, and PyTorch's advice to do so is never passed on."""
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such file")
    if os.path.isdir(path):
        raise CheckpointError(f"{path}: is a folder, not a model.pt")
    try:
        if os.path.getsize(path) == 0:
            raise CheckpointError(f"{path}: the file is empty (0 bytes)")
        kind = _kind_of_file(path)
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read it ({_first_sentence(err)})") from None
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": noise on stderr
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch.load fails in many ways on a bad file
        if kind != "other" and isinstance(err, pickle.UnpicklingError):
            raise CheckpointError(f"{path}: not a checkpoint of this pipeline (it holds "
                                  "objects that safe loading refuses)") from None
        if kind == "zip":
            why = f"truncated or corrupted: {_first_sentence(err)}"
        elif kind == "pickle":
            why = f"a damaged or foreign pickle: {_first_sentence(err)}"
        else:
            why = "neither a zip archive nor a pickle, as torch.save writes"
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({why})") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: not a checkpoint of this pipeline (it holds a "
                              f"{type(ckpt).__name__}, not a dict with format "
                              f"{CHECKPOINT_FORMAT!r})")
    if "format" not in ckpt:
        keys = ", ".join(map(str, list(ckpt)[:4])) + (", ..." if len(ckpt) > 4 else "")
        raise CheckpointError(f"{path}: not a checkpoint of this pipeline (a dict without a "
                              f"'format' entry; keys: {keys or 'none'})")
    if ckpt["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: a checkpoint of another format ({ckpt['format']!r}; "
                              f"this pipeline reads {CHECKPOINT_FORMAT!r})")
    # loaded on the CPU, so that an unusable device is not mistaken for a broken file
    return ckpt if torch.device(device).type == "cpu" else _to_device(ckpt, device)


def _to_device(value: Any, device: str | torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_device(v, device) for v in value)
    return value


#: What load_checkpoint needs to rebuild the model.
MODEL_KEYS = ("model", "model_config", "state_dict", "label_names", "input_shape")


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu"
                    ) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model of a self-describing checkpoint, in eval mode on `device`.

    Every failure is a CheckpointError with a one-line message."""
    ckpt = read_checkpoint(path, device)
    missing = [k for k in MODEL_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}")
    try:
        model = build_model(ckpt["model"], ckpt["model_config"], tuple(ckpt["input_shape"]),
                            len(ckpt["label_names"]))
        model.load_state_dict(ckpt["state_dict"])
    except (KeyError, ValueError, RuntimeError, TypeError, AttributeError) as err:
        reason = " ".join(str(err).split())[:300] or type(err).__name__
        raise CheckpointError(f"{path}: checkpoint does not match its model ({reason})"
                              ) from None
    model.to(device).eval()
    return model, ckpt


def normalise_with(ckpt: dict[str, Any], features: torch.Tensor) -> torch.Tensor:
    """Standardise raw features as the checkpoint's model was trained (training, validation,
    evaluation and predict alike): the train split's statistics, or per utterance."""
    norm = ckpt["normalization"]
    scope = norm.get("scope", "train_split")
    if scope not in NORMALISATION_SCOPES:
        raise CheckpointError(f"checkpoint normalization scope {scope!r} is unknown; known: "
                              f"{list(NORMALISATION_SCOPES)}")
    # a checkpoint loaded onto a GPU has its statistics there; the features may not be
    mean, std = (norm[k].float().to(features.device) for k in ("mean", "std"))
    return normalise_scoped(features, mean, std, scope)
