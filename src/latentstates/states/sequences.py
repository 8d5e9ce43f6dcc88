"""Metric trajectories as HMM input: per-run z-scoring and the train/validation split (no torch)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from latentstates.io import read_parquet
from latentstates.states.model import StateModel

# Model-selection criteria per K (hmm.select_model's columns; plotted by plots.model_selection).
CRITERIA = ["val_ll", "aic", "bic", "aic_train", "bic_train"]


@dataclass
class Sequences:
    """Z-scored feature sequences, one (T_i, d) array per run, with their z-score info."""

    runs: list[int]
    arrays: list[np.ndarray]
    features: list[str]
    mean: np.ndarray  # (n_runs, d)
    std: np.ndarray  # (n_runs, d)
    dropped: dict[int, str] = field(default_factory=dict)


def first_checkpoints(metrics: pd.DataFrame, n: int | None) -> pd.DataFrame:
    """Each run's first n checkpoints (checkpoint index < n; every row if n is None): the window
    of the HMM and the analyses (`hmm.first_n`)."""
    if n is None:
        return metrics
    return metrics[metrics["checkpoint"] < n].reset_index(drop=True)


def analysed_metrics(path: str | os.PathLike, model: StateModel) -> pd.DataFrame:
    """The collated metrics as the analyses of a fitted HMM read them (model.json's `model`):
    run, checkpoint, step, eval accuracy and the model's features, each run's first `first_n`
    checkpoints."""
    columns = ["seed", "checkpoint", "step", "eval_acc", *model.features]
    return first_checkpoints(read_parquet(path, columns=columns), model.first_n)


def zscore_runs(
    df: pd.DataFrame, features: Sequence[str], min_std: float = 1e-8, pooled: bool = False
) -> Sequences:
    """Z-score the features over time (ddof 0), each run by its own mean and deviation (the
    released procedure) or, `pooled`, every run by the mean and deviation of all usable runs
    together (`hmm.zscore`); report, not hide, runs that cannot be used.

    A run is dropped (with its reason in `dropped`) when a feature is NaN/inf somewhere or it has
    fewer than 2 checkpoints; a feature that is constant (std < `min_std`: within the run, or
    pooled over the runs) is set to 0 there rather than divided by zero. `mean` and `std` hold
    each run's statistics (pooled: the same row for every run).
    """
    features = list(features)
    missing = [f for f in features if f not in df.columns]
    if missing:
        raise ValueError(f"metrics table lacks HMM features {missing}")
    runs, raw, dropped = [], [], {}
    for seed, g in df.sort_values(["seed", "checkpoint"]).groupby("seed", sort=True):
        x = g[features].to_numpy(dtype=np.float64)
        bad = [f for f, ok in zip(features, np.isfinite(x).all(axis=0)) if not ok]
        if bad:
            dropped[int(seed)] = f"non-finite values in {bad}"
            continue
        if len(x) < 2:
            dropped[int(seed)] = "fewer than 2 checkpoints"
            continue
        runs.append(int(seed))
        raw.append(x)
    d = len(features)
    if pooled and raw:
        mu, sd = _moments(np.concatenate(raw))
        stats = [(mu, sd)] * len(raw)
    else:
        stats = [_moments(x) for x in raw]
    arrays = [
        np.where(sd > min_std, (x - mu) / np.where(sd > min_std, sd, 1.0), 0.0)
        for x, (mu, sd) in zip(raw, stats)
    ]
    means = np.array([mu for mu, _ in stats]).reshape(-1, d)
    stds = np.array([sd for _, sd in stats]).reshape(-1, d)
    return Sequences(runs, arrays, features, means, stds, dropped)


# Beyond this magnitude a feature's squares overflow float64: its moments are taken at a smaller
# scale (a power of two, so that the z-scores are the same numbers).
_HUGE = 2.0**500


def _moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column, mean and standard deviation (ddof 0) of `x`, also of values too large to
    square: those columns are scaled by a power of two first (exact), and scaled back."""
    big = np.abs(x).max(axis=0, initial=0.0) > _HUGE
    if not big.any():
        return x.mean(axis=0), x.std(axis=0)
    scale = np.where(big, np.exp2(-np.floor(np.log2(np.abs(x).max(axis=0, initial=1.0)))), 1.0)
    y = x * scale
    return y.mean(axis=0) / scale, y.std(axis=0) / scale


def split_runs(runs: Sequence[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded split of runs into (train, validation); validation empty when too few runs."""
    runs = sorted(runs)
    n_val = int(round(val_fraction * len(runs)))
    n_val = min(n_val, len(runs) - 1)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(runs))
    val = sorted(runs[i] for i in perm[:n_val])
    train = sorted(runs[i] for i in perm[n_val:])
    return train, val


def fold_runs(runs: list[int], folds: int, seed: int) -> list[list[int]]:
    """Runs split into `folds` seeded groups (at most one run per group if there are few runs)."""
    rng = np.random.default_rng(seed)
    perm = [runs[i] for i in rng.permutation(len(runs))]
    folds = max(2, min(folds, len(runs)))
    return [sorted(perm[i::folds]) for i in range(folds)]
