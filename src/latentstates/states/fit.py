"""Fitting the Gaussian HMM by Baum-Welch: batches of fits, restarts and splits (where each
starts: `states.starts`).

The fits run batched (`states.baum_welch`), each equal to pomegranate's own fit of it
(`fit_hmm(..., reference=True)`, tested to 1e-9).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from latentstates.settings import HMMSettings
from latentstates.states.baum_welch import Job, Start, fit_batch
from latentstates.states.model import GaussianHMM, degeneracy
from latentstates.states.pomegranate_reference import dense_hmm, floored_normal_class
from latentstates.states.starts import floored, initial_start, merge_split_starts, split_starts

# What a restart may fail with (a Cholesky or k-means failure): the restart is skipped, not the fit.
FIT_ERRORS = (RuntimeError, ValueError)


@dataclass(frozen=True, eq=False)
class FittedHMM(GaussianHMM):
    """The parameters of a fit (float64), and pomegranate's model where it made them (reference fits)."""

    model: object = None

    @classmethod
    def from_pomegranate(cls, model, covariance: str) -> FittedHMM:
        """The parameters of pomegranate's fitted `model`."""

        def probabilities(logs: torch.Tensor) -> np.ndarray:
            return np.exp(logs.detach().double().numpy())

        nodes = model.distributions
        return cls(
            probabilities(model.starts),
            probabilities(model.edges),
            probabilities(model.ends),
            np.stack([d.means.detach().double().numpy() for d in nodes]),
            np.stack([d.covs.detach().double().numpy() for d in nodes]),
            covariance,
            model,
        )

    @classmethod
    def from_start(cls, params: Start, covariance: str) -> FittedHMM:
        """The parameters of a batched fit (`baum_welch.Outcome.params`)."""
        return cls(params.starts, params.edges, params.ends, params.means, params.covs, covariance)


def data_scale(arrays: Sequence[np.ndarray]) -> float:
    """Mean variance of the pooled data (near 1 for z-scored runs), the unit of prior and floor."""
    scale = float(np.mean(np.var(np.concatenate(arrays), axis=0)))
    return scale if scale > 0 else 1.0


def covariance_floor(arrays: Sequence[np.ndarray], rel_floor: float) -> float:
    """Smallest variance a state may have: `rel_floor` times the mean variance of the pooled data."""
    return rel_floor * data_scale(arrays)


def restart_init(restart: int) -> str:
    """Initialisation of restart `restart`: k-means (as hmmlearn) and time segments, alternately."""
    return "kmeans" if restart % 2 == 0 else "segments"


def restart_seed(base: int, k: int, restart: int) -> int:
    """Deterministic seed of restart `restart` for k states."""
    return int(np.random.SeedSequence([base, k, restart]).generate_state(1)[0])


def split_specs(previous: GaussianHMM | None, weights: Sequence[int] | None) -> list[Spec]:
    """The fits that grow `previous` (the best (K−1)-state fit to the same runs) by one state,
    one per split (`split_starts`, init "split j"); none without a previous fit."""
    if previous is None:
        return []
    return [Spec(weights, 0, f"split {j}", start) for j, start in enumerate(split_starts(previous))]


def repeated(arrays: Sequence[np.ndarray], weights: Sequence[int] | None) -> list[np.ndarray]:
    """The runs as a fit with these integer weights sees them: run i `weights[i]` times."""
    if weights is None:
        return list(arrays)
    return [a for a, w in zip(arrays, weights) for _ in range(int(w))]


@dataclass(frozen=True)
class Spec:
    """One fit to plan: each run's integer weight (None: every run once), seed, initialisation
    (`init`, or EM from the parameters `start`, e.g. another fit's or a split of one: `init`
    then names it)."""

    weights: Sequence[int] | None
    seed: int
    init: str = "kmeans"
    start: Start | None = None


def plan(arrays: Sequence[np.ndarray], k: int, settings: HMMSettings, spec: Spec) -> Job:
    """The batched fit of `spec`: its seeded start, run weights, floor and prior (data units)."""
    seen = repeated(arrays, spec.weights)
    scale = data_scale(seen)
    floor, prior = settings.var_floor * scale, settings.covariance_prior * scale
    weights = np.ones(len(arrays)) if spec.weights is None else np.asarray(spec.weights, dtype=float)
    start = (
        spec.start
        if spec.start is not None
        else initial_start(seen, k, settings.covariance, floor, spec.seed, spec.init)
    )
    return Job(start, weights, floor, prior)


def fit_many(
    arrays: Sequence[np.ndarray], k: int, settings: HMMSettings, specs: Sequence[Spec]
) -> list[tuple[FittedHMM | None, str]]:
    """Every spec's k-state fit to `arrays`, all at once (`baum_welch.fit_batch`): (fit, '') or
    (None, error) per spec, in order. Each fit equals `fit_hmm` of the runs its weights repeat
    with its seed and initialisation (pomegranate's fit, to 1e-9); k = 1 in closed form. With
    `hmm.engine: pomegranate`, pomegranate's DenseHMM fits them one at a time (`reference_fit`)."""
    if settings.engine == "pomegranate":
        return [reference_fit(arrays, k, settings, spec) for spec in specs]
    out: list[tuple[FittedHMM | None, str]] = [(None, "")] * len(specs)
    jobs, where = [], []
    for i, spec in enumerate(specs):
        try:
            if k == 1:
                out[i] = (single_gaussian(repeated(arrays, spec.weights), settings), "")
                continue
            jobs.append(plan(arrays, k, settings, spec))
            where.append(i)
        except FIT_ERRORS as exc:
            out[i] = (None, str(exc))
    for i, outcome in zip(
        where, fit_batch(arrays, jobs, settings.covariance, settings.max_iter, settings.tol)
    ):
        out[i] = (
            (None, outcome.error)
            if outcome.error
            else (FittedHMM.from_start(outcome.params, settings.covariance), "")
        )
    return out


def fits_without(
    arrays: Sequence[np.ndarray],
    runs: Sequence[int],
    folds: Sequence[Sequence[int]],
    k: int,
    settings: HMMSettings,
    restarts: int,
    seed: int,
    previous: Sequence[GaussianHMM | None] | None = None,
) -> list[list[tuple[FittedHMM | None, str]]]:
    """Per fold, `restarts` k-state fits to the runs outside it (the fold's runs weighted 0; fold
    f's restart r seeded `restart_seed(seed, k, 1000 (f + 1) + r)`, initialised by
    `restart_init(r)`), then the splits of the fold's best (k−1)-state fit `previous[f]`
    (`split_specs`; none where it is None), every fold's fits one batch (`fit_many`). `runs`
    names `arrays`."""
    groups = []
    for f, held in enumerate(folds):
        weights = [int(r not in held) for r in runs]
        mine = [
            Spec(weights, restart_seed(seed, k, 1000 * (f + 1) + i), restart_init(i)) for i in range(restarts)
        ]
        groups.append(mine + split_specs(previous[f] if previous is not None else None, weights))
    return fit_groups(arrays, k, settings, groups)


def fit_groups(
    arrays: Sequence[np.ndarray], k: int, settings: HMMSettings, groups: Sequence[Sequence[Spec]]
) -> list[list[tuple[FittedHMM | None, str]]]:
    """`fit_many` of every group's specs as one batch, the fits handed back group by group (groups
    may differ in size, e.g. where one has no smaller fit to split)."""
    fits = fit_many(arrays, k, settings, [spec for group in groups for spec in group])
    ends = np.cumsum([len(group) for group in groups])
    return [fits[end - len(group) : end] for end, group in zip(ends, groups)]


def fit_hmm(
    arrays: Sequence[np.ndarray],
    k: int,
    settings: HMMSettings,
    seed: int,
    init: str = "kmeans",
    reference: bool = False,
) -> FittedHMM:
    """Fit a k-state Gaussian HMM by Baum-Welch (seeded initialisation, float64 emissions).

    The emissions start from k-means' centres (`init="kmeans"`, as hmmlearn) or from random
    time segments (`init="segments"`) and the pooled covariance (as hmmlearn), the start
    probabilities and transition rows are drawn from a Dirichlet(1/k) (as hmmlearn), the end
    probability at its data value (sequences / steps). Each M-step adds `covariance_prior`
    times the data's mean variance, divided by the state's weight (its expected number of
    steps), to the state's covariance diagonal, then floors it at `var_floor` times the data's
    mean variance (`FlooredNormal`). k = 1 is fitted in closed form (one Gaussian with the same
    prior; end probability = sequences / steps), since pomegranate's initialisation needs k ≥ 2.
    The fit runs as a batch of one (`fit_many`: one NaN-padded time loop for all lengths);
    `reference=True` fits with pomegranate's own `DenseHMM` instead (groups of equal length,
    log-space E-step): the same fit, slower. A failed fit raises RuntimeError.
    """
    if reference and k > 1:
        torch.manual_seed(seed)
        scale = data_scale(arrays)
        floor, prior = settings.var_floor * scale, settings.covariance_prior * scale
        start = initial_start(arrays, k, settings.covariance, floor, seed, init)
        model = reference_model(start, settings, floor, prior, seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            model.fit([torch.tensor(a, dtype=torch.float64) for a in arrays])
        return FittedHMM.from_pomegranate(model, settings.covariance)
    [(fit, error)] = fit_many(arrays, k, settings, [Spec(None, seed, init)])
    if fit is None:
        raise RuntimeError(error)
    return fit


def single_gaussian(arrays: Sequence[np.ndarray], settings: HMMSettings) -> FittedHMM:
    """K = 1 in closed form: the pooled Gaussian plus the prior, end probability sequences / steps."""
    x = np.concatenate(arrays)
    scale = data_scale(arrays)
    floor, prior = settings.var_floor * scale, settings.covariance_prior * scale
    end = len(arrays) / len(x)
    d = x.shape[1]
    cov = np.cov(x.T, bias=True).reshape(d, d) + prior / len(x) * np.eye(d)
    return FittedHMM(
        np.ones(1),
        np.array([[1.0 - end]]),
        np.array([end]),
        x.mean(axis=0)[None],
        floored(cov, settings.covariance, floor)[None],
        settings.covariance,
    )


def reference_fit(
    arrays: Sequence[np.ndarray], k: int, settings: HMMSettings, spec: Spec
) -> tuple[FittedHMM | None, str]:
    """`spec`'s fit by pomegranate's own DenseHMM (`hmm.engine: pomegranate`): the runs its weights
    repeat, from the start `plan` gives the batched fit; (fit, '') or (None, error)."""
    seen = repeated(arrays, spec.weights)
    try:
        if k == 1:
            return single_gaussian(seen, settings), ""
        job = plan(arrays, k, settings, spec)
        torch.manual_seed(spec.seed)
        model = reference_model(job.start, settings, job.floor, job.prior, spec.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            model.fit([torch.tensor(a, dtype=torch.float64) for a in seen])
        fit = dataclasses.replace(FittedHMM.from_pomegranate(model, settings.covariance), model=None)
    except FIT_ERRORS as exc:
        return None, str(exc)
    if not all(np.isfinite(v).all() for v in (fit.transitions, fit.means, fit.covs)):
        return None, "non-finite parameters"
    return fit, ""


def reference_model(start: Start, settings: HMMSettings, floor: float, prior: float, seed: int):
    """pomegranate's DenseHMM (with FlooredNormal emissions) at `start`."""
    normal = floored_normal_class()
    dists = [
        normal(floor, prior, means=torch.tensor(m), covs=torch.tensor(c), covariance_type=settings.covariance)
        for m, c in zip(start.means, start.covs)
    ]
    return dense_hmm(
        dists,
        starts=torch.tensor(start.starts),
        edges=torch.tensor(start.edges),
        ends=torch.tensor(start.ends),
        max_iter=settings.max_iter,
        tol=settings.tol,
        random_state=seed % 2**32,
    )


@dataclass(frozen=True)
class Restart:
    """One seeded EM restart: the fit (None where it failed), its log-likelihoods, its error,
    and why it is degenerate ('' if it is not: `model.degeneracy`)."""

    restart: int
    seed: int
    init: str
    fit: FittedHMM | None
    train_ll: float
    val_ll: float
    error: str
    degenerate: str = ""


def fit_restarts(
    train: Sequence[np.ndarray],
    val: Sequence[np.ndarray],
    k: int,
    settings: HMMSettings,
    seeds: Sequence[int],
    by: str = "val",
    previous: GaussianHMM | None = None,
) -> tuple[list[Restart], Restart | None]:
    """One fit per seed (restart r initialised by `restart_init(r)`), one per split of
    `previous` (the best (k−1)-state fit to the same runs, `split_specs`; numbered after the
    seeded restarts, seed 0), then up to `hmm.merge_splits` rounds of merge-and-split moves
    (`merge_split_starts`) from the best fit so far by training log-likelihood, each round one
    batch, until a round finds no better one; and the best of them all.

    The best is the successful restart with the highest held-out log-likelihood (`by` "val",
    the released rule), or training log-likelihood (`by` "train", or without held-out runs; the
    first of equals). A restart that fails (FIT_ERRORS) or scores a non-finite training
    log-likelihood is kept with its error and never best; a degenerate one (`model.degeneracy`)
    is kept with its reason and never best either.
    """
    specs = [Spec(None, s, restart_init(r)) for r, s in enumerate(seeds)]
    specs += split_specs(previous if k > 1 else None, None)
    restarts = scored_restarts(train, val, k, settings, specs, 0)
    top = best_restart(restarts, [], "train")
    for _ in range(settings.merge_splits if k > 2 else 0):
        if top is None:
            break
        occupancy = np.bincount(np.concatenate(top.fit.viterbi(train)), minlength=k)
        moves = [
            Spec(None, 0, f"merge-split {i + 1}", start)
            for i, start in enumerate(merge_split_starts(top.fit, occupancy))
        ]
        restarts += scored_restarts(train, val, k, settings, moves, len(restarts))
        better = best_restart(restarts, [], "train")
        if better is top:
            break
        top = better
    return restarts, best_restart(restarts, val, by)


def scored_restarts(
    train: Sequence[np.ndarray],
    val: Sequence[np.ndarray],
    k: int,
    settings: HMMSettings,
    specs: Sequence[Spec],
    first: int,
) -> list[Restart]:
    """Every spec's fit (one batch, `fit_many`) with its log-likelihoods, error and degeneracy,
    numbered from `first`."""
    out = []
    for r, (spec, (fit, error)) in enumerate(zip(specs, fit_many(train, k, settings, specs)), start=first):
        train_ll = val_ll = float("nan")
        degenerate = ""
        if fit is not None:
            train_ll = fit.log_likelihood(train)
            val_ll = fit.log_likelihood(val) if val else float("nan")
            error = "" if math.isfinite(train_ll) else "non-finite log-likelihood"
            degenerate = degeneracy(fit)
        init = spec.init if k > 1 else "closed form"
        out.append(Restart(r, spec.seed, init, fit, train_ll, val_ll, error, degenerate))
    return out


def best_restart(restarts: Sequence[Restart], val: Sequence[np.ndarray], by: str) -> Restart | None:
    """The usable restart (no error, not degenerate, finite score) with the highest held-out
    log-likelihood (`by` "val" with held-out runs) or training log-likelihood; the first of equals
    (`best_of`)."""
    scores = [r.val_ll if val and by == "val" else r.train_ll for r in restarts]
    best = best_of([(None if r.error else r.fit, r.error) for r in restarts], scores)
    return None if best is None else restarts[best]


def best_of(fits: Sequence[tuple[FittedHMM | None, str]], scores: Sequence[float]) -> int | None:
    """Index of the successful, finite, non-degenerate fit with the highest score (None if none)."""
    ok = [
        i for i, (f, _) in enumerate(fits) if f is not None and math.isfinite(scores[i]) and not degeneracy(f)
    ]
    return max(ok, key=lambda i: scores[i]) if ok else None
