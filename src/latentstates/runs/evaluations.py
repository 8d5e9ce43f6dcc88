"""Evaluations beside the weights: lm-evaluation-harness results as a run series' performance table.

lm-evaluation-harness (`lm_eval --output_path DIR`, its `EvaluationTracker`) writes one JSON per
evaluation, `DIR/<model name, sanitised>/results_<ISO time>.json`: `results` maps each task to its
metrics (`"acc,none": 0.41`, `"acc_stderr,none": 0.01`, `"perplexity,none": 30.2`, keyed
`<metric>,<filter>`), and `config.model_args` names the model evaluated (`pretrained=<repository
or directory>,revision=<revision>,...`, a string or a mapping). The PolyPythias evaluations
(EleutherAI/polypythias-evals) are such files, one per model and step.

`lm_eval_performance` reads every such file under a directory (or one file), keeps those of the
task's checkpoints (each result's model and revision is one (seed, step) of the series: a Hub
repository and revision, or a checkpoint directory), and gives the performance table the import
reads (`external_tables.check_performance_table`): seed, step, every metric as a column
`<task>/<metric>` (`<task>/<metric>,<filter>` for a filter other than `none`; standard errors left
out), and `eval_acc` and `eval_loss` from the metrics the config names. A metric named
`perplexity` gives its logarithm as the loss (lm-eval's perplexity is exp of the mean negative
log-likelihood). Where several files hold the same checkpoint's metric, the newest file's value
counts (the file name's time, lm-eval's own). Standard library and pandas only.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from latentstates.validation import InputError, MissingInputError

# Checkpoint → (seed, step): by (repository or resolved directory, revision or None).
Checkpoints = Mapping[tuple[str, str | None], tuple[int, int]]
RESULTS_GLOB = "results*.json"
# Entries of a task's results that are not metrics: its display name, its number of documents.
BOOKKEEPING = frozenset({"alias", "sample_len", "sample_count"})


def result_files(path: str | os.PathLike) -> list[Path]:
    """The lm-eval results files of `path`: the file itself, or every `results*.json` under the
    directory, oldest first by name (lm-eval names them by time)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise MissingInputError(path, "no such file or directory (lm-evaluation-harness results)")
    files = sorted(path.rglob(RESULTS_GLOB), key=lambda f: (f.name, str(f)))
    if not files:
        raise InputError(path, f"holds no lm-evaluation-harness results ({RESULTS_GLOB}, at any depth)")
    return files


def model_args(result: dict, path: Path) -> dict[str, str]:
    """`config.model_args` of one results file as a mapping (lm-eval keeps the command line's
    `key=value,key=value` string, or the mapping it was given)."""
    config = result.get("config")
    args = config.get("model_args") if isinstance(config, dict) else None
    if isinstance(args, dict):
        return {str(k): str(v) for k, v in args.items()}
    if isinstance(args, str):
        pairs = [item.split("=", 1) for item in args.split(",") if "=" in item]
        return {k.strip(): v.strip() for k, v in pairs}
    raise InputError(path, "has no config.model_args: which model and revision it evaluated is unknown")


def metric_columns(result: dict, path: Path) -> dict[str, float]:
    """Every metric of a results file's `results` as `<task>/<metric>[,<filter>]` → value
    (numbers only; standard errors and BOOKKEEPING left out)."""
    results = result.get("results")
    if not isinstance(results, dict) or not results:
        raise InputError(
            path, "has no 'results' mapping of tasks to metrics (not lm-evaluation-harness output?)"
        )
    out = {}
    for task, metrics in results.items():
        if not isinstance(metrics, dict):
            raise InputError(path, f"results.{task} is {type(metrics).__name__}, not a mapping of metrics")
        for key, value in metrics.items():
            metric, _, filt = key.partition(",")
            if metric.endswith("_stderr") or metric in BOOKKEEPING or not _is_number(value):
                continue
            out[f"{task}/{metric}" + (f",{filt}" if filt and filt != "none" else "")] = float(value)
    return out


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _read(path: Path) -> dict:
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"not a readable JSON file ({exc})") from None
    if not isinstance(result, dict):
        raise InputError(path, f"holds a JSON {type(result).__name__}, not lm-evaluation-harness results")
    return result


def _model(args: dict[str, str]) -> str | None:
    """The model an evaluation ran on: lm-eval's `pretrained` (its hf model), or `model`/`path`."""
    return args.get("pretrained") or args.get("model") or args.get("path")


def _checkpoint(args: dict[str, str], checkpoints: Checkpoints) -> tuple[int, int] | None:
    model = _model(args)
    if model is None:
        return None
    revision = args.get("revision")
    for key in ((model, revision), (model, None), (_resolved(model), None)):
        if key in checkpoints:
            return checkpoints[key]
    return None


def _resolved(model: str) -> str:
    return str(Path(model).expanduser().resolve()) if model.startswith(("/", ".", "~")) else model


def lm_eval_performance(
    path: str | os.PathLike,
    checkpoints: Checkpoints,
    eval_acc: str | None = None,
    eval_loss: str | None = None,
) -> pd.DataFrame:
    """The performance table of the `checkpoints` evaluated in the lm-eval results under `path`
    (see the module's docstring); `eval_acc` and `eval_loss` name the metric columns
    (`lambada_openai/acc`) that become them. Results of other models are left out; none of the
    checkpoints' is an error naming the models found."""
    rows: dict[tuple[int, int], dict[str, float]] = {}
    others: set[str] = set()
    for f in result_files(path):  # oldest first: a newer file's value replaces an older one's
        result = _read(f)
        args = model_args(result, f)
        found = _checkpoint(args, checkpoints)
        if found is None:
            others.add(f"{_model(args)}@{args.get('revision')}")
            continue
        rows.setdefault(found, {}).update(metric_columns(result, f))
    if not rows:
        seen = ", ".join(sorted(others)[:5]) + (" ..." if len(others) > 5 else "")
        wanted = ", ".join(f"{m}@{r}" for m, r in list(checkpoints)[:3])
        raise InputError(
            path,
            f"no results of this series' checkpoints (models found: {seen or 'none'}; wanted e.g. {wanted})",
        )
    table = pd.DataFrame([{"seed": s, "step": t, **m} for (s, t), m in sorted(rows.items())])
    for target, column in (("eval_acc", eval_acc), ("eval_loss", eval_loss)):
        if column is None:
            continue
        if column not in table:
            metrics = [c for c in table.columns if "/" in c]
            raise InputError(path, f"no metric {column!r} in its results (metrics: {metrics[:12]})")
        values = table[column]
        if column.rsplit("/", 1)[-1].split(",")[0] == "perplexity":
            values = values.map(lambda v: math.log(v) if v > 0 else math.nan)
        table[target] = values
    return table
