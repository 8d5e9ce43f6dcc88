"""Early forecast of a run still training: its latent state now and when it will converge.

Everything here is causal: a forecast at checkpoint t reads the run's first t checkpoints only.

- Normalisation. The HMM is fitted on runs z-scored over their whole length, which a run still
  training does not have. A partial run is z-scored with the *fitted runs'* statistics instead:
  per feature, the mean over fitted runs of their per-run means and of their per-run standard
  deviations (`model.json` stores both). Seeds of one config differ little in these statistics,
  and nothing of the forecast run's future enters.
- State. The filtered posterior p(s_t | x_1..t) (forward algorithm), never Viterbi or smoothed
  paths, which use later checkpoints.
- Convergence time, two methods, both fitted on the fitted runs with the same causal pipeline:
  `simulate`: the convergence regression (time on occupancy fractions, no intercept, as the
  analysis) is fitted on the fitted runs' filtered occupancies; the run's future states are
  sampled from its filtered posterior and the transition matrix up to the run's length, and
  each sampled occupancy plus a resampled leave-one-out residual of the regression gives one
  draw of the convergence time. `regression`: at the same checkpoint t, the convergence times
  of the fitted runs that had not converged by t are regressed on their filtered occupancy so
  far and their filtered posterior at t; the interval comes from that regression's
  leave-one-out residuals (with fewer than 2K + 3 such runs it falls back to `simulate`).
  A run whose eval accuracy is already above the threshold has converged: its time is known.
  Otherwise both methods condition on convergence after t.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from latentstates.settings import ForecastSettings
from latentstates.states.analysis import convergence_times
from latentstates.states.model import GaussianHMM, StateModel

METHODS = ("simulate", "regression")


@dataclass
class Forecast:
    """What a forecast at checkpoint t says about one run."""

    t: int  # checkpoints seen
    state: int  # most probable state now (filtered)
    state_probability: float
    posterior: list[float]
    detour_states: list[int]
    in_detour: bool  # filtered most-probable state at some checkpoint ≤ t is a detour state
    converged: bool  # eval accuracy above the threshold already (time known)
    predicted: float  # convergence checkpoint
    low: float
    high: float
    level: float
    method: str

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _ols_no_intercept(x: np.ndarray, y: np.ndarray, ridge: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients and leave-one-out residuals of y ~ x (x spans the intercept), lightly ridged."""
    gram = x.T @ x + ridge * np.eye(x.shape[1])
    inv = np.linalg.inv(gram)
    beta = inv @ x.T @ y
    hat = np.einsum("ij,jk,ik->i", x, inv, x)
    loo = (y - x @ beta) / np.clip(1.0 - hat, 1e-6, None)
    return beta, loo


def _quantiles(samples: np.ndarray, level: float) -> tuple[float, float, float]:
    lo, mid, hi = np.quantile(samples, [(1 - level) / 2, 0.5, (1 + level) / 2])
    return float(mid), float(lo), float(hi)


@dataclass
class Forecaster:
    """A fitted HMM plus what the forecast needs from the runs it was fitted on."""

    hmm: GaussianHMM
    threshold: float
    length: int  # checkpoints per run
    norm_mean: np.ndarray
    norm_std: np.ndarray
    posteriors: list[np.ndarray]  # fitted runs' filtered posteriors, (T, k) each
    times: np.ndarray  # fitted runs' convergence checkpoints
    detour_states: list[int] = field(default_factory=list)

    @classmethod
    def fit(
        cls, model: StateModel, metrics: pd.DataFrame, threshold: float, detour_states=(), runs=None
    ) -> Forecaster:
        """From a task's state model and the collated metrics; `runs` default: the model's train runs."""
        features = model.features
        z = model.zscore
        runs = list(model.train_runs if runs is None else runs)
        pos = {int(r): i for i, r in enumerate(z.runs)}
        missing = [r for r in runs if r not in pos]
        if missing:
            raise ValueError(f"model.json has no z-score statistics for runs {missing}")
        idx = [pos[r] for r in runs]
        mean = np.asarray(z.mean, dtype=float)[idx].mean(axis=0)
        std = np.asarray(z.std, dtype=float)[idx].mean(axis=0)
        sub = metrics[metrics["seed"].isin(runs)].sort_values(["seed", "checkpoint"])
        length = int(sub.groupby("seed").size().max())
        self = cls(model.hmm, threshold, length, mean, std, [], np.empty(0), sorted(detour_states))
        posts, times = [], []
        conv = convergence_times(sub, threshold)["convergence_checkpoint"]
        for seed, g in sub.groupby("seed", sort=True):
            posts.append(self.filter(g[features].to_numpy(dtype=float)))
            times.append(float(conv.loc[seed]))
        self.posteriors, self.times = posts, np.asarray(times)
        fractions = np.stack([p.mean(axis=0) for p in posts])
        self._beta, self._loo = _ols_no_intercept(fractions, self.times)
        return self

    def normalise(self, raw: np.ndarray) -> np.ndarray:
        """Causal z-score of a (t, d) raw feature array with the fitted runs' statistics."""
        std = np.where(self.norm_std > 1e-8, self.norm_std, 1.0)
        return np.where(self.norm_std > 1e-8, (raw - self.norm_mean) / std, 0.0)

    def filter(self, raw: np.ndarray) -> np.ndarray:
        """Filtered posteriors p(s_s | x_1..s), s = 1..t, of a raw (t, d) feature array."""
        return self.hmm.filter(self.normalise(np.asarray(raw, dtype=float)))

    def forecast(
        self,
        raw: np.ndarray,
        eval_acc: np.ndarray | None,
        settings: ForecastSettings,
        seed: int | None = None,
    ) -> Forecast:
        """Forecast from the first t checkpoints: `raw` (t, d) features, `eval_acc` (t,) if known
        (None: nothing known of convergence); method, level and samples from `settings`, the
        random seed `seed` (default: the settings')."""
        method, level, samples = settings.method, settings.level, settings.samples
        seed = settings.seed if seed is None else seed
        if method not in METHODS:
            raise ValueError(f"unknown forecast method {method!r} ({', '.join(METHODS)})")
        raw = np.asarray(raw, dtype=float)
        t = len(raw)
        if t == 0:
            raise ValueError("no checkpoints to forecast from")
        post = self.filter(raw)
        now = post[-1]
        visited = set(post.argmax(axis=1).tolist())
        hit = np.flatnonzero(np.asarray(eval_acc) > self.threshold) if eval_acc is not None else []
        common = {
            "t": t,
            "state": int(now.argmax()),
            "state_probability": float(now.max()),
            "posterior": now.tolist(),
            "detour_states": list(self.detour_states),
            "in_detour": bool(visited & set(self.detour_states)),
            "level": level,
            "method": method,
        }
        if len(hit):
            c = float(hit[0])
            return Forecast(**common, converged=True, predicted=c, low=c, high=c)
        rng = np.random.default_rng(seed)
        if method == "simulate":
            draws = self._simulate(post, rng, samples)
        else:
            draws = self._regression(post, rng, samples)
        if eval_acc is not None:
            # Not converged by checkpoint t-1: the time is at least t (checkpoints are 0-based).
            # Without eval accuracies nothing is known about that, and nothing is conditioned.
            keep = draws[draws >= t]
            draws = keep if keep.size >= max(10, samples // 100) else np.full(1, float(t))
        mid, lo, hi = _quantiles(draws, level)
        return Forecast(**common, converged=False, predicted=mid, low=lo, high=hi)

    def _simulate(self, post: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
        k = self.hmm.k
        a = self.hmm.transitions
        a = a / a.sum(axis=1, keepdims=True)
        cum = np.cumsum(a, axis=1)
        counts = np.tile(post.sum(axis=0), (n, 1))
        remaining = max(self.length - len(post), 0)
        if remaining:
            state = rng.choice(k, size=n, p=post[-1] / post[-1].sum())
            for _ in range(remaining):
                u = rng.random(n)
                state = np.minimum((u[:, None] > cum[state]).sum(axis=1), k - 1)
                np.add.at(counts, (np.arange(n), state), 1.0)
        fractions = counts / counts.sum(axis=1, keepdims=True)
        return fractions @ self._beta + rng.choice(self._loo, size=n)

    def _regression(self, post: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
        t = len(post)

        def features(p: np.ndarray) -> np.ndarray:
            p = p[:t]
            return np.concatenate([p.mean(axis=0), p[-1]])

        # Only the fitted runs that had not converged by t are like the run forecast: the others'
        # small residuals would make the interval too narrow.
        later = self.times >= t
        if later.sum() < 2 * len(post[0]) + 3:
            return self._simulate(post, rng, n)  # too few comparable runs for the regression
        x = np.stack([features(p) for p, keep in zip(self.posteriors, later) if keep])
        beta, loo = _ols_no_intercept(x, self.times[later], ridge=1e-3)
        return features(post) @ beta + rng.choice(loo, size=n)

    def baseline(self) -> float:
        """The naive forecast: the fitted runs' mean convergence time."""
        return float(self.times.mean())
