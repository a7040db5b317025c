"""What makes Snakemake re-run jobs: the data's identity and science settings, never where
the data comes from. A finished tiny FSDD run, then `snakemake -n` with other settings."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

TINY = ["datasets=[fsdd]", "models=[dense]", "seeds=[0]", "training={epochs: 1}"]
DATA_JOBS = {"download_dataset", "split_dataset", "compute_features"}
pytestmark = pytest.mark.slow


def snakemake(workdir: Path, *config: str, dry: bool = False) -> str:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir),
           "--configfile", str(ROOT / "config.yaml"), "--cores", "2",
           *(["-n"] if dry else []), "--config", *TINY, *config]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc.stdout + proc.stderr


def planned(output: str) -> dict[str, int]:
    """{rule: jobs} of a dry run's job stats; {} when there is nothing to do."""
    if "Nothing to be done" in output:
        return {}
    table = output[output.index("Job stats:"):]
    table = table[:table.index("total")]
    return {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


@pytest.fixture(scope="module")
def finished(shared_datasets, tmp_path_factory):
    """A complete run on FSDD from the shared mirror (about a minute on two cores)."""
    workdir = tmp_path_factory.mktemp("reruns")
    snakemake(workdir, f"mirror={shared_datasets}")
    assert (workdir / "results/summary/accuracy.csv").exists()
    output = snakemake(workdir, f"mirror={shared_datasets}", dry=True)
    assert planned(output) == {}, output[-3000:]
    return workdir


def test_moving_or_dropping_the_mirror_reruns_nothing(finished, shared_datasets, tmp_path):
    link = tmp_path / "elsewhere"
    link.symlink_to(shared_datasets, target_is_directory=True)
    spellings = [
        str(link),  # the same data in another folder
        shared_datasets.as_uri(),  # a file:// URL
        os.path.relpath(shared_datasets, finished),  # relative to the working directory
        "http://127.0.0.1:9/datasets",  # a server (not contacted: nothing is to be fetched)
        None,  # no mirror (config.yaml's ""): upstream
    ]
    for mirror in spellings:
        output = snakemake(finished, *([f"mirror={mirror}"] if mirror is not None else []),
                           dry=True)
        assert planned(output) == {}, f"mirror={mirror!r} planned jobs:\n{output[-3000:]}"


def test_another_checksum_reacquires_and_reruns_everything_downstream(finished):
    output = snakemake(finished, "fsdd={recordings_sha256: " + "ab" * 32 + "}", dry=True)
    jobs = planned(output)
    assert {"download_dataset", "split_dataset", "compute_features", "train_model",
            "evaluate_model"} <= set(jobs), output[-3000:]
    assert "Params have changed" in output


def test_a_training_setting_retrains_without_touching_the_data(finished, shared_datasets):
    output = snakemake(finished, f"mirror={shared_datasets}", "training={epochs: 2}", dry=True)
    jobs = planned(output)
    assert {"train_model", "evaluate_model"} <= set(jobs), output[-3000:]
    assert not DATA_JOBS & set(jobs), output[-3000:]
