"""Runs logged to an experiment tracker, read as a metrics table (one row per run and step, a
column per logged scalar) that then goes where a `source: table` goes: straight to the HMM.

- `tensorboard`: a directory of TensorBoard event files per run (the sub-directories of `path`,
  or `runs`: run label → directory), read with TensorBoard's own reader (`EventAccumulator`).
- `mlflow`: the runs of an MLflow `experiment` (or the `run_ids`) in a tracking store
  (`tracking_uri`: a server, `sqlite:///mlflow.db`, a local `mlruns/`), their metric histories
  read with MLflow's own client; a run is labelled by its name (its id where names repeat); of
  two values logged at one step the one logged last (by timestamp) is kept.

`scalars` maps each column to the tag logged: the HMM's features, and the performance columns
(train_loss, train_acc, eval_loss, eval_acc) that the convergence analyses read. A run's rows are
the steps at which every feature was logged; a performance column is NaN at a step it was not
logged at. Steps as the reader documents them: after a restart TensorBoard's reader drops the
events the restarted job wrote again (`purge_orphaned_data`), and of two values logged at one
step the last one written is kept. The library is imported only here, when such a task is read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from latentstates.columns import PERFORMANCE_COLUMNS
from latentstates.validation import InputError, MissingInputError

EVENT_FILE = "events.out.tfevents"


def run_directories(path: str | os.PathLike, runs: Mapping[str, str] | None = None) -> dict[str, Path]:
    """Run label → directory: `runs` as given (relative to `path`), else every sub-directory of
    `path` holding event files (the directory itself when it holds them and has none)."""
    root = Path(path)
    if runs:
        return {str(label): root / d for label, d in runs.items()}
    if not root.is_dir():
        raise MissingInputError(root, "the directory of TensorBoard runs does not exist")
    found = {d.name: d for d in sorted(root.iterdir()) if d.is_dir() and _event_files(d)}
    if not found and _event_files(root):
        found = {root.name: root}
    if not found:
        raise InputError(root, f"no TensorBoard event files ({EVENT_FILE}.*) in it or its sub-directories")
    return found


def _event_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob(f"{EVENT_FILE}*") if p.is_file())


def event_files(path: str | os.PathLike, runs: Mapping[str, str] | None = None) -> list[Path]:
    """Every event file of the runs (what an import reads: its rerun fingerprint)."""
    try:
        return [f for d in run_directories(path, runs).values() for f in _event_files(d)]
    except (InputError, MissingInputError):
        return []


def scalar_series(directory: Path) -> dict[str, pd.Series]:
    """Tag → values by step of one run's event files, with TensorBoard's own reader (scalars
    logged by `add_scalar`, and the tensor summaries of the scalars plugin)."""
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.util import tensor_util

    acc = ea.EventAccumulator(str(directory), size_guidance={ea.SCALARS: 0, ea.TENSORS: 0})
    acc.Reload()
    tags = acc.Tags()
    series = {}
    for tag in tags.get("scalars", []):
        events = acc.Scalars(tag)
        series[tag] = _last_per_step([e.step for e in events], [float(e.value) for e in events])
    for tag in tags.get("tensors", []):
        events = acc.Tensors(tag)
        values = [tensor_util.make_ndarray(e.tensor_proto) for e in events]
        if tag not in series and all(v.size == 1 and v.dtype.kind in "fiu" for v in values):  # not text
            series[tag] = _last_per_step([e.step for e in events], [float(v.reshape(-1)[0]) for v in values])
    return series


def _last_per_step(steps: list[int], values: list[float]) -> pd.Series:
    s = pd.Series(values, index=pd.Index(steps, dtype="int64"), dtype="float64")
    return s[~s.index.duplicated(keep="last")].sort_index()


def tensorboard_table(
    path: str | os.PathLike,
    scalars: Mapping[str, str],
    features: list[str],
    runs: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Columns run, step and each of `scalars` (column → tag) of every run: the steps at which
    every feature column was logged. Raises InputError naming the run and the key of a tag it
    did not log, or a run with no step at which all its features were logged."""
    frames = []
    for label, directory in run_directories(path, runs).items():
        if not directory.is_dir():
            raise MissingInputError(directory, f"run {label!r}: the directory does not exist")
        logged = scalar_series(directory)
        _require_logged(scalars, logged, directory, f"run {label!r}")
        columns = {column: logged[tag] for column, tag in scalars.items()}
        frames.append(_aligned(columns, features, label, directory))
    table = pd.concat(frames, ignore_index=True)
    return table[["run", "step", *scalars]]


def mlflow_table(
    tracking_uri: str,
    scalars: Mapping[str, str],
    features: list[str],
    experiment: str | None = None,
    run_ids: list[str] | None = None,
) -> pd.DataFrame:
    """Columns run, step and each of `scalars` (column → metric key) of every run of
    `experiment` (or of `run_ids`) in the MLflow store at `tracking_uri`, aligned as
    `tensorboard_table` aligns them; errors name the store, the run and the key."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    try:
        if run_ids:
            runs = [client.get_run(run_id) for run_id in run_ids]
        else:
            found = client.get_experiment_by_name(experiment)
            if found is None:
                names = [e.name for e in client.search_experiments()]
                raise InputError(tracking_uri, f"no experiment {experiment!r} (it has {names})", "experiment")
            runs, token = [], None
            while True:
                page = client.search_runs(
                    [found.experiment_id], page_token=token, order_by=["attributes.start_time ASC"]
                )
                runs += list(page)
                token = page.token
                if not token:
                    break
    except MlflowException as exc:
        raise InputError(tracking_uri, f"MLflow cannot read it: {str(exc).splitlines()[0]}") from None
    if not runs:
        raise InputError(tracking_uri, f"experiment {experiment!r} has no runs", "experiment")
    names = [r.info.run_name or r.info.run_id for r in runs]
    labels = [n if names.count(n) == 1 else r.info.run_id for n, r in zip(names, runs)]
    frames = []
    for label, run in zip(labels, runs):
        _require_logged(scalars, run.data.metrics, tracking_uri, f"run {label!r} ({run.info.run_id})")
        columns = {}
        for column, key in scalars.items():
            history = client.get_metric_history(run.info.run_id, key)
            history = sorted(history, key=lambda m: (m.step, m.timestamp))
            columns[column] = _last_per_step([m.step for m in history], [float(m.value) for m in history])
        frames.append(_aligned(columns, features, label, tracking_uri))
    return pd.concat(frames, ignore_index=True)[["run", "step", *scalars]]


def _require_logged(scalars: Mapping[str, str], logged, where, run: str) -> None:
    """Every tag of `scalars` among the `logged` ones, else an InputError naming the run, the key
    of each tag it did not log, and the tags it did log."""
    missing = {column: tag for column, tag in scalars.items() if tag not in logged}
    if missing:
        key = ", ".join(f"scalars.{c} ({t!r})" for c, t in missing.items())
        raise InputError(where, f"{run} logged no {key}; it logged {sorted(logged) or 'no scalars'}")


def _aligned(columns: dict[str, pd.Series], features: list[str], label: str, where) -> pd.DataFrame:
    """One run's rows: the steps at which every feature was logged, the other columns there."""
    steps = None
    for column in features:
        index = columns[column].index
        steps = index if steps is None else steps.intersection(index)
    if steps is None or not len(steps):
        raise InputError(where, f"run {label!r} has no step at which every feature {features} was logged")
    frame = pd.DataFrame({c: s.reindex(steps) for c, s in columns.items()})
    return frame.rename_axis("step").reset_index().assign(run=label)


def tracker_table(task: Mapping, features: list[str]) -> pd.DataFrame:
    """A tracker task's runs as a table (run, step, its scalars' columns)."""
    if task["source"] == "tensorboard":
        return tensorboard_table(task["path"], task["scalars"], features, task.get("runs"))
    return mlflow_table(
        task["tracking_uri"], task["scalars"], features, task.get("experiment"), task.get("run_ids")
    )


def default_features(scalars: Mapping[str, str]) -> list[str]:
    """The HMM's features where a tracker task names none: its scalars but the performance ones."""
    return [c for c in scalars if c not in PERFORMANCE_COLUMNS]


def state_path(steps: list[int], states: list[int]) -> str:
    """A run's decoded states as its stretches: `0 (steps 0-11) → 1 (steps 12-39)`."""
    parts, start = [], 0
    for i in range(1, len(states) + 1):
        if i == len(states) or states[i] != states[start]:
            parts.append(f"{states[start]} (steps {steps[start]}-{steps[i - 1]})")
            start = i
    return " → ".join(parts)


def findings_text(summary: Mapping) -> str:
    """The task's findings (analysis/summary.json) as the Markdown of a text summary."""
    detours = summary.get("detour_states") or []
    lines = [
        f"**{summary['k']} latent states** (K chosen by {summary.get('criterion', 'the config')})",
        f"- top edge: {summary.get('top_edge') or 'none'}",
        f"- detour states: {', '.join(map(str, detours)) or 'none'}",
        f"- converged runs: {summary.get('n_converged')} of {summary.get('n_runs')}",
    ]
    return "\n".join(lines)


def write_states_tensorboard(
    states: pd.DataFrame, labels: Mapping[int, str], summary: Mapping, out: Path
) -> None:
    """Each run's decoded state per step as TensorBoard event files, `out/<run label>/`: the
    scalar `latent_state` at every step, and a text summary `latent_states` (the task's
    findings and the run's path through the states). Written with TensorBoard's own event
    writer and protos; the events' wall time is the step (deterministic contents)."""
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.plugins.text import metadata as text_metadata
    from tensorboard.summary.writer.event_file_writer import EventFileWriter
    from tensorboard.util import tensor_util

    findings = findings_text(summary)
    for seed, run in states.sort_values(["seed", "step"]).groupby("seed", sort=True):
        label = labels[int(seed)]
        writer = EventFileWriter(str(out / label))
        steps, path = run["step"].astype(int).tolist(), run["state"].astype(int).tolist()
        for step, state in zip(steps, path):
            value = summary_pb2.Summary.Value(tag="latent_state", simple_value=float(state))
            writer.add_event(
                event_pb2.Event(wall_time=float(step), step=step, summary=summary_pb2.Summary(value=[value]))
            )
        text = f"{findings}\n\nthis run: {state_path(steps, path)}"
        tensor = tensor_util.make_tensor_proto([text.encode()], dtype="string", shape=[1])
        meta = text_metadata.create_summary_metadata(display_name="latent states", description="")
        value = summary_pb2.Summary.Value(tag="latent_states", metadata=meta, tensor=tensor)
        writer.add_event(
            event_pb2.Event(
                wall_time=float(steps[-1]), step=steps[-1], summary=summary_pb2.Summary(value=[value])
            )
        )
        writer.close()


def mlflow_store_files(tracking_uri: str) -> list[str]:
    """The local files of an MLflow store: a `sqlite:///` database, or a `mlruns/` directory's
    metric files; none for a server."""
    if tracking_uri.startswith("sqlite:///"):
        return [tracking_uri.removeprefix("sqlite:///")]
    local = tracking_uri.removeprefix("file://")
    if "://" in local or not Path(local).is_dir():
        return []
    return [str(p) for p in sorted(Path(local).glob("*/*/metrics/**/*")) if p.is_file()]
