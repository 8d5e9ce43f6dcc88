"""The local learning coefficient beside the latent states (torch-free): the LLC per state, its
change along each edge of the transition graph, and whether the HMM's transitions coincide with
the LLC's changes more often than transitions at random times would.

Inputs: a task's collated metrics (`seed`, `checkpoint`, `step`, `llc`, `llc_not_minimum`; the LLC
at every `metrics.llc.stride`-th checkpoint, NaN elsewhere or where flagged) and its decoded
states (`seed`, `checkpoint`, `state`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# Change points: the jumps between a run's consecutive estimates in its top quarter.
JUMP_QUANTILE = 0.75


def with_states(metrics: pd.DataFrame, states: pd.DataFrame) -> pd.DataFrame:
    """The decoded runs' checkpoints with their state and LLC, in run and checkpoint order."""
    cols = ["seed", "checkpoint", "step", "llc", "llc_se", "llc_not_minimum"]
    data = states[["seed", "checkpoint", "state"]].merge(metrics[cols], on=["seed", "checkpoint"], how="left")
    return data.sort_values(["seed", "checkpoint"]).reset_index(drop=True)


def llc_by_state(data: pd.DataFrame, k: int, resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per state: checkpoints with an estimate, runs, the mean LLC and its 95 % interval by a
    bootstrap over runs (a run's estimates are correlated in time; resampling runs keeps that),
    and the flagged checkpoints (not at a minimum)."""
    rng = np.random.default_rng(seed)
    rows = []
    estimated = data[data["llc"].notna()]
    for s in range(k):
        here = estimated[estimated["state"] == s]
        flagged = int(data.loc[data["state"] == s, "llc_not_minimum"].fillna(False).astype(bool).sum())
        row = {"state": s, "checkpoints": len(here), "runs": here["seed"].nunique(), "flagged": flagged}
        if here.empty:
            rows.append({**row, "mean": np.nan, "ci_low": np.nan, "ci_high": np.nan, "sd": np.nan})
            continue
        sums = here.groupby("seed")["llc"].agg(["sum", "count"])
        boot = []
        for _ in range(resamples):
            pick = rng.integers(0, len(sums), len(sums))
            boot.append(sums["sum"].to_numpy()[pick].sum() / sums["count"].to_numpy()[pick].sum())
        low, high = np.percentile(boot, [2.5, 97.5]) if len(sums) > 1 else (np.nan, np.nan)
        rows.append(
            {**row, "mean": here["llc"].mean(), "ci_low": low, "ci_high": high, "sd": here["llc"].std()}
        )
    return pd.DataFrame(rows)


def transitions(data: pd.DataFrame) -> pd.DataFrame:
    """Every state change of every run: seed, position (checkpoint order within the run), source
    and target state, and the LLC change across it: the first estimate at or after the change
    less the last estimate before it (NaN where the run has none on a side)."""
    rows = []
    for seed, run in data.groupby("seed", sort=True):
        state = run["state"].to_numpy()
        llc = run["llc"].to_numpy(dtype=float)
        have = np.flatnonzero(np.isfinite(llc))
        for t in np.flatnonzero(state[1:] != state[:-1]) + 1:
            before, after = have[have < t], have[have >= t]
            delta = llc[after[0]] - llc[before[-1]] if len(before) and len(after) else np.nan
            rows.append(
                {
                    "seed": seed,
                    "position": int(t),
                    "source": int(state[t - 1]),
                    "target": int(state[t]),
                    "delta_llc": delta,
                }
            )
    return pd.DataFrame(rows, columns=["seed", "position", "source", "target", "delta_llc"])


def llc_by_edge(changes: pd.DataFrame) -> pd.DataFrame:
    """Per edge (source → target) taken by some run: transitions, those with an LLC change on both
    sides, and the mean and standard deviation of that change."""
    if changes.empty:
        return pd.DataFrame(
            columns=["source", "target", "transitions", "measured", "mean_delta_llc", "sd_delta_llc"]
        )
    g = changes.groupby(["source", "target"])["delta_llc"]
    out = pd.DataFrame(
        {
            "transitions": g.size(),
            "measured": g.count(),
            "mean_delta_llc": g.mean(),
            "sd_delta_llc": g.std(),
        }
    ).reset_index()
    return out.sort_values(["source", "target"]).reset_index(drop=True)


def change_points(run: pd.DataFrame) -> np.ndarray:
    """Positions (checkpoint order) of a run's LLC change points: where an estimate differs from
    the run's previous one by a jump in the run's top quarter of jumps (at the later estimate)."""
    llc = run["llc"].to_numpy(dtype=float)
    have = np.flatnonzero(np.isfinite(llc))
    if len(have) < 3:
        return np.array([], dtype=int)
    jumps = np.abs(np.diff(llc[have]))
    return have[1:][jumps >= np.quantile(jumps, JUMP_QUANTILE)]


def coincidence(
    data: pd.DataFrame, window: int, permutations: int = 2000, seed: int = 0
) -> dict[str, float | int | None]:
    """Whether the HMM's transitions fall within `window` checkpoints of an LLC change point more
    often than the same number of transitions per run placed at random positions (uniform among
    the run's positions 1 … T−1, without repeats): the observed fraction, the mean fraction under
    that null, and the permutation p-value (1 + #null ≥ observed) / (1 + permutations)."""
    rng = np.random.default_rng(seed)
    runs = []
    for _, run in data.groupby("seed", sort=True):
        state = run["state"].to_numpy()
        moves = np.flatnonzero(state[1:] != state[:-1]) + 1
        points = change_points(run)
        if len(moves) and len(points) and len(run) > 1:
            runs.append((len(run), moves, points))
    if not runs:
        return {"transitions": 0, "fraction": None, "null_fraction": None, "p_value": None, "window": window}

    def near(moves: np.ndarray, points: np.ndarray) -> int:
        return int((np.abs(moves[:, None] - points[None, :]).min(axis=1) <= window).sum())

    total = sum(len(m) for _, m, _ in runs)
    observed = sum(near(m, p) for _, m, p in runs) / total
    null = np.empty(permutations)
    for b in range(permutations):
        hits = 0
        for length, moves, points in runs:
            placed = rng.choice(np.arange(1, length), size=len(moves), replace=False)
            hits += near(placed, points)
        null[b] = hits / total
    return {
        "transitions": total,
        "fraction": observed,
        "null_fraction": float(null.mean()),
        "p_value": float((1 + (null >= observed - 1e-12).sum()) / (1 + permutations)),
        "window": window,
    }
