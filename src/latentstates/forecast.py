"""Command line: current latent state, detour flag and convergence forecast of a run in progress.

`python -m latentstates.forecast TASK_DIR RUN`: RUN is a metrics table, a checkpoint directory
(also a `.partial` one while the run trains), or a run directory written from the user's own
training loop (`latentstates.runs.writer`, also while it trains), whose weight statistics the
measure stage computes.
The forecast itself is `latentstates.states.forecast`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from latentstates.columns import PERFORMANCE_COLUMNS
from latentstates.runs.checkpoints import staging_dir
from latentstates.runs.external_tables import read_table
from latentstates.states.forecast import METHODS, Forecast, Forecaster


def partial_run_table(task_cfg: dict, seed: int, directory: str | Path) -> pd.DataFrame:
    """Weight statistics of the checkpoints a run has written so far, and its eval accuracy.

    `directory` is the run's checkpoint directory, or its `.partial` staging directory while it
    trains; eval accuracy comes from each checkpoint's log row (checkpoints written before
    they carried one: from the newest resume state, else the run's training log).
    """
    from latentstates.runs.checkpoints import list_checkpoints, staging_dir
    from latentstates.runs.contract import RUN_FILE, make_run, model_spec

    directory = Path(directory)
    if not directory.is_dir() and staging_dir(directory).is_dir():
        directory = staging_dir(directory)
    checkpoints, logged = _complete_checkpoints(list_checkpoints(directory), directory)
    log, has_performance = _performance_log(directory, checkpoints, logged)
    run = make_run(
        task="",
        seed=seed,
        source="train",
        spec=model_spec(task_cfg),
        fmt="workflow",
        checkpoints=checkpoints,
    )
    return _weight_table(run, directory / RUN_FILE, log, has_performance)


def _weight_table(run: dict, run_file: Path, log: pd.DataFrame, has_performance: bool) -> pd.DataFrame:
    """The measure stage's table of a run's checkpoints, without the Hessian (no eval accuracy
    column where the run has none)."""
    from latentstates.measure.extract import metrics_of_run
    from latentstates.settings import HessianSettings

    no_hessian = HessianSettings.defaults(enabled=False)
    table = metrics_of_run(run, run_file, log, no_hessian, device="cpu", progress=False)
    table.insert(0, "seed", run["seed"])
    return table if has_performance else table.drop(columns="eval_acc")


def written_run_table(directory: str | Path) -> pd.DataFrame:
    """Weight statistics of the checkpoints a run written by `latentstates.runs.writer` lists so
    far (run.json is replaced atomically after each, so a run still training reads whole), with
    what its log holds (eval accuracy, where logged)."""
    from latentstates.runs.contract import RUN_FILE
    from latentstates.runs.sources import read_written_run

    run, log = read_written_run(directory)
    return _weight_table(run, Path(directory) / RUN_FILE, log, bool(log["eval_acc"].notna().any()))


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


def _contiguous(table: pd.DataFrame, source: str) -> pd.DataFrame:
    """Checkpoints 0..t-1 of one run (a forecast needs them from the start, without gaps)."""
    table = table.sort_values("checkpoint")
    idx = table["checkpoint"].to_numpy()
    gaps = np.flatnonzero(idx != np.arange(len(idx)))
    if len(idx) == 0 or idx[0] != 0:
        raise ValueError(f"{source}: the run's checkpoints must start at index 0")
    return table.iloc[: gaps[0]] if len(gaps) else table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m latentstates.forecast",
        description="Current latent state, detour flag and convergence forecast of a run in progress.",
    )
    parser.add_argument("task_dir", help="a task's results directory, e.g. results/modular_addition")
    parser.add_argument(
        "run", help="the run: a metrics table (.parquet/.csv) or a checkpoint directory (also .partial)"
    )
    parser.add_argument("--config", default="config.yaml", help="for checkpoint directories and threshold")
    parser.add_argument("--seed", type=int, default=None, help="run seed (checkpoint directories)")
    parser.add_argument("--seed-in-table", type=int, default=None, help="which seed of a multi-run table")
    parser.add_argument("--method", choices=METHODS, default=None, help="default: config forecast.method")
    parser.add_argument("--level", type=float, default=None, help="interval level; default: config")
    parser.add_argument("--json", action="store_true", help="print the forecast as JSON")
    args = parser.parse_args(argv)

    from latentstates.config import load_config
    from latentstates.settings import ForecastSettings

    task_dir = Path(args.task_dir)
    task = task_dir.name
    try:
        config = load_config(args.config)
    except ValueError as exc:  # unreadable or invalid: the message names the file or key
        parser.error(str(exc))
    if task not in config["tasks"]:
        parser.error(f"task {task!r} (from {task_dir}) is not in {args.config}")
    task_cfg = config["tasks"][task]
    settings = ForecastSettings.from_config(config)
    settings = settings.replace(method=args.method or settings.method, level=args.level or settings.level)
    model_path = task_dir / "hmm" / "model.json"
    if not model_path.is_file():
        parser.error(
            f"{model_path}: no fitted HMM here (is {task_dir} a task's results directory, after its hmm job?)"
        )
    model = json.loads(model_path.read_text())
    if model.get("k", 0) == 0:
        parser.error(f"{model_path}: no fitted HMM")
    run = Path(args.run)
    if not run.exists() and not staging_dir(run).exists():  # a run still training: checkpoints.partial
        parser.error(f"{run}: no such file or directory (the run: a metrics table or a checkpoint directory)")
    fc = fitted_forecaster(task_dir, model, task_cfg["convergence_threshold"])
    try:
        table = _run_table(parser, args, run, task_cfg)
    except ValueError as exc:  # a bad table or checkpoint: the message names the file
        parser.error(str(exc))
    missing = [f for f in model["features"] if f not in table]
    if missing:
        parser.error(f"{run}: lacks the HMM's features {missing}")
    table = _contiguous(table, str(run))
    acc = table["eval_acc"].to_numpy(dtype=float) if "eval_acc" in table else None
    out = fc.forecast(table[model["features"]].to_numpy(dtype=float), acc, settings)
    if args.json:
        print(json.dumps({"task": task, "run": str(run), "length": fc.length, **out.as_dict()}, indent=2))
    else:
        print(_report(task, run, fc, out))
    return 0


def fitted_forecaster(task_dir: Path, model: dict, threshold: float) -> Forecaster:
    """The forecaster of a task's results directory: its model, fitted runs and detour states."""
    from latentstates.states.sequences import first_checkpoints

    summary_path = task_dir / "analysis" / "summary.json"
    detours = json.loads(summary_path.read_text())["detour_states"] if summary_path.exists() else []
    fitted = pd.read_parquet(
        task_dir / "metrics.parquet", columns=["seed", "checkpoint", "step", "eval_acc", *model["features"]]
    )
    fitted = first_checkpoints(fitted, model.get("first_n"))
    return Forecaster.fit(model, fitted, threshold, detours)


def _run_table(parser: argparse.ArgumentParser, args: argparse.Namespace, run: Path, task_cfg: dict):
    """The run's metrics: read from a table, or measured from its checkpoint directory."""
    if run.suffix in (".parquet", ".csv"):
        table = read_table(run)
        if "seed" in table and table["seed"].nunique() > 1:
            if args.seed_in_table is None:
                parser.error(f"{run} holds several runs: choose one with --seed-in-table")
            table = table[table["seed"] == args.seed_in_table]
        return table
    if (run / "run.json").is_file():  # a run written from the user's loop (runs.writer)
        return written_run_table(run)
    seed = args.seed
    if seed is None:
        name = run.name[: -len(".partial")] if run.name.endswith(".partial") else run.name
        parent = run.parent.name if name == "checkpoints" else name
        if not parent.startswith("seed") or not parent[4:].isdigit():
            parser.error(f"cannot tell the run's seed from {run}: pass --seed")
        seed = int(parent[4:])
    return partial_run_table(task_cfg, seed, run)


def _report(task: str, run: Path, fc: Forecaster, out: Forecast) -> str:
    """The forecast in words."""
    lines = [f"{task}: {run}", f"  checkpoints seen: {out.t} of {fc.length}"]
    lines.append(f"  current state: {out.state} (filtered probability {out.state_probability:.2f})")
    if fc.detour_states:
        flag = "yes" if out.in_detour else "no"
        lines.append(f"  entered a detour state {fc.detour_states}: {flag}")
    else:
        lines.append("  detour states: none in this task's model")
    if out.converged:
        lines.append(f"  converged at checkpoint {out.predicted:.0f} (eval accuracy > {fc.threshold})")
    else:
        lines.append(
            f"  forecast convergence: checkpoint {out.predicted:.0f} "
            f"({out.level:.0%} interval {out.low:.0f}–{out.high:.0f}; {out.method}); "
            f"naive: {fc.baseline():.0f}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
