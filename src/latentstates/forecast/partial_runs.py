"""A run still training as a metrics table: a checkpoint directory (also a `.partial` one), or a
run directory written from the user's own training loop (`latentstates.runs.writer`), whose
complete checkpoints the measure stage reads; what `latentstates forecast` forecasts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from latentstates.columns import PERFORMANCE_COLUMNS
from latentstates.runs.checkpoints import staging_dir
from latentstates.settings import TaskSpec


def partial_run_table(
    task: TaskSpec,
    seed: int,
    directory: str | Path,
    extra: Sequence[str] = (),
    custom: Sequence[dict] = (),
    per_layer: str | None = None,
) -> pd.DataFrame:
    """Weight statistics of the checkpoints a run has written so far (with the config's
    `metrics.extra`, `metrics.custom` and `metrics.per_layer` columns), and its eval accuracy.

    `directory` is the run's checkpoint directory, or its `.partial` staging directory while it
    trains; eval accuracy comes from each checkpoint's log row (checkpoints written before
    they carried one: from the newest resume state, else the run's training log).
    """
    from latentstates.runs.checkpoints import list_checkpoints
    from latentstates.runs.contract import RUN_FILE, make_run

    directory = Path(directory)
    if not directory.is_dir() and staging_dir(directory).is_dir():
        directory = staging_dir(directory)
    checkpoints, logged = _complete_checkpoints(list_checkpoints(directory), directory)
    log, has_performance = _performance_log(directory, checkpoints, logged)
    run = make_run(
        task="",
        seed=seed,
        source="train",
        spec=task.run_spec,
        fmt="workflow",
        checkpoints=checkpoints,
    )
    return _weight_table(run, directory / RUN_FILE, log, has_performance, extra, custom, per_layer)


def _weight_table(
    run: dict,
    run_file: Path,
    log: pd.DataFrame,
    has_performance: bool,
    extra: Sequence[str] = (),
    custom: Sequence[dict] = (),
    per_layer: str | None = None,
) -> pd.DataFrame:
    """The measure stage's table of a run's checkpoints, without the Hessian (no eval accuracy
    column where the run has none)."""
    from latentstates.measure.extract import metrics_of_run
    from latentstates.settings import HessianSettings

    no_hessian = HessianSettings.defaults(enabled=False)
    table = metrics_of_run(
        run,
        run_file,
        log,
        no_hessian,
        device="cpu",
        progress=False,
        extra=extra,
        custom=custom,
        per_layer=per_layer,
    )
    table.insert(0, "seed", run["seed"])
    return table if has_performance else table.drop(columns="eval_acc")


def written_run_table(
    directory: str | Path,
    extra: Sequence[str] = (),
    custom: Sequence[dict] = (),
    per_layer: str | None = None,
) -> pd.DataFrame:
    """Weight statistics of the checkpoints a run written by `latentstates.runs.writer` lists so
    far (run.json is replaced atomically after each, so a run still training reads whole), with
    what its log holds (eval accuracy, where logged)."""
    from latentstates.runs.contract import RUN_FILE
    from latentstates.runs.sources import read_written_run

    run, log = read_written_run(directory)
    performance = bool(log["eval_acc"].notna().any())
    return _weight_table(run, Path(directory) / RUN_FILE, log, performance, extra, custom, per_layer)


def _complete_checkpoints(paths: list[Path], directory: Path) -> tuple[list[dict], list[dict]]:
    """The run record's checkpoints of `paths` that are complete and contiguous from index 0
    (a forecast needs them from the start, without gaps), and their log rows if they carry them."""
    from latentstates.runs.checkpoints import load_checkpoint

    checkpoints, logged = [], []
    for path in paths:
        try:
            ckpt = load_checkpoint(path)
        except ValueError:
            # Training writes its checkpoints in place (save_checkpoint): the newest file of a
            # run still training may be half-written.
            if path == paths[-1] and directory.name.endswith(".partial"):
                break
            raise
        if ckpt["index"] != len(checkpoints):  # a gap: the run record's index is the position
            if not checkpoints:
                raise ValueError(f"{directory}: the run's checkpoints must start at index 0")
            break
        checkpoints.append({"step": ckpt["step"], "epoch": ckpt.get("epoch"), "path": path.resolve()})
        if "row" in ckpt:
            logged.append({**ckpt["row"], "checkpoint": ckpt["index"]})
    if not checkpoints:
        raise ValueError(f"{directory}: no complete checkpoint yet")
    return checkpoints, logged


def _performance_log(
    directory: Path, checkpoints: list[dict], logged: list[dict]
) -> tuple[pd.DataFrame, bool]:
    """A training log row per checkpoint: the checkpoints' own rows, else the newest resume
    state's, else the run's training log; performance NaN where none says. And whether any of
    them had the eval accuracy (without, the forecast conditions on nothing but the metrics)."""
    from latentstates.runs.checkpoints import read_resume, resume_rows

    index = pd.DataFrame({"checkpoint": range(len(checkpoints))})
    if len(logged) == len(checkpoints):
        log = pd.DataFrame(logged)
    else:
        resume = read_resume(directory) if directory.name.endswith(".partial") else None
        log = pd.DataFrame(resume_rows(resume)) if resume else None
        if log is None:
            train_log = directory.parent / "train_log.parquet"
            log = pd.read_parquet(train_log) if train_log.exists() else None
    has_performance = log is not None and "eval_acc" in log
    if not has_performance:
        log = pd.DataFrame(columns=["checkpoint"])
    columns = [c for c in PERFORMANCE_COLUMNS if c in log]
    out = index.merge(log[["checkpoint", *columns]], on="checkpoint", how="left")
    for c in PERFORMANCE_COLUMNS:
        if c not in out:
            out[c] = np.nan
    return out, has_performance


def contiguous(table: pd.DataFrame, source: str) -> pd.DataFrame:
    """Checkpoints 0..t-1 of one run (a forecast needs them from the start, without gaps)."""
    table = table.sort_values("checkpoint")
    idx = table["checkpoint"].to_numpy()
    gaps = np.flatnonzero(idx != np.arange(len(idx)))
    if len(idx) == 0 or idx[0] != 0:
        raise ValueError(f"{source}: the run's checkpoints must start at index 0")
    return table.iloc[: gaps[0]] if len(gaps) else table
