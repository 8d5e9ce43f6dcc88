"""The run contract: one directory per run, the boundary between producing runs and analysing them.

    <results>/<task>/runs/seed<seed>/
        run.json           what the run is (below)
        train_log.parquet  per checkpoint: checkpoint, step, epoch, train_loss, train_acc,
                           eval_loss, eval_acc (NaN where unknown), diverged, and the run's seeds
        checkpoints/       the weight files of a run trained here (imported runs stay where
                           they are: run.json points to them)

run.json holds the task, seed and source, the model (`spec`: a registered task kind with its
data and model settings, or an architecture whose matrices are read off its state dict), the
weights' `format` and every checkpoint's index, step, epoch and path. Training and every import
source write it; the metrics stage and everything after read only the contract, never where the
run came from.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

from latentstates.io import atomic_path
from latentstates.runs.checkpoints import list_checkpoints
from latentstates.runs.runtime import run_seeds

RUN_FILE = "run.json"
VERSION = 1
SOURCES = ("train", "checkpoints", "huggingface", "callback")
# How a checkpoint's weights are stored (latentstates.runs.weights.load_weights reads each).
FORMATS = ("workflow", "state_dict", "transformers")


def make_run(
    *,
    task: str,
    seed: int,
    source: str,
    spec: dict[str, Any],
    fmt: str,
    checkpoints: list[dict[str, Any]],
    seeds: dict[str, int] | None = None,
) -> dict[str, Any]:
    """A run record; `checkpoints` are dicts of step, path and optionally epoch, in step order."""
    if source not in SOURCES:
        raise ValueError(f"unknown run source {source!r}; known: {SOURCES}")
    if fmt not in FORMATS:
        raise ValueError(f"unknown checkpoint format {fmt!r}; known: {FORMATS}")
    steps = [c["step"] for c in checkpoints]
    if steps != sorted(steps) or len(set(steps)) != len(steps):
        raise ValueError(f"task {task} seed {seed}: checkpoint steps must increase, got {steps[:10]}")
    return {
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
            }
            for i, c in enumerate(checkpoints)
        ],
    }


def write_run(path: str | Path, run: dict[str, Any]) -> None:
    """Write run.json atomically."""
    with atomic_path(Path(path)) as tmp:
        Path(tmp).write_text(json.dumps(run, indent=1, sort_keys=True) + "\n")


def read_run(path: str | Path) -> dict[str, Any]:
    """Read and check a run.json; errors name the file."""
    path = Path(path)
    try:
        run = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable run record ({exc})") from exc
    missing = [k for k in ("task", "seed", "source", "spec", "format", "checkpoints") if k not in run]
    if missing:
        raise ValueError(f"{path}: run record lacks {missing}")
    if not run["checkpoints"]:
        raise ValueError(f"{path}: run record lists no checkpoints")
    return run


def run_checkpoint_paths(run: dict[str, Any], run_file: str | Path) -> list[Path]:
    """Paths of a run's checkpoints; relative ones are relative to the run's directory."""
    base = Path(run_file).parent
    return [base / c["path"] for c in run["checkpoints"]]


def epoch_or_nan(checkpoint: dict[str, Any]) -> float:
    return math.nan if checkpoint.get("epoch") is None else float(checkpoint["epoch"])


def trained_run(
    task_cfg: dict,
    seed: int,
    checkpoint_dir: str | Path,
    train_log: pd.DataFrame,
    task: str = "",
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
        task=task,
        seed=seed,
        source="train",
        spec=model_spec(task_cfg),
        fmt="workflow",
        checkpoints=[
            {
                "step": by_index.at[i, "step"],
                "epoch": by_index.at[i, "epoch"],
                "path": os.path.relpath(p, run_dir) if run_dir is not None else p.resolve(),
            }
            for i, p in zip(indices, paths)
        ],
        seeds=run_seeds(seed, task_cfg["data_seed"]),
    )


def model_spec(task_cfg: dict) -> dict:
    """What builds a registered kind's model and data (a run record's `spec`)."""
    return {k: task_cfg[k] for k in ("kind", "data", "model", "data_seed")}
