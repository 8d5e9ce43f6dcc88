"""The HMM stage of one task: model selection over K and restarts, decoding, and what it writes."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from latentstates.settings import HMMSettings
from latentstates.states.fit import FittedHMM, best_of, fit_restarts, fits_without, restart_seed
from latentstates.states.model import GaussianHMM
from latentstates.states.sequences import CRITERIA, Sequences, fold_runs, split_runs, zscore_runs

logger = logging.getLogger("latentstates")


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


def select_model(
    seqs: Sequences,
    train_runs: Sequence[int],
    val_runs: Sequence[int],
    settings: HMMSettings,
    ks: Sequence[int] | None = None,
) -> tuple[pd.DataFrame, dict[int, FittedHMM]]:
    """Fit K = 1..max_states (or `ks`) with restarts; keep per K the restart with the best
    held-out LL (training LL without held-out runs).

    Returns one row per (K, restart) and the kept model per K. As the released
    model_selection.py, `aic` and `bic` are computed on the held-out runs (held-out
    log-likelihood, n = held-out time steps); `aic_train` and `bic_train` on the training runs.
    """
    pos = {r: i for i, r in enumerate(seqs.runs)}
    train = [seqs.arrays[pos[r]] for r in train_runs]
    val = [seqs.arrays[pos[r]] for r in val_runs]
    n_train = sum(len(a) for a in train)
    n_val = sum(len(a) for a in val)
    d = len(seqs.features)
    rows, kept = [], {}
    for k in ks if ks is not None else range(1, settings.max_states + 1):
        seeds = [restart_seed(settings.seed, k, r) for r in range(settings.restarts if k > 1 else 1)]
        restarts, best = fit_restarts(train, val, k, settings, seeds)
        p = n_parameters(k, d, settings.covariance)
        for restart in restarts:
            aic, bic = information_criteria(restart.val_ll, p, n_val)
            aic_train, bic_train = information_criteria(restart.train_ll, p, n_train)
            rows.append(
                {
                    "k": k,
                    "restart": restart.restart,
                    "restart_seed": restart.seed,
                    "init": restart.init,
                    "train_ll": restart.train_ll,
                    "val_ll": restart.val_ll,
                    "val_ll_per_step": restart.val_ll / n_val if n_val else float("nan"),
                    "n_params": p,
                    "aic": aic,
                    "bic": bic,
                    "aic_train": aic_train,
                    "bic_train": bic_train,
                    "error": restart.error,
                    "degenerate": restart.degenerate,
                    "kept": restart is best,
                }
            )
        if best is not None:
            kept[k] = best.fit
    return pd.DataFrame(rows), kept


# Criteria that score every run held out once (folds of runs); the models are then fitted on
# every run. The others score one held-out split (the released rule) or the training runs.
FOLD_CRITERIA = ("cv", "cv_1se", "cv_bic")


def fold_scores(
    seqs: Sequences, settings: HMMSettings, folds: Sequence[Sequence[int]] | None = None
) -> pd.DataFrame:
    """The fold criteria's data: every run's held-out log-likelihood at each K, under a fit to the
    runs of the other folds, in each of `hmm.cv_repeats` seeded assignments of the runs to
    `hmm.cv_folds` folds (repeat r: folds seeded `hmm.seed + r`, restarts seeded apart; per fold
    the best of `hmm.cv_restarts` fits by training log-likelihood, degenerate fits left out; every
    fold's restarts one batch). `folds` fixes one assignment instead. One row per (repeat, k,
    run): repeat, k, fold, seed, steps, val_ll (NaN where the fold had no usable fit)."""
    runs = list(seqs.runs)
    steps = [len(a) for a in seqs.arrays]
    assignments = (
        [folds]
        if folds is not None
        else [fold_runs(runs, settings.cv_folds, settings.seed + r) for r in range(settings.cv_repeats)]
    )
    rows = []
    for repeat, assignment in enumerate(assignments):
        seed = settings.seed + 7919 * repeat  # repeat 0: the seeds of a single assignment
        for k in range(1, settings.max_states + 1):
            per = settings.cv_restarts if k > 1 else 1
            per_fold = fits_without(seqs.arrays, runs, assignment, k, settings, per, seed)
            for f, (held, fits) in enumerate(zip(assignment, per_fold)):
                inside = np.array([r not in held for r in runs])
                lls = [fit.log_likelihoods(seqs.arrays) if fit is not None else None for fit, _ in fits]
                best = best_of(fits, [ll[inside].sum() if ll is not None else math.nan for ll in lls])
                for i, r in enumerate(runs):
                    if r in held:
                        val = float(lls[best][i]) if best is not None else math.nan
                        rows.append(
                            {"repeat": repeat, "k": k, "fold": f, "seed": r, "steps": steps[i], "val_ll": val}
                        )
    return pd.DataFrame(rows, columns=["repeat", "k", "fold", "seed", "steps", "val_ll"])


def repeat_choices(scores: pd.DataFrame, d: int, covariance: str, criterion: str) -> list[int | None]:
    """The K that each repeat's fold assignment alone chooses by the fold criterion `criterion`
    (None where no K is scored in every fold): how much K moves with the folds and the luck of
    the restarts, the data unchanged."""
    out = []
    for _, group in scores.groupby("repeat", sort=True):
        try:
            out.append(fold_choice(cv_summary(group, d, covariance), criterion))
        except ValueError:
            out.append(None)
    return out


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


def summarise_selection(table: pd.DataFrame) -> pd.DataFrame:
    """Per K: mean ± std over restarts of every criterion, and the kept restart's values."""
    ok = table[table["error"] == ""]
    agg = ok.groupby("k").agg(
        **{f"{c}_{stat}": (c, stat) for c in CRITERIA for stat in ("mean", "std")},
        n_ok=("restart", "count"),
    )
    kept = ok[ok["kept"]].set_index("k")[["restart", "train_ll", *CRITERIA, "n_params"]]
    out = agg.join(kept, how="left").reset_index()
    return out.fillna({f"{c}_std": 0.0 for c in CRITERIA})


def choose_k(summary: pd.DataFrame, criterion: str, pinned: int | None = None) -> int:
    """K pinned by the config, else the K whose kept restart is best by the criterion.

    Lowest AIC/BIC (held-out by default, `*_train` on the training runs), highest held-out LL;
    the fold criteria (`cv_summary`): highest summed held-out LL (cv), lowest BIC of it (cv_bic),
    the smallest K within one standard error of the best (cv_1se). A K without a kept,
    non-degenerate fit of every run is never chosen.
    The kept restart is the model that is used, so its value counts, not the mean over restarts
    (which punishes a K whose restarts sometimes miss the optimum). Without held-out runs the
    held-out criteria fall back to their training-set versions.
    """
    if pinned is not None:
        if pinned not in set(summary["k"]):
            raise ValueError(f"hmm.n_states={pinned} has no successful fit")
        return int(pinned)
    ok = summary.dropna(subset=["train_ll"])
    if criterion in FOLD_CRITERIA:
        return fold_choice(ok, criterion)
    column = criterion
    if ok[column].isna().all():  # no validation runs
        column = {"aic": "aic_train", "bic": "bic_train", "val_ll": "bic_train"}.get(criterion, column)
    if column == "val_ll":
        return int(ok.loc[ok[column].idxmax(), "k"])
    return int(ok.loc[ok[column].idxmin(), "k"])


def boundary_note(k: int, max_states: int, pinned: bool) -> str:
    """A warning when the criterion's optimum lies on the searched range's edge, else ''."""
    if pinned or max_states == 1:
        return ""
    if k == max_states:
        return f"the criterion's optimum is at K = max_states = {max_states}: raise hmm.max_states"
    if k == 1:
        return "the criterion's optimum is at K = 1: the metrics show no state structure"
    return ""


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


def number_states(fit: GaussianHMM, arrays: Sequence[np.ndarray]) -> tuple[GaussianHMM, np.ndarray, list]:
    """The model with its states numbered by time of use in the Viterbi paths of `arrays`, the
    permutation (old → new) and those paths (old numbers)."""
    paths = fit.viterbi(arrays)
    perm = order_states(paths, fit.k)
    return fit.permuted(perm), perm, paths


def model_record(
    hmm: GaussianHMM, seqs: Sequences, train_runs: Sequence[int], zscore: str = "run", **extra: Any
) -> dict:
    """model.json's content: parameters, features, training runs, every usable run's z-score
    statistics, and `extra`."""
    return {
        **hmm.to_json(),
        "features": seqs.features,
        "train_runs": list(train_runs),
        "zscore": {
            "kind": zscore,
            "runs": seqs.runs,
            "mean": seqs.mean.tolist(),
            "std": seqs.std.tolist(),
            "ddof": 0,
        },
        **extra,
    }


@dataclass
class TaskFit:
    """Everything the HMM stage writes for one task."""

    restarts: pd.DataFrame
    summary: pd.DataFrame
    model: dict
    states: pd.DataFrame
    excluded: pd.DataFrame
    models: dict


SELECTION_COLUMNS = [
    "k",
    *[f"{c}_{stat}" for c in CRITERIA for stat in ("mean", "std")],
    "n_ok",
    "restart",
    "train_ll",
    *CRITERIA,
    "n_params",
    "chosen",
]
RESTART_COLUMNS = [
    "k",
    "restart",
    "restart_seed",
    "init",
    "train_ll",
    "val_ll",
    "val_ll_per_step",
    "n_params",
    "aic",
    "bic",
    "aic_train",
    "bic_train",
    "error",
    "degenerate",
    "kept",
]


def _excluded_table(dropped: dict[int, str]) -> pd.DataFrame:
    rows = [{"seed": s, "reason": why} for s, why in sorted(dropped.items())]
    return pd.DataFrame(rows, columns=["seed", "reason"])


def _no_usable_runs(seqs: Sequences, settings: HMMSettings) -> TaskFit:
    """Outputs of a task none of whose runs can be fitted (e.g. every run diverged): K = 0."""
    model = {
        "k": 0,
        "status": "no usable runs: see excluded_runs",
        "at_boundary": False,
        "boundary_warning": "",
        "covariance": settings.covariance,
        "features": seqs.features,
        "starts": [],
        "transitions": [],
        "ends": [],
        "means": [],
        "covs": [],
        "excluded_runs": {str(s): why for s, why in sorted(seqs.dropped.items())},
        "settings": dict(sorted(settings.to_dict().items())),
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
        {"models": {}},
    )


def _without_diverged(metrics: pd.DataFrame) -> tuple[pd.DataFrame, dict[int, str]]:
    """The metrics of the runs that did not diverge, and why each other run is left out."""
    if "diverged" not in metrics:
        return metrics, {}
    bad = metrics[metrics["diverged"].astype(bool)].groupby("seed")["step"].min()
    diverged = {int(s): f"diverged (non-finite loss or weights) by step {int(t)}" for s, t in bad.items()}
    return metrics[~metrics["seed"].isin(list(diverged))], diverged


def _states_table(
    metrics: pd.DataFrame, runs: Sequence[int], paths: Sequence, perm: np.ndarray
) -> pd.DataFrame:
    """One row per run × checkpoint with its decoded state (new numbers)."""
    frames = []
    by_seed = {s: g for s, g in metrics.sort_values(["seed", "checkpoint"]).groupby("seed")}
    for seed, path in zip(runs, paths):
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
    return pd.concat(frames, ignore_index=True)


def missing_features(metrics: pd.DataFrame, features: Sequence[str]) -> list[str]:
    """The features no run has a value of (e.g. the bias statistics of a model without biases):
    the HMM leaves them out rather than every run."""
    return [f for f in features if f in metrics and not metrics[f].notna().any()]


def _select_by_folds(
    seqs: Sequences, settings: HMMSettings
) -> tuple[pd.DataFrame, pd.DataFrame, dict[int, FittedHMM], int, list[int | None]]:
    """The fold criteria: every run's held-out log-likelihood at each K (`fold_scores`, averaged
    over the repeats), every K fitted on every run with `cv_restarts` restarts (the curves of the
    figure, and the check that K has a usable fit), K chosen, then the chosen K fitted with all
    `restarts` (the first `cv_restarts` of them the same fits again): (restarts table, summary,
    kept fits, K, the K each repeat alone chooses)."""
    every = list(seqs.runs)
    scores = fold_scores(seqs, settings)
    cv = cv_summary(scores, len(seqs.features), settings.covariance)
    repeats = repeat_choices(scores, len(seqs.features), settings.covariance, settings.criterion)
    first = settings.replace(restarts=min(settings.cv_restarts, settings.restarts))
    restarts, kept = select_model(seqs, every, [], first)
    k = choose_k(summarise_selection(restarts).merge(cv, on="k", how="left"), settings.criterion)
    if settings.restarts > first.restarts and k > 1:
        more, refit = select_model(seqs, every, [], settings, ks=[k])
        restarts = pd.concat([restarts[restarts["k"] != k], more]).sort_values(["k", "restart"])
        restarts = restarts.reset_index(drop=True)
        kept[k] = refit[k]
    summary = summarise_selection(restarts).merge(cv, on="k", how="left")
    return restarts, summary, kept, k, repeats


def fit_task(metrics: pd.DataFrame, settings: HMMSettings) -> TaskFit:
    """Z-score, split, select K, decode every usable run; states numbered by time of first use.
    Features missing for every run are left out (`model["dropped_features"]`)."""
    metrics, diverged = _without_diverged(metrics)
    dropped = missing_features(metrics, settings.features)
    if dropped and len(dropped) < len(settings.features):
        logger.warning("features %s are missing for every run: the HMM leaves them out", dropped)
        settings = settings.replace(features=[f for f in settings.features if f not in dropped])
    else:
        dropped = []
    seqs = zscore_runs(metrics, settings.features, pooled=settings.zscore == "pooled")
    seqs.dropped.update(diverged)
    if not seqs.runs:
        return _no_usable_runs(seqs, settings)
    pinned = settings.n_states is not None
    repeats: list[int | None] = []
    if settings.criterion in FOLD_CRITERIA and not pinned:
        restarts, summary, kept, k, repeats = _select_by_folds(seqs, settings)
        train_runs, val_runs = list(seqs.runs), []
    else:
        if settings.criterion in FOLD_CRITERIA:  # K pinned: the model is fitted on every run
            train_runs, val_runs = list(seqs.runs), []
        else:
            train_runs, val_runs = split_runs(seqs.runs, settings.val_fraction, settings.seed)
        restarts, kept = select_model(seqs, train_runs, val_runs, settings)
        summary = summarise_selection(restarts)
        k = choose_k(summary, settings.criterion, settings.n_states)
    summary["chosen"] = summary["k"] == k
    boundary = boundary_note(k, settings.max_states, pinned)
    if boundary:
        logger.warning("%s", boundary)
    hmm, perm, paths = number_states(kept[k], seqs.arrays)
    kept_seed = restarts.loc[restarts["kept"] & (restarts["k"] == k), "restart_seed"].iloc[0]
    model = model_record(
        hmm,
        seqs,
        train_runs,
        settings.zscore,
        criterion=settings.criterion,
        pinned=pinned,
        at_boundary=bool(boundary),
        boundary_warning=boundary,
        val_runs=val_runs,
        restart_seed=int(kept_seed),
        k_repeats=repeats,
        excluded_runs={str(s): why for s, why in sorted(seqs.dropped.items())},
        dropped_features={f: "missing for every run" for f in dropped},
        settings=dict(sorted(settings.to_dict().items())),
    )
    states = _states_table(metrics, seqs.runs, paths, perm)
    # Every K's kept fit (states as fitted, unnumbered): the stability stage starts from them.
    models = {"models": {str(j): fit.to_json() for j, fit in sorted(kept.items())}}
    return TaskFit(restarts, summary, model, states, _excluded_table(seqs.dropped), models)


def seed_range(seeds: Sequence[int]) -> str:
    """'0–23' for consecutive seeds, else the seeds."""
    seeds = sorted(seeds)
    if seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}–{seeds[-1]}" if len(seeds) > 1 else str(seeds[0])
    return ", ".join(map(str, seeds))


def replication_table(
    sets: dict[str, list[str]], models: dict[str, dict], seeds: dict[str, list[int]]
) -> pd.DataFrame:
    """Per task with seed sets (the task first, then <task>_set2 …): the K chosen on each set alone
    (model.json's), the sets' seeds, how many sets agree with the first set's K, and whether all do."""
    rows = []
    for task, names in sets.items():
        ks = [int(models[n]["k"]) for n in names]
        rows.append(
            {
                "task": task,
                "criterion": models[names[0]].get("criterion", ""),
                "k": " / ".join(map(str, ks)),
                "seeds": " / ".join(seed_range(seeds[n]) for n in names),
                "agreement": f"{sum(k == ks[0] for k in ks)}/{len(ks)}",
                "replicates": len(set(ks)) == 1,
            }
        )
    return pd.DataFrame(rows, columns=["task", "criterion", "k", "seeds", "agreement", "replicates"])
