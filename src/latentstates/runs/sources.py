"""Runs trained elsewhere, brought under the run contract (latentstates.runs.contract).

- `checkpoints`: a directory of checkpoint files per run (plain state dicts, checkpoint dicts
  with a model entry, or .safetensors), ordered by the step in the file name or stored inside;
  the model is a registered task kind, so losses, accuracies and the Hessian are computed here
  exactly as for runs trained by the workflow.
- `huggingface`: one `save_pretrained` directory per checkpoint; matrices read off the state
  dict by architecture; performance from the user's table, when given.
- `runs`: run directories written from the user's training loop (`latentstates.runs.writer`):
  already under the contract, their checkpoints read where they are.
- `table`: a table of metrics, straight to the HMM (`metrics_table`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from latentstates.columns import PERFORMANCE_COLUMNS
from latentstates.runs.contract import make_run
from latentstates.runs.discovery import checkpoints_by_step, huggingface_checkpoints, run_directory
from latentstates.runs.external_tables import performance_log
from latentstates.settings import TaskSpec
from latentstates.validation import InputError, MissingInputError, require_memory, require_step


def read_performance(
    param: str | None, task: TaskSpec, seeds: list[int]
) -> tuple[pd.DataFrame | None, str | None]:
    """A Hugging Face series' performance table and its path, from the import rule's `performance`
    param: a CSV or Parquet path, or (lm-eval results) a JSON of its path and `lm_eval` keys,
    whose files are read for the checkpoints of `seeds` (`evaluations.lm_eval_performance`)."""
    from latentstates.runs.external_tables import check_performance_table, read_table

    if not param:
        return None, None
    if not param.startswith("{"):
        return check_performance_table(read_table(param), param), param
    from latentstates.revisions import revisions
    from latentstates.runs.evaluations import lm_eval_performance

    settings = json.loads(param)
    path = settings["path"]
    checkpoints = {}
    for seed in seeds:
        if task.hub:
            for step, repo, revision in revisions(dict(task.hub), seed):
                checkpoints[(repo, revision)] = (seed, step)
        else:
            for step, directory in huggingface_checkpoints(task.path, seed):
                checkpoints[(str(directory.resolve()), None)] = (seed, step)
    table = lm_eval_performance(path, checkpoints, settings.get("eval_acc"), settings.get("eval_loss"))
    return check_performance_table(table, path), path


def checkpoint_steps(directory: str | Path) -> list[tuple[int, Path]]:
    """(step, file) of the checkpoint files in a run's directory, in step order: the step in the
    file names, else the `step` stored in each checkpoint dict (`discovery.checkpoints_by_step`)."""
    return checkpoints_by_step(directory, _stored_step)


def _stored_step(path: Path) -> int:
    from latentstates.runs.weights import torch_file

    payload = torch_file(path)
    if not isinstance(payload, dict) or "step" not in payload:
        raise InputError(path, "no step number in the file name and no 'step' stored inside")
    return require_step(payload["step"], path, "its stored 'step'")


def import_checkpoint_run(
    task: TaskSpec, seed: int, device: str = "auto", threads: int = 1
) -> tuple[dict, pd.DataFrame]:
    """Run record and performance log of one run of a registered kind from its directory
    (`task.path` with {seed}): every checkpoint is loaded (safely) and evaluated on the
    run's training and test data as training evaluates; non-finite weights or losses flag it."""
    from latentstates.runs.runtime import run_seeds

    files = checkpoint_steps(run_directory(task.path, seed))
    for _, path in files:
        check_checkpoint(path, "state_dict", task.run_spec)
    seeds = run_seeds(seed, task.data_seed)
    log = pd.DataFrame(_evaluated_rows(task, seed, files, device, threads)).assign(**seeds)
    run = make_run(
        task=task.name,
        seed=seed,
        source="checkpoints",
        spec=task.run_spec,
        fmt="state_dict",
        checkpoints=[{"step": s, "path": p.resolve()} for s, p in files],
        seeds=seeds,
    )
    return run, log


def _evaluated_rows(
    task: TaskSpec, seed: int, files: list[tuple[int, Path]], device: str, threads: int
) -> list[dict]:
    """The performance log rows of checkpoint `files` (step, path) of one run, as training logs."""
    import torch

    from latentstates.device import configure_torch, resolve_device
    from latentstates.runs.runtime import build_run, evaluate
    from latentstates.runs.weights import load_into
    from latentstates.tasks.replicas import Replicas

    dev = resolve_device(device)
    configure_torch(threads, dev)
    kind, split, model = build_run(task.run_spec, seed)
    model.to(dev)
    replicas = Replicas([model])
    data = [t[None].to(dev) for t in (split.x_train, split.y_train, split.x_test, split.y_test)]
    rows = []
    with torch.no_grad():
        for index, (step, path) in enumerate(files):
            load_into(model, path, "state_dict")
            replicas.load_state_dicts([model.state_dict()])
            tr_loss, tr_acc = evaluate(replicas, kind, data[0], data[1])
            te_loss, te_acc = evaluate(replicas, kind, data[2], data[3])
            finite = bool(replicas.finite()[0])
            rows.append(
                {
                    "checkpoint": index,
                    "step": step,
                    "epoch": math.nan,
                    "train_loss": tr_loss[0],
                    "train_acc": tr_acc[0],
                    "eval_loss": te_loss[0],
                    "eval_acc": te_acc[0],
                    "diverged": not (finite and math.isfinite(tr_loss[0]) and math.isfinite(te_loss[0])),
                }
            )
    return rows


def import_huggingface_run(
    task: TaskSpec,
    seed: int,
    performance: pd.DataFrame | None,
    performance_path: str | None,
    found: list[tuple[int, Path]] | None = None,
) -> tuple[dict, pd.DataFrame]:
    """Run record and performance log of one run of Hugging Face model directories: those
    matching the task's `path`, or `found` (step, directory), e.g. a Hub series' snapshots."""
    if found is None:
        found = huggingface_checkpoints(task.path, seed)
    spec = {"architecture": task.architecture}
    for _, directory in found:
        check_checkpoint(directory, "transformers", spec)
    run = make_run(
        task=task.name,
        seed=seed,
        source="huggingface",
        spec=spec,
        fmt="transformers",
        checkpoints=[{"step": s, "path": p.resolve()} for s, p in found],
    )
    return run, performance_log(performance, seed, [s for s, _ in found], performance_path)


def import_streamed_run(
    task: TaskSpec, seed: int, performance: pd.DataFrame | None, performance_path: str | None
) -> tuple[dict, pd.DataFrame]:
    """Run record and performance log of a Hub series streamed through its metrics job
    (`hub.keep_cache: false`, runs.hub_stream): its revisions by repository and name, none
    downloaded yet; the record carries the cache and stream settings the metrics job reads."""
    from latentstates.revisions import revisions
    from latentstates.runs.hub import cache_root

    hub = dict(task.hub)
    found = revisions(hub, seed)
    run = make_run(
        task=task.name,
        seed=seed,
        source="huggingface",
        spec={"architecture": task.architecture},
        fmt="transformers",
        checkpoints=[
            {"step": step, "path": f"hf://{repo}@{rev}", "repo": repo, "revision": rev}
            for step, repo, rev in found
        ],
        hub={
            "cache": str(cache_root(hub).resolve()),
            **{key: hub.get(key) for key in ("prefetch", "download", "endpoint")},
        },
    )
    return run, performance_log(performance, seed, [step for step, _, _ in found], performance_path)


def read_written_run(directory: str | Path) -> tuple[dict, pd.DataFrame]:
    """A run directory written by `latentstates.runs.writer` (or by hand), checked: its record
    (`contract.check_run`) with absolute checkpoint paths, every checkpoint there and readable
    (`check_checkpoint`), and its log's rows of those checkpoints (`contract.check_train_log`; a
    row written ahead of run.json is left out; performance columns NaN where nothing was logged)."""
    from latentstates.io import read_parquet
    from latentstates.runs.contract import RUN_FILE, check_train_log, read_run, run_checkpoint_paths

    directory = Path(directory)
    if not directory.is_dir():
        raise MissingInputError(directory, "run directory does not exist")
    run = read_run(directory / RUN_FILE)
    paths = run_checkpoint_paths(run, directory / RUN_FILE)
    for i, p in enumerate(paths):
        check_checkpoint(p, run["format"], run["spec"], f"{directory / RUN_FILE}: checkpoints[{i}].path")
    run["checkpoints"] = [{**c, "path": str(p.resolve())} for c, p in zip(run["checkpoints"], paths)]
    log_path = directory / "train_log.parquet"
    log = check_train_log(read_parquet(log_path), run, log_path)
    for column in PERFORMANCE_COLUMNS:
        if column not in log:
            log[column] = math.nan
    if "diverged" not in log:
        log["diverged"] = False
    return run, log


def check_checkpoint(path: Path, fmt: str, spec: dict, listed_in: str | None = None) -> None:
    """What can be known of a checkpoint without reading its values, checked before any metric:
    it exists; its headers (safetensors: dtypes, shapes, byte ranges) or pickles (safely) read;
    an architecture finds its matrices and biases, floating point and of the right rank; no tensor
    is too large for this machine's memory. Errors name the checkpoint (and where it is listed)."""
    from latentstates.runs.weights import model_config, open_weights, tensor_meta

    exists = path.is_dir() if fmt == "transformers" else path.is_file()
    if not exists:
        raise MissingInputError(listed_in or path, f"checkpoint {path} does not exist")
    sd = open_weights(path, fmt)
    if "architecture" in spec:
        from latentstates.runs.architectures import get_architecture

        config = spec.get("config") or model_config(path, fmt)
        try:
            get_architecture(spec["architecture"]).layers(sd, config)  # checks names, dtypes, ranks
        except ValueError as exc:
            raise InputError(path, str(exc)) from exc
    for name in sd:
        require_memory(path, name, tensor_meta(sd, name)[1])


def import_written_run(task: TaskSpec, seed: int) -> tuple[dict, pd.DataFrame]:
    """Run record and performance log of a run directory written by `latentstates.runs.writer`
    (`task.path` with {seed}), under the task's name and seed."""
    written, log = read_written_run(run_directory(task.path, seed))
    run = make_run(
        task=task.name,
        seed=seed,
        source=written["source"],
        spec=written["spec"],
        fmt=written["format"],
        checkpoints=written["checkpoints"],
    )
    return run, log.assign(seed=seed)
