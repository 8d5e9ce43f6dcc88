"""K chosen afresh: the perturbations of a task's fit under which K's stability is measured
(refolds, subsamples without replacement, bootstrap resamples) and the model selection repeated
under each, as the HMM stage makes it (docs/methods.md, "Stability of the findings")."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from latentstates.settings import HMMSettings, StabilitySettings
from latentstates.states.criteria import FOLD_CRITERIA, cv_summary, information_criteria, n_parameters
from latentstates.states.fit import Spec, best_of, fit_groups, restart_init, restart_seed, split_specs
from latentstates.states.selection import choose_k
from latentstates.states.sequences import fold_runs, split_runs


def bootstrap_weights(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) multiplicities: each resample draws n runs with replacement (seeded)."""
    rng = np.random.default_rng([seed, 0xB007])
    return np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(resamples)])


def refolds_fitted(hmm: HMMSettings, settings: StabilitySettings, k_repeats) -> bool:
    """Whether K's refolds are the HMM stage's own: a fold criterion chose K over `hmm.cv_repeats`
    fold assignments of every run (model.json's `k_repeats`), which is what a refold does."""
    return bool(
        settings.k_perturbation == "refold"
        and hmm.criterion in FOLD_CRITERIA
        and k_repeats
        and len(k_repeats) > 1
    )


def perturbed_weights(n: int, settings: StabilitySettings) -> np.ndarray:
    """(k_resamples, n) weights of the runs in the perturbations under which K is chosen afresh
    (`stability.k_perturbation`): refold, every run once (only the split or folds and the
    restarts' seeds change: the amount of information is the task's own); subsample,
    round(subsample_fraction × n) runs drawn without replacement; bootstrap, n runs drawn with
    replacement (about 63 % distinct: criteria that depend on the amount of data shift)."""
    if settings.k_perturbation == "bootstrap":
        return bootstrap_weights(n, settings.k_resamples, settings.seed + 1)
    if settings.k_perturbation == "refold":
        return np.ones((settings.k_resamples, n), dtype=np.int64)
    rng = np.random.default_rng([settings.seed, 0x5AB5])
    m = max(2, round(settings.subsample_fraction * n))
    out = np.zeros((settings.k_resamples, n), dtype=np.int64)
    for b in range(settings.k_resamples):
        out[b, rng.choice(n, m, replace=False)] = 1
    return out


def held_out_splits(w: np.ndarray, hmm: HMMSettings, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(training, held-out) weights of one perturbation's runs as the task's criterion splits
    them: one seeded split of its distinct runs (`hmm.val_fraction`), or `hmm.cv_folds` folds
    (the fold criteria)."""
    distinct = np.flatnonzero(w).tolist()
    if hmm.criterion in FOLD_CRITERIA:
        held_sets = fold_runs(distinct, hmm.cv_folds, seed)
    else:
        held_sets = [split_runs(distinct, hmm.val_fraction, seed)[1]]
    out = []
    for held in held_sets:
        val = np.zeros_like(w)
        val[held] = w[held]
        out.append((w - val, val))
    return out


def fresh_specs(weights: np.ndarray, k: int, restarts: int, seed: int) -> list:
    """Per row of `weights` (in order), `restarts` seeded initialisations as the HMM stage's
    (new seeds from `seed`); k = 1: closed form."""
    if k == 1:
        return [Spec(list(w), 0) for w in weights]
    return [
        Spec(list(w), restart_seed(seed + 1 + b, k, r), restart_init(r))
        for b, w in enumerate(weights)
        for r in range(restarts)
    ]


def choose_k_afresh(
    arrays: Sequence[np.ndarray], weights: np.ndarray, hmm: HMMSettings, settings: StabilitySettings
) -> list[int | None]:
    """Per perturbation (a row of `weights`, `perturbed_weights`), K by the task's criterion as the
    HMM stage chooses it: the perturbation's runs split into training and held-out runs, or folds
    (seeded per perturbation, never the stage's own split), K = 1 .. max_states fitted from
    `stability.k_restarts` fresh initialisations per split (no warm start: the stage's models saw
    the held-out runs) and, with `hmm.splits`, the splits of the split's own best (K−1)-state
    fit, per K and split the best restart (by held-out log-likelihood for the
    single-split criteria, by training log-likelihood for the fold criteria; degenerate fits left
    out). None where no K could be fitted."""
    d = arrays[0].shape[1]
    lengths = np.array([len(a) for a in arrays])
    folds = hmm.criterion in FOLD_CRITERIA
    splits = [held_out_splits(w, hmm, settings.seed + 1 + b) for b, w in enumerate(weights)]
    pairs = [(b, train, val) for b, per_b in enumerate(splits) for train, val in per_b]
    rows: list[list[dict]] = [[] for _ in weights]
    scores: list[list[dict]] = [[] for _ in weights]
    previous: list = [None] * len(pairs)  # per split, its best (K−1)-state fit (hmm.splits)
    for k in range(1, hmm.max_states + 1):
        train_weights = np.stack([train for _, train, _ in pairs])
        fresh = fresh_specs(train_weights, k, settings.k_restarts, settings.seed + 7919 * k)
        per = len(fresh) // len(pairs)
        groups = [
            fresh[i * per : (i + 1) * per]
            + split_specs(previous[i] if hmm.splits and k > 1 else None, [int(w) for w in train_weights[i]])
            for i in range(len(pairs))
        ]
        found: dict[int, list[tuple[float, float, int, int]]] = {b: [] for b in range(len(weights))}
        for i, ((b, train_w, val_w), chunk) in enumerate(zip(pairs, fit_groups(arrays, k, hmm, groups))):
            per_run = [f.log_likelihoods(arrays) if f is not None else None for f, _ in chunk]
            val_ll = np.array([val_w @ ll if ll is not None else np.nan for ll in per_run])
            train_ll = np.array([train_w @ ll if ll is not None else np.nan for ll in per_run])
            best = best_of(chunk, train_ll if folds or not val_w.any() else val_ll)
            previous[i] = chunk[best][0] if best is not None else None
            if best is None:
                continue
            found[b].append((train_ll[best], val_ll[best], int(train_w @ lengths), int(val_w @ lengths)))
            for j in np.flatnonzero(val_w) if folds else []:
                scores[b].append(
                    {
                        "k": k,
                        "fold": i,
                        "seed": int(j),
                        "steps": int(val_w[j] * lengths[j]),
                        "val_ll": float(val_w[j] * per_run[best][j]),
                    }
                )
        p = n_parameters(k, d, hmm.covariance)
        for b, got in found.items():
            if len(got) < len(splits[b]):  # a split with no fit: this K has no score
                continue
            train_ll, val_ll, n_train, n_val = got[0]
            aic, bic = information_criteria(val_ll, p, n_val)
            aic_train, bic_train = information_criteria(train_ll, p, n_train)
            names = ["k", "train_ll", "val_ll", "aic", "bic", "aic_train", "bic_train"]
            rows[b].append(dict(zip(names, [k, train_ll, val_ll, aic, bic, aic_train, bic_train])))
    chosen: list[int | None] = []
    for b in range(len(weights)):
        table = pd.DataFrame(rows[b])
        if table.empty:
            chosen.append(None)
            continue
        if folds:
            per_run = pd.DataFrame(scores[b], columns=["k", "fold", "seed", "steps", "val_ll"])
            complete = per_run.groupby("k")["seed"].count() == int((weights[b] > 0).sum())
            per_run = per_run[per_run["k"].isin(complete[complete].index)]
            if per_run.empty:
                chosen.append(None)
                continue
            table = table.merge(cv_summary(per_run, d, hmm.covariance), on="k", how="left")
        try:
            chosen.append(choose_k(table, hmm.criterion))
        except ValueError:  # no K scored in every fold
            chosen.append(None)
    return chosen


def k_distribution(chosen: Sequence[int], max_states: int, k_main: int) -> pd.DataFrame:
    """Every K from 1 to max_states with how often it was chosen afresh (count, frequency), and
    which is the main fit's (marked also where it was never chosen)."""
    ks = np.arange(1, max(max_states, k_main, *chosen, 1) + 1)
    counts = np.array([sum(c == k for c in chosen) for k in ks])
    freq = counts / len(chosen) if chosen else np.full(len(ks), np.nan)
    return pd.DataFrame({"k": ks, "count": counts, "frequency": freq, "main": ks == k_main})
