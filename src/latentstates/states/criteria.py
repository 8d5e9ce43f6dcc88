"""How K is scored: free parameters and information criteria, the fold criteria's summary and
choice (every run held out once), and K across independent seed sets. Tables in, numbers out (no
fits): the HMM stage, the stability stage and the replication table read them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from latentstates.states.model import StateModel


def n_parameters(k: int, d: int, covariance: str) -> int:
    """Free parameters of the scored model: (k−1) starts + k(k−1) transitions + emissions.

    As hmmlearn's count: the likelihood is that of the observed length (no end probability).
    """
    emission = 2 * d if covariance == "diag" else d + d * (d + 1) // 2
    return (k - 1) + k * (k - 1) + k * emission


def information_criteria(ll: float, n_params: int, n_steps: int) -> tuple[float, float]:
    """(AIC, BIC) of a log-likelihood over `n_steps` time steps (hmmlearn's definitions)."""
    if n_steps == 0:
        return float("nan"), float("nan")
    return 2 * n_params - 2 * ll, n_params * math.log(n_steps) - 2 * ll


# Criteria that score every run held out once (folds of runs); the models are then fitted on
# every run. The others score one held-out split (the released rule) or the training runs.
FOLD_CRITERIA = ("cv", "cv_1se", "cv_bic")


def fold_choice(cv: pd.DataFrame, criterion: str) -> int:
    """K by a fold criterion from `cv_summary`'s table alone (Ks without a score left out)."""
    ok = cv.dropna(subset=["cv_ll"])
    if ok.empty:
        raise ValueError("no K has a held-out score in every fold")
    if criterion == "cv":
        return int(ok.loc[ok["cv_ll"].idxmax(), "k"])
    if criterion == "cv_bic":
        return int(ok.loc[ok["cv_bic"].idxmin(), "k"])
    return int(ok.loc[ok["cv_1se"].astype(bool), "k"].min())


def cv_summary(scores: pd.DataFrame, d: int, covariance: str) -> pd.DataFrame:
    """Per K, from `fold_scores`: `cv_ll`, every run's held-out log-likelihood summed (NaN where a
    run has none); `cv_ll_per_step`; `cv_se`, the standard error over runs of the per-step
    difference to the best K's (runs paired); `cv_1se`, whether the K's mean is within one such
    standard error of the best; `cv_bic`, −2 cv_ll + its parameters × log(steps). With several
    repeats (fold assignments), each run's held-out log-likelihood is its mean over them."""
    wide = scores.groupby(["seed", "k"])["val_ll"].mean().unstack("k")
    steps = scores.groupby("seed")["steps"].first().reindex(wide.index).to_numpy(dtype=float)
    total = wide.sum(min_count=len(wide))
    per_step = wide.div(steps, axis=0)
    best = total.idxmax() if total.notna().any() else None
    n_steps = int(steps.sum())
    rows = []
    for k in wide.columns:
        se, within = math.nan, False
        if best is not None and math.isfinite(total[k]):
            diff = (per_step[best] - per_step[k]).to_numpy()
            se = float(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else 0.0
            within = bool(diff.mean() <= se)
        p = n_parameters(int(k), d, covariance)
        rows.append(
            {
                "k": int(k),
                "cv_ll": float(total[k]),
                "cv_ll_per_step": float(total[k]) / n_steps,
                "cv_se": se,
                "cv_1se": within,
                "cv_bic": information_criteria(float(total[k]), p, n_steps)[1],
            }
        )
    return pd.DataFrame(rows, columns=["k", "cv_ll", "cv_ll_per_step", "cv_se", "cv_1se", "cv_bic"])


def seed_range(seeds: Sequence[int]) -> str:
    """'0–23' for consecutive seeds, else the seeds."""
    seeds = sorted(seeds)
    if seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}–{seeds[-1]}" if len(seeds) > 1 else str(seeds[0])
    return ", ".join(map(str, seeds))


def replication_table(
    sets: dict[str, list[str]], models: dict[str, StateModel], seeds: dict[str, list[int]]
) -> pd.DataFrame:
    """Per task with seed sets (the task first, then <task>_set2 …): the K chosen on each set alone
    (model.json's), the sets' seeds, how many sets agree with the first set's K, and whether all do."""
    rows = []
    for task, names in sets.items():
        ks = [models[n].k for n in names]
        rows.append(
            {
                "task": task,
                "criterion": models[names[0]].criterion or "",
                "k": " / ".join(map(str, ks)),
                "seeds": " / ".join(seed_range(seeds[n]) for n in names),
                "agreement": f"{sum(k == ks[0] for k in ks)}/{len(ks)}",
                "replicates": len(set(ks)) == 1,
            }
        )
    return pd.DataFrame(rows, columns=["task", "criterion", "k", "seeds", "agreement", "replicates"])
