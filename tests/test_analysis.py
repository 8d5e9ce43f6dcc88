import numpy as np
import pandas as pd
import pytest

from latentstates.states import analysis
from latentstates.states.model import GaussianHMM


def _states(paths: dict[int, list[int]]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"seed": s, "checkpoint": t, "state": x} for s, p in paths.items() for t, x in enumerate(p)]
    )


def test_transitions_runs_and_occupancy_by_hand():
    paths = analysis.paths_by_run(_states({0: [0, 0, 1, 1, 2], 1: [0, 2, 2, 2, 2], 2: [0, 1, 0, 1, 2]}))
    trans = np.full((3, 3), 0.1)
    edges = analysis.transition_edges(paths, trans).set_index(["source", "target"])
    assert edges.loc[(0, 1), "n_runs"] == 2 and edges.loc[(0, 1), "n_transitions"] == 3
    assert edges.loc[(1, 2), "n_runs"] == 2
    assert edges.loc[(0, 2), "n_runs"] == 1
    assert edges.loc[(1, 0), "n_runs"] == 1
    assert set(edges.index) == {(0, 1), (0, 2), (1, 2), (1, 0)}  # no self-loops
    assert (edges["n_total_runs"] == 3).all()
    occ = analysis.occupancy(paths, 4, fraction=False)
    assert occ.loc[0].tolist() == [2, 2, 1, 0]
    assert occ.loc[1].tolist() == [1, 0, 4, 0]
    frac = analysis.occupancy(paths, 4)
    np.testing.assert_allclose(frac.sum(axis=1), 1.0)


def test_convergence_time_and_never_converged_rule():
    m = pd.DataFrame(
        {
            "seed": [0] * 4 + [1] * 4,
            "checkpoint": list(range(4)) * 2,
            "step": [0, 10, 20, 30] * 2,
            "eval_acc": [0.1, 0.5, 0.95, 0.99, 0.1, 0.2, 0.3, 0.4],
        }
    )
    conv = analysis.convergence_times(m, 0.9)
    assert conv.loc[0].tolist() == [2, 20, True]
    assert conv.loc[1, "convergence_checkpoint"] == 4 and not conv.loc[1, "converged"]


def test_regression_recovers_a_known_linear_function():
    """Counts summing to the run length: no intercept, each coefficient a time per checkpoint."""
    rng = np.random.default_rng(0)
    first = rng.integers(0, 50, size=(30, 2))
    counts = pd.DataFrame(
        np.column_stack([first, 100 - first.sum(axis=1)]).astype(float),
        columns=["state_0", "state_1", "state_2"],
    )
    y = pd.Series(counts @ np.array([3.0, 5.0, -1.0]))
    fit = analysis.regress_convergence(y, counts)
    assert not fit["intercept"]
    assert fit["r2"] == pytest.approx(1.0)
    assert fit["f_pvalue"] < 1e-10
    coef = fit["coefficients"].set_index("term")["coef"]
    np.testing.assert_allclose(coef.to_numpy(), [3.0, 5.0, -1.0], atol=1e-8)


def test_regression_with_free_counts_keeps_an_intercept():
    rng = np.random.default_rng(0)
    counts = pd.DataFrame(
        rng.integers(0, 50, size=(30, 3)).astype(float), columns=["state_0", "state_1", "state_2"]
    )
    y = pd.Series(2.0 + counts @ np.array([3.0, 5.0, -1.0]))
    fit = analysis.regress_convergence(y, counts)
    coef = fit["coefficients"].set_index("term")["coef"]
    np.testing.assert_allclose(coef.to_numpy(), [2.0, 3.0, 5.0, -1.0], atol=1e-8)


def _fractions(n: int, k: int, rng) -> pd.DataFrame:
    return pd.DataFrame(rng.dirichlet(np.ones(k), size=n), columns=[f"state_{i}" for i in range(k)])


def test_regression_coefficients_are_identifiable_and_match_the_intercept_fit():
    """Fractions: no intercept; R² and F equal those of OLS with an intercept (same column space)."""
    import statsmodels.api as sm

    rng = np.random.default_rng(2)
    occ = _fractions(40, 4, rng)
    beta = np.array([100.0, 140.0, 90.0, 120.0])
    y = pd.Series(occ.to_numpy() @ beta + rng.normal(0, 3, 40))
    fit = analysis.regress_convergence(y, occ)
    ref = sm.OLS(y.to_numpy(), sm.add_constant(occ.to_numpy()[:, 1:])).fit()  # reference coding
    assert fit["r2"] == pytest.approx(ref.rsquared)
    assert fit["f_pvalue"] == pytest.approx(ref.f_pvalue)
    assert fit["df_model"] == 3
    table = fit["coefficients"].set_index("term")
    # Each coefficient: the time of a run that stays in the state; the truth is in its interval.
    assert ((table["ci_low"] < beta) & (beta < table["ci_high"])).all()
    # Reference coding recovers the same contrasts: β_k − β_0.
    np.testing.assert_allclose(
        table["coef"].to_numpy()[1:] - table["coef"].iloc[0], ref.params[1:], rtol=1e-8
    )
    np.testing.assert_allclose(table["effect"].sum(), 0.0, atol=1e-8)  # sum-to-zero contrasts


def test_regression_on_noise_is_not_significant():
    rng = np.random.default_rng(1)
    occ = _fractions(40, 4, rng)
    fit = analysis.regress_convergence(pd.Series(rng.normal(size=40)), occ)
    assert fit["f_pvalue"] > 0.05
    assert fit["df_model"] == 3  # fractions sum to one: rank 4 without an intercept


def _simulate_runs(rng, n_runs: int = 40, detour_delay: float = 0.0):
    """Occupancy of 5 states: 0 and 4 visited by every run, 1, 2, 3 each by about half.

    Convergence time is 100 checkpoints ± 10 %, and `detour_delay` longer for runs visiting 2.
    """
    visits = rng.random((n_runs, 5)) < 0.5
    visits[:, [0, 4]] = True
    visits[0, 1:4], visits[1, 1:4] = True, False  # every optional state visited by some, not all
    occ = np.where(visits, rng.dirichlet(np.ones(5), size=n_runs) + 0.05, 0.0)
    occ = pd.DataFrame(occ / occ.sum(axis=1, keepdims=True), columns=[f"state_{i}" for i in range(5)])
    y = 100 * (1 + detour_delay * visits[:, 2]) * (1 + 0.1 * rng.normal(size=n_runs))
    return pd.Series(y), occ


def _flagged(y: pd.Series, occ: pd.DataFrame) -> list[int]:
    return analysis.detour_states(analysis.visit_test(y, occ), alpha=0.05)


def test_no_detours_flagged_when_convergence_does_not_depend_on_states():
    rng = np.random.default_rng(0)
    flagged = [_flagged(*_simulate_runs(rng)) for _ in range(200)]
    assert sum(bool(f) for f in flagged) <= 0.10 * 200


def test_planted_detour_is_found_and_nothing_else():
    rng = np.random.default_rng(1)
    flagged = [_flagged(*_simulate_runs(rng, detour_delay=0.3)) for _ in range(200)]
    assert sum(2 in f for f in flagged) >= 0.9 * 200
    for state in (0, 1, 3, 4):
        assert sum(state in f for f in flagged) <= 0.10 * 200


@pytest.mark.filterwarnings("ignore:The design matrix is rank-deficient")
def test_the_old_rule_flags_states_without_effect():
    """The minimum-norm coefficient with an intercept is positive for states with no effect."""
    import statsmodels.api as sm

    rng = np.random.default_rng(3)
    y, occ = _simulate_runs(rng)
    res = sm.OLS(y.to_numpy(), sm.add_constant(occ.to_numpy())).fit()  # rank-deficient, pinv
    assert (res.params[1:] > 0).all()  # every state "slows convergence": meaningless
    assert _flagged(y, occ) == []


def test_visit_test_matches_the_released_formula_and_scipy():
    from scipy import stats

    rng = np.random.default_rng(4)
    y, occ = _simulate_runs(rng, detour_delay=0.3)
    table = analysis.visit_test(y, occ).set_index("term")
    visits = (occ["state_2"] > 0).astype(float)
    r, p = stats.pearsonr(visits, y)
    assert table.loc["state_2", "visit_r"] == pytest.approx(r)
    assert table.loc["state_2", "visit_p_value"] == pytest.approx(p)
    n = len(y)
    assert table.loc["state_2", "visit_t"] == pytest.approx(r * np.sqrt(n - 2) / np.sqrt(1 - r**2))
    assert np.isnan(table.loc["state_0", "visit_r"])  # every run visits it: untestable
    assert table.loc["state_0", "n_runs_visiting"] == n


def test_holm_adjustment():
    np.testing.assert_allclose(
        analysis.holm(np.array([0.01, 0.04, np.nan, 0.03])), [0.03, 0.06, np.nan, 0.06]
    )


MODEL = {
    "k": 2,
    "covariance": "diag",
    "features": ["a", "b", "c"],
    "starts": [1.0, 0.0],
    "transitions": [[0.9, 0.1], [0.0, 1.0]],
    "means": [[0.0, 0.0, 0.0], [0.5, -3.0, 1.0]],
    "covs": [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]],
}


def test_posterior_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    model = {**MODEL, "covariance": "full", "covs": [np.eye(3).tolist(), (np.eye(3) * 0.5 + 0.1).tolist()]}
    x = rng.normal(size=(6, 3))
    t, j = 3, 1

    hmm = GaussianHMM.from_json(model)

    def logpost(xx):
        post = hmm.filter(xx)
        return np.log(post[t, j])

    post = hmm.filter(x)
    g = hmm.posterior_gradient(x, t, j, post)
    num = np.zeros(3)
    for f in range(3):
        e = np.zeros_like(x)
        e[t, f] = 1e-6
        num[f] = (logpost(x + e) - logpost(x - e)) / 2e-6
    np.testing.assert_allclose(g, num, rtol=1e-4, atol=1e-6)


def test_edge_gradient_is_taken_at_the_last_step_in_the_source_state():
    """As the released get_features_for_transition: at t with path[t] = i, path[t + 1] = j."""
    rng = np.random.default_rng(5)
    model = {**MODEL, "covariance": "full", "covs": [np.eye(3).tolist(), (np.eye(3) * 0.5 + 0.1).tolist()]}
    x = rng.normal(size=(8, 3)) * 0.5
    path = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    t, j = 3, 1  # last step in state 0

    hmm = GaussianHMM.from_json(model)

    def logpost(xx):
        return np.log(hmm.filter(xx)[t, j])

    num = np.zeros(3)
    for f in range(3):
        e = np.zeros_like(x)
        e[t, f] = 1e-6
        num[f] = (logpost(x + e) - logpost(x - e)) / 2e-6
    edges = analysis.transition_edges({0: path}, np.asarray(model["transitions"]))
    out = analysis.feature_changes(
        {0: x}, {0: path}, edges, hmm, model["features"], method="gradient", top=3
    ).iloc[0]
    scores = {out[f"feature_{r}"]: out[f"score_{r}"] for r in (1, 2, 3)}
    np.testing.assert_allclose([scores[f] for f in "abc"], np.abs(num), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", ["gradient", "means"])
def test_feature_ranking_on_known_means(method):
    rng = np.random.default_rng(0)
    means = np.asarray(MODEL["means"])
    seqs, paths = {}, {}
    for s in range(5):
        switch = int(rng.integers(10, 20))
        p = np.array([0] * switch + [1] * 15)
        seqs[s] = means[p] + rng.normal(size=(len(p), 3)) * 0.3
        paths[s] = p
    edges = analysis.transition_edges(paths, np.asarray(MODEL["transitions"]))
    out = analysis.feature_changes(
        seqs, paths, edges, GaussianHMM.from_json(MODEL), MODEL["features"], method=method, top=3
    )
    row = out.iloc[0]
    assert [row.feature_1, row.feature_2, row.feature_3] == ["b", "c", "a"]
    assert row.change_1 == pytest.approx(-3.0) and row.summary.startswith("b ↓ 3.00, c ↑ 1.00")
    assert row.n_runs == 5


def test_describe_changes_matches_paper_notation():
    assert analysis.describe_changes(["l2", "l1"], [0.11, -0.61]) == "l2 ↑ 0.11, l1 ↓ 0.61"
