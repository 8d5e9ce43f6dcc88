"""Gaussian HMMs over metric trajectories (pomegranate), model selection and decoding."""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .sequences import Sequences, split_runs, zscore_runs

__all__ = ["Sequences", "split_runs", "zscore_runs", "fit_hmm", "select_model", "fit_task"]


def n_parameters(k: int, d: int, covariance: str) -> int:
    """Free parameters: (k−1) starts + k² transitions (rows incl. end probability) + emissions."""
    emission = 2 * d if covariance == "diag" else d + d * (d + 1) // 2
    return (k - 1) + k * k + k * emission


@functools.cache
def _normal_class():
    from pomegranate.distributions import Normal

    class FlooredNormal(Normal):
        """Normal whose covariance is kept positive definite (pomegranate ignores min_cov)."""

        def __init__(self, floor: float, **kwargs):
            self.floor = floor
            super().__init__(**kwargs)

        def _reset_cache(self):
            if self._initialized and getattr(self, "floor", None):
                with torch.no_grad():
                    if self.covariance_type == "full":
                        c = self.covs.to(torch.float64)
                        w, q = torch.linalg.eigh((c + c.T) / 2)
                        c = (q * w.clamp(min=self.floor)) @ q.T
                        self.covs.copy_(((c + c.T) / 2).to(self.covs.dtype))
                    else:
                        self.covs.clamp_(min=self.floor)
            super()._reset_cache()

    return FlooredNormal


def _group(arrays: Sequence[np.ndarray]) -> list[tuple[list[int], torch.Tensor]]:
    """Group sequences by length into 3D float32 tensors (pomegranate needs equal lengths)."""
    by_len: dict[int, list[int]] = {}
    for i, a in enumerate(arrays):
        by_len.setdefault(len(a), []).append(i)
    return [
        (idx, torch.tensor(np.stack([arrays[i] for i in idx]), dtype=torch.float32))
        for _, idx in sorted(by_len.items())
    ]


@dataclass
class FittedHMM:
    """A Gaussian HMM's parameters as numpy arrays, plus the pomegranate model for inference."""

    model: object
    k: int
    covariance: str

    @property
    def starts(self) -> np.ndarray:
        return np.exp(self.model.starts.detach().double().numpy())

    @property
    def transitions(self) -> np.ndarray:
        return np.exp(self.model.edges.detach().double().numpy())

    @property
    def ends(self) -> np.ndarray:
        return np.exp(self.model.ends.detach().double().numpy())

    @property
    def means(self) -> np.ndarray:
        return np.stack([d.means.detach().double().numpy() for d in self.model.distributions])

    @property
    def covs(self) -> np.ndarray:
        return np.stack([d.covs.detach().double().numpy() for d in self.model.distributions])

    def log_likelihood(self, arrays: Sequence[np.ndarray]) -> float:
        """Summed log-likelihood of the sequences (including pomegranate's end term)."""
        total = 0.0
        for _, x in _group(arrays):
            total += self.model.log_probability(x).double().sum().item()
        return total

    def viterbi(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Most likely state path of each sequence."""
        out: list[np.ndarray | None] = [None] * len(arrays)
        for idx, x in _group(arrays):
            paths = self.model.viterbi(x).numpy()
            for i, p in zip(idx, paths):
                out[i] = p.astype(np.int64)
        return out


def _dense_hmm(distributions, starts=None, edges=None, ends=None, **kwargs):
    from pomegranate.hmm import DenseHMM

    return DenseHMM(distributions, edges=edges, starts=starts, ends=ends, **kwargs)


def fit_hmm(
    arrays: Sequence[np.ndarray],
    k: int,
    covariance: str = "full",
    max_iter: int = 32,
    tol: float = 0.1,
    var_floor: float = 1e-3,
    seed: int = 0,
) -> FittedHMM:
    """Fit a k-state Gaussian HMM by Baum-Welch (k-means initialisation, seeded).

    k = 1 is fitted in closed form (one Gaussian; end probability = sequences / steps),
    since pomegranate's initialisation needs k ≥ 2.
    """
    Normal = _normal_class()
    torch.manual_seed(seed)
    if k == 1:
        x = torch.tensor(np.concatenate(arrays), dtype=torch.float32)
        dist = Normal(var_floor, covariance_type=covariance)
        dist.fit(x)
        dist._reset_cache()
        end = len(arrays) / len(x)
        model = _dense_hmm(
            [dist],
            starts=torch.tensor([1.0]),
            edges=torch.tensor([[1.0 - end]]),
            ends=torch.tensor([end]),
        )
        return FittedHMM(model, 1, covariance)
    dists = [Normal(var_floor, covariance_type=covariance) for _ in range(k)]
    model = _dense_hmm(dists, max_iter=max_iter, tol=tol, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model.fit([torch.tensor(a, dtype=torch.float32) for a in arrays])
    return FittedHMM(model, k, covariance)


def restart_seed(base: int, k: int, restart: int) -> int:
    """Deterministic seed of restart `restart` for k states."""
    return int(np.random.SeedSequence([base, k, restart]).generate_state(1)[0])


def select_model(
    seqs: Sequences,
    train_runs: Sequence[int],
    val_runs: Sequence[int],
    max_states: int,
    restarts: int,
    covariance: str,
    max_iter: int,
    tol: float,
    var_floor: float,
    seed: int,
) -> tuple[pd.DataFrame, dict[int, FittedHMM]]:
    """Fit K = 1..max_states with restarts; keep per K the restart with the best held-out LL.

    Returns one row per (K, restart) and the kept model per K. AIC/BIC use the training
    log-likelihood, the number of free parameters and n = training time steps.
    """
    pos = {r: i for i, r in enumerate(seqs.runs)}
    train = [seqs.arrays[pos[r]] for r in train_runs]
    val = [seqs.arrays[pos[r]] for r in val_runs]
    n_steps = sum(len(a) for a in train)
    d = len(seqs.features)
    rows, kept = [], {}
    for k in range(1, max_states + 1):
        best = None
        for r in range(restarts if k > 1 else 1):
            s = restart_seed(seed, k, r)
            try:
                fit = fit_hmm(train, k, covariance, max_iter, tol, var_floor, s)
                train_ll = fit.log_likelihood(train)
                val_ll = fit.log_likelihood(val) if val else float("nan")
                error = "" if math.isfinite(train_ll) else "non-finite log-likelihood"
            except (RuntimeError, ValueError) as exc:  # Cholesky or k-means failure
                fit, train_ll, val_ll, error = None, float("nan"), float("nan"), str(exc)
            p = n_parameters(k, d, covariance)
            rows.append(
                {
                    "k": k,
                    "restart": r,
                    "restart_seed": s,
                    "train_ll": train_ll,
                    "val_ll": val_ll,
                    "n_params": p,
                    "aic": 2 * p - 2 * train_ll,
                    "bic": p * math.log(n_steps) - 2 * train_ll,
                    "error": error,
                }
            )
            score = val_ll if val else train_ll
            if not error and math.isfinite(score) and (best is None or score > best[0]):
                best = (score, r, fit)
        if best is not None:
            kept[k] = best[2]
            for row in rows:
                if row["k"] == k:
                    row["kept"] = row["restart"] == best[1]
    table = pd.DataFrame(rows)
    table["kept"] = table["kept"].fillna(False).astype(bool) if "kept" in table else False
    return table, kept


def summarise_selection(table: pd.DataFrame) -> pd.DataFrame:
    """Per K: mean ± std over restarts of held-out LL, AIC and BIC, and the kept restart's values."""
    ok = table[table["error"] == ""]
    agg = ok.groupby("k").agg(
        val_ll_mean=("val_ll", "mean"),
        val_ll_std=("val_ll", "std"),
        aic_mean=("aic", "mean"),
        aic_std=("aic", "std"),
        bic_mean=("bic", "mean"),
        bic_std=("bic", "std"),
        n_ok=("restart", "count"),
    )
    kept = ok[ok["kept"]].set_index("k")[["restart", "train_ll", "val_ll", "aic", "bic", "n_params"]]
    out = agg.join(kept, how="left").reset_index()
    return out.fillna({"val_ll_std": 0.0, "aic_std": 0.0, "bic_std": 0.0})


def choose_k(summary: pd.DataFrame, criterion: str = "bic", pinned: int | None = None) -> int:
    """K pinned by the config, else the kept model with the lowest BIC/AIC or highest held-out LL."""
    if pinned is not None:
        if pinned not in set(summary["k"]):
            raise ValueError(f"hmm.n_states={pinned} has no successful fit")
        return int(pinned)
    ok = summary.dropna(subset=["bic"])
    if criterion == "val_ll":
        return int(ok.loc[ok["val_ll"].idxmax(), "k"])
    return int(ok.loc[ok[criterion].idxmin(), "k"])


def order_states(paths: Sequence[np.ndarray], k: int) -> np.ndarray:
    """Permutation old→new that numbers states by their mean time of occupancy (earliest = 0)."""
    times = np.full(k, np.inf)
    for s in range(k):
        hits = [np.flatnonzero(p == s) / max(len(p) - 1, 1) for p in paths]
        hits = np.concatenate(hits) if hits else np.array([])
        if hits.size:
            times[s] = hits.mean()
    order = np.argsort(times, kind="stable")  # order[new] = old
    perm = np.empty(k, dtype=np.int64)
    perm[order] = np.arange(k)
    return perm


def to_dict(fit: FittedHMM, perm: np.ndarray | None = None) -> dict:
    """Model parameters as plain lists, states renumbered by `perm` (old → new)."""
    k = fit.k
    perm = np.arange(k) if perm is None else perm
    inv = np.argsort(perm)  # inv[new] = old
    return {
        "k": k,
        "covariance": fit.covariance,
        "starts": fit.starts[inv].tolist(),
        "transitions": fit.transitions[np.ix_(inv, inv)].tolist(),
        "ends": fit.ends[inv].tolist(),
        "means": fit.means[inv].tolist(),
        "covs": fit.covs[inv].tolist(),
    }


@dataclass
class TaskFit:
    """Everything the HMM stage writes for one task."""

    restarts: pd.DataFrame
    summary: pd.DataFrame
    model: dict
    states: pd.DataFrame
    excluded: pd.DataFrame


SELECTION_COLUMNS = [
    "k",
    "val_ll_mean",
    "val_ll_std",
    "aic_mean",
    "aic_std",
    "bic_mean",
    "bic_std",
    "n_ok",
    "restart",
    "train_ll",
    "val_ll",
    "aic",
    "bic",
    "n_params",
    "chosen",
]
RESTART_COLUMNS = [
    "k",
    "restart",
    "restart_seed",
    "train_ll",
    "val_ll",
    "n_params",
    "aic",
    "bic",
    "error",
    "kept",
]


def _excluded_table(dropped: dict[int, str]) -> pd.DataFrame:
    rows = [{"seed": s, "reason": why} for s, why in sorted(dropped.items())]
    return pd.DataFrame(rows, columns=["seed", "reason"])


def _no_usable_runs(seqs: Sequences, cfg: dict) -> TaskFit:
    """Outputs of a task none of whose runs can be fitted (e.g. every run diverged): K = 0."""
    model = {
        "k": 0,
        "status": "no usable runs: see excluded_runs",
        "covariance": cfg["covariance"],
        "features": seqs.features,
        "starts": [],
        "transitions": [],
        "ends": [],
        "means": [],
        "covs": [],
        "excluded_runs": {str(s): why for s, why in sorted(seqs.dropped.items())},
        "settings": dict(sorted(cfg.items())),
    }
    return TaskFit(
        pd.DataFrame(columns=RESTART_COLUMNS),
        pd.DataFrame(columns=SELECTION_COLUMNS),
        model,
        pd.DataFrame(
            {
                "seed": pd.Series(dtype="int64"),
                "checkpoint": pd.Series(dtype="int64"),
                "step": pd.Series(dtype="int64"),
                "state": pd.Series(dtype="int64"),
            }
        ),
        _excluded_table(seqs.dropped),
    )


def fit_task(metrics: pd.DataFrame, cfg: dict) -> TaskFit:
    """Z-score, split, select K, decode every usable run; states numbered by time of first use."""
    diverged = {}
    if "diverged" in metrics:
        bad = metrics[metrics["diverged"].astype(bool)].groupby("seed")["step"].min()
        diverged = {int(s): f"diverged (non-finite loss or weights) by step {int(t)}" for s, t in bad.items()}
        metrics = metrics[~metrics["seed"].isin(list(diverged))]
    seqs = zscore_runs(metrics, cfg["features"])
    seqs.dropped.update(diverged)
    if not seqs.runs:
        return _no_usable_runs(seqs, cfg)
    train_runs, val_runs = split_runs(seqs.runs, cfg["val_fraction"], cfg["seed"])
    restarts, kept = select_model(
        seqs,
        train_runs,
        val_runs,
        max_states=cfg["max_states"],
        restarts=cfg["restarts"],
        covariance=cfg["covariance"],
        max_iter=cfg["max_iter"],
        tol=cfg["tol"],
        var_floor=cfg["var_floor"],
        seed=cfg["seed"],
    )
    summary = summarise_selection(restarts)
    k = choose_k(summary, cfg["criterion"], cfg["n_states"])
    summary["chosen"] = summary["k"] == k
    fit = kept[k]
    paths = fit.viterbi(seqs.arrays)
    perm = order_states(paths, k)
    model = to_dict(fit, perm)
    model.update(
        {
            "features": seqs.features,
            "criterion": cfg["criterion"],
            "pinned": cfg["n_states"] is not None,
            "train_runs": train_runs,
            "val_runs": val_runs,
            "restart_seed": int(
                restarts.loc[restarts["kept"] & (restarts["k"] == k), "restart_seed"].iloc[0]
            ),
            "zscore": {
                "runs": seqs.runs,
                "mean": seqs.mean.tolist(),
                "std": seqs.std.tolist(),
                "ddof": 0,
            },
            "excluded_runs": {str(s): why for s, why in sorted(seqs.dropped.items())},
            "settings": dict(sorted(cfg.items())),
        }
    )
    frames = []
    by_seed = {s: g for s, g in metrics.sort_values(["seed", "checkpoint"]).groupby("seed")}
    for seed, path in zip(seqs.runs, paths):
        g = by_seed[seed]
        frames.append(
            pd.DataFrame(
                {
                    "seed": seed,
                    "checkpoint": g["checkpoint"].to_numpy(),
                    "step": g["step"].to_numpy(),
                    "state": perm[path],
                }
            )
        )
    states = pd.concat(frames, ignore_index=True)
    return TaskFit(restarts, summary, model, states, _excluded_table(seqs.dropped))
