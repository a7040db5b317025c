"""The workflow on a real (single-node, test) SLURM through workflow/profiles/slurm.

Needs the cluster of tests/cluster/slurm-up.sh (skipped with the reason otherwise). One run
of a small workflow, in three steps, gives the evidence, read from SLURM's accounting (sacct):

  A. the data and feature jobs (target features.h5);
  B. the whole workflow with features.h5 corrupted: train_model fails on the cluster, and the
     run fails naming the job's log;
  C. the whole workflow again after restoring features.h5: it continues from train_model.

Meanwhile the same config runs locally (--cores 2, niced); its metrics must equal the
cluster's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parent.parent
PROFILE = ROOT / "workflow" / "profiles" / "slurm"
STATE = Path(os.environ.get("SLURM_TEST_DIR", "/tmp/slurm-test"))
MODELS = ["dense"]
CONFIG = [
    "datasets=[tts_digits]",
    f"models=[{', '.join(MODELS)}]",
    "seeds=[0]",
    "tts_digits={accents: [en-us, en], variants: [m1, f1, m3], repetitions: 2, "
    "valid_fraction: 0.2, test_fraction: 0.2, training: {epochs: 3}}",  # wins over the global
    "training={epochs: 3, batch_size: 32}",
]
LOCAL_RULES = {"all", "download_dataset"}  # the target rule, and `localrule: True`
FEATURES = "results/tts_digits/features.h5"
SACCT_FIELDS = ["JobID", "JobName", "Comment", "State", "ReqTRES", "AllocTRES", "WorkDir"]


@dataclass
class Slurm:
    env: dict[str, str]
    partition: str
    account: str


@dataclass
class Run:
    returncode: int
    output: str
    seconds: float = 0.0

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.output.splitlines()[-lines:])


@dataclass
class ClusterRuns:
    workdir: Path
    local: Path
    plan: dict[str, int]
    runs: dict[str, Run] = field(default_factory=dict)
    jobs: dict[str, list[dict[str, str]]] = field(default_factory=dict)  # step -> sacct rows


def slurm_or_skip() -> Slurm:
    env_file, failed = STATE / "env", STATE / "failed"
    if failed.exists():  # slurm-up.sh's reason, e.g. no apt-get or not root
        pytest.skip(f"no test SLURM: {failed.read_text().strip()}")
    if not env_file.exists():
        pytest.skip(f"no test SLURM ({env_file} does not exist); start one with "
                    "`bash tests/cluster/slurm-up.sh`")
    env = dict(os.environ)
    for line in env_file.read_text().splitlines():
        if m := re.fullmatch(r"export (\w+)=(.*)", line.strip()):
            env[m[1]] = m[2]
    if shutil.which("sinfo") is None:
        pytest.skip("SLURM's client commands (sinfo, sbatch, sacct) are not installed")
    try:
        probe = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True,
                               text=True, timeout=15)
    except subprocess.TimeoutExpired:
        pytest.skip("the test SLURM does not answer (sinfo timed out); restart it with "
                    "`bash tests/cluster/slurm-down.sh && bash tests/cluster/slurm-up.sh`")
    if probe.returncode or not re.search(r"^(idle|mixed|allocated)", probe.stdout, re.M):
        pytest.skip(f"the test SLURM is not up (sinfo: {probe.stdout.strip()} "
                    f"{probe.stderr.strip()}); start it with `bash tests/cluster/slurm-up.sh`")
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        pytest.skip("the SLURM executor plugin is not installed: pip install -e '.[cluster]'")
    return Slurm(env, env["SLURM_TEST_PARTITION"], env["SLURM_TEST_ACCOUNT"])


def snakemake_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
            "--configfile", str(ROOT / "config.yaml"), *args, "--config", *CONFIG]


def run(cmd: list[str], workdir: Path, env: dict[str, str], timeout: float = 480) -> Run:
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)
    return Run(proc.returncode, proc.stdout, time.monotonic() - start)


def cluster_args(slurm: Slurm) -> list[str]:
    """The slurm profile as a user runs it, with the test cluster's partition and account
    (a command-line --default-resources replaces the profile's, so the rest is copied)."""
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    defaults = {**profile["default-resources"], "slurm_partition": slurm.partition,
                "slurm_account": slurm.account}
    return ["--profile", str(PROFILE), "--workflow-profile", "none",
            "--default-resources", *(f"{k}={v}" for k, v in defaults.items()),
            # The plugin checks job states I s after a submission, then I+10, I+20, ... s
            # apart (2I+10, 3I+30, ... s after it) until one has ended. Its I=40 suits a real
            # cluster; a job here takes 15-20 s (two Snakemake starts and the script), so
            # I=7 sees most end at the second check, 24 s after submission.
            "--slurm-init-seconds-before-status-checks", "7"]


def job_plan(output: str) -> dict[str, int]:
    """Jobs per rule from the "Job stats" table a run starts with (the plan, not evidence)."""
    table = output.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)
            if m[1] != "job"}


def sacct(slurm: Slurm, since: str, workdir: Path) -> list[dict[str, str]]:
    out = subprocess.run(
        ["sacct", "-X", "-n", "--parsable2", "-S", since, "-E", "now",
         f"--format={','.join(SACCT_FIELDS)}"],
        env=slurm.env, capture_output=True, text=True, timeout=30, check=True).stdout
    rows = [dict(zip(SACCT_FIELDS, line.split("|"), strict=True))
            for line in out.splitlines() if line.strip()]
    rows = [r for r in rows if r["WorkDir"].rstrip("/") == str(workdir)]
    for r in rows:  # the plugin's comment: rule_<rule>[_wildcards_<values>]
        m = re.fullmatch(r"rule_(.+?)(?:_wildcards_(.*))?", r["Comment"])
        r["rule"], r["wildcards"] = (m[1], m[2] or "") if m else ("?", "")
    return sorted(rows, key=lambda r: int(r["JobID"].split("_")[0]))


def jobs_since(slurm: Slurm, since: str, workdir: Path, seen: set[str]) -> list[dict[str, str]]:
    """sacct rows of `workdir` not in `seen` (accounting may lag the run's end a moment)."""
    for _ in range(20):
        rows = [r for r in sacct(slurm, since, workdir) if r["JobID"] not in seen]
        if all(r["State"] not in ("PENDING", "RUNNING") for r in rows):
            break
        time.sleep(0.5)
    seen.update(r["JobID"] for r in rows)
    return rows


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> ClusterRuns:
    slurm = slurm_or_skip()
    workdir, local = tmp_path_factory.mktemp("on-slurm"), tmp_path_factory.mktemp("local")
    since = datetime.now().strftime("%Y-%m-%dT%H:%M:%S")
    local_log = (local / "snakemake.out").open("w")
    # The local run at the lowest CPU priority: the cluster jobs' durations set the pace.
    local_run = subprocess.Popen(["nice", "-n", "19", *snakemake_cmd("--cores", "2")],
                                 cwd=local, env=slurm.env, stdout=local_log,
                                 stderr=subprocess.STDOUT, text=True)
    try:
        result = ClusterRuns(workdir, local, plan={})
        seen: set[str] = set()

        result.runs["A"] = run(snakemake_cmd(*cluster_args(slurm), FEATURES), workdir,
                               slurm.env)
        result.jobs["A"] = jobs_since(slurm, since, workdir, seen)
        assert result.runs["A"].returncode == 0, result.runs["A"].tail()

        features = workdir / FEATURES
        good, stat = features.read_bytes(), features.stat()
        features.write_bytes(b"not an HDF5 file")
        os.utime(features, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        result.runs["B"] = run(snakemake_cmd(*cluster_args(slurm)), workdir, slurm.env)
        result.jobs["B"] = jobs_since(slurm, since, workdir, seen)
        result.plan = {**job_plan(result.runs["A"].output), **job_plan(result.runs["B"].output)}

        features.write_bytes(good)  # the fix
        os.utime(features, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        result.runs["C"] = run(snakemake_cmd(*cluster_args(slurm)), workdir, slurm.env)
        result.jobs["C"] = jobs_since(slurm, since, workdir, seen)

        local_run.wait(timeout=480)
        result.runs["local"] = Run(local_run.returncode, (local / "snakemake.out").read_text())
        print("cluster test, seconds per run:",
              {step: round(r.seconds) for step, r in result.runs.items() if r.seconds})
        return result
    finally:
        if local_run.poll() is None:
            local_run.kill()
        local_log.close()


def rules(rows: list[dict[str, str]]) -> list[str]:
    return [r["rule"] for r in rows]


def test_every_job_but_the_local_ones_went_through_sbatch(cluster):
    assert cluster.runs["C"].returncode == 0, cluster.runs["C"].tail()
    assert cluster.plan.get("train_model") == len(MODELS), cluster.plan
    expected = {rule: n for rule, n in cluster.plan.items() if rule not in LOCAL_RULES}
    done = [r for step in "ABC" for r in cluster.jobs[step] if r["State"] == "COMPLETED"]
    submitted = {rule: rules(done).count(rule) for rule in set(rules(done))}
    assert submitted == expected, f"sacct: {cluster.jobs}"
    everything = [r for step in "ABC" for r in cluster.jobs[step]]
    assert not LOCAL_RULES & set(rules(everything)), "a local rule was submitted"
    assert {r["wildcards"] for r in done if r["rule"] == "train_model"} == {
        f"tts_digits_{m}_0" for m in MODELS}


def test_train_model_jobs_asked_slurm_for_a_gpu(cluster):
    everything = [r for step in "ABC" for r in cluster.jobs[step]]
    training = [r for r in everything if r["rule"] == "train_model"]
    assert len(training) == 2 * len(MODELS)  # failed in B, done in C
    for r in training:
        assert "gres/gpu=1" in r["ReqTRES"].split(","), r
        assert "gres/gpu=1" in r["AllocTRES"].split(","), r
    for r in everything:
        if r["rule"] != "train_model":
            assert "gres/gpu" not in r["ReqTRES"], r
    for model in MODELS:  # and the job used the GPU SLURM gave it (pipeline.devices' log line)
        log = cluster.workdir / f"results/logs/train_model/tts_digits/{model}/seed-0.log"
        assert "using the GPUs SLURM gave it (CUDA_VISIBLE_DEVICES=0)" in log.read_text()


def test_a_failed_cluster_job_fails_the_run_and_names_its_log(cluster):
    b = cluster.runs["B"]
    assert b.returncode != 0, b.tail()
    assert {r["State"] for r in cluster.jobs["B"] if r["rule"] == "train_model"} == {"FAILED"}
    assert set(rules(cluster.jobs["B"])) == {"train_model"}  # nothing after it was started
    for model in MODELS:
        assert f"results/logs/train_model/tts_digits/{model}/seed-0.log" in b.output, b.tail()
    failed = [r for r in cluster.jobs["B"] if r["State"] == "FAILED"]
    for r in failed:  # and the job's SLURM log, which the plugin keeps for failed jobs
        assert re.search(rf"slurm_logs/rule_train_model/\S*/{r['JobID']}\.log", b.output), (
            b.tail())


def test_a_rerun_after_the_fix_continues_without_redoing_finished_jobs(cluster):
    assert cluster.runs["C"].returncode == 0, cluster.runs["C"].tail()
    finished_before = set(rules(cluster.jobs["A"]))
    assert finished_before == {"synthesize_dataset", "split_dataset", "compute_features"}
    assert not finished_before & set(rules(cluster.jobs["C"])), cluster.jobs["C"]
    assert set(rules(cluster.jobs["C"])) == {"train_model", "evaluate_model",
                                              "plot_learning_curves", "tabulate_results"}
    assert {r["State"] for r in cluster.jobs["C"]} == {"COMPLETED"}


def test_cluster_metrics_equal_a_local_run_with_the_same_seed(cluster):
    local = cluster.runs["local"]
    assert local.returncode == 0, local.tail()
    assert cluster.runs["C"].returncode == 0, cluster.runs["C"].tail()
    same = ["test_accuracy", "n_correct", "per_class", "valid_accuracy", "best_epoch",
            "parameters", "seed"]
    for model in MODELS:
        run = f"results/tts_digits/{model}/seed-0"
        on_slurm = json.loads((cluster.workdir / run / "metrics.json").read_text())
        here = json.loads((cluster.local / run / "metrics.json").read_text())
        assert {k: on_slurm[k] for k in same} == {k: here[k] for k in same}, model
        assert ((cluster.workdir / run / "predictions.csv").read_text()
                == (cluster.local / run / "predictions.csv").read_text()), model
