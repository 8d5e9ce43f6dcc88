"""Atypical runs: how well the HMM fitted without a run explains it, throughout and at its worst
stretch, and how far its state path lies from the typical path (analysis/runs.csv;
docs/methods.md, "Outlier runs").

Two rules flag a run, each by a modified z-score over the task's runs (Iglewicz and Hoaglin 1993:
0.6745 (x − median) / MAD, cut-off OUTLIER_Z; at least MIN_RUNS runs):
- atypical throughout: its log-likelihood per step under the HMM without it is low;
- an excursion: its worst stretch (WINDOW of its checkpoints) lies far from its decoded states
  (the squared Mahalanobis distance to its state, over the run's own median distance, averaged
  over the stretch), further than the other runs' worst stretches.
The HMM without the run: the fitted model with the states that only this run uses left out, then
one EM step with the run weighted 0 (every run's in one batch). A fit that has seen an atypical
run has widened its states to hold it, or spent a state on it, which masks it from its own fit.

The path distance (the fraction of training, on a common grid, in which the run's decoded state
differs from the medoid path's) is reported, not flagged: a detour that some runs take is a
finding of the analyses, and it moves those runs' paths from the typical one by design.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from latentstates.settings import AnalysisSettings, HMMSettings
from latentstates.states.analysis import TaskAnalysis, paths_by_run
from latentstates.states.fit import Spec, fit_many
from latentstates.states.model import GaussianHMM, StateModel
from latentstates.states.sequences import Sequences, zscore_runs
from latentstates.states.starts import start_of

OUTLIER_Z = 3.5  # Iglewicz and Hoaglin's cut-off for the modified z-score
MIN_RUNS = 5  # fewer runs: no robust scale to flag by
MIN_STATE_STEPS = 3  # a state the other runs visit less is left out of the HMM without a run
WINDOW = 0.05  # an excursion's stretch: this fraction of the run's checkpoints (at least 2)
GRID = 100  # points of training at which paths are compared
OUTLIER_COLUMNS = [
    "ll_per_step",
    "ll_left_out",
    "ll_z",
    "excursion",
    "excursion_z",
    "path_distance",
    "outlier",
    "outlier_why",
]
OUTLIER_RULE = (
    f"modified z-score over the runs (at least {MIN_RUNS}) beyond {OUTLIER_Z}: log-likelihood per "
    f"step under the HMM without the run below (atypical throughout), or its worst stretch of "
    f"{WINDOW:.0%} of the checkpoints further from its states than the others' (an excursion)"
)


def left_out_models(
    seqs: Sequences,
    hmm: GaussianHMM,
    paths: dict[int, np.ndarray],
    train_runs: list[int],
    settings: HMMSettings,
) -> list[GaussianHMM]:
    """Per run, the HMM without it. For a run the model was fitted on: its states that the other
    runs' decoded paths visit fewer than MIN_STATE_STEPS times left out (a state spent on this
    run alone would not exist without it), then one EM step from there with the run weighted 0
    (the fit's covariance floor and prior; the steps of each number of states one batch), or the
    reduced model where that step fails. For a run it was not fitted on, `hmm` itself."""
    fitted = [r for r in seqs.runs if r in set(train_runs)]
    counts = {r: np.bincount(paths[r], minlength=hmm.k) for r in fitted}
    total = sum(counts.values(), np.zeros(hmm.k, dtype=int))
    reduced = {}
    for r in fitted:
        keep = np.flatnonzero(total - counts[r] >= MIN_STATE_STEPS)
        reduced[r] = without_states(hmm, keep) if 0 < len(keep) < hmm.k else hmm
    out = dict(reduced)
    one_step = settings.replace(max_iter=1)
    for k in sorted({m.k for m in reduced.values()}) if len(fitted) > 1 else []:
        mine = [r for r in fitted if reduced[r].k == k]
        specs = [
            Spec([int(s in fitted and s != r) for s in seqs.runs], 0, "left out", start_of(reduced[r]))
            for r in mine
        ]
        for r, (fit, _) in zip(mine, fit_many(seqs.arrays, k, one_step, specs)):
            if fit is not None:
                out[r] = fit
    return [out.get(r, hmm) for r in seqs.runs]


def without_states(hmm: GaussianHMM, keep: np.ndarray) -> GaussianHMM:
    """`hmm` restricted to the states `keep`: start probabilities renormalised, each kept row's
    moves to the others rescaled to what the row had in all (its end probability unchanged)."""
    ends = hmm.ends[keep] if hmm.ends is not None else np.zeros(len(keep))
    t = hmm.transitions[np.ix_(keep, keep)]
    rows = t.sum(axis=1, keepdims=True)
    t = np.where(rows > 0, t / np.where(rows > 0, rows, 1), np.eye(len(keep))) * (1 - ends)[:, None]
    starts = hmm.starts[keep]
    starts = starts / starts.sum() if starts.sum() > 0 else np.full(len(keep), 1 / len(keep))
    return GaussianHMM(starts, t, ends, hmm.means[keep], hmm.covs[keep], hmm.covariance)


def worst_stretch(hmm: GaussianHMM, x: np.ndarray) -> float:
    """log of the largest mean, over WINDOW of the run's checkpoints, of each step's squared
    Mahalanobis distance to its decoded state over the run's median one: a stretch the model
    explains far worse than the rest of the run (1 step = the window: a single bad checkpoint
    counts for 1/window of it)."""
    d2 = hmm.mahalanobis(x)[0][np.arange(len(x)), hmm.viterbi([x])[0]]
    scale = np.median(d2)
    if not np.isfinite(scale) or scale <= 0:
        return float("nan")
    w = min(len(x), max(2, int(round(WINDOW * len(x)))))
    return float(np.log(np.convolve(d2 / scale, np.ones(w) / w, mode="valid").max()))


def modified_z(values: np.ndarray) -> np.ndarray:
    """0.6745 (x − median) / MAD of each finite value (NaN elsewhere); where the MAD is 0 (more
    than half the values equal), (x − median) / (1.2533 × mean absolute deviation) instead (the
    same scale for a normal sample); 0 where every value is the median."""
    x = np.asarray(values, dtype=float)
    finite = np.isfinite(x)
    out = np.full(len(x), np.nan)
    if not finite.any():
        return out
    med = np.median(x[finite])
    dev = np.abs(x[finite] - med)
    if np.median(dev) > 0:
        out[finite] = 0.6745 * (x[finite] - med) / np.median(dev)
    elif dev.mean() > 0:
        out[finite] = (x[finite] - med) / (1.2533 * dev.mean())
    else:
        out[finite] = 0.0
    return out


def path_distances(paths: dict[int, np.ndarray], grid: int = GRID) -> pd.Series:
    """Each run's distance to the medoid path: paths read at `grid` evenly spaced fractions of
    their length (runs of different lengths compare by progress through training), the distance
    of two paths the fraction of those points where their states differ; the medoid is the run
    with the smallest summed distance to the others (the first of equals)."""
    if not paths:
        return pd.Series(dtype=float, name="path_distance")
    at = np.linspace(0.0, 1.0, grid)
    on_grid = np.stack([p[np.rint(at * (len(p) - 1)).astype(int)] for p in paths.values()])
    distance = (on_grid[:, None, :] != on_grid[None, :, :]).mean(axis=2)
    medoid = int(np.argmin(distance.sum(axis=1)))
    return pd.Series(distance[medoid], index=pd.Index(list(paths), name="seed"), name="path_distance")


def outlier_runs(
    seqs: Sequences,
    paths: dict[int, np.ndarray],
    hmm: GaussianHMM,
    train_runs: list[int],
    settings: HMMSettings,
) -> pd.DataFrame:
    """Per run (index seed): its log-likelihood per step under the fitted HMM and under the HMM
    without it, its worst stretch, their modified z-scores, its path distance, and whether it is
    flagged and why (OUTLIER_RULE)."""
    full = hmm.log_likelihoods(seqs.arrays) / np.array([len(x) for x in seqs.arrays])
    models = left_out_models(seqs, hmm, paths, train_runs, settings)
    left_out = np.array([m.log_likelihoods([x])[0] / len(x) for m, x in zip(models, seqs.arrays)])
    stretch = np.array([worst_stretch(m, x) for m, x in zip(models, seqs.arrays)])
    table = pd.DataFrame(
        {"ll_per_step": full, "ll_left_out": left_out, "excursion": stretch},
        index=pd.Index(seqs.runs, name="seed"),
    )
    enough = len(seqs.runs) >= MIN_RUNS
    table["ll_z"] = modified_z(left_out) if enough else np.nan
    table["excursion_z"] = modified_z(stretch) if enough else np.nan
    table["path_distance"] = path_distances({r: paths[r] for r in seqs.runs if r in paths})
    low, far = table["ll_z"] < -OUTLIER_Z, table["excursion_z"] > OUTLIER_Z
    table["outlier"] = low | far
    why = np.where(low & far, "both", np.where(low, "atypical throughout", np.where(far, "an excursion", "")))
    table["outlier_why"] = why
    return table[OUTLIER_COLUMNS]


def with_outliers(
    analysis: TaskAnalysis,
    metrics: pd.DataFrame,
    states: pd.DataFrame,
    model: StateModel,
    analysis_settings: AnalysisSettings,
    hmm_settings: HMMSettings,
) -> TaskAnalysis:
    """`analyse_task`'s analysis with the atypical runs (`analysis.outliers`): the scores joined to
    its runs table (`outlier` and `outlier_why` empty where runs are not flagged: `auto` flags only
    with pooled z-scores) and the summary's `outlier_runs` (None where not flagged) and
    `outlier_rule` (or why not flagged). Unchanged with `outliers: false` or no decoded run."""
    paths = paths_by_run(states)
    if analysis_settings.outliers is False or model.k == 0 or not paths:
        return analysis
    seqs = zscore_runs(metrics, model.features, pooled=model.pooled_zscores)
    table = outlier_runs(seqs, paths, model.hmm, model.train_runs or seqs.runs, hmm_settings)
    if analysis_settings.outliers is True or model.pooled_zscores:
        found = {
            "outlier_runs": [int(r) for r in table.index[table["outlier"]]],
            "outlier_rule": OUTLIER_RULE,
        }
    else:
        table["outlier"], table["outlier_why"] = None, None
        found = {
            "outlier_runs": None,
            "outlier_rule": "scores reported, runs not flagged: with per-run z-scores (hmm.zscore: run) "
            "the rule is unreliable on simulated runs; analysis.outliers: true flags them anyway",
        }
    runs = analysis.runs.merge(table.reset_index(), on="seed", how="left")
    return dataclasses.replace(analysis, runs=runs, summary={**analysis.summary, **found})
