import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "data" / "tiny.yaml"
# The HMM and forecast settings of a few short imported runs: K up to 2, K chosen on every run.
SMALL_HMM = {"max_states": 2, "restarts": 2, "max_iter": 10, "criterion": "bic_train", "val_fraction": 0.0}
SMALL_FORECAST = {"fractions": [0.5], "folds": 2, "restarts": 1, "samples": 200}


def small_config(tasks: dict, **top) -> dict:
    """The config of a few short runs through the whole workflow: SMALL_HMM with diagonal
    covariances, SMALL_FORECAST, no stability stage; `top` adds or replaces top-level keys."""
    return {
        "hmm": {**SMALL_HMM, "covariance": "diag"},
        "forecast": SMALL_FORECAST,
        "stability": {"enabled": False},
        "tasks": tasks,
        **top,
    }


def snakemake_command(workdir: Path, *args: str, repo: Path = REPO) -> tuple[list[str], dict]:
    """The Snakemake command line (and environment) that `snakemake` runs in `workdir`."""
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(repo / "Snakefile"),
        "--directory",
        str(workdir),
        "--cores",
        "2",
        "--configfile",
        str(workdir / "config.yaml"),
        *args,
    ]
    return cmd, {**os.environ, "PYTHONHASHSEED": "0"}


def snakemake(
    workdir: Path, *args: str, check: bool = True, repo: Path = REPO
) -> subprocess.CompletedProcess:
    """Run the real Snakemake CLI on the repository's (or a copy's) Snakefile in `workdir`."""
    cmd, env = snakemake_command(workdir, *args, repo=repo)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=workdir)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def dry_run(workdir: Path, config: Path, *args: str) -> str:
    """The printed plan (jobs, messages, job counts) of a dry run of `config` alone, in `workdir`."""
    (workdir / "config.yaml").write_text("{}\n")
    proc = snakemake(workdir, "-n", "--configfile", str(config), "--replace-workflow-config", *args)
    return proc.stdout + proc.stderr


@pytest.fixture
def tiny_config() -> dict:
    return yaml.safe_load(TINY.read_text())


@pytest.fixture
def config():
    """A factory of validated configs, defaults filled in: the tiny one, or the YAML file `path`,
    with `changes` to its top level. Each call gives a fresh copy to change."""
    from latentstates.config import validate_config

    def make(path: Path = TINY, **changes) -> dict:
        return validate_config({**yaml.safe_load(Path(path).read_text()), **changes})

    return make


@pytest.fixture
def make_workdir(tmp_path):
    """A fresh working directory holding a config (the tiny one, or one given)."""

    def make(config: dict, name: str = "run") -> Path:
        wd = tmp_path / name
        wd.mkdir()
        (wd / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        return wd

    return make


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """One complete tiny workflow run shared by the read-only workflow tests."""
    wd = tmp_path_factory.mktemp("tiny")
    shutil.copy(TINY, wd / "config.yaml")
    snakemake(wd)
    return wd


@pytest.fixture
def tiny_task() -> dict:
    """A small trained task's definition (sparse parities), to build configs around."""
    return {
        "kind": "sparse_parity",
        "seeds": 2,
        "data": {"n_bits": 8, "k": 2, "n_train": 32, "n_test": 16},
        "model": {"hidden": [8]},
        "train": {"optimizer": "sgd", "lr": 0.1, "batch_size": 8, "epochs": 2, "checkpoint_every": 1},
    }


# The longest test files (their summed time in CI, longest first): `make test` hands whole files
# to its two workers in collection order (`--dist loadfile --no-loadscope-reorder`), so starting
# with these keeps one long file from running alone at the end (longest processing time first).
LONGEST_FIRST = (
    "test_slurm.py",
    "test_bad_inputs.py",
    "test_reliability.py",
    "test_lm_architectures.py",
    "test_workflow.py",
    "test_image_tasks.py",
    "test_sources.py",
    "test_hub_stream.py",
    "test_lightning.py",
    "test_trackers.py",
    "test_comparison.py",
    "test_hmm.py",
    "test_disk_full.py",
    "test_forecast.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest as collected
