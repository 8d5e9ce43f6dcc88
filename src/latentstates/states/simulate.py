"""Training runs simulated from a Gaussian HMM with a known number of states: the outside
reference against which the choice of K is measured (docs/methods.md, "Choosing K").

The runs look like the default tasks' metric trajectories as the HMM sees them: a left-to-right
chain of phases (each run starts in the first and ends in the last, spending a random,
geometrically distributed time in each), optionally a detour state that only some runs visit on
their way, every run the same number of checkpoints, and many features that are noisy mixtures of
a few latent directions (the weight statistics are strongly collinear). Each run is then z-scored
on its own, as the workflow does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Scenario:
    """What is simulated: `k` states (the detour among them, where there is one), `runs` runs of
    `length` checkpoints, `features` features mixing `rank` latent directions plus independent
    noise of variance `noise` (relative to the latent one), state means `separation` latent
    standard deviations apart on average, and `ar` the lag-1 autocorrelation of the latent noise
    within a state (0: the HMM's own assumption; the default tasks' metrics are smoother). The
    last `outliers` runs each have a foreign phase: a stretch of `foreign` of their checkpoints,
    starting at random, displaced by `foreign_shift` latent standard deviations in a random
    direction (an excursion no other run makes, as a loss spike or an unstable seed)."""

    k: int
    runs: int = 24
    length: int = 150
    features: int = 14
    rank: int = 4
    noise: float = 0.05
    separation: float = 2.0
    detour: bool = True
    detour_fraction: float = 0.4
    ar: float = 0.0
    outliers: int = 0
    foreign: float = 0.15
    foreign_shift: float = 3.0


def outlier_seeds(s: Scenario) -> list[int]:
    """The runs planted as outliers (`Scenario.outliers`): the last ones."""
    return list(range(s.runs - s.outliers, s.runs))


def chain(s: Scenario) -> tuple[list[int], int | None]:
    """The main chain's states in order, and the detour state (entered from the chain's second
    state, left to its third), None without one."""
    if s.detour and s.k >= 4:
        return [i for i in range(s.k) if i != 2], 2
    return list(range(s.k)), None


def state_paths(s: Scenario, rng: np.random.Generator) -> list[np.ndarray]:
    """Each run's state at every checkpoint: the chain's states in order, each for a geometric
    number of checkpoints with mean length / (states visited + 1), the last until the end."""
    main, detour = chain(s)
    paths = []
    for _ in range(s.runs):
        visits = list(main)
        if detour is not None and rng.random() < s.detour_fraction:
            visits.insert(2, detour)
        mean = s.length / (len(visits) + 1)
        path: list[int] = []
        for state in visits[:-1]:
            path += [state] * int(rng.geometric(1.0 / mean))
        path = (path + [visits[-1]] * s.length)[: s.length]
        paths.append(np.array(path))
    return paths


def emissions(s: Scenario, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(loadings (features, rank), latent state means (k, rank), latent covariances (k, rank, rank))."""
    loadings = rng.normal(size=(s.features, s.rank)) / np.sqrt(s.rank)
    means = np.cumsum(rng.normal(scale=s.separation, size=(s.k, s.rank)), axis=0)
    covs = []
    for _ in range(s.k):
        a = rng.normal(size=(s.rank, s.rank)) / np.sqrt(s.rank)
        c = a @ a.T + 0.5 * np.eye(s.rank)
        covs.append(c / np.trace(c) * s.rank)
    return loadings, means, np.stack(covs)


def simulate(s: Scenario, seed: int) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """A metrics table of simulated runs (seed, checkpoint, step, f0 … f{features−1}) and each
    run's true state path."""
    rng = np.random.default_rng(seed)
    loadings, means, covs = emissions(s, rng)
    chol = np.linalg.cholesky(covs)
    paths = state_paths(s, rng)
    frames = []
    for r, path in enumerate(paths):
        z = rng.normal(size=(s.length, s.rank))
        if s.ar:  # AR(1) latent noise of unit variance: smooth within a state
            for t in range(1, s.length):
                z[t] = s.ar * z[t - 1] + np.sqrt(1 - s.ar**2) * z[t]
        latent = means[path] + np.einsum("tij,tj->ti", chol[path], z)
        if r in outlier_seeds(s):
            n = max(1, int(round(s.foreign * s.length)))
            start = int(rng.integers(0, s.length - n + 1))
            direction = rng.normal(size=s.rank)
            latent[start : start + n] += s.foreign_shift * direction / np.linalg.norm(direction)
        x = latent @ loadings.T + rng.normal(scale=np.sqrt(s.noise), size=(s.length, s.features))
        frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(s.features)])
        frame.insert(0, "step", np.arange(s.length) * 10)
        frame.insert(0, "checkpoint", np.arange(s.length))
        frame.insert(0, "seed", r)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True), paths


def features(s: Scenario) -> list[str]:
    return [f"f{i}" for i in range(s.features)]
