import numpy as np
import pandas as pd
import pytest

from latentstates import analysis


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
    rng = np.random.default_rng(0)
    counts = pd.DataFrame(
        rng.integers(0, 50, size=(30, 3)).astype(float), columns=["state_0", "state_1", "state_2"]
    )
    y = pd.Series(2.0 + counts @ np.array([3.0, 5.0, -1.0]))
    fit = analysis.regress_convergence(y, counts)
    assert fit["r2"] == pytest.approx(1.0)
    assert fit["f_pvalue"] < 1e-10
    coef = fit["coefficients"].set_index("term")["coef"]
    np.testing.assert_allclose(coef.to_numpy(), [2.0, 3.0, 5.0, -1.0], atol=1e-8)


def test_regression_on_noise_is_not_significant():
    rng = np.random.default_rng(1)
    occ = pd.DataFrame(rng.dirichlet(np.ones(4), size=40), columns=[f"state_{i}" for i in range(4)])
    fit = analysis.regress_convergence(pd.Series(rng.normal(size=40)), occ)
    assert fit["f_pvalue"] > 0.05
    assert fit["df_model"] == 3  # fractions sum to one: rank 4 with the intercept


def test_detour_needs_partial_visits_and_positive_coefficient():
    occ = pd.DataFrame({"state_0": [0.5, 0.5, 0.5], "state_1": [0.5, 0.0, 0.2], "state_2": [0.0, 0.5, 0.3]})
    coefs = pd.DataFrame(
        {"term": ["intercept", "state_0", "state_1", "state_2"], "coef": [1.0, 5.0, 2.0, -1.0]}
    )
    assert analysis.detour_states(occ, coefs) == [1]  # state 0: all runs; state 2: negative


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

    def logpost(xx):
        post, _ = analysis._filtered_posteriors(xx, model)
        return np.log(post[t, j])

    post, _ = analysis._filtered_posteriors(x, model)
    g = analysis.posterior_gradient(x, t, j, post, model)
    num = np.zeros(3)
    for f in range(3):
        e = np.zeros_like(x)
        e[t, f] = 1e-6
        num[f] = (logpost(x + e) - logpost(x - e)) / 2e-6
    np.testing.assert_allclose(g, num, rtol=1e-4, atol=1e-6)


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
    out = analysis.feature_changes(seqs, paths, edges, MODEL, method=method)
    row = out.iloc[0]
    assert [row.feature_1, row.feature_2, row.feature_3] == ["b", "c", "a"]
    assert row.change_1 == pytest.approx(-3.0) and row.summary.startswith("b ↓ 3.00, c ↑ 1.00")
    assert row.n_runs == 5


def test_describe_changes_matches_paper_notation():
    assert analysis.describe_changes(["l2", "l1"], [0.11, -0.61]) == "l2 ↑ 0.11, l1 ↓ 0.61"
