"""Resume after a kill, atomic outputs, bad inputs, degenerate features."""

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
import torch
import yaml

from conftest import snakemake
from latentstates.columns import PAPER_FEATURES
from latentstates.io import read_parquet, write_parquet
from latentstates.measure.extract import run_metrics
from latentstates.runs.checkpoints import (
    RESUME_KEEP,
    list_checkpoints,
    load_checkpoint,
    load_resume,
    prune_resume,
    save_resume,
    staging_dir,
)
from latentstates.runs.train import train_group, train_run
from latentstates.settings import HessianSettings, HMMSettings, TaskSpec
from latentstates.states.selection import fit_task

HESSIAN = HessianSettings.defaults(batch_size=64, stride=2, tol=1e-3, max_iter=20, seed=0, krylov_dim=20)


def _slow_parity(config) -> dict:
    """A parity task long enough (a few seconds) to be killed in the middle."""
    cfg = config()["tasks"]["sparse_parity"]
    cfg["model"]["hidden"] = [512]
    cfg["train"]["epochs"] = 120
    return cfg


def _resume_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("resume_*.pt")) if directory.is_dir() else []


def _index(path: Path) -> int:
    return int(path.stem.split("_")[1])


def _wait_for_resume_index(directory: Path, index: int, proc, timeout: float = 900) -> None:
    """Wait until `directory` holds resume state `index` (generous: CI machines may be loaded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = _resume_files(directory)
        if files and _index(files[-1]) >= index:
            return
        assert proc.poll() is None, "training ended before it could be killed"
        time.sleep(0.05)
    raise AssertionError(f"no resume state {index} in {directory} after {timeout}s")


class _Killed(BaseException):
    """Raised in place of a SIGKILL at a chosen file operation."""


def _group_writes(dirs: list[Path], indices: range, kill_at: int, monkeypatch) -> int:
    """Write a group's resume states as training does, killed before file operation `kill_at`
    (a rename publishing a state, or an unlink pruning one); return the operations done."""
    done = 0

    def counted(real):
        def op(*args, **kwargs):
            nonlocal done
            if done == kill_at:
                raise _Killed
            done += 1
            return real(*args, **kwargs)

        return op

    with monkeypatch.context() as m:
        m.setattr(os, "replace", counted(os.replace))
        m.setattr(Path, "unlink", counted(Path.unlink))
        try:
            for index in indices:
                for d in dirs:
                    save_resume(d, index, {"index": torch.tensor(index)})
                prune_resume(dirs)
        except _Killed:
            pass
    return done


def test_a_kill_at_any_file_operation_leaves_a_common_readable_resume_state(tmp_path, monkeypatch):
    """Whenever a kill lands, every run keeps its two newest states, and the group resumes from
    the newest index every run can read, even if one run's newest state is unreadable."""
    n_runs, indices = 3, range(5)
    total = _group_writes([tmp_path / "full" / str(i) for i in range(n_runs)], indices, -1, monkeypatch)
    assert total == n_runs * len(indices) + n_runs * (len(indices) - RESUME_KEEP)
    for kill_at in range(total + 1):
        base = tmp_path / f"kill{kill_at}"
        dirs = [base / str(i) for i in range(n_runs)]
        for d in dirs:
            d.mkdir(parents=True)
        _group_writes(dirs, indices, kill_at, monkeypatch)
        present = [{_index(p) for p in _resume_files(d)} for d in dirs]
        complete = max(set.intersection(*present), default=None)  # newest index of every run
        if complete is None:
            assert kill_at < n_runs  # only before the first state is complete
            continue
        for have in present:
            assert min(RESUME_KEEP, complete + 1) <= len(have) <= RESUME_KEEP + 1, have
            assert sorted(have) == list(range(min(have), max(have) + 1)), have
        copy = tmp_path / f"intact{kill_at}"
        shutil.copytree(base, copy)
        states = load_resume([copy / str(i) for i in range(n_runs)])
        assert [int(s["index"]) for s in states] == [complete] * n_runs
        for victim in range(n_runs):  # the newest state of one run is torn
            copy = tmp_path / f"torn{kill_at}_{victim}"
            shutil.copytree(base, copy)
            newest = _resume_files(copy / str(victim))[-1]
            newest.write_bytes(newest.read_bytes()[:100])
            readable = [have - {_index(newest)} if i == victim else have for i, have in enumerate(present)]
            expected = max(set.intersection(*readable), default=None)
            states = load_resume([copy / str(i) for i in range(n_runs)])
            if expected is None:
                assert states is None and complete == 0
            else:
                assert expected >= complete - 1  # at most one more checkpoint to redo
                assert [int(s["index"]) for s in states] == [expected] * n_runs


@pytest.mark.parametrize("seeds", [[0], [0, 1, 2]], ids=["alone", "group"])
def test_killed_training_resumes_bit_identical_even_past_a_corrupt_state(tmp_path, seeds, caplog, config):
    cfg = _slow_parity(config)
    reference = train_group(
        TaskSpec.from_dict(cfg), seeds, [tmp_path / f"reference{s}" for s in seeds], progress=False
    )

    dirs = [tmp_path / f"killed{s}" for s in seeds]
    code = (
        "import sys, yaml; from latentstates.runs.train import train_group; "
        "from latentstates.settings import TaskSpec; "
        f"train_group(TaskSpec.from_dict(yaml.safe_load(sys.stdin)), {seeds!r}, {[str(d) for d in dirs]!r}, "
        "progress=False, resume_every=0)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, text=True)
    proc.stdin.write(yaml.safe_dump(cfg))
    proc.stdin.close()
    _wait_for_resume_index(staging_dir(dirs[-1]), 30, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not any(d.exists() for d in dirs), "an unfinished run must not publish its checkpoints"
    # Wherever the kill landed (between two runs' writes, or between publishing a state and
    # pruning the oldest), every run keeps its RESUME_KEEP newest states, consecutive.
    present = []
    for d in dirs:
        have = [_index(p) for p in _resume_files(staging_dir(d))]
        assert RESUME_KEEP <= len(have) <= RESUME_KEEP + 1, have
        assert have == list(range(have[0], have[0] + len(have))), have
        present.append(set(have))
    newest = _resume_files(staging_dir(dirs[-1]))[-1]
    newest.write_bytes(newest.read_bytes()[:100])  # a truncated newest state (last seed)
    present[-1].discard(_index(newest))
    expected = max(set.intersection(*present))
    step = torch.load(staging_dir(dirs[0]) / f"resume_{expected:06d}.pt", weights_only=True)["step"]

    with caplog.at_level(logging.INFO, logger="latentstates"):
        resumed = train_group(TaskSpec.from_dict(cfg), seeds, dirs, progress=False)
    assert f"{newest}: unreadable resume state" in caplog.text
    assert f"resuming from step {step} " in caplog.text  # the newest state every run can read
    for seed, d, log, ref in zip(seeds, dirs, resumed, reference):
        pd.testing.assert_frame_equal(log, ref)
        assert not staging_dir(d).exists() and not list(d.glob("resume_*"))
        a, b = list_checkpoints(tmp_path / f"reference{seed}"), list_checkpoints(d)
        assert [p.name for p in a] == [p.name for p in b]
        for pa, pb in zip(a, b):
            ma, mb = load_checkpoint(pa)["model"], load_checkpoint(pb)["model"]
            assert all(torch.equal(ma[k], mb[k]) for k in ma)


def _training_processes(pid: int) -> list[psutil.Process]:
    """Training jobs under process `pid` (children that end while listed are skipped)."""
    out = []
    for p in psutil.Process(pid).children(recursive=True):
        try:
            if any("train.py" in part for part in p.cmdline()):
                out.append(p)
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            pass
    return out


@pytest.mark.slow
def test_snakemake_rerun_after_kill_matches_uninterrupted_run(make_workdir, tiny_config):
    cfg = {**tiny_config, "tasks": {"sparse_parity": tiny_config["tasks"]["sparse_parity"]}}
    cfg.pop("comparisons")  # it compares sparse parities with the task left out
    task = cfg["tasks"]["sparse_parity"]
    task["model"] = {"hidden": [512]}
    task["train"]["epochs"] = 120
    task["seeds"] = 2
    cfg["resume_every"] = 0  # a resume state at every checkpoint: the kill lands after a few
    clean = make_workdir(cfg, "clean")
    snakemake(clean)

    wd = make_workdir(cfg, "killed")
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(Path(__file__).parents[1] / "Snakefile"),
        "--directory",
        str(wd),
        "--cores",
        "2",
        "--configfile",
        str(wd / "config.yaml"),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=wd)
    staging = wd / "results" / "sparse_parity" / "runs" / "seed0" / "checkpoints.partial"
    _wait_for_resume_index(staging, 30, proc)
    trainers = _training_processes(proc.pid)
    assert trainers, "no training process found under snakemake"
    for p in trainers:
        p.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=900) != 0
    assert _resume_files(staging), "the killed job's resume states must survive Snakemake's cleanup"

    snakemake(wd)
    log = (wd / "results" / "logs" / "train" / "sparse_parity" / "seeds0-1.log").read_text()
    assert "resuming from step" in log
    for rel in [
        "runs/seed0/train_log.parquet",
        "runs/seed1/train_log.parquet",
        "metrics.parquet",
        "hmm/states.parquet",
    ]:
        pd.testing.assert_frame_equal(
            pd.read_parquet(clean / "results" / "sparse_parity" / rel),
            pd.read_parquet(wd / "results" / "sparse_parity" / rel),
        )


def test_bad_checkpoint_inputs_name_the_file(tmp_path, config):
    cfg = config()["tasks"]["sparse_parity"]
    log = train_run(TaskSpec.from_dict(cfg), 0, tmp_path / "run", progress=False)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=str(empty)):
        run_metrics(TaskSpec.from_dict(cfg), 0, empty, log, HESSIAN, progress=False)
    with pytest.raises(FileNotFoundError, match="missing"):
        run_metrics(TaskSpec.from_dict(cfg), 0, tmp_path / "missing", log, HESSIAN, progress=False)

    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "ckpt_000000.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"wrong/ckpt_000000\.pt: not a readable checkpoint"):
        run_metrics(TaskSpec.from_dict(cfg), 0, wrong, log, HESSIAN, progress=False)

    truncated = tmp_path / "truncated"
    shutil.copytree(tmp_path / "run", truncated)
    victim = list_checkpoints(truncated)[3]
    victim.write_bytes(victim.read_bytes()[:200])
    with pytest.raises(ValueError, match=rf"{victim.name}: not a readable checkpoint"):
        run_metrics(TaskSpec.from_dict(cfg), 0, truncated, log, HESSIAN, progress=False)

    other = config()["tasks"]["sparse_parity"]
    other["model"]["hidden"] = [7]
    with pytest.raises(ValueError, match="do not fit the configured model"):
        run_metrics(TaskSpec.from_dict(other), 0, tmp_path / "run", log, HESSIAN, progress=False)


def test_tables_with_missing_columns_or_garbage_name_the_file(tmp_path):
    path = tmp_path / "t.parquet"
    write_parquet(pd.DataFrame({"seed": [0], "checkpoint": [0]}), path)
    with pytest.raises(ValueError, match=r"t\.parquet: missing columns \['l1'\]"):
        read_parquet(path, columns=["seed", "l1"])
    path.write_text("garbage")
    with pytest.raises(ValueError, match=r"t\.parquet: not a readable Parquet file"):
        read_parquet(path)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    path = tmp_path / "out.parquet"
    write_parquet(pd.DataFrame({"a": [1]}), path)

    class Boom(pd.DataFrame):
        def to_parquet(self, *args, **kwargs):
            raise OSError("disk full")

    with pytest.raises(OSError):
        write_parquet(Boom({"a": [2]}), path)
    assert read_parquet(path)["a"].tolist() == [1]  # the old complete file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["out.parquet"]  # no temporary left behind


def test_atomic_outputs_get_the_permissions_of_any_new_file(tmp_path):
    """mkstemp makes 0600 files; an output renamed into place gets what the umask gives a new file
    (0644 under umask 022), so that a group can read the results on a shared filesystem."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        write_parquet(pd.DataFrame({"a": [1]}), tmp_path / "out.parquet")
        os.umask(0o027)
        write_parquet(pd.DataFrame({"a": [1]}), tmp_path / "group.parquet")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out.parquet").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "group.parquet").stat().st_mode) == 0o640


def test_feature_constant_across_all_runs_gives_finite_fit():
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(6):
        for t in range(40):
            rows.append(
                {
                    "seed": seed,
                    "checkpoint": t,
                    "step": t,
                    "a": t + rng.normal(),
                    "b": np.sin(t / 5) + 0.1 * rng.normal(),
                    "c": 3.0,
                }
            )
    cfg = {
        "features": ["a", "b", "c"],
        "val_fraction": 0.2,
        "seed": 0,
        "max_states": 3,
        "restarts": 2,
        "covariance": "full",
        "max_iter": 20,
        "tol": 0.1,
        "var_floor": 1e-3,
        "covariance_prior": 1e-2,
        "criterion": "bic",
        "n_states": None,
    }
    fit = fit_task(pd.DataFrame(rows), HMMSettings.defaults(**cfg))
    assert fit.restarts["error"].eq("").all()
    assert np.isfinite(fit.restarts["train_ll"]).all() and np.isfinite(fit.restarts["val_ll"]).all()
    assert len(fit.states) == 6 * 40


def test_unknown_hmm_feature_is_named():
    df = pd.DataFrame({"seed": [0, 0], "checkpoint": [0, 1], "l1": [1.0, 2.0]})
    with pytest.raises(ValueError, match=r"lacks HMM features \['l2'\]"):
        fit_task(df, HMMSettings.defaults(features=["l1", "l2"]))
    assert PAPER_FEATURES[0] == "l1"


@pytest.mark.slow
def test_diverging_task_is_flagged_and_the_workflow_finishes(make_workdir, tiny_config):
    cfg = dict(tiny_config)
    cfg["tasks"] = {k: dict(v) for k, v in tiny_config["tasks"].items()}
    cfg["tasks"]["modular_addition"]["train"] = {
        **tiny_config["tasks"]["modular_addition"]["train"],
        "lr": 50.0,
    }
    wd = make_workdir(cfg)
    snakemake(wd)
    res = wd / "results"
    metrics = pd.read_parquet(res / "modular_addition" / "metrics.parquet")
    assert metrics.groupby("seed")["diverged"].any().all()  # kept in the table, flagged
    excluded = pd.read_csv(res / "modular_addition" / "hmm" / "excluded_runs.csv")
    assert excluded["seed"].tolist() == [0, 1, 2]
    assert excluded["reason"].str.contains("diverged").all()
    summary = pd.read_csv(res / "summary.csv").set_index("task")
    assert summary.loc["modular_addition", "K"] == 0
    assert summary.loc["sparse_parity", "K"] >= 1  # the healthy task is unaffected
    assert pd.read_csv(res / "sparse_parity" / "hmm" / "excluded_runs.csv").empty
    for fig in [
        "model_selection.png",
        "training_curves.png",
        "transition_graph.png",
        "transition_graph.html",
    ]:
        assert (res / "modular_addition" / "figures" / fig).stat().st_size > 1000


@pytest.mark.slow
def test_corrupt_table_in_the_workflow_names_the_file_and_keeps_finished_work(tiny_run, tmp_path):
    wd = tmp_path / "copy"
    shutil.copytree(tiny_run, wd, symlinks=True)
    res = wd / "results"
    victim = res / "sparse_parity" / "runs" / "seed1" / "metrics.parquet"
    victim.write_text("this is not parquet")  # newer than its dependants: collate reruns
    keep = [
        res / "modular_addition" / "hmm" / "states.parquet",
        res / "sparse_parity" / "runs" / "seed0" / "checkpoints" / "ckpt_000000.pt",
        res / "sparse_parity" / "runs" / "seed1" / "train_log.parquet",
    ]
    before = [p.stat().st_mtime_ns for p in keep]
    proc = snakemake(wd, check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert f"{victim.relative_to(wd)}: not a readable Parquet file" in out
    assert [p.stat().st_mtime_ns for p in keep] == before  # finished work is untouched
