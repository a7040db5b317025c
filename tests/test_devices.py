"""GPU placement for local runs (pipeline.devices): checked on the CPU by the assignment."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

from pipeline import devices
from pipeline.devices import gpu_slot, visible_gpus

# A training job in miniature: claim a GPU among two fake ones, report it, hold it until a
# line arrives on stdin.
CLAIMER = """
import os, sys
from pipeline.devices import gpu_slot
with gpu_slot("auto", gpus=["0", "1"], lock_dir=sys.argv[1], poll_seconds=0.05) as slot:
    print(slot.gpu, os.environ["CUDA_VISIBLE_DEVICES"], slot.device, flush=True)
    sys.stdin.readline()
print("released", flush=True)
"""


def claimer(lock_dir) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CLAIMER, str(lock_dir)], text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)


def read_line(proc: subprocess.Popen, seconds: float) -> str | None:
    """The next line `proc` prints within `seconds`, else None."""
    ready, _, _ = select.select([proc.stdout], [], [], seconds)
    return proc.stdout.readline().strip() if ready else None


def release(proc: subprocess.Popen) -> None:
    proc.stdin.write("\n")
    proc.stdin.flush()


def test_concurrent_jobs_get_different_gpus_and_a_third_waits(tmp_path):
    first, second = claimer(tmp_path), claimer(tmp_path)
    third = None
    try:
        a, b = read_line(first, 30), read_line(second, 30)
        assert a and b, "claimers did not report a GPU"
        gpu_a, visible_a, device_a = a.split()
        gpu_b, visible_b, device_b = b.split()
        assert {gpu_a, gpu_b} == {"0", "1"}
        assert (visible_a, visible_b) == (gpu_a, gpu_b)  # each job sees only its own GPU
        assert device_a == device_b == "cuda"

        third = claimer(tmp_path)
        assert read_line(third, 2.0) is None, "a third job got a GPU while both were held"
        release(first)
        assert read_line(first, 10) == "released"
        got = read_line(third, 10)
        assert got is not None and got.split()[0] == gpu_a  # the GPU the first job let go
    finally:
        for proc in (first, second, third):
            if proc is not None:
                proc.kill()
                proc.wait()


def test_many_threads_never_share_a_gpu(tmp_path):
    holders: dict[str, set[int]] = {"0": set(), "1": set()}
    clashes, done = [], []
    guard = threading.Lock()

    def job(n: int) -> None:
        env: dict[str, str] = {}
        with gpu_slot("auto", gpus=["0", "1"], lock_dir=tmp_path, environ=env,
                      poll_seconds=0.01) as slot:
            with guard:
                if holders[slot.gpu]:
                    clashes.append((n, slot.gpu, set(holders[slot.gpu])))
                holders[slot.gpu].add(n)
            assert env["CUDA_VISIBLE_DEVICES"] == slot.gpu
            time.sleep(0.05)
            with guard:
                holders[slot.gpu].discard(n)
        assert "CUDA_VISIBLE_DEVICES" not in env  # restored on exit
        done.append(n)

    threads = [threading.Thread(target=job, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not clashes
    assert sorted(done) == list(range(8))


def test_a_killed_job_frees_its_gpu(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", CLAIMER.replace('["0", "1"]', '["0"]'),
                             str(tmp_path)], text=True, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    try:
        assert read_line(proc, 30).split()[0] == "0"
        with pytest.raises(TimeoutError), gpu_slot("auto", gpus=["0"], lock_dir=tmp_path,
                                                   environ={}, timeout=0.3):
            pass
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with gpu_slot("auto", gpus=["0"], lock_dir=tmp_path, environ={}, timeout=5) as slot:
            assert slot.gpu == "0"
    finally:
        proc.kill()
        proc.wait()


def test_no_gpu_means_cpu(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    env: dict[str, str] = {}
    with gpu_slot("auto", lock_dir=tmp_path, environ=env) as slot:
        assert slot.device == "cpu" and slot.gpu is None
    assert env == {} and list(tmp_path.iterdir()) == []
    with gpu_slot("auto", gpus=[], lock_dir=tmp_path, environ={}) as slot:
        assert slot.device == "cpu"


@pytest.mark.skipif(torch.accelerator.is_available(), reason="this machine has an accelerator")
def test_no_gpu_here_means_cpu(tmp_path):
    with gpu_slot("auto", lock_dir=tmp_path, environ={"CUDA_VISIBLE_DEVICES": ""}) as slot:
        assert slot.device == "cpu"


def test_slurm_placement_is_respected(tmp_path):
    env = {"SLURM_JOB_ID": "42", "CUDA_VISIBLE_DEVICES": "3"}
    with gpu_slot("auto", gpus=["0", "1"], lock_dir=tmp_path, environ=env) as slot:
        assert slot.gpu == "3" and slot.lock_file is None
        assert slot.device == "auto"  # pipeline.training picks CUDA device 0 of SLURM's set
        assert env == {"SLURM_JOB_ID": "42", "CUDA_VISIBLE_DEVICES": "3"}
    assert env == {"SLURM_JOB_ID": "42", "CUDA_VISIBLE_DEVICES": "3"}
    assert list(tmp_path.iterdir()) == []  # no lock taken


@pytest.mark.parametrize("request_", ["cpu", "mps"])
def test_an_explicit_non_cuda_device_claims_nothing(tmp_path, request_):
    env: dict[str, str] = {}
    with gpu_slot(request_, gpus=["0"], lock_dir=tmp_path, environ=env) as slot:
        assert slot.device == request_ and slot.gpu is None
    assert env == {} and list(tmp_path.iterdir()) == []


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert visible_gpus({}) == ["0", "1"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "5, 7"}) == ["5", "7"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "GPU-a1b2,GPU-c3d4,GPU-e5f6"}) == [
        "GPU-a1b2", "GPU-c3d4"]


def test_claimed_gpu_keeps_other_visible_devices_restored(tmp_path):
    env = {"CUDA_VISIBLE_DEVICES": "2,3"}
    with gpu_slot("cuda", gpus=["2", "3"], lock_dir=tmp_path, environ=env) as slot:
        assert env["CUDA_VISIBLE_DEVICES"] == slot.gpu == "2"
    assert env == {"CUDA_VISIBLE_DEVICES": "2,3"}


def test_after_cuda_initialisation_the_device_index_is_used(tmp_path, monkeypatch):
    monkeypatch.setattr(devices, "_cuda_initialised", lambda: True)
    env = {"CUDA_VISIBLE_DEVICES": "4,6"}
    with gpu_slot("auto", gpus=["4", "6"], lock_dir=tmp_path, environ=env) as first, \
            gpu_slot("auto", gpus=["4", "6"], lock_dir=tmp_path, environ=env) as second:
        assert (first.device, second.device) == ("cuda:0", "cuda:1")
        assert env == {"CUDA_VISIBLE_DEVICES": "4,6"}  # too late to narrow it: left alone


def test_default_lock_dir_is_per_user_and_overridable(monkeypatch, tmp_path):
    monkeypatch.delenv(devices.LOCK_DIR_ENV, raising=False)
    assert devices.default_lock_dir().name.endswith(str(os.getuid()))
    monkeypatch.setenv(devices.LOCK_DIR_ENV, str(tmp_path))
    assert devices.default_lock_dir() == tmp_path
