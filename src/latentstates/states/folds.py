"""The fold criteria's fits: every run held out once in each of several seeded assignments of
the runs to folds, its held-out log-likelihood at each K under a fit to the other folds' runs
(every fold's restarts one batch, `fit.fits_without`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from latentstates.settings import HMMSettings
from latentstates.states.criteria import cv_summary, fold_choice
from latentstates.states.fit import best_of, fits_without
from latentstates.states.sequences import Sequences, fold_runs


def fold_scores(
    seqs: Sequences, settings: HMMSettings, folds: Sequence[Sequence[int]] | None = None
) -> pd.DataFrame:
    """The fold criteria's data: every run's held-out log-likelihood at each K, under a fit to the
    runs of the other folds, in each of `hmm.cv_repeats` seeded assignments of the runs to
    `hmm.cv_folds` folds (repeat r: folds seeded `hmm.seed + r`, restarts seeded apart; per fold
    the best of `hmm.cv_restarts` fits by training log-likelihood, degenerate fits left out; every
    fold's fits one batch; with `hmm.splits` also every split of the fold's best (K−1)-state
    fit). `folds` fixes one assignment instead. One row per (repeat, k,
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
        previous: list = [None] * len(assignment)
        for k in range(1, settings.max_states + 1):
            per = settings.cv_restarts if k > 1 else 1
            grow = previous if settings.splits and k > 1 else None
            per_fold = fits_without(seqs.arrays, runs, assignment, k, settings, per, seed, grow)
            for f, (held, fits) in enumerate(zip(assignment, per_fold)):
                inside = np.array([r not in held for r in runs])
                lls = [fit.log_likelihoods(seqs.arrays) if fit is not None else None for fit, _ in fits]
                best = best_of(fits, [ll[inside].sum() if ll is not None else math.nan for ll in lls])
                previous[f] = fits[best][0] if best is not None else None
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
