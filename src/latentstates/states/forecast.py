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

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from latentstates.states.analysis import convergence_times, filtered_posteriors

METHODS = ("simulate", "regression")
EVALUATION_COLUMNS = [
    "seed",
    "fold",
    "fraction",
    "t",
    "method",
    "truth",
    "converged_by_t",
    "state",
    "predicted",
    "low",
    "high",
    "covered",
    "naive",
    "naive_conditional",
]


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

    model: dict
    threshold: float
    length: int  # checkpoints per run
    norm_mean: np.ndarray
    norm_std: np.ndarray
    posteriors: list[np.ndarray]  # fitted runs' filtered posteriors, (T, k) each
    times: np.ndarray  # fitted runs' convergence checkpoints
    detour_states: list[int] = field(default_factory=list)

    @classmethod
    def fit(
        cls, model: dict, metrics: pd.DataFrame, threshold: float, detour_states=(), runs=None
    ) -> Forecaster:
        """From `model.json`'s dict and the collated metrics; `runs` default: the model's train runs."""
        features = model["features"]
        z = model["zscore"]
        runs = list(model["train_runs"] if runs is None else runs)
        pos = {int(r): i for i, r in enumerate(z["runs"])}
        missing = [r for r in runs if r not in pos]
        if missing:
            raise ValueError(f"model.json has no z-score statistics for runs {missing}")
        idx = [pos[r] for r in runs]
        mean = np.asarray(z["mean"], dtype=float)[idx].mean(axis=0)
        std = np.asarray(z["std"], dtype=float)[idx].mean(axis=0)
        sub = metrics[metrics["seed"].isin(runs)].sort_values(["seed", "checkpoint"])
        length = int(sub.groupby("seed").size().max())
        self = cls(model, threshold, length, mean, std, [], np.empty(0), sorted(detour_states))
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
        return filtered_posteriors(self.normalise(np.asarray(raw, dtype=float)), self.model)[0]

    def forecast(
        self,
        raw: np.ndarray,
        eval_acc: np.ndarray | None = None,
        method: str = "simulate",
        level: float = 0.8,
        samples: int = 2000,
        seed: int = 0,
    ) -> Forecast:
        """Forecast from the first t checkpoints: `raw` (t, d) features, `eval_acc` (t,) if known."""
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
        k = self.model["k"]
        a = np.asarray(self.model["transitions"], dtype=float)
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


# --- evaluation on runs the HMM was not fitted on ---------------------------------------------


def fold_runs(runs: list[int], folds: int, seed: int) -> list[list[int]]:
    """Runs split into `folds` seeded groups (at most one run per group if there are few runs)."""
    rng = np.random.default_rng(seed)
    perm = [runs[i] for i in rng.permutation(len(runs))]
    folds = max(2, min(folds, len(runs)))
    return [sorted(perm[i::folds]) for i in range(folds)]


def evaluate(
    metrics: pd.DataFrame,
    model: dict,
    threshold: float,
    fractions=(0.1, 0.25, 0.5),
    folds: int = 5,
    restarts: int = 5,
    level: float = 0.8,
    samples: int = 1000,
    seed: int = 0,
    hmm_settings: dict | None = None,
) -> pd.DataFrame:
    """Forecasts at each fraction of training for every run, from HMMs fitted without it.

    Runs are split into folds; per fold an HMM with the task's K (`model["k"]`) and HMM settings
    is fitted on the other runs (best training likelihood of `restarts` seeded restarts) and
    each held-out run is forecast from its first round(fraction × T) checkpoints by every method.
    One row per (run, fraction, method), with the two baselines: the fitted runs' mean convergence
    time (`naive`) and, as ours, the known time once converged and otherwise the mean of the
    fitted runs' times that are ≥ t (`naive_conditional`).
    """
    from latentstates.states.hmm import FIT_ERRORS, fit_hmm, order_states, restart_init, restart_seed, to_dict
    from latentstates.states.sequences import zscore_runs

    settings = {**model.get("settings", {}), **(hmm_settings or {})}
    features = model["features"]
    k = int(model["k"])
    seqs = zscore_runs(metrics, features)
    usable = seqs.runs
    by_seed = {s: g for s, g in metrics.sort_values(["seed", "checkpoint"]).groupby("seed")}
    truth = convergence_times(metrics[metrics["seed"].isin(usable)], threshold)
    rows = []
    for f_i, held in enumerate(fold_runs(usable, folds, seed)):
        train = [r for r in usable if r not in held]
        arrays = [seqs.arrays[usable.index(r)] for r in train]
        best = None
        for r in range(restarts):
            try:
                fit = fit_hmm(
                    arrays,
                    k,
                    settings["covariance"],
                    settings["max_iter"],
                    settings["tol"],
                    settings["var_floor"],
                    restart_seed(seed, k, 1000 * (f_i + 1) + r),
                    restart_init(r),
                    covariance_prior=settings["covariance_prior"],
                )
                ll = fit.log_likelihood(arrays)
            except FIT_ERRORS:  # a failed restart is skipped, as in model selection
                continue
            if math.isfinite(ll) and (best is None or ll > best[0]):
                best = (ll, fit)
        if best is None:
            raise RuntimeError(f"forecast evaluation: every HMM fit of fold {f_i} failed")
        perm = order_states(best[1].viterbi(arrays), k)
        fold_model = {
            **to_dict(best[1], perm),
            "features": features,
            "train_runs": train,
            "zscore": {"runs": seqs.runs, "mean": seqs.mean.tolist(), "std": seqs.std.tolist()},
        }
        fc = Forecaster.fit(fold_model, metrics, threshold)
        for run in held:
            g = by_seed[run]
            raw = g[features].to_numpy(dtype=float)
            acc = g["eval_acc"].to_numpy(dtype=float)
            true = float(truth.loc[run, "convergence_checkpoint"])
            for frac in fractions:
                t = max(1, int(round(frac * len(raw))))
                seen = acc[:t]
                hit = np.flatnonzero(seen > threshold)
                later = fc.times[fc.times >= t]
                cond = float(hit[0]) if len(hit) else float(later.mean() if later.size else t)
                for method in METHODS:
                    out = fc.forecast(raw[:t], seen, method, level, samples, seed=seed + run)
                    rows.append(
                        {
                            "seed": run,
                            "fold": f_i,
                            "fraction": frac,
                            "t": t,
                            "method": method,
                            "truth": true,
                            "converged_by_t": out.converged,
                            "state": out.state,
                            "predicted": out.predicted,
                            "low": out.low,
                            "high": out.high,
                            "covered": out.low <= true <= out.high,
                            "naive": fc.baseline(),
                            "naive_conditional": cond,
                        }
                    )
    return pd.DataFrame(rows, columns=EVALUATION_COLUMNS)


def summarise(evaluation: pd.DataFrame) -> pd.DataFrame:
    """Per fraction and method: MAE of ours and both baselines, interval coverage and width."""
    e = evaluation.assign(
        err=(evaluation["predicted"] - evaluation["truth"]).abs(),
        err_naive=(evaluation["naive"] - evaluation["truth"]).abs(),
        err_cond=(evaluation["naive_conditional"] - evaluation["truth"]).abs(),
        width=evaluation["high"] - evaluation["low"],
    )
    out = e.groupby(["fraction", "method"], sort=True).agg(
        runs=("seed", "size"),
        converged_by_t=("converged_by_t", "sum"),
        mae=("err", "mean"),
        mae_naive=("err_naive", "mean"),
        mae_naive_conditional=("err_cond", "mean"),
        coverage=("covered", "mean"),
        interval_width=("width", "mean"),
    )
    out["beats_naive"] = out["mae"] < out["mae_naive"]
    out["beats_naive_conditional"] = out["mae"] < out["mae_naive_conditional"]
    return out.reset_index()


# --- command line: a run in progress ----------------------------------------------------------


def partial_run_table(task_cfg: dict, seed: int, directory: str | Path) -> pd.DataFrame:
    """Weight statistics of the checkpoints a run has written so far, and its eval accuracy.

    `directory` is the run's checkpoint directory, or its `.partial` staging directory while it
    trains; eval accuracy comes from each checkpoint's log row (checkpoints written before
    they carried one: from the newest resume state, else the run's training log).
    """
    import torch

    from latentstates.measure.metrics import weight_metrics
    from latentstates.runs.checkpoints import (
        list_checkpoints,
        load_checkpoint,
        read_resume,
        resume_rows,
        staging_dir,
    )
    from latentstates.runs.runtime import build_run
    from latentstates.tasks.models import fit_state

    directory = Path(directory)
    if not directory.is_dir() and staging_dir(directory).is_dir():
        directory = staging_dir(directory)
    kind, _, model = build_run(task_cfg, seed)
    rows, logged = [], []
    paths = list_checkpoints(directory)
    for path in paths:
        try:
            ckpt = load_checkpoint(path)
        except ValueError:
            # Training writes its checkpoints in place (save_checkpoint): the newest file of a
            # run still training may be half-written.
            if path == paths[-1] and directory.name.endswith(".partial"):
                break
            raise
        fit_state(model, ckpt["model"], path)
        with torch.no_grad():
            row = weight_metrics(kind.matrices(model), kind.biases(model), kind.kernels(model))
        rows.append({"seed": seed, "checkpoint": ckpt["index"], "step": ckpt["step"], **row})
        if "row" in ckpt:
            logged.append({"checkpoint": ckpt["index"], "eval_acc": ckpt["row"]["eval_acc"]})
    if not rows:
        raise ValueError(f"{directory}: no complete checkpoint yet")
    table = pd.DataFrame(rows)
    if len(logged) == len(rows):
        return table.merge(pd.DataFrame(logged), on="checkpoint", how="left")
    resume = read_resume(directory) if directory.name.endswith(".partial") else None
    log = pd.DataFrame(resume_rows(resume)) if resume else None
    if log is None:
        train_log = directory.parent / "train_log.parquet"
        log = pd.read_parquet(train_log) if train_log.exists() else None
    if log is not None and "eval_acc" in log:
        table = table.merge(log[["checkpoint", "eval_acc"]], on="checkpoint", how="left")
    return table


def _contiguous(table: pd.DataFrame, source: str) -> pd.DataFrame:
    """Checkpoints 0..t-1 of one run (a forecast needs them from the start, without gaps)."""
    table = table.sort_values("checkpoint")
    idx = table["checkpoint"].to_numpy()
    gaps = np.flatnonzero(idx != np.arange(len(idx)))
    if len(idx) == 0 or idx[0] != 0:
        raise ValueError(f"{source}: the run's checkpoints must start at index 0")
    return table.iloc[: gaps[0]] if len(gaps) else table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m latentstates.states.forecast",
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
    from latentstates.states.sequences import first_checkpoints

    task_dir = Path(args.task_dir)
    task = task_dir.name
    config = load_config(args.config)
    if task not in config["tasks"]:
        parser.error(f"task {task!r} (from {task_dir}) is not in {args.config}")
    task_cfg = config["tasks"][task]
    fcfg = config["forecast"]
    model_path = task_dir / "hmm" / "model.json"
    model = json.loads(model_path.read_text())
    if model.get("k", 0) == 0:
        parser.error(f"{model_path}: no fitted HMM")
    summary_path = task_dir / "analysis" / "summary.json"
    detours = json.loads(summary_path.read_text())["detour_states"] if summary_path.exists() else []
    fitted = pd.read_parquet(
        task_dir / "metrics.parquet", columns=["seed", "checkpoint", "step", "eval_acc", *model["features"]]
    )
    fitted = first_checkpoints(fitted, model.get("first_n"))
    fc = Forecaster.fit(model, fitted, task_cfg["convergence_threshold"], detours)

    run = Path(args.run)
    if run.suffix in (".parquet", ".csv"):
        table = pd.read_parquet(run) if run.suffix == ".parquet" else pd.read_csv(run)
        if "seed" in table and table["seed"].nunique() > 1:
            if args.seed_in_table is None:
                parser.error(f"{run} holds several runs: choose one with --seed-in-table")
            table = table[table["seed"] == args.seed_in_table]
    else:
        seed = args.seed
        if seed is None:
            name = run.name[: -len(".partial")] if run.name.endswith(".partial") else run.name
            parent = run.parent.name if name == "checkpoints" else name
            if not parent.startswith("seed") or not parent[4:].isdigit():
                parser.error(f"cannot tell the run's seed from {run}: pass --seed")
            seed = int(parent[4:])
        table = partial_run_table(task_cfg, seed, run)
    missing = [f for f in model["features"] if f not in table]
    if missing:
        parser.error(f"{run}: lacks the HMM's features {missing}")
    table = _contiguous(table, str(run))
    acc = table["eval_acc"].to_numpy(dtype=float) if "eval_acc" in table else None
    out = fc.forecast(
        table[model["features"]].to_numpy(dtype=float),
        acc,
        args.method or fcfg["method"],
        args.level or fcfg["level"],
        fcfg["samples"],
        fcfg["seed"],
    )
    if args.json:
        print(json.dumps({"task": task, "run": str(run), "length": fc.length, **out.as_dict()}, indent=2))
        return 0
    print(f"{task}: {run}")
    print(f"  checkpoints seen: {out.t} of {fc.length}")
    print(f"  current state: {out.state} (filtered probability {out.state_probability:.2f})")
    if fc.detour_states:
        flag = "yes" if out.in_detour else "no"
        print(f"  entered a detour state {fc.detour_states}: {flag}")
    else:
        print("  detour states: none in this task's model")
    if out.converged:
        print(f"  converged at checkpoint {out.predicted:.0f} (eval accuracy > {fc.threshold})")
    else:
        print(
            f"  forecast convergence: checkpoint {out.predicted:.0f} "
            f"({out.level:.0%} interval {out.low:.0f}–{out.high:.0f}; {out.method}); "
            f"naive: {fc.baseline():.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
