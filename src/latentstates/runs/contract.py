"""The run contract: one directory per run, the boundary between producing runs and analysing them.

    <results>/<task>/runs/seed<seed>/
        run.json           what the run is (below)
        train_log.parquet  per checkpoint: checkpoint, step, epoch, train_loss, train_acc,
                           eval_loss, eval_acc (NaN where unknown), diverged, and the run's seeds
        checkpoints/       the weight files of a run trained here (imported runs stay where
                           they are: run.json points to them)

run.json holds the task, seed and source, the model (`spec`: a registered task kind with its
data and model settings, or an architecture whose matrices are read off its state dict), the
weights' `format` and every checkpoint's index, step, epoch and path. A Hub series streamed
through its metrics job (`hub.keep_cache: false`) has no files yet: its record's `hub` gives the
cache, `prefetch` and `download`, each checkpoint its `repo` and `revision`, and its path is
`hf://<repo>@<revision>` (runs.hub_stream). Training and every import source write it; the
metrics stage and everything after read only the contract, never where the run came from.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from latentstates.io import atomic_path
from latentstates.runs.checkpoints import list_checkpoints
from latentstates.runs.runtime import run_seeds
from latentstates.settings import TaskSpec
from latentstates.validation import InputError, describe, is_int, is_number, require_increasing, require_step

RUN_FILE = "run.json"
VERSION = 1
SOURCES = ("train", "checkpoints", "huggingface", "callback")
# How a checkpoint's weights are stored (latentstates.runs.weights.load_weights reads each).
FORMATS = ("workflow", "state_dict", "transformers")
# A streamed Hub checkpoint's keys, and the record's stream settings with their types.
HUB_KEYS = ("repo", "revision")
HUB_SETTINGS = {
    "cache": (str, "a path"),
    "prefetch": (int, "a whole number >= 0"),
    "download": (bool, "true or false"),
}


def make_run(
    *,
    task: str,
    seed: int,
    source: str,
    spec: dict[str, Any],
    fmt: str,
    checkpoints: list[dict[str, Any]],
    seeds: dict[str, int] | None = None,
    hub: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A run record; `checkpoints` are dicts of step, path and optionally epoch, in step order
    (and a streamed Hub series' `repo` and `revision`, with the record's `hub` settings)."""
    if source not in SOURCES:
        raise ValueError(f"unknown run source {source!r}; known: {SOURCES}")
    if fmt not in FORMATS:
        raise ValueError(f"unknown checkpoint format {fmt!r}; known: {FORMATS}")
    steps = [
        require_step(c["step"], f"task {task} seed {seed}", f"checkpoints[{i}].step")
        for i, c in enumerate(checkpoints)
    ]
    require_increasing(steps, f"task {task} seed {seed}", "checkpoints")
    run = {
        "version": VERSION,
        "task": task,
        "seed": int(seed),
        "source": source,
        "spec": spec,
        "format": fmt,
        "seeds": seeds or {"seed": int(seed)},
        "checkpoints": [
            {
                "index": i,
                "step": int(c["step"]),
                "epoch": None if c.get("epoch") is None else float(c["epoch"]),
                "path": str(c["path"]),
                **{k: c[k] for k in HUB_KEYS if k in c},
            }
            for i, c in enumerate(checkpoints)
        ],
    }
    if hub is not None:
        run["hub"] = dict(hub)
    return run


def write_run(path: str | Path, run: dict[str, Any]) -> None:
    """Write run.json atomically."""
    with atomic_path(Path(path)) as tmp:
        Path(tmp).write_text(json.dumps(run, indent=1, sort_keys=True) + "\n")


def read_run(path: str | Path) -> dict[str, Any]:
    """Read and check a run.json (`check_run`); errors name the file and the key."""
    path = Path(path)
    try:
        run = json.loads(path.read_text())
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror or exc})") from exc
    except ValueError as exc:
        raise InputError(path, f"not a readable run record (not JSON: {exc})") from exc
    return check_run(run, path)


def check_run(run: Any, path: str | Path) -> dict[str, Any]:
    """A run record as the contract defines it, or an `InputError` naming the key that is not:
    the task, seed, source and weight format; a spec that builds a registered kind (the config
    schema's task settings) or names a known architecture (with an optional model config); every
    checkpoint a mapping of an integer step (strictly increasing), a path and an optional epoch."""
    if not isinstance(run, dict):
        raise InputError(path, f"a run record is a mapping, got {describe(run)}")
    missing = [k for k in ("task", "seed", "source", "spec", "format", "checkpoints") if k not in run]
    if missing:
        raise InputError(path, f"run record lacks {missing}")
    if "version" in run and not (is_int(run["version"]) and 1 <= run["version"] <= VERSION):
        raise InputError(
            path,
            f"run record version {describe(run['version'])} is not one this workflow reads (1 to {VERSION})",
            "version",
        )
    if not isinstance(run["task"], str):
        raise InputError(path, f"must be a string, got {describe(run['task'])}", "task")
    if not (is_int(run["seed"]) and run["seed"] >= 0):
        raise InputError(path, f"must be a non-negative integer, got {describe(run['seed'])}", "seed")
    if run["source"] not in SOURCES:
        raise InputError(
            path, f"unknown run source {describe(run['source'])} (known: {', '.join(SOURCES)})", "source"
        )
    if run["format"] not in FORMATS:
        raise InputError(
            path,
            f"unknown checkpoint format {describe(run['format'])} (known: {', '.join(FORMATS)})",
            "format",
        )
    _check_spec(run["spec"], path)
    checkpoints = run["checkpoints"]
    if not isinstance(checkpoints, list):
        raise InputError(path, f"must be a list of checkpoints, got {describe(checkpoints)}", "checkpoints")
    if not checkpoints:
        raise InputError(path, "run record lists no checkpoints", "checkpoints")
    for i, c in enumerate(checkpoints):
        where = f"checkpoints[{i}]"
        if not isinstance(c, dict):
            raise InputError(path, f"must be a mapping of step, path and epoch, got {describe(c)}", where)
        lacks = [k for k in ("step", "path") if k not in c]
        if lacks:
            raise InputError(path, f"lacks {lacks}", where)
        require_step(c["step"], path, f"{where}.step")
        if not isinstance(c["path"], str) or not c["path"]:
            raise InputError(path, f"must be a file path, got {describe(c['path'])}", f"{where}.path")
        epoch = c.get("epoch")
        if epoch is not None and not (is_number(epoch) and math.isfinite(epoch)):
            raise InputError(path, f"must be a number or null, got {describe(epoch)}", f"{where}.epoch")
        if "index" in c and c["index"] != i:
            raise InputError(
                path, f"index {describe(c['index'])} is not the checkpoint's position {i}", f"{where}.index"
            )
    require_increasing([c["step"] for c in checkpoints], path, "checkpoints")
    if "hub" in run:
        _check_hub(run, path)
    return run


def _check_hub(run: dict[str, Any], path: str | Path) -> None:
    """A streamed Hub series' settings (cache, prefetch, download) and each checkpoint's repo and
    revision."""
    hub = run["hub"]
    if not isinstance(hub, dict):
        raise InputError(path, f"must be a mapping of {list(HUB_SETTINGS)}, got {describe(hub)}", "hub")
    if hub.get("endpoint") is not None and not isinstance(hub["endpoint"], str):
        raise InputError(path, f"must be a URL or null, got {describe(hub['endpoint'])}", "hub.endpoint")
    for key, (kind, what) in HUB_SETTINGS.items():
        value = hub.get(key)
        ok = is_int(value) and value >= 0 if kind is int else isinstance(value, kind)
        if not ok:
            raise InputError(path, f"must be {what}, got {describe(value)}", f"hub.{key}")
    for i, c in enumerate(run["checkpoints"]):
        for key in HUB_KEYS:
            if not isinstance(c.get(key), str) or not c[key]:
                raise InputError(
                    path,
                    f"a streamed checkpoint's {key}, got {describe(c.get(key))}",
                    f"checkpoints[{i}].{key}",
                )


def _check_spec(spec: Any, path: str | Path) -> None:
    """A run's model: a registered kind with its data and model settings (as a task's in the
    config), or an architecture read off the state dict with an optional model config."""
    from latentstates import validation
    from latentstates.config import ConfigError, check_task_spec

    if not isinstance(spec, dict):
        raise InputError(
            path, f"must be a mapping (a registered kind, or an architecture), got {describe(spec)}", "spec"
        )
    if "kind" in spec:
        lacks = [k for k in ("kind", "data", "model", "data_seed") if k not in spec]
        if lacks:
            raise InputError(path, f"a registered kind's spec lacks {lacks}", "spec")
        try:
            check_task_spec(spec)
        except ConfigError as exc:
            raise InputError(path, str(exc).replace("invalid config key", "invalid key"), "spec") from None
    elif "architecture" in spec:
        from latentstates.runs.architectures import ARCHITECTURES

        if spec["architecture"] not in ARCHITECTURES:
            raise InputError(
                path,
                f"unknown architecture {describe(spec['architecture'])} "
                f"(known: {', '.join(sorted(ARCHITECTURES))})",
                "spec.architecture",
            )
        if spec.get("config") is not None:
            validation.model_config(spec["config"], f"{path}: spec.config")
    else:
        raise InputError(path, "names neither a registered kind nor an architecture", "spec")


# The performance log's integer columns besides checkpoint: the step and the run's seeds.
LOG_INTEGERS = ("step", "seed", "init_seed", "data_seed", "order_seed")


def check_train_log(log: pd.DataFrame, run: dict[str, Any], path: str | Path) -> pd.DataFrame:
    """A run's performance log checked against its record: one row per checkpoint index (rows
    past the record's checkpoints, written ahead of run.json, are left out), integer columns as
    integers, steps equal to the record's, losses and accuracies numeric (accuracies in [0, 1]),
    `diverged` true or false in every row. Returns the log's rows of the record's checkpoints."""
    from latentstates.columns import PERFORMANCE_COLUMNS
    from latentstates.runs.external_tables import performance_columns

    if "checkpoint" not in log:
        raise InputError(path, f"no 'checkpoint' column (has {list(log.columns)})")
    for column in ("checkpoint", *(c for c in LOG_INTEGERS if c in log)):
        if not pd.api.types.is_integer_dtype(log[column]):
            sample = log[column].iloc[0] if len(log) else None
            raise InputError(
                path,
                f"must hold integers, holds {log[column].dtype} (e.g. {describe(sample)})",
                f"column {column!r}",
            )
    duplicated = log["checkpoint"][log["checkpoint"].duplicated()]
    if len(duplicated):
        raise InputError(
            path,
            f"more than one row for checkpoint(s) {sorted(set(duplicated.tolist()))[:5]}",
            "column 'checkpoint'",
        )
    n = len(run["checkpoints"])
    log = log[log["checkpoint"].between(0, n - 1)].sort_values("checkpoint").reset_index(drop=True)
    absent = sorted(set(range(n)) - set(log["checkpoint"].tolist()))
    if absent:
        raise InputError(
            path,
            f"no row for checkpoint(s) {absent[:5]} of the {n} its run record lists",
            "column 'checkpoint'",
        )
    if "step" in log:
        recorded = [c["step"] for c in run["checkpoints"]]
        differ = [i for i, s in enumerate(log["step"].tolist()) if s != recorded[i]]
        if differ:
            i = differ[0]
            raise InputError(
                path,
                f"checkpoint {i} is at step {log['step'].iloc[i]} here and at step {recorded[i]} in run.json",
                "column 'step'",
            )
    log = performance_columns(log, [c for c in ("epoch", *PERFORMANCE_COLUMNS) if c in log], path)
    if "diverged" in log:
        flags = log["diverged"]
        if not pd.api.types.is_bool_dtype(flags):
            ok = flags.map(lambda v: v in (0, 1) and not isinstance(v, str) and v == v)
            if not ok.all():
                first = int(np.flatnonzero(~ok.to_numpy())[0])
                raise InputError(
                    path,
                    f"{describe(flags.iloc[first])} is not true or false",
                    f"column 'diverged', row {first}",
                )
            log["diverged"] = flags.astype(bool)
    return log


def run_checkpoint_paths(run: dict[str, Any], run_file: str | Path) -> list[Path]:
    """Paths of a run's checkpoints; relative ones are relative to the run's directory."""
    base = Path(run_file).parent
    return [base / c["path"] for c in run["checkpoints"]]


def epoch_or_nan(checkpoint: dict[str, Any]) -> float:
    return math.nan if checkpoint.get("epoch") is None else float(checkpoint["epoch"])


def trained_run(
    task: TaskSpec,
    seed: int,
    checkpoint_dir: str | Path,
    train_log: pd.DataFrame,
    run_dir: str | Path | None = None,
) -> dict:
    """Run record of a run trained by this workflow: the checkpoint files in `checkpoint_dir`,
    with the step and epoch the training log gives each; paths relative to `run_dir` if given
    (where run.json goes), else absolute."""
    paths = list_checkpoints(checkpoint_dir)
    by_index = train_log.set_index("checkpoint")
    indices = [int(p.stem.split("_")[1]) for p in paths]
    missing = [i for i in indices if i not in by_index.index]
    if missing:
        raise ValueError(f"train log has no row for checkpoints {missing[:5]}")
    return make_run(
        task=task.name,
        seed=seed,
        source="train",
        spec=task.run_spec,
        fmt="workflow",
        checkpoints=[
            {
                "step": by_index.at[i, "step"],
                "epoch": by_index.at[i, "epoch"],
                "path": os.path.relpath(p, run_dir) if run_dir is not None else p.resolve(),
            }
            for i, p in zip(indices, paths)
        ],
        seeds=run_seeds(seed, task.data_seed),
    )
