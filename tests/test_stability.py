"""The stability stage against runs simulated from a known HMM with a planted detour."""

from __future__ import annotations

import numpy as np
import pytest

from latentstates.settings import AnalysisSettings, HMMSettings, StabilitySettings
from latentstates.states import k_stability, selection, stability
from latentstates.states.sequences import Sequences, split_runs

# Five states: 0 start, 1 detour (delays convergence), 2 middle, 3 converged, 4 late (visited by
# some runs after they converged: no effect on convergence).
MEANS = np.array([[0.0, 0.0, 0.0], [0.0, 3.0, 3.0], [3.0, 0.0, 0.0], [3.0, 3.0, 0.0], [0.0, 0.0, 3.5]])
LENGTH = 70


def simulate(n_runs: int, detour_runs: int, seed: int, detour_steps=(10, 16)):
    """Runs of the left-to-right chain 0 → (1) → 2 → 3 (→ 4): `detour_runs` of them visit the
    detour, every other run the late state; convergence = first step in state 3."""
    rng = np.random.default_rng(seed)
    arrays, truth, times = [], [], []
    detour = set(rng.choice(n_runs, detour_runs, replace=False).tolist())
    late = set(rng.choice(n_runs, n_runs // 2, replace=False).tolist())
    for i in range(n_runs):
        path = [0] * int(rng.integers(8, 12))
        if i in detour:
            path += [1] * int(rng.integers(*detour_steps))
        path += [2] * int(rng.integers(8, 12))
        converged = len(path)
        rest = LENGTH - len(path)
        if i in late:
            cut = int(rng.integers(rest // 3, 2 * rest // 3))
            path += [3] * cut + [4] * (rest - cut)
        else:
            path += [3] * rest
        path = np.array(path)
        arrays.append(MEANS[path] + rng.normal(size=(LENGTH, 3)) * 0.5)
        truth.append(path)
        times.append(converged)
    return arrays, truth, np.array(times, dtype=float)


HMM = HMMSettings.defaults(
    max_states=6,
    restarts=8,
    covariance="full",
    max_iter=40,
    tol=0.01,
    covariance_prior=1e-2,
    seed=0,
    criterion="bic",
)
ANALYSIS = AnalysisSettings.defaults()


def main_fit(arrays):
    """The HMM stage on the simulated runs: K by held-out BIC, states numbered by time of use."""
    n = len(arrays)
    seqs = Sequences(list(range(n)), arrays, ["a", "b", "c"], np.zeros((n, 3)), np.ones((n, 3)))
    train, val = split_runs(seqs.runs, HMM.val_fraction, HMM.seed)
    table, kept = selection.select_model(seqs, train, val, HMM)
    k = selection.choose_k(selection.summarise_selection(table), HMM.criterion)
    hmm, perm, paths = selection.number_states(kept[k], arrays)
    return hmm, kept, [perm[p] for p in paths]


def truth_state(main_paths, truth, planted):
    """The main-fit state that holds most of the planted state's checkpoints."""
    a, b = np.concatenate(truth), np.concatenate(main_paths)
    return int(np.bincount(b[a == planted]).argmax())


def test_matching_recovers_a_known_permutation_exactly():
    rng = np.random.default_rng(1)
    main = [rng.integers(0, 5, 40) for _ in range(6)]
    perm = np.array([3, 0, 4, 1, 2])  # main state i is other state perm[i]
    other = [perm[p] for p in main]
    counts = stability.agreement(main, other, 5, 5)
    mapping = stability.match_states(counts)
    assert (mapping[perm] == np.arange(5)).all()
    assert all((a == b).all() for a, b in zip(stability.relabel(other, mapping, 5), main))
    # A sixth, unmatched state keeps a number of its own, beyond the main fit's.
    extra = [np.where(p == 2, 5, perm[p]) for p in main]
    mapping = stability.match_states(stability.agreement(main, extra, 5, 6))
    assert (mapping >= 0).sum() == 5


def test_bootstrap_weights_are_seeded_draws_of_every_run():
    w = stability.bootstrap_weights(10, 200, seed=3)
    assert w.shape == (200, 10) and (w.sum(axis=1) == 10).all()
    assert (w == stability.bootstrap_weights(10, 200, seed=3)).all()
    assert not (w == stability.bootstrap_weights(10, 200, seed=4)).all()
    # Each run is left out of about (1 − 1/n)^n ≈ 35 % of resamples.
    assert 0.25 < (w == 0).mean() < 0.45


@pytest.mark.slow
def test_planted_detour_is_stable_and_a_state_without_effect_is_not_flagged():
    arrays, truth, times = simulate(n_runs=30, detour_runs=12, seed=0)
    model, models, paths = main_fit(arrays)
    assert model.k == 5
    settings = StabilitySettings.defaults(resamples=30, restarts=2, seed=0)
    result = stability.stability(arrays, paths, times, model, models, HMM, ANALYSIS, settings)
    detour, late = truth_state(paths, truth, 1), truth_state(paths, truth, 4)
    states = result.states.set_index("state")
    assert result.summary["k"]["frequency"] >= 0.8
    assert states.loc[detour, "detour"] and states.loc[detour, "detour_frequency"] >= 0.9
    assert states.loc[detour, "detour_stable"]
    assert states.loc[late, "detour_frequency"] <= 0.1
    assert (states["present_frequency"] >= 0.9).all()
    assert result.summary["r2"]["low"] > 0.5 and result.summary["r2"]["stable"]
    assert result.edges["frequency"].between(0, 1).all()
    assert len(result.resamples) == 30 and result.resamples["fitted"].all()


@pytest.mark.slow
def test_an_effect_carried_by_two_runs_comes_out_unstable():
    """Two of 30 runs take a short detour; the main fit (K = 4) flags a detour that rests on them.
    (A detour of two runs with a long delay can hold in ~90 % of resamples: every resample that
    draws either run, 1 − (1 − 1/30)^60 ≈ 87 %, reproduces the visit test; docs/methods.md.)"""
    arrays, truth, times = simulate(n_runs=30, detour_runs=2, seed=3, detour_steps=(6, 9))
    model, models, paths = main_fit(arrays)
    detour = truth_state(paths, truth, 1)
    settings = StabilitySettings.defaults(resamples=30, restarts=2, refit_k=False, seed=0)
    result = stability.stability(arrays, paths, times, model, models, HMM, ANALYSIS, settings)
    states = result.states.set_index("state")
    assert states.loc[detour, "detour"]  # the main fit flags it...
    assert states.loc[detour, "n_runs_visiting"] < 30  # (a state some runs skip)
    assert not states.loc[detour, "detour_stable"]  # ...but it does not hold across the runs
    assert states.loc[detour, "detour_frequency"] < 0.8


def test_cross_validation_splits_a_resample_into_folds_of_its_distinct_runs():
    w = stability.bootstrap_weights(20, 1, seed=5)[0]
    splits = k_stability.held_out_splits(w, HMM.replace(criterion="cv", cv_folds=3), seed=1)
    assert len(splits) == 3
    held = [set(np.flatnonzero(val)) for _, val in splits]
    assert set.union(*held) == set(np.flatnonzero(w)) and sum(map(len, held)) == (w > 0).sum()
    for train, val in splits:
        assert (train + val == w).all() and not (train * val).any()  # a run is never on both sides
    [(train, val)] = k_stability.held_out_splits(w, HMM, seed=1)  # the stage's one split
    assert (train + val == w).all() and 0 < (val > 0).sum() < (w > 0).sum()


@pytest.mark.slow
def test_k_chosen_afresh_by_cross_validation_over_runs():
    """With `hmm.criterion: cv`, each resample's K comes from folds of its distinct runs."""
    arrays, truth, times = simulate(n_runs=30, detour_runs=12, seed=0)
    model, models, paths = main_fit(arrays)
    settings = StabilitySettings.defaults(resamples=3, restarts=1, k_resamples=3, seed=0)
    cv = HMM.replace(criterion="cv", cv_folds=3, max_states=6)
    result = stability.stability(arrays, paths, times, model, models, cv, ANALYSIS, settings)
    assert result.summary["k"]["afresh"] and result.summary["k"]["perturbation"] == "refold"
    assert result.k["k"].tolist() == list(range(1, 7))  # every K, chosen or not
    assert result.k["count"].sum() == 3 and result.k["frequency"].sum() == pytest.approx(1.0)
    assert result.k.loc[result.k["count"] > 0, "k"].between(2, 6).all()
