"""The tiny config through `--workflow-profile profiles/slurm` against real SLURM daemons.

tests/slurm/cluster.sh starts a single-node SLURM (munged, slurmctld, slurmd) for the module and
stops what it started. Skipped, with the reason, only where the daemons cannot be started (not
root, no slurm-wlm); `.ci/run` installs SLURM and sets REQUIRE_SLURM=1, which turns a skip into a
failure.
"""

import fcntl
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO, TINY

pytestmark = pytest.mark.slow
CLUSTER = REPO / "tests" / "slurm" / "cluster.sh"
LOCK = "/tmp/latentstates-test-slurm.lock"
# One trained task of the tiny config (its two seed groups) and a table task: every kind of job
# (training, metrics, HMM, analyses, plots, import, summary) goes through SLURM once; a second
# trained task would only repeat them (and doubled this test's time, the slowest in CI).
TASKS = ["sparse_parity"]


def _why_no_slurm() -> str | None:
    if os.geteuid() != 0:
        return "starting SLURM daemons needs root"
    for tool in ("slurmctld", "slurmd", "munged", "sbatch"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (tests/slurm/cluster.sh install)"
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        return "snakemake-executor-plugin-slurm not installed (pip install -e '.[slurm]')"
    return None


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    why = _why_no_slurm()
    if why:
        if os.environ.get("REQUIRE_SLURM"):
            pytest.fail(f"REQUIRE_SLURM is set but {why}")
        pytest.skip(why)
    # One test cluster per machine (SLURM's default config path and ports): a second test run on
    # the same machine waits here until the first has stopped its daemons.
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cluster = tmp_path_factory.mktemp("cluster")
        proc = subprocess.run([str(CLUSTER), "start", str(cluster)], capture_output=True, text=True)
        if proc.returncode != 0:
            subprocess.run([str(CLUSTER), "stop", str(cluster)])
            msg = f"SLURM daemons did not start:\n{proc.stdout}\n{proc.stderr}"
            if os.environ.get("REQUIRE_SLURM"):
                pytest.fail(msg)
            pytest.skip(msg)
        # SLURM's default config path, which cluster.sh installs (as on a real cluster).
        env = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"} | {"PYTHONHASHSEED": "0"}
        try:
            yield cluster, env
        finally:
            subprocess.run([str(CLUSTER), "stop", str(cluster)])


def _command(wd):
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(wd),
        "--configfile",
        str(wd / "config.yaml"),
        "--workflow-profile",
        str(REPO / "profiles" / "slurm"),
        # No accounting database on the test cluster: status from squeue (MinJobAge=300).
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--jobs",
        "4",
    ]


def _run(wd, env, *args):
    proc = subprocess.run([*_command(wd), *args], capture_output=True, text=True, env=env, cwd=wd)
    return proc, proc.stdout + proc.stderr


def _submitted(output: str) -> dict[str, list[str]]:
    """Rule → SLURM job ids, from Snakemake's 'Job N has been submitted with SLURM jobid M' lines
    and the rule of each job N."""
    rule_of = {}
    for m in re.finditer(r"^(?:local)?rule (\w+):\n(?:.*\n)*?\s+jobid: (\d+)", output, re.M):
        rule_of[m[2]] = m[1]
    out: dict[str, list[str]] = {}
    for m in re.finditer(r"Job (\d+) has been submitted with SLURM jobid (\d+)", output):
        out.setdefault(rule_of.get(m[1], "?"), []).append(m[2])
    return out


def _planned(output: str) -> set[str]:
    """Rules of the jobs a run planned (its 'Job stats' table), but the local rule `all`."""
    table = output.split("Job stats:")[1].split("\n\n")[0]
    return set(re.findall(r"^(\w+)\s+\d+$", table, re.M)) - {"total", "all"}


def _completed(cluster) -> dict[str, str]:
    """SLURM job id → final state, from the controller's job completion records."""
    text = (cluster / "log" / "jobcomp.log").read_text() if (cluster / "log" / "jobcomp.log").exists() else ""
    return {m[1]: m[2] for m in re.finditer(r"JobId=(\d+) .*?JobState=(\w+)", text)}


def _queue_empty(env, timeout=900):
    """Wait for the queue to drain (generous: the jobs run slowly on a loaded CI machine)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["squeue", "-h", "-t", "PD,R,CG"], capture_output=True, text=True, env=env
        ).stdout
        if not out.strip():
            return
        time.sleep(1)
    raise AssertionError(f"SLURM queue not empty after {timeout} s:\n{out}")


def test_tiny_workflow_under_slurm(slurm, tiny_run, tmp_path):
    cluster, env = slurm
    wd = tmp_path / "slurm_run"
    wd.mkdir()
    config = yaml.safe_load(TINY.read_text())
    config["tasks"] = {task: config["tasks"][task] for task in TASKS}
    config.pop("comparisons")
    # The stability stage's jobs are submitted as the HMM's are (same script kind, same
    # resources): they would add four jobs to each of the test's three runs and nothing to check.
    config["stability"] = {"enabled": False}
    # A task whose table lacks a column: its import job fails under SLURM (fixed later).
    table = tmp_path / "logged.csv"
    rng = np.random.default_rng(0)
    runs = pd.DataFrame(
        [
            {"run": r, "step": t, "g": float(t >= 4 + r) + rng.normal(0, 0.1)}
            for r in range(4)
            for t in range(12)
        ]
    )
    runs.to_csv(table, index=False)
    config["tasks"]["logged"] = {"source": "table", "path": str(table), "hmm": {"features": ["g", "h"]}}
    (wd / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    # 1. The main Snakemake process group is killed (-9) while SLURM runs its jobs.
    main = subprocess.Popen(
        _command(wd),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=wd,
        start_new_session=True,
    )
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        running = subprocess.run(["squeue", "-h", "-t", "R"], capture_output=True, text=True, env=env).stdout
        if running.strip():
            break
        time.sleep(0.5)
    assert running.strip(), "no SLURM job started running"
    os.killpg(main.pid, signal.SIGKILL)
    main.wait()
    _queue_empty(env)  # the jobs it submitted finish on their own (or `scancel` them)
    proc, out = _run(wd, env)
    assert proc.returncode != 0 and "cannot be locked" in out, out
    proc, out = _run(wd, env, "--unlock")
    assert proc.returncode == 0, out

    # 2. The rerun (keep going): every job through SLURM; the broken import fails with its log.
    proc, out = _run(wd, env, "--keep-going")
    assert proc.returncode != 0
    assert "Error in rule import_table" in out and "missing column(s) ['h']" in out, out[-6000:]
    submitted = _submitted(out)
    done = _completed(cluster)
    ids = [i for jobs in submitted.values() for i in jobs]
    assert ids and all(done.get(i) in ("COMPLETED", "FAILED") for i in ids), (submitted, done)
    assert done[submitted["import_table"][0]] == "FAILED"
    planned = _planned(out)
    # Seed groups ran as groups: one SLURM job per metrics group (tiny: [0, 1] and [2]), if the
    # kill left them to run.
    metrics_rules = [r for r in submitted if r.startswith("metrics_")]
    assert all(len(submitted[r]) == 1 for r in metrics_rules)
    assert set(metrics_rules) <= {f"metrics_{t}_seeds{a}_{b}" for t in TASKS for a, b in ((0, 1), (2, 2))}

    # 3. Fixed input: the rerun resumes, running only the failed task's jobs.
    runs["h"] = runs["g"] + rng.normal(0, 0.1, len(runs))
    runs.to_csv(table, index=False)
    proc, out = _run(wd, env)
    assert proc.returncode == 0, out
    resumed = _submitted(out)
    assert not any(r.startswith(("train_", "metrics_")) for r in resumed), resumed
    assert "import_table" in resumed
    done = _completed(cluster)
    assert all(done.get(i) == "COMPLETED" for jobs in resumed.values() for i in jobs)
    # No job ran outside SLURM: every job planned by the two runs (but `all`) was submitted.
    assert planned | _planned(out) <= set(submitted) | set(resumed), (planned, submitted, resumed)

    # Same tables as a local run of the same config.
    for task in TASKS:
        for rel in ("metrics.parquet", "hmm/states.parquet"):
            pd.testing.assert_frame_equal(
                pd.read_parquet(wd / "results" / task / rel),
                pd.read_parquet(tiny_run / "results" / task / rel),
            )
        assert (wd / "results" / task / "hmm" / "model.json").read_text() == (
            tiny_run / "results" / task / "hmm" / "model.json"
        ).read_text()
    assert (wd / "results" / "summary.md").exists()
