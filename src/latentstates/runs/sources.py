"""Runs trained elsewhere, brought under the run contract (latentstates.runs.contract).

- `checkpoints`: a directory of checkpoint files per run (plain state dicts, checkpoint dicts
  with a model entry, or .safetensors), ordered by the step in the file name or stored inside;
  the model is a registered task kind, so losses, accuracies and the Hessian are computed here
  exactly as for runs trained by the workflow.
- `huggingface`: one `save_pretrained` directory per checkpoint; matrices read off the state
  dict by architecture; performance from the user's table, when given.
- `table`: a table of metrics, straight to the HMM (`metrics_table`).
"""

from __future__ import annotations

import glob
import math
import re
from pathlib import Path

import pandas as pd

from latentstates.columns import CHECKPOINT_SUFFIXES
from latentstates.runs.contract import make_run, model_spec
from latentstates.runs.external_tables import performance_log

_INT = re.compile(r"\d+")


def run_path(pattern: str, seed: int) -> Path:
    """A run's directory from a path pattern with {seed}."""
    return Path(pattern.replace("{seed}", str(seed)))


def checkpoint_files(directory: str | Path) -> list[tuple[int, Path]]:
    """(step, file) of the checkpoint files in a run's directory, in step order.

    The step is the last number in the file name (ckpt_000120.pt, step=120.safetensors); where
    no file name has one, the `step` stored in each checkpoint dict. Errors name the directory.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: checkpoint directory does not exist")
    files = sorted(
        p
        for p in directory.iterdir()
        if p.suffix in CHECKPOINT_SUFFIXES and p.is_file() and not p.name.startswith(".")
    )
    if not files:
        raise ValueError(f"{directory}: no checkpoint files ({', '.join(CHECKPOINT_SUFFIXES)})")
    numbered = [_INT.findall(p.stem) for p in files]
    if all(numbered):
        steps = [int(n[-1]) for n in numbered]
    elif not any(numbered):
        steps = [_stored_step(p) for p in files]
    else:
        odd = [p.name for p, n in zip(files, numbered) if not n]
        raise ValueError(f"{directory}: some checkpoint file names have no step number: {odd[:5]}")
    seen: dict[int, Path] = {}
    for step, p in zip(steps, files):
        if step in seen:
            # The same weights saved twice: safetensors where present (nothing to unpickle).
            pair = {seen[step].suffix, p.suffix}
            if ".safetensors" in pair and len(pair) == 2:
                seen[step] = seen[step] if seen[step].suffix == ".safetensors" else p
                continue
            raise ValueError(f"{directory}: {seen[step].name} and {p.name} are both step {step}")
        seen[step] = p
    return sorted(seen.items())


def _stored_step(path: Path) -> int:
    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: not a readable checkpoint ({exc})") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("step"), int):
        raise ValueError(f"{path}: no step number in the file name and no integer 'step' stored inside")
    return payload["step"]


def import_checkpoint_run(
    task: str, task_cfg: dict, seed: int, device: str = "auto", threads: int = 1
) -> tuple[dict, pd.DataFrame]:
    """Run record and performance log of one run of a registered kind from its directory
    (`task_cfg["path"]` with {seed}): every checkpoint is loaded (safely) and evaluated on the
    run's training and test data as training evaluates; non-finite weights or losses flag it."""
    import torch

    from latentstates.runs.runtime import build_run, configure_torch, evaluate, resolve_device, run_seeds
    from latentstates.runs.weights import load_weights
    from latentstates.tasks.models import fit_state
    from latentstates.tasks.replicas import Replicas

    dev = resolve_device(device)
    configure_torch(threads, dev)
    files = checkpoint_files(run_path(task_cfg["path"], seed))
    kind, split, model = build_run(task_cfg, seed)
    model.to(dev)
    replicas = Replicas([model])
    data = [t[None].to(dev) for t in (split.x_train, split.y_train, split.x_test, split.y_test)]
    seeds = run_seeds(seed, task_cfg.get("data_seed"))
    rows = []
    with torch.no_grad():
        for index, (step, path) in enumerate(files):
            fit_state(model, load_weights(path, "state_dict"), path)
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
    log = pd.DataFrame(rows).assign(**seeds)
    run = make_run(
        task=task,
        seed=seed,
        source="checkpoints",
        spec=model_spec(task_cfg),
        fmt="state_dict",
        checkpoints=[{"step": s, "path": p.resolve()} for s, p in files],
        seeds=seeds,
    )
    return run, log


def huggingface_checkpoints(pattern: str, seed: int) -> list[tuple[int, Path]]:
    """(step, model directory) of one run: the directories matching `pattern` (with {seed} and
    {step}) for this seed, in step order; errors name the pattern."""
    if "{step}" not in pattern:
        raise ValueError(f"huggingface path {pattern!r} has no {{step}}")
    head = pattern.replace("{seed}", str(seed))
    before, after = head.split("{step}", 1)
    regex = re.compile(re.escape(before) + r"(\d+)" + re.escape(after.rstrip("/")) + "$")
    found = []
    for name in glob.glob(glob.escape(before) + "*" + glob.escape(after)):
        m = regex.match(name.rstrip("/"))
        if m and Path(name).is_dir():
            found.append((int(m[1]), Path(name)))
    if not found:
        raise FileNotFoundError(f"no model directories match {head!r} (huggingface path, seed {seed})")
    return sorted(found)


def import_huggingface_run(
    task: str, task_cfg: dict, seed: int, performance: pd.DataFrame | None, performance_path: str | None
) -> tuple[dict, pd.DataFrame]:
    """Run record and performance log of one run of Hugging Face model directories."""
    found = huggingface_checkpoints(task_cfg["path"], seed)
    run = make_run(
        task=task,
        seed=seed,
        source="huggingface",
        spec={"architecture": task_cfg["architecture"]},
        fmt="transformers",
        checkpoints=[{"step": s, "path": p.resolve()} for s, p in found],
    )
    return run, performance_log(performance, seed, [s for s, _ in found], performance_path)
