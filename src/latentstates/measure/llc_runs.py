"""The local learning coefficient of a metrics job's runs (`measure.llc` on the workflow's runs):
every chain of every run of a seed group one replica of a stacked model, at every stride-th
checkpoint; and the metrics table's LLC columns."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from latentstates.columns import LLC_COLUMNS
from latentstates.device import configure_torch, resolve_device
from latentstates.measure.llc import LLCEstimate, default_nbeta, llc_estimates, sgld_traces
from latentstates.runs.contract import run_checkpoint_paths
from latentstates.runs.runtime import build_run
from latentstates.runs.weights import load_into
from latentstates.settings import LLCSettings
from latentstates.tasks.replicas import Replicas

# The LLC columns (LLC_COLUMNS) of a checkpoint without an estimate.
NO_LLC = (np.nan, np.nan, False)


def with_llc(table: pd.DataFrame, found: dict[int, LLCEstimate]) -> pd.DataFrame:
    """`table` with its LLC columns filled in at the checkpoints `found` has."""
    table = table.copy()
    at = (found.get(int(c)) for c in table["checkpoint"])
    values = [NO_LLC if e is None else (e.llc, e.se, bool(e.not_minimum)) for e in at]
    table[LLC_COLUMNS] = pd.DataFrame(values, columns=LLC_COLUMNS, index=table.index)
    return table


def _llc_seed(llc: LLCSettings, run_seed: int, checkpoint: int, chain: int) -> int:
    """A chain's seed: the config's, the run's, the checkpoint's and the chain's, mixed."""
    return int(np.random.SeedSequence([llc.seed, run_seed, checkpoint, chain]).generate_state(1)[0])


def group_llcs(
    runs: list[dict],
    run_files: list[str | Path],
    llc: LLCSettings,
    device: str = "auto",
    threads: int = 1,
    progress: bool = True,
) -> list[dict[int, LLCEstimate]]:
    """The local learning coefficient (`measure.llc`) of a metrics job's runs of one registered
    task at every `stride`-th checkpoint: every run's `chains` chains stacked as replicas
    (`Replicas`), one batched gradient per SGLD step for all; each run on its own training set,
    in eval mode (as the Hessian); L_n(w*) its whole training set's loss. Per run, checkpoint
    index → estimate. Runs go together where their checkpoint lists and training-set shapes are
    equal (a stacked model needs both), else in groups of equal ones."""
    dev = resolve_device(device)
    configure_torch(threads, dev)
    found: list[dict[int, LLCEstimate]] = [{} for _ in runs]
    built = [build_run(run["spec"], run["seed"]) for run in runs]
    groups: dict[tuple, list[int]] = {}
    for i, (run, split) in enumerate(zip(runs, (b.split for b in built))):
        key = (tuple(c["index"] for c in run["checkpoints"]), tuple(split.x_train.shape))
        groups.setdefault(key, []).append(i)
    for members in groups.values():
        _llcs_together(
            [runs[i] for i in members],
            [run_files[i] for i in members],
            [built[i] for i in members],
            llc,
            dev,
            progress,
            [found[i] for i in members],
        )
    return found


def _llcs_together(
    runs, run_files, built, llc: LLCSettings, dev: torch.device, progress: bool, found
) -> None:
    kind = built[0].kind
    models = [b.model.to(dev).eval() for b in built]
    n = len(built[0].split.x_train)
    x = torch.stack([b.split.x_train for b in built]).to(dev)
    y = torch.stack([b.split.y_train for b in built]).to(dev)
    chains = llc.chains
    replicas = Replicas([model for model in models for _ in range(chains)]).eval()
    run_of = torch.arange(len(runs), device=dev).repeat_interleave(chains)
    nbeta = llc.nbeta or default_nbeta(n)
    batch = llc.batch_size if 0 < llc.batch_size < n else n

    # A minibatch of every replica as one gather of rows of the runs' training sets, flattened.
    flat_x, flat_y, first_row = x.flatten(0, 1), y.flatten(0, 1), (run_of * n)[:, None]

    def loss_and_grads(idx: torch.Tensor | None) -> torch.Tensor:
        if idx is None:
            xb, yb = x[run_of], y[run_of]
        else:
            rows = (first_row + idx).flatten()
            xb = flat_x.index_select(0, rows).unflatten(0, idx.shape)
            yb = flat_y.index_select(0, rows).unflatten(0, idx.shape)
        return replicas.loss_and_grads(kind, xb, yb)[1]

    files = [run_checkpoint_paths(run, f) for run, f in zip(runs, run_files)]
    schedule = [pos for pos, c in enumerate(runs[0]["checkpoints"]) if c["index"] % llc.stride == 0]
    seeds = ", ".join(str(run["seed"]) for run in runs)
    bar = dict(desc=f"LLC of seeds {seeds}", file=sys.stderr, mininterval=5.0, disable=not progress)
    for pos in tqdm(schedule, **bar):
        index = runs[0]["checkpoints"][pos]["index"]
        for run, model, paths in zip(runs, models, files):
            load_into(model, paths[pos], run["format"])
        replicas.load_state_dicts([model.state_dict() for model in models for _ in range(chains)])
        init = [_full_loss(kind, model, x[r], y[r], batch) for r, model in enumerate(models)]
        generators = [
            torch.Generator().manual_seed(_llc_seed(llc, run["seed"], index, c))
            for run in runs
            for c in range(chains)
        ]
        traces = sgld_traces(
            loss_and_grads,
            replicas.parameters(),
            n,
            epsilon=llc.epsilon,
            gamma=llc.gamma,
            nbeta=nbeta,
            steps=llc.burn_in + llc.draws,
            batch_size=batch,
            generators=generators,
            bounding_box=llc.bounding_box,
        )
        for r, est in enumerate(llc_estimates(traces, init, chains, llc.burn_in, nbeta)):
            found[r][index] = est


@torch.no_grad()
def _full_loss(kind, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int) -> float:
    """The task's loss over the whole training set (a mean over examples), in chunks."""
    total = 0.0
    for start in range(0, len(x), chunk):
        xb, yb = x[start : start + chunk], y[start : start + chunk]
        total += float(kind.loss(model(xb), yb)) * len(xb)
    return total / len(x)
