"""Cross-validated evaluation of the forecast: runs forecast by HMMs fitted without them."""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd

from latentstates.forecast.model import METHODS, Forecaster
from latentstates.settings import ForecastSettings, HMMSettings
from latentstates.states.analysis import convergence_times
from latentstates.states.fit import fits_without
from latentstates.states.model import StateModel
from latentstates.states.selection import number_states, state_model
from latentstates.states.sequences import Sequences, fold_runs, zscore_runs

logger = logging.getLogger("latentstates")

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


def fold_models(
    seqs: Sequences, folds: list[list[int]], k: int, settings: ForecastSettings, hmm: HMMSettings
) -> list[StateModel | None]:
    """The state model of the HMM fitted without each fold's runs: the task's K, the best
    training likelihood of `settings.restarts` seeded restarts, states numbered as the workflow's;
    None where every restart failed (e.g. K states on one or two short runs). Every fold's
    restarts run as one batch (each fold's runs weighted 0)."""
    trains = [[r for r in seqs.runs if r not in held] for held in folds]
    per_fold = fits_without(seqs.arrays, seqs.runs, folds, k, hmm, settings.restarts, settings.seed)
    out = []
    for fold, train in enumerate(trains):
        arrays = [seqs.arrays[seqs.runs.index(r)] for r in train]
        best, best_ll = None, None
        for fit, _ in per_fold[fold]:
            ll = fit.log_likelihood(arrays) if fit is not None else float("nan")
            if math.isfinite(ll) and (best is None or ll > best_ll):  # a failed restart is skipped
                best, best_ll = fit, ll
        if best is None:
            out.append(None)
            continue
        numbered, _, _ = number_states(best, arrays)
        out.append(state_model(numbered, seqs, train))
    return out


def evaluate(
    metrics: pd.DataFrame, model: StateModel, threshold: float, settings: ForecastSettings, hmm: HMMSettings
) -> pd.DataFrame:
    """Forecasts at each fraction of training for every run, from HMMs fitted without it.

    Runs are split into folds; per fold an HMM with the task's K (`model.k`) and the HMM
    settings `hmm` is fitted on the other runs (`fold_models`) and each held-out run is forecast
    from its first round(fraction × T) checkpoints by every method. One row per (run, fraction,
    method), with the two baselines: the fitted runs' mean convergence time (`naive`) and, as
    ours, the known time once converged and otherwise the mean of the fitted runs' times that
    are ≥ t (`naive_conditional`).
    """
    features = model.features
    k = model.k
    seqs = zscore_runs(metrics, features, pooled=hmm.zscore == "pooled")
    usable = seqs.runs
    by_seed = {s: g for s, g in metrics.sort_values(["seed", "checkpoint"]).groupby("seed")}
    truth = convergence_times(metrics[metrics["seed"].isin(usable)], threshold)
    rows = []
    folds = fold_runs(usable, settings.folds, settings.seed)
    for f_i, (held, fold_model) in enumerate(zip(folds, fold_models(seqs, folds, k, settings, hmm))):
        if fold_model is None:
            logger.warning(
                "forecast evaluation: every HMM fit with K = %d on the %d runs without fold %d failed "
                "(too few runs or checkpoints for K states?): seeds %s are not forecast",
                k,
                len(usable) - len(held),
                f_i,
                held,
            )
            continue
        fc = Forecaster.fit(fold_model, metrics, threshold)
        for run in held:
            g = by_seed[run]
            true = float(truth.loc[run, "convergence_checkpoint"])
            for row in _forecasts(fc, g, features, true, run, settings):
                rows.append({"seed": run, "fold": f_i, **row})
    return pd.DataFrame(rows, columns=EVALUATION_COLUMNS)


def _forecasts(
    fc: Forecaster,
    run_metrics: pd.DataFrame,
    features: list[str],
    truth: float,
    run: int,
    settings: ForecastSettings,
):
    """Rows of one held-out run: a forecast per fraction seen and method, with the baselines."""
    raw = run_metrics[features].to_numpy(dtype=float)
    acc = run_metrics["eval_acc"].to_numpy(dtype=float)
    for frac in settings.fractions:
        t = max(1, int(round(frac * len(raw))))
        seen = acc[:t]
        hit = np.flatnonzero(seen > fc.threshold)
        later = fc.times[fc.times >= t]
        cond = float(hit[0]) if len(hit) else float(later.mean() if later.size else t)
        for method in METHODS:
            out = fc.forecast(raw[:t], seen, settings.replace(method=method), seed=settings.seed + run)
            yield {
                "fraction": frac,
                "t": t,
                "method": method,
                "truth": truth,
                "converged_by_t": out.converged,
                "state": out.state,
                "predicted": out.predicted,
                "low": out.low,
                "high": out.high,
                "covered": out.low <= truth <= out.high,
                "naive": fc.baseline(),
                "naive_conditional": cond,
            }


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
