"""Bad inputs, as users meet them: damaged, hand-edited or hostile files of every source, run
through the workflow's own entry points. Each stops with one message naming the file and what is
wrong, runs no code, publishes nothing, and a rerun after the repair succeeds."""

import json
import os
import pickle
import shutil
import subprocess
import sys
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import yaml

from bad_inputs import CASES, PWNED, Case, Hostile, make_base, metrics_csv, parity_run
from conftest import REPO, snakemake
from latentstates.config import ConfigError, read_yaml
from latentstates.states.sequences import zscore_runs
from latentstates.tasks import image_data


def _target(case: Case) -> str:
    """The output of the job that reads the case's input (its first consumer)."""
    if case.rule == "import_table":
        return f"results/{case.name}/metrics.parquet"
    return f"results/{case.name}/runs/seed0/run.json"


def _log(wd, case: Case):
    if case.rule == "import_table":
        return wd / "results" / "logs" / "import_table" / f"{case.name}.log"
    return wd / "results" / "logs" / case.rule / case.name / "seeds0-0.log"


def test_the_corpus_covers_every_source_and_names_each_case_once():
    names = [c.name for c in CASES]
    assert len(names) == len(set(names))
    counts = Counter(c.category for c in CASES)
    assert set(counts) == {
        "checkpoint files",
        "Hugging Face directories",
        "performance tables",
        "run directories",
        "metrics tables",
        "image data",
    }
    assert len(CASES) >= 70 and min(counts.values()) >= 6, counts


@pytest.mark.slow
def test_every_bad_input_stops_naming_its_file_and_a_repaired_rerun_succeeds(make_workdir, tmp_path):
    base = make_base(tmp_path / "base")
    roots = {c.name: tmp_path / "inputs" / c.name for c in CASES}
    tasks = {c.name: c.build(roots[c.name], base) for c in CASES}
    wd = make_workdir({"seeds_per_job": 1, "tasks": tasks})
    targets = [_target(c) for c in CASES]

    proc = snakemake(wd, "--keep-going", *targets, check=False)
    assert proc.returncode != 0
    wrong = []
    for c in CASES:
        log = _log(wd, c).read_text() if _log(wd, c).exists() else ""
        culprit = str(c.culprit(roots[c.name]))
        if culprit not in log or c.expect not in log:
            wrong.append(f"{c.name}: expected {culprit!r} and {c.expect!r} in the log, got:\n{log[-1500:]}")
        if "Traceback" in log:
            wrong.append(f"{c.name}: a traceback, not one message:\n{log[-1500:]}")
        if (wd / _target(c)).exists():
            wrong.append(f"{c.name}: {_target(c)} was published")
        if (roots[c.name] / PWNED).exists():
            wrong.append(f"{c.name}: the hostile file ran code")
    assert not wrong, "\n\n".join(wrong)
    # The message reaches the console too, once per case.
    assert (proc.stdout + proc.stderr).count("Error: ") >= len(CASES)

    for c in CASES:
        c.fix(roots[c.name], base)
    snakemake(wd, "--keep-going", *targets)  # a flag first: targets after --configfile are configs
    assert all((wd / t).exists() for t in targets)
    assert not any((roots[c.name] / PWNED).exists() for c in CASES)


CONFIG_CASES = {
    "yaml_syntax": (
        "tasks:\n  a: {kind: sparse_parity\n  seeds: 2\n",
        "config.yaml: line 3, column 8: not valid YAML",
    ),
    "not_a_mapping": ("- sparse_parity\n- modular_addition\n", "config.yaml: a config is a mapping"),
    "checkpoints_path_without_seed": (
        {"source": "checkpoints", "path": "runs/parity", "seeds": 2},
        "invalid config key 'tasks.bad.path': 'runs/parity' has no {seed}",
    ),
    "runs_path_without_seed": (
        {"source": "runs", "path": "runs/mine", "seeds": 3},
        "invalid config key 'tasks.bad.path': 'runs/mine' has no {seed}",
    ),
    "huggingface_path_without_step": (
        {"source": "huggingface", "architecture": "bert", "path": "bert/seed_{seed}", "seeds": 2},
        "invalid config key 'tasks.bad.path': 'bert/seed_{seed}' has no {step}",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CONFIG_CASES))
def test_a_bad_config_names_its_line_or_key(tmp_path, name):
    content, expect = CONFIG_CASES[name]
    if isinstance(content, dict):
        parity = {
            "kind": "sparse_parity",
            "data": {"n_bits": 8, "k": 2, "n_train": 8, "n_test": 8},
            "model": {"hidden": [4]},
        }
        content = yaml.safe_dump({"tasks": {"bad": {**parity, **content}}})
    (tmp_path / "config.yaml").write_text(content)
    # As a user runs it: the working directory's config.yaml (Snakemake itself reads a file given
    # with --configfile, before the workflow can name the line).
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "-n", "--cores", "1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert expect in proc.stdout + proc.stderr


def test_yaml_errors_name_the_line_and_column(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("hmm:\n  restarts: 3\n tasks: []\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: line 3, column 2: not valid YAML"):
        read_yaml(path)


def test_a_hostile_cifar_batch_runs_no_code_and_a_genuine_one_reads(tmp_path):
    d = image_data.cifar100_dir(tmp_path)
    d.mkdir(parents=True)
    (d / "train").write_bytes(pickle.dumps({"data": Hostile(tmp_path), "fine_labels": [1]}, protocol=2))
    (d / "test").write_bytes(b"")
    with pytest.raises(
        ValueError, match=r"cifar-100-python/train: not a readable CIFAR-100 batch .*posix\.system"
    ):
        image_data.cifar100(tmp_path, "train")
    assert not (tmp_path / PWNED).exists()
    # The official files come from numpy 1 (numpy.core.multiarray) under protocol 2: those read.
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
    raw = pickle.dumps({"data": data, "fine_labels": [4, 99, 0], "coarse_labels": [0, 1, 2]}, protocol=2)
    (d / "train").write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    x, y = image_data.cifar100(tmp_path, "train")
    np.testing.assert_array_equal(x, data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    assert y.tolist() == [4, 99, 0]


def test_features_too_large_to_square_are_z_scored_as_at_a_smaller_scale():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 2))
    small = pd.DataFrame({"seed": 0, "checkpoint": range(30), "a": x[:, 0], "b": x[:, 1]})
    huge = small.assign(a=small.a * 2.0**1000)
    z_small, z_huge = zscore_runs(small, ["a", "b"]), zscore_runs(huge, ["a", "b"])
    np.testing.assert_array_equal(z_huge.arrays[0], z_small.arrays[0])  # a power of two: exact
    assert z_huge.std[0, 0] == z_small.std[0, 0] * 2.0**1000


def proc_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO / "src")}


def test_the_forecast_command_names_a_run_that_is_not_there(tiny_config, tmp_path):
    task_dir = tmp_path / "results" / "sparse_parity"
    (task_dir / "hmm").mkdir(parents=True)
    (task_dir / "hmm" / "model.json").write_text(json.dumps({"k": 2, "features": ["l1"]}))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(tiny_config))
    missing = tmp_path / "nowhere" / "seed3"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "latentstates.forecast",
            str(task_dir),
            str(missing),
            "--config",
            "config.yaml",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=proc_env(),
    )
    assert proc.returncode == 2
    assert f"{missing}: no such file or directory" in proc.stderr and "Traceback" not in proc.stderr
    # The run there, the model.json a stub: the message names the file.
    missing.mkdir(parents=True)
    proc = subprocess.run(proc.args, capture_output=True, text=True, cwd=tmp_path, env=proc_env())
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{task_dir / 'hmm' / 'model.json'}: not a model.json of this workflow" in proc.stderr


@pytest.mark.slow
def test_a_changed_input_is_reimported_even_when_restored_with_an_older_time(make_workdir, tmp_path):
    base = make_base(tmp_path / "base")
    parity_run(tmp_path / "theirs" / "run0", base)
    table = tmp_path / "table.csv"
    metrics_csv(table)
    tasks = {
        "theirs": {
            **base.parity,
            "source": "checkpoints",
            "seeds": 1,
            "path": str(tmp_path / "theirs" / "run{seed}"),
        },
        "logged": {"source": "table", "path": str(table)},
    }
    wd = make_workdir({"tasks": tasks})
    targets = ["results/theirs/runs/seed0/train_log.parquet", "results/logged/metrics.parquet"]
    snakemake(wd, "--keep-going", *targets)
    first = [pd.read_parquet(wd / t) for t in targets]

    # Back up the inputs (times kept), change them, import again.
    victim = tmp_path / "theirs" / "run0" / "step_0.safetensors"
    backups = {p: tmp_path / f"backup_{p.name}" for p in (victim, table)}
    for p, b in backups.items():
        shutil.copy2(p, b)
    parity_run(tmp_path / "other", base)
    last = base.parity_states[-1][0]
    shutil.copy(tmp_path / "other" / f"step_{last}.safetensors", victim)  # another checkpoint's weights
    pd.read_csv(table).assign(grad_norm=lambda t: t.grad_norm + 1).to_csv(table, index=False)
    snakemake(wd, "--keep-going", *targets)
    changed = [pd.read_parquet(wd / t) for t in targets]
    assert not changed[0].equals(first[0]) and not changed[1].equals(first[1])

    # Restored with their old times (cp -p): older than the outputs, yet both imports rerun.
    for p, b in backups.items():
        shutil.copy2(b, p)
    plan = snakemake(wd, "-n", *targets).stdout
    assert "import_theirs_seeds0_0" in plan and "import_table" in plan
    snakemake(wd, "--keep-going", *targets)
    for t, df in zip(targets, first):
        pd.testing.assert_frame_equal(pd.read_parquet(wd / t), df)
    assert "Nothing to be done" in snakemake(wd, "-n", *targets).stdout
