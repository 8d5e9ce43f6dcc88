"""Command line: current latent state, detour flag and convergence forecast of a run in progress.

`latentstates forecast TASK_DIR RUN`: RUN is a metrics table, a checkpoint directory
(also a `.partial` one while the run trains), or a run directory written from the user's own
training loop (`latentstates.runs.writer`, also while it trains), whose weight statistics the
measure stage computes (`forecast.partial_runs`).
The forecast itself is `latentstates.forecast.model`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from latentstates.forecast.model import METHODS, Forecast, Forecaster
from latentstates.forecast.partial_runs import contiguous, partial_run_table, written_run_table
from latentstates.runs.checkpoints import staging_dir
from latentstates.runs.external_tables import read_table
from latentstates.settings import TaskSpec
from latentstates.states.model import StateModel


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="latentstates forecast",
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
    spec = TaskSpec.of_task(config, task)
    settings = ForecastSettings.from_config(config)
    settings = settings.replace(method=args.method or settings.method, level=args.level or settings.level)
    model_path = task_dir / "hmm" / "model.json"
    if not model_path.is_file():
        parser.error(
            f"{model_path}: no fitted HMM here (is {task_dir} a task's results directory, after its hmm job?)"
        )
    run = Path(args.run)
    if not run.exists() and not staging_dir(run).exists():  # a run still training: checkpoints.partial
        parser.error(f"{run}: no such file or directory (the run: a metrics table or a checkpoint directory)")
    try:
        model = StateModel.read(model_path)
    except ValueError as exc:  # not a model.json of this workflow: the message names it
        parser.error(str(exc))
    if model.k == 0:
        parser.error(f"{model_path}: no fitted HMM")
    fc = fitted_forecaster(task_dir, model, config["tasks"][task]["convergence_threshold"])
    try:
        table = _run_table(parser, args, run, spec, config["metrics"])
    except ValueError as exc:  # a bad table or checkpoint: the message names the file
        parser.error(str(exc))
    missing = [f for f in model.features if f not in table]
    if missing:
        parser.error(f"{run}: lacks the HMM's features {missing}")
    table = contiguous(table, str(run))
    acc = table["eval_acc"].to_numpy(dtype=float) if "eval_acc" in table else None
    out = fc.forecast(table[model.features].to_numpy(dtype=float), acc, settings)
    if args.json:
        print(json.dumps({"task": task, "run": str(run), "length": fc.length, **out.as_dict()}, indent=2))
    else:
        print(_report(task, run, fc, out))
    return 0


def fitted_forecaster(task_dir: Path, model: StateModel, threshold: float) -> Forecaster:
    """The forecaster of a task's results directory: its model, fitted runs and detour states."""
    from latentstates.states.sequences import analysed_metrics

    summary_path = task_dir / "analysis" / "summary.json"
    detours = json.loads(summary_path.read_text())["detour_states"] if summary_path.exists() else []
    return Forecaster.fit(model, analysed_metrics(task_dir / "metrics.parquet", model), threshold, detours)


def _run_table(
    parser: argparse.ArgumentParser, args: argparse.Namespace, run: Path, spec: TaskSpec, metrics: dict
):
    """The run's metrics: read from a table, or measured from its checkpoint directory (with the
    config's extra, custom and per-layer measures)."""
    measures = {
        "extra": metrics["extra"],
        "custom": metrics["custom"],
        "per_layer": metrics["per_layer"] or None,
    }
    if run.suffix in (".parquet", ".csv"):
        table = read_table(run)
        if "seed" in table and table["seed"].nunique() > 1:
            if args.seed_in_table is None:
                parser.error(f"{run} holds several runs: choose one with --seed-in-table")
            table = table[table["seed"] == args.seed_in_table]
        return table
    if (run / "run.json").is_file():  # a run written from the user's loop (runs.writer)
        return written_run_table(run, **measures)
    seed = args.seed
    if seed is None:
        name = run.name[: -len(".partial")] if run.name.endswith(".partial") else run.name
        parent = run.parent.name if name == "checkpoints" else name
        if not parent.startswith("seed") or not parent[4:].isdigit():
            parser.error(f"cannot tell the run's seed from {run}: pass --seed")
        seed = int(parent[4:])
    return partial_run_table(spec, seed, run, **measures)


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
