"""Recipe comparisons through one shared HMM, against known answers: exact permutation p-values,
regressions with a known explained share, and runs simulated from two known HMMs."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest

from latentstates.config import ConfigError, validate_config
from latentstates.settings import ComparisonSettings, HMMSettings
from latentstates.states.comparison import (
    compare_recipes,
    convergence_regression,
    number_runs,
    permutation_pvalues,
    pool_runs,
)
from latentstates.states.selection import fit_shared
from latentstates.states.stability import agreement, match_states

# Four states: 0 start, 1 middle, 2 detour (between the middle and convergence), 3 converged.
# Every feature changes along the path all runs take (a feature that moved only in the detour
# would be pure noise in a run without it, and each run's z-scoring would blow that noise up).
MEANS = np.array([[0.0, 0.0, 0.0], [3.0, 0.0, 2.0], [1.5, 3.0, 4.0], [3.0, 3.0, 0.0]])
LENGTH = 80
DETOUR = 2


def simulate(p_detour: float, n_runs: int, rng: np.random.Generator) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """Runs of the chain 0 → 1 → (2 with probability p_detour) → 3 (two recipes differ only in
    p_detour), as a metrics table (eval accuracy 1 once converged), and their true state paths.

    Each state lasts a uniform number of checkpoints, the detour delays convergence, and the run
    ends after LENGTH checkpoints: a detour's time is taken from the converged state.
    """
    rows, paths = [], []
    for seed in range(n_runs):
        path = [0] * int(rng.integers(12, 21)) + [1] * int(rng.integers(12, 21))
        if rng.random() < p_detour:
            path += [DETOUR] * int(rng.integers(10, 17))
        path = np.array(path + [3] * (LENGTH - len(path)))
        x = MEANS[path] + rng.normal(scale=0.5, size=(LENGTH, 3))
        rows.append(
            pd.DataFrame(
                {
                    "seed": seed,
                    "checkpoint": np.arange(LENGTH),
                    "step": 10 * np.arange(LENGTH),
                    "diverged": False,
                    "a": x[:, 0],
                    "b": x[:, 1],
                    "c": x[:, 2],
                    "eval_acc": np.where(path == 3, 1.0, 0.5),
                }
            )
        )
        paths.append(path)
    return pd.concat(rows, ignore_index=True), paths


# No merge-and-split moves: what is tested is the comparison, on fits that five restarts of a
# well-separated chain already get right (the moves took 60 % of each simulation's time).
HMM = HMMSettings.defaults(
    features=["a", "b", "c"],
    max_states=4,
    n_states=4,
    restarts=5,
    covariance="diag",
    max_iter=30,
    tol=0.01,
    merge_splits=0,
)
SETTINGS = ComparisonSettings.defaults(tasks=["base", "other"], permutations=999)


def run_comparison(p_base: float, p_other: float, n_runs: int, seed: int):
    """Simulate both recipes, fit the shared HMM, compare; the fitted states mapped to the true
    ones by the checkpoints they share."""
    rng = np.random.default_rng(seed)
    base, base_paths = simulate(p_base, n_runs, rng)
    other, other_paths = simulate(p_other, n_runs, rng)
    metrics = {"base": base, "other": other}
    fit, runs = fit_shared(metrics, HMM)
    pooled = number_runs(metrics, runs)
    out = compare_recipes(pooled, fit.states, fit.model, runs, {"base": 0.9, "other": 0.9}, SETTINGS)
    fitted = [g.sort_values("checkpoint")["state"].to_numpy() for _, g in fit.states.groupby("seed")]
    to_true = match_states(agreement(base_paths + other_paths, fitted, 4, fit.model.k))
    return out, to_true


def flagged(out, to_true) -> tuple[set[int], set[tuple[int, int]]]:
    """True states and edges (in true numbers) the comparison flags as recipe-specific; the
    converged state only by its visit rate (its occupancy does differ)."""
    hit = out.tests[out.tests["recipe_specific"] & (out.tests["test"] != "convergence")]
    true_state = hit["state"].fillna(-1).astype(int).map(lambda s: to_true[s] if s >= 0 else -1)
    hit = hit[~((hit["test"] == "occupancy") & (true_state == CONVERGED))]
    states = {int(to_true[s]) for s in hit["state"].dropna()}
    edges = {
        (int(to_true[a]), int(to_true[b])) for a, b in zip(hit["source"].dropna(), hit["target"].dropna())
    }
    return states, edges


# What a change of the detour's probability changes: the edges into and out of it, the bypass,
# and the converged state's occupancy (the detour's time is taken from it). States 0 and 1, the
# edge 0 → 1 and the visit rate of state 3 (every run converges) are the same in both recipes.
DETOUR_EDGES = {(1, 2), (2, 3), (1, 3)}
CONVERGED = 3


# 60 simulations per test, 30 runs per recipe (~95 s each on an AVX2 machine). Measured there: the
# detour found in 60/60, another state or edge flagged in 4/60 (a state next to the detour whose
# decoded occupancy shifts by ~0.02 where runs leave it for the detour); same HMM: 2/60 flagged.
SIMULATIONS, RUNS = 60, 30


@pytest.mark.slow
def test_a_recipe_that_visits_a_detour_more_is_found_and_nothing_else():
    found = other_flags = 0
    for i in range(SIMULATIONS):
        out, to_true = run_comparison(0.2, 0.8, RUNS, seed=i)
        states, edges = flagged(out, to_true)
        found += DETOUR in states
        other_flags += bool(states - {DETOUR} or edges - DETOUR_EDGES)
    assert found / SIMULATIONS >= 0.9
    assert other_flags / SIMULATIONS <= 0.1


@pytest.mark.slow
def test_two_recipes_from_the_same_hmm_are_rarely_told_apart():
    flags = 0
    for i in range(SIMULATIONS):
        out, to_true = run_comparison(0.5, 0.5, RUNS, seed=1000 + i)
        states, edges = flagged(out, to_true)
        flags += bool(states or edges)
    assert flags / SIMULATIONS <= 0.1


def test_permutation_pvalues_match_exact_enumeration():
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(size=10), rng.normal(size=10) + np.repeat([0.0, 1.0], 5)])
    labels = np.repeat(["a", "b"], 5)
    _, p = permutation_pvalues(x, labels, 20_000, seed=1)

    def diff(idx):
        m = np.zeros(10, bool)
        m[list(idx)] = True
        return np.abs(x[m].mean(axis=0) - x[~m].mean(axis=0))

    observed = diff(range(5))
    splits = [diff(c) for c in itertools.combinations(range(10), 5)]
    exact = np.mean([d >= observed - 1e-12 for d in splits], axis=0)
    assert p == pytest.approx(exact, abs=0.01)


def test_a_constant_column_is_not_tested_and_identical_groups_are_not_different():
    x = np.column_stack([np.ones(8), np.tile([0.0, 1.0], 4)])
    labels = np.repeat([0, 1], 4)
    stat, p = permutation_pvalues(x, labels, 500, seed=0)
    assert np.isnan(p[0]) and stat[1] == 0.0 and p[1] == 1.0


def test_permutations_are_seeded():
    rng = np.random.default_rng(3)
    x, labels = rng.normal(size=(12, 3)), np.repeat([0, 1, 2], 4)
    assert np.array_equal(
        permutation_pvalues(x, labels, 300, 5)[1], permutation_pvalues(x, labels, 300, 5)[1]
    )
    assert not np.array_equal(
        permutation_pvalues(x, labels, 300, 5)[1], permutation_pvalues(x, labels, 300, 6)[1]
    )


def _occupancy(n: int, rng, shift: float) -> pd.DataFrame:
    first = np.clip(rng.uniform(0.2, 0.6, n) + shift, 0, 1)
    return pd.DataFrame({"state_0": first, "state_1": 1 - first})


def test_a_difference_due_to_occupancy_is_explained_and_one_beside_it_is_not():
    rng = np.random.default_rng(0)
    n = 200
    recipe = pd.Series(np.repeat(["a", "b"], n))
    # Recipe b spends more time in state 0, and state 0 costs 100 checkpoints per unit occupancy.
    occ = pd.concat([_occupancy(n, rng, 0.0), _occupancy(n, rng, 0.3)], ignore_index=True)
    times = pd.Series(20 + 100 * occ["state_0"] + rng.normal(scale=1.0, size=2 * n))
    row = convergence_regression(times, occ, recipe, ["a", "b"]).iloc[0]
    assert row["difference"] == pytest.approx(30, abs=2) and row["explained"] == pytest.approx(1, abs=0.05)
    # Same occupancy in both recipes, b slower by 15 checkpoints in every state.
    occ = pd.concat([_occupancy(n, rng, 0.0), _occupancy(n, rng, 0.0)], ignore_index=True)
    times = pd.Series(20 + 100 * occ["state_0"] + 15 * (recipe == "b") + rng.normal(scale=1.0, size=2 * n))
    row = convergence_regression(times, occ, recipe, ["a", "b"]).iloc[0]
    assert row["adjusted_difference"] == pytest.approx(15, abs=0.5)
    assert row["adjusted_ci_low"] < 15 < row["adjusted_ci_high"] and abs(row["explained"]) < 0.1


def test_runs_of_each_recipe_get_their_own_numbers():
    a = pd.DataFrame({"seed": [0, 0, 1, 1], "checkpoint": [0, 1, 0, 1], "x": [1.0, 2, 3, 4]})
    b = pd.DataFrame({"seed": [0, 0], "checkpoint": [0, 1], "x": [5.0, 6]})
    pooled, runs = pool_runs({"a": a, "b": b})
    assert runs.to_dict("records") == [
        {"run": 0, "recipe": "a", "seed": 0},
        {"run": 1, "recipe": "a", "seed": 1},
        {"run": 2, "recipe": "b", "seed": 0},
    ]
    assert pooled.groupby("seed")["x"].sum().tolist() == [3.0, 7.0, 11.0]
    assert number_runs({"a": a, "b": b}, runs).equals(pooled)


def test_a_recipe_without_the_features_is_named():
    a = pd.DataFrame({"seed": [0], "checkpoint": [0], "a": [1.0], "b": [1.0], "c": [1.0]})
    with pytest.raises(ValueError, match="'other': \\['c'\\]"):
        fit_shared({"base": a, "other": a.drop(columns="c")}, HMM)


@pytest.mark.parametrize(
    "comparison, key",
    [
        ({"tasks": ["t", "nope"]}, "comparisons.c.tasks"),
        ({"tasks": ["t"]}, "comparisons.c.tasks"),
        ({"tasks": ["t", "u"], "hmm": {"n_states": 9}}, "comparisons.c.hmm.n_states"),
        ({"tasks": ["t", "u"], "hmm": {"features": ["l1", "bogus"]}}, "comparisons.c.hmm.features"),
        ({"tasks": ["t", "u"], "permutations": 10}, "comparisons.c.permutations"),
    ],
)
def test_a_bad_comparison_names_its_key(tiny_task, comparison, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_config({"tasks": {"t": tiny_task, "u": tiny_task}, "comparisons": {"c": comparison}})


def test_a_comparison_gets_the_global_hmm_with_its_overrides(tiny_task):
    config = validate_config(
        {
            "hmm": {"restarts": 3},
            "tasks": {"t": {**tiny_task, "hmm": {"restarts": 7}}, "u": tiny_task},
            "comparisons": {"c": {"tasks": ["t", "u"], "hmm": {"n_states": 2}}},
        }
    )
    hmm = HMMSettings.of_comparison(config, "c")
    assert (hmm.restarts, hmm.n_states) == (3, 2)  # the task's own override does not apply
    assert ComparisonSettings.of_comparison(config, "c") == ComparisonSettings.defaults(tasks=["t", "u"])
    assert json.dumps(config["comparisons"]["c"], sort_keys=True)  # plain data (a rule's param)
