"""The HMM stage of one task: model selection over K and restarts, decoding, and what it writes."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from latentstates.columns import expand_features
from latentstates.settings import HMMSettings
from latentstates.states.criteria import (
    FOLD_CRITERIA,
    cv_summary,
    fold_choice,
    information_criteria,
    n_parameters,
)
from latentstates.states.fit import FittedHMM, fit_restarts, restart_seed
from latentstates.states.folds import fold_scores, repeat_choices
from latentstates.states.model import GaussianHMM, StateModel, ZScores
from latentstates.states.sequences import CRITERIA, Sequences, split_runs, zscore_runs

logger = logging.getLogger("latentstates")


def select_model(
    seqs: Sequences,
    train_runs: Sequence[int],
    val_runs: Sequence[int],
    settings: HMMSettings,
    ks: Sequence[int] | None = None,
    previous: FittedHMM | None = None,
) -> tuple[pd.DataFrame, dict[int, FittedHMM]]:
    """Fit K = 1..max_states (or `ks`) with restarts, and (`hmm.splits`) from every split of the
    kept (K−1)-state fit (`previous` for the first K of `ks`); keep per K the restart with the
    best held-out LL (training LL without held-out runs).

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
    for i, k in enumerate(ks if ks is not None else range(1, settings.max_states + 1)):
        seeds = [restart_seed(settings.seed, k, r) for r in range(settings.restarts if k > 1 else 1)]
        grow = kept.get(k - 1) if i else previous
        restarts, best = fit_restarts(
            train, val, k, settings, seeds, previous=grow if settings.splits else None
        )
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


def state_model(
    hmm: GaussianHMM, seqs: Sequences, train_runs: Sequence[int], zscore: str = "run", **fields: Any
) -> StateModel:
    """The state model of a fit: parameters, features, training runs, every usable run's z-score
    statistics, and the other `StateModel` `fields`."""
    scores = ZScores(zscore, list(seqs.runs), seqs.mean.tolist(), seqs.std.tolist(), ddof=0)
    return StateModel(
        hmm, hmm.covariance, list(seqs.features), train_runs=list(train_runs), zscore=scores, **fields
    )


@dataclass
class TaskFit:
    """Everything the HMM stage writes for one task."""

    restarts: pd.DataFrame
    summary: pd.DataFrame
    model: StateModel
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
    model = StateModel(
        None,
        settings.covariance,
        list(seqs.features),
        first_n=settings.first_n,
        status="no usable runs: see excluded_runs",
        excluded_runs={str(s): why for s, why in sorted(seqs.dropped.items())},
        settings=dict(sorted(settings.to_dict().items())),
    )
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
    `restarts` (the first `cv_restarts` of them the same fits again) and the merge-and-split
    moves (`hmm.merge_splits`): (restarts table, summary,
    kept fits, K, the K each repeat alone chooses)."""
    every = list(seqs.runs)
    scores = fold_scores(seqs, settings)
    cv = cv_summary(scores, len(seqs.features), settings.covariance)
    repeats = repeat_choices(scores, len(seqs.features), settings.covariance, settings.criterion)
    first = settings.replace(restarts=min(settings.cv_restarts, settings.restarts), merge_splits=0)
    restarts, kept = select_model(seqs, every, [], first)
    k = choose_k(summarise_selection(restarts).merge(cv, on="k", how="left"), settings.criterion)
    if (settings.restarts > first.restarts or settings.merge_splits) and k > 1:
        more, refit = select_model(seqs, every, [], settings, ks=[k], previous=kept.get(k - 1))
        restarts = pd.concat([restarts[restarts["k"] != k], more]).sort_values(["k", "restart"])
        restarts = restarts.reset_index(drop=True)
        kept[k] = refit[k]
    summary = summarise_selection(restarts).merge(cv, on="k", how="left")
    return restarts, summary, kept, k, repeats


def fit_task(metrics: pd.DataFrame, settings: HMMSettings) -> TaskFit:
    """Z-score, split, select K, decode every usable run; states numbered by time of first use.
    Features missing for every run are left out (`fit.model.dropped_features`); patterns among
    them (`l2@block*`) are the columns they match (`columns.expand_features`)."""
    settings = settings.replace(features=expand_features(metrics.columns, settings.features))
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
    if k not in kept:  # pinned, and every restart at it failed or was degenerate
        tried = restarts[restarts["k"] == k]
        why = sorted({e or d for e, d in zip(tried["error"], tried["degenerate"]) if e or d})
        raise ValueError(
            f"hmm.n_states={k}: none of its {len(tried)} fits is usable ({'; '.join(why[:3])}); "
            f"try more restarts (hmm.restarts) or another K"
        )
    hmm, perm, paths = number_states(kept[k], seqs.arrays)
    kept_seed = restarts.loc[restarts["kept"] & (restarts["k"] == k), "restart_seed"].iloc[0]
    model = state_model(
        hmm,
        seqs,
        train_runs,
        settings.zscore,
        first_n=settings.first_n,
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


def fit_shared(metrics: dict[str, pd.DataFrame], settings: HMMSettings) -> tuple[TaskFit, pd.DataFrame]:
    """One HMM over the runs of every recipe of a comparison (the HMM stage's selection of K and
    restarts on the pooled runs), and the table of runs. The fit's `seed` columns are run
    numbers (`states.comparison.pool_runs`)."""
    missing = {r: sorted(set(settings.features) - set(df.columns)) for r, df in metrics.items()}
    missing = {r: m for r, m in missing.items() if m}
    if missing:
        raise ValueError(f"the recipes lack the comparison's HMM features: {missing}")
    from latentstates.states.comparison import pool_runs  # the comparison stage's run table

    pooled, runs = pool_runs(metrics)
    fit = fit_task(pooled, settings)
    excluded = {
        f"{r.recipe} seed {r.seed}": fit.model.excluded_runs[str(r.run)]
        for r in runs.itertuples()
        if str(r.run) in fit.model.excluded_runs
    }
    fit.model = fit.model.replace(recipes=list(metrics), excluded_runs=excluded)
    return fit, runs
