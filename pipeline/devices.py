"""One GPU per training job on a machine with several, without help from the scheduler.

Snakemake's `gpu` resource limits how many GPU jobs run at once, but it does not tell a job
*which* GPU to use, so every job would land on GPU 0. `gpu_slot` closes that gap: a job
claims a free GPU by taking an exclusive `flock` on that GPU's lock file (held as long as the
job runs, released by the kernel even if the job is killed) and points CUDA_VISIBLE_DEVICES at
it. Under SLURM (SLURM_JOB_ID set) the scheduler has already chosen the job's GPUs and set
CUDA_VISIBLE_DEVICES, so nothing is claimed or changed; with no GPU the job runs on the CPU.

The lock folder is local to the machine (a temporary folder per user, or
$PIPELINE_GPU_LOCK_DIR), so concurrent workflows of one user on one machine share the GPUs
fairly too. This module never imports snakemake; torch only to count GPUs.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_DIR_ENV = "PIPELINE_GPU_LOCK_DIR"


@dataclass(frozen=True)
class Slot:
    """Where a job runs: `device` for torch, `gpu` the GPU id it holds (None: none claimed)."""

    device: str
    gpu: str | None = None
    lock_file: Path | None = None
    reason: str = ""


def default_lock_dir() -> Path:
    if os.environ.get(LOCK_DIR_ENV):
        return Path(os.environ[LOCK_DIR_ENV])
    return Path(tempfile.gettempdir()) / f"spoken-digits-gpu-locks-{os.getuid()}"


def parse_visible(value: str | None) -> list[str] | None:
    """CUDA_VISIBLE_DEVICES as a list of ids; None when the variable is unset."""
    if value is None:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


def visible_gpus(environ: MutableMapping[str, str] = os.environ) -> list[str]:
    """The ids of the GPUs this process may use (CUDA_VISIBLE_DEVICES order, else 0..n-1).

    torch.cuda.device_count() asks NVML, so CUDA is not initialised and CUDA_VISIBLE_DEVICES
    can still be narrowed afterwards.
    """
    import torch

    count = torch.cuda.device_count()
    listed = parse_visible(environ.get("CUDA_VISIBLE_DEVICES"))
    return (listed if listed is not None else [str(i) for i in range(count)])[:count]


def under_scheduler(environ: MutableMapping[str, str] = os.environ) -> bool:
    """A batch scheduler (SLURM) placed this job and owns CUDA_VISIBLE_DEVICES."""
    return "SLURM_JOB_ID" in environ


def _cuda_initialised() -> bool:
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_initialized())


def _other_accelerator() -> str:
    """Without a CUDA GPU, `auto` means another accelerator (Apple's MPS) or else the CPU."""
    import torch

    if torch.accelerator.is_available():
        return torch.accelerator.current_accelerator().type
    return "cpu"


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _claim_one(paths: Sequence[Path]) -> tuple[int, int] | None:
    """Lock the first free one of `paths`: (its index, the open descriptor), or None."""
    for index, path in enumerate(paths):
        fd = _try_lock(path)
        if fd is not None:
            return index, fd
    return None


def _holders(paths: Sequence[Path]) -> str:
    def pid(path: Path) -> str:
        with contextlib.suppress(OSError):
            return path.read_text().strip() or "?"
        return "?"

    return ", ".join(f"{p.stem} (pid {pid(p)})" for p in paths)


@contextlib.contextmanager
def gpu_slot(request: str = "auto", *, gpus: Sequence[str] | None = None,
             lock_dir: str | os.PathLike | None = None,
             environ: MutableMapping[str, str] = os.environ,
             poll_seconds: float = 0.2, timeout: float | None = None) -> Iterator[Slot]:
    """Hold a GPU of its own for the duration of the block; yield the device to train on.

    request: the config's `device` (auto, cpu, cuda, mps); only auto and cuda claim a GPU.
    gpus: the GPU ids to choose from (default: `visible_gpus`); tests pass fake ones.
    environ: where CUDA_VISIBLE_DEVICES is set (and restored on exit); default os.environ.
    timeout: seconds to wait for a free GPU (None: wait as long as it takes).
    """
    if request not in ("auto", "cuda"):
        yield Slot(device=request, reason=f"device {request!r} asked for: no GPU claimed")
        return
    if under_scheduler(environ):
        given = environ.get("CUDA_VISIBLE_DEVICES")
        log.info("SLURM job %s: using the GPUs SLURM gave it (CUDA_VISIBLE_DEVICES=%s)",
                 environ.get("SLURM_JOB_ID"), given)
        yield Slot(device=request, gpu=given, reason="placed by SLURM")
        return
    ids = list(gpus) if gpus is not None else visible_gpus(environ)
    if not ids:
        device = "cuda" if request == "cuda" else _other_accelerator()
        log.info("no CUDA GPU visible: training on %s", device)
        yield Slot(device=device, reason="no CUDA GPU visible")
        return

    folder = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"gpu-{re.sub(r'[^A-Za-z0-9_.-]', '_', gpu)}.lock" for gpu in ids]
    started, warned = time.monotonic(), False
    while (claim := _claim_one(paths)) is None:
        waited = time.monotonic() - started
        if timeout is not None and waited >= timeout:
            raise TimeoutError(f"no free GPU after {waited:.0f} s; held: {_holders(paths)}")
        if not warned:
            log.warning("all %d GPUs are busy (%s); waiting for one to be free. Is "
                        "--resources gpu= higher than this machine's GPU count?",
                        len(ids), _holders(paths))
            warned = True
        time.sleep(poll_seconds)
    index, fd = claim
    gpu, path = ids[index], paths[index]

    previous = environ.get("CUDA_VISIBLE_DEVICES")
    if _cuda_initialised():  # too late to narrow the visible set: address the GPU directly
        device = f"cuda:{index}"
    else:
        environ["CUDA_VISIBLE_DEVICES"] = gpu
        device = "cuda"
    log.info("claimed GPU %s (lock %s) -> device %s", gpu, path, device)
    try:
        yield Slot(device=device, gpu=gpu, lock_file=path, reason="claimed lock")
    finally:
        if device == "cuda":
            if previous is None:
                environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                environ["CUDA_VISIBLE_DEVICES"] = previous
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
