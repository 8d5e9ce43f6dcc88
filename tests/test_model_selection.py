"""Choosing K: degenerate fits, the perturbations under which K's stability is measured, the
interval of a bounded statistic, and recovery of a known K on simulated runs."""

import numpy as np
import pandas as pd
import pytest

from latentstates.settings import HMMSettings, StabilitySettings
from latentstates.states import criteria, folds, k_stability, selection, stability
from latentstates.states.model import GaussianHMM, StateModel, degeneracy


def _chain(k: int, stay: float) -> np.ndarray:
    a = np.eye(k) * stay
    for i in range(k - 1):
        a[i, i + 1] = 1 - stay
    a[-1, -1] = 1.0
    return a * 0.99  # pomegranate's rows: 1 − end


def test_alternating_states_are_degenerate_and_phases_are_not():
    d = 2
    means, covs = np.zeros((3, d)), np.stack([np.eye(d)] * 3)
    phases = GaussianHMM(np.array([1.0, 0, 0]), _chain(3, 0.9), np.full(3, 0.01), means, covs, "full")
    assert degeneracy(phases) == ""
    flip = np.array([[0.05, 0.94, 0.0], [0.9, 0.09, 0.0], [0.0, 0.0, 0.99]])
    alternating = GaussianHMM(np.array([0.5, 0.5, 0]), flip, np.full(3, 0.01), means, covs, "full")
    assert "states 0 and 1 alternate step by step" in degeneracy(alternating)


def _period_two_runs(n_runs=12, length=60, seed=0) -> pd.DataFrame:
    """Runs whose first feature flips sign at every checkpoint (a period-2 pattern with almost no
    noise): two thin states that alternate fit it far better than one Gaussian."""
    rng = np.random.default_rng(seed)
    frames = []
    for r in range(n_runs):
        flip = np.where(np.arange(length) % 2, 1.0, -1.0) + rng.normal(0, 0.01, length)
        frames.append(
            pd.DataFrame(
                {
                    "seed": r,
                    "checkpoint": range(length),
                    "step": range(length),
                    "a": flip,
                    "b": rng.normal(size=length),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


@pytest.mark.parametrize("criterion", ["bic", "cv_1se"])
def test_a_degenerate_optimum_is_recognised_and_never_chosen(criterion):
    s = HMMSettings.defaults(
        features=["a", "b"], max_states=3, restarts=4, max_iter=30, criterion=criterion, cv_folds=3
    )
    fit = selection.fit_task(_period_two_runs(), s)
    restarts = fit.restarts
    two = restarts[(restarts["k"] == 2) & (restarts["error"] == "")]
    # Every two-state fit is the alternating one, and far better by likelihood than one state...
    assert two["degenerate"].str.contains("alternate step by step").all()
    one_ll = restarts.loc[restarts["k"] == 1, "train_ll"].iloc[0]
    assert (two["train_ll"] > one_ll + 1000).all()
    # ...yet it is never kept, and the chosen model is not degenerate.
    assert not (restarts["kept"] & (restarts["degenerate"] != "")).any()
    assert fit.model.k != 2
    assert degeneracy(fit.model.hmm) == ""


def test_perturbations_refold_every_run_or_subsample_without_replacement():
    refold = k_stability.perturbed_weights(20, StabilitySettings.defaults(k_resamples=5))
    assert refold.shape == (5, 20) and (refold == 1).all()
    sub = k_stability.perturbed_weights(
        20, StabilitySettings.defaults(k_perturbation="subsample", subsample_fraction=0.8, k_resamples=50)
    )
    assert set(np.unique(sub)) == {0, 1} and (sub.sum(axis=1) == 16).all()  # 16 distinct runs
    assert len({tuple(row) for row in sub}) > 40  # different subsets
    boot = k_stability.perturbed_weights(
        20, StabilitySettings.defaults(k_perturbation="bootstrap", k_resamples=50)
    )
    assert (boot.sum(axis=1) == 20).all() and (boot > 1).any()


def test_k_distribution_lists_every_k_and_marks_the_main_one_never_chosen():
    table = k_stability.k_distribution([2, 3, 3, 4], max_states=6, k_main=5)
    assert table["k"].tolist() == [1, 2, 3, 4, 5, 6]
    assert table["count"].tolist() == [0, 1, 2, 1, 0, 0]
    assert table.loc[table["main"], "k"].tolist() == [5] and table["frequency"].sum() == pytest.approx(1)


@pytest.mark.slow
def test_the_r2_interval_reaches_zero_where_there_is_no_effect():
    """Convergence times that have nothing to do with the states: R² is near 0, and bootstrap
    resamples (repeated runs) inflate it. The percentile interval then misses 0 in almost every
    simulation; the median-bias-corrected interval covers it in most."""
    from latentstates.settings import AnalysisSettings

    analysis = AnalysisSettings.defaults()
    rng = np.random.default_rng(0)
    percentile_covers, corrected_covers, sims, n = 0, 0, 25, 30
    for _ in range(sims):
        paths = [rng.integers(0, 3, 50) for _ in range(n)]
        times = rng.normal(20, 5, n)
        main = stability.findings(paths, times, 3, analysis).r2
        weights = stability.bootstrap_weights(n, 80, int(rng.integers(1 << 30)))
        r2 = []
        for w in weights:
            drawn = np.repeat(np.arange(n), w)
            r2.append(stability.findings([paths[i] for i in drawn], times[drawn], 3, analysis).r2)
        low, high = stability.interval(r2, 0.9)
        percentile_covers += low <= 0.0
        c_low, c_high = stability.bias_corrected_interval(main, r2, 0.9)
        assert c_low <= main <= c_high
        corrected_covers += c_low <= 0.0
    assert percentile_covers <= 0.1 * sims
    assert corrected_covers >= 0.8 * sims


def test_replicates_add_disjoint_seed_sets_and_validating_twice_changes_nothing(config):
    from latentstates.config import validate_config

    cfg = config()
    cfg["tasks"]["sparse_parity"]["replicates"] = 3
    again = validate_config(cfg)
    tasks = again["tasks"]
    sets = ["sparse_parity", "sparse_parity_set2", "sparse_parity_set3"]
    assert all(t in tasks for t in sets)
    firsts = [tasks[t]["first_seed"] for t in sets]
    seeds = tasks["sparse_parity"]["seeds"]
    assert firsts == [0, seeds, 2 * seeds]  # disjoint, as many seeds each
    assert tasks["sparse_parity_set2"]["replicate_of"] == "sparse_parity"
    assert tasks["sparse_parity_set2"]["replicates"] == 1
    # The LLC and the Hessian are not HMM features of the tiny config: the further sets skip them.
    assert tasks["sparse_parity_set2"]["llc"]["enabled"] is False
    assert tasks["sparse_parity_set2"]["hessian"]["enabled"] is False
    assert validate_config(again) == again


def test_replicates_need_a_task_trained_here(config, tmp_path):
    from latentstates.config import ConfigError, validate_config

    cfg = config()
    cfg["tasks"]["logged"] = {"source": "table", "path": str(tmp_path / "t.csv"), "replicates": 2}
    with pytest.raises(ConfigError, match="tasks.logged.replicates"):
        validate_config(cfg)


def test_the_replication_table_counts_the_sets_that_agree():
    sets = {"a": ["a", "a_set2", "a_set3"], "b": ["b", "b_set2"]}

    def model(k, criterion=None):
        hmm = GaussianHMM(np.full(k, 1 / k), np.eye(k), None, np.zeros((k, 1)), np.ones((k, 1)), "diag")
        return StateModel(hmm, "diag", ["l2"], criterion=criterion)

    models = {"a": model(5, "cv_1se"), "a_set2": model(5), "a_set3": model(4)}
    models |= {"b": model(3, "cv_1se"), "b_set2": model(3)}
    seeds = {"a": [0, 1], "a_set2": [2, 3], "a_set3": [4, 5], "b": [0], "b_set2": [1]}
    table = criteria.replication_table(sets, models, seeds).set_index("task")
    assert table.loc["a", "k"] == "5 / 5 / 4" and table.loc["a", "agreement"] == "2/3"
    assert table.loc["a", "seeds"] == "0–1 / 2–3 / 4–5" and not table.loc["a", "replicates"]
    assert table.loc["b", "agreement"] == "2/2" and table.loc["b", "replicates"]


@pytest.mark.slow
def test_a_config_with_replicates_plans_each_set_up_to_its_hmm_and_the_replication_table(
    tmp_path, tiny_config
):
    import yaml

    from conftest import dry_run

    tiny_config["tasks"]["sparse_parity"]["replicates"] = 2
    path = tmp_path / "replicated.yaml"
    path.write_text(yaml.safe_dump(tiny_config))
    (tmp_path / "wd").mkdir()
    plan = dry_run(tmp_path / "wd", path)
    counts = {}  # the plan's job counts: "rule count" lines
    for line in plan.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    assert "train_sparse_parity_set2_seeds3_4" in counts and "metrics_sparse_parity_set2_seeds5_5" in counts
    assert counts["hmm"] == 3 and counts["replication"] == 1 and counts["analysis"] == 2
    # The further set gets its HMM, not the analyses, figures or stability of a task.
    assert "results/sparse_parity_set2/hmm/model.json" in plan
    assert "results/sparse_parity_set2/analysis" not in plan and "sparse_parity_set2/stability" not in plan


def _planted_metrics(seed: int, n_runs: int = 16) -> pd.DataFrame:
    """Ragged runs of a known left-to-right 3-state Gaussian HMM (tests/test_hmm.py's)."""
    from test_hmm import planted_metrics

    return planted_metrics(n_runs=n_runs, seed=seed)


@pytest.mark.slow
def test_the_default_criterion_recovers_a_planted_k_and_per_run_zscores_inflate_it():
    """The default criterion (cv_1se) on runs of a known 3-state HMM: K = 3 in every simulation
    when the runs are z-scored together (an affine map of HMM data is HMM data). Z-scored each on
    its own (the released procedure), a run's statistics depend on how long it stays in each
    state, so the same state lands elsewhere in different runs, and every criterion adds states
    (docs/methods.md, "Choosing K")."""
    assert HMMSettings.defaults().criterion == "cv_1se"
    pooled, per_run = [], []
    for seed in range(5):
        metrics = _planted_metrics(seed)
        common = dict(features=["a", "b", "c"], max_states=5, restarts=5, max_iter=40, tol=0.01)
        common |= dict(covariance_prior=1e-2, cv_folds=4, cv_repeats=1)
        pooled.append(selection.fit_task(metrics, HMMSettings.defaults(**common, zscore="pooled")).model.k)
        per_run.append(selection.fit_task(metrics, HMMSettings.defaults(**common, zscore="run")).model.k)
    assert pooled == [3] * 5
    assert sum(k > 3 for k in per_run) >= 4


def test_repeated_folds_average_each_run_and_each_repeat_chooses_alone():
    metrics = _planted_metrics(0, n_runs=12)
    s = HMMSettings.defaults(
        features=["a", "b", "c"],
        max_states=3,
        restarts=2,
        cv_restarts=2,
        cv_folds=3,
        cv_repeats=3,
        max_iter=20,
    )
    from latentstates.states.sequences import zscore_runs

    seqs = zscore_runs(metrics, ["a", "b", "c"])
    scores = folds.fold_scores(seqs, s)
    # Every run held out once per repeat and K, in folds that differ between repeats.
    assert (scores.groupby(["repeat", "k"])["seed"].nunique() == 12).all() and len(scores) == 3 * 3 * 12
    assignment = scores[scores["k"] == 2].pivot(index="seed", columns="repeat", values="fold")
    assert not (assignment[0] == assignment[1]).all()
    cv = criteria.cv_summary(scores, 3, "full")
    mean = scores.groupby(["k", "seed"])["val_ll"].mean().groupby("k").sum()
    np.testing.assert_allclose(cv.set_index("k")["cv_ll"], mean, rtol=1e-12)
    choices = folds.repeat_choices(scores, 3, "full", "cv_1se")
    assert len(choices) == 3 and all(1 <= k <= 3 for k in choices)
    fit = selection.fit_task(metrics, s.replace(criterion="cv_1se"))
    assert fit.model.k_repeats == choices


def _simulated_chain_and_truth():
    """A simulated 5-state chain (4 phases and a detour, seed 5000) z-scored together, its true
    paths, and EM's start at the true states (each state's moments, the transitions counted on
    the true paths)."""
    from latentstates.states.baum_welch import Start
    from latentstates.states.sequences import zscore_runs
    from latentstates.states.simulate import Scenario, features, simulate

    scenario = Scenario(k=5, noise=0.1)
    table, paths = simulate(scenario, 5000)
    arrays = zscore_runs(table, features(scenario), pooled=True).arrays
    x, p = np.concatenate(arrays), np.concatenate(paths)
    counts = np.zeros((5, 5))
    for path in paths:
        np.add.at(counts, (path[:-1], path[1:]), 1)
    ends = np.bincount([path[-1] for path in paths], minlength=5)
    total = counts.sum(axis=1) + ends
    truth = Start(
        np.bincount([path[0] for path in paths], minlength=5) / len(paths),
        counts / total[:, None],
        ends / total,
        np.stack([x[p == j].mean(axis=0) for j in range(5)]),
        np.stack([np.cov(x[p == j].T, bias=True) + 1e-3 * np.eye(x.shape[1]) for j in range(5)]),
    )
    settings = HMMSettings.defaults(features=features(scenario), max_iter=32, tol=0.1)
    return arrays, paths, truth, settings


def test_a_split_of_the_best_smaller_fit_reaches_the_optimum_that_restarts_miss():
    """A simulated 5-state chain (4 phases and a detour) z-scored together: every one of 10
    seeded restarts merges two states (≤ 0.05 nats/step), while the best split of the best
    4-state fit reaches the optimum EM finds from the true states themselves (0.26)."""
    from latentstates.states.fit import Spec, fit_many, restart_init, restart_seed, split_specs
    from latentstates.states.starts import split_starts

    arrays, _, truth, s = _simulated_chain_and_truth()
    x = np.concatenate(arrays)
    steps = len(x)

    def best(k, specs):
        fits = [f for f, _ in fit_many(arrays, k, s, specs) if f is not None]
        lls = [f.log_likelihood(arrays) / steps for f in fits]
        return fits[int(np.argmax(lls))], max(lls)

    def seeded(k):
        return [Spec(None, restart_seed(0, k, r), restart_init(r)) for r in range(10)]

    four, _ = best(4, seeded(4))
    _, restarts = best(5, seeded(5))
    _, grown = best(5, split_specs(four, None))
    _, optimum = best(5, [Spec(None, 0, "truth", truth)])  # EM from the true states
    assert restarts < optimum - 0.15
    assert grown > optimum - 0.01
    # One start per state, each a valid HMM one state larger: probabilities sum as they did.
    starts = split_starts(four)
    assert len(starts) == 4
    for start in starts:
        assert start.means.shape == (5, x.shape[1]) and start.covs.shape == (5, x.shape[1], x.shape[1])
        np.testing.assert_allclose(start.starts.sum(), 1.0)
        np.testing.assert_allclose(start.edges.sum(axis=1) + start.ends, 1.0)


def test_a_merge_and_split_move_leaves_the_optimum_em_is_stuck_beside():
    """A simulated 5-state chain z-scored together, EM started with two true phases merged into
    one state and another phase split in two stays stuck far below the optimum EM reaches from
    the true states (0.07 against 0.26 nats/step); one round of merge-and-split moves from the
    stuck fit reaches that optimum. Each move is a valid HMM of the same size, and merging two
    states keeps every probability distribution summing to one."""
    from latentstates.states.fit import Spec, fit_many, fit_restarts, restart_seed
    from latentstates.states.starts import merge_split_starts, merge_states, split_starts

    arrays, paths, truth, s = _simulated_chain_and_truth()
    x, p = np.concatenate(arrays), np.concatenate(paths)
    steps = len(x)
    [(optimum, _)] = fit_many(arrays, 5, s, [Spec(None, 0, "truth", truth)])
    occupancy = np.bincount(p, minlength=5)
    merged = merge_states(optimum, 3, 4, occupancy)
    assert merged.k == 4
    np.testing.assert_allclose(merged.starts.sum(), 1.0)
    np.testing.assert_allclose(merged.transitions.sum(axis=1) + merged.ends, 1.0)
    [(stuck, _)] = fit_many(arrays, 5, s, [Spec(None, 0, "stuck", split_starts(merged)[0])])
    best = optimum.log_likelihood(arrays) / steps
    assert stuck.log_likelihood(arrays) / steps < best - 0.15

    visits = np.bincount(np.concatenate(stuck.viterbi(arrays)), minlength=5)
    moves = merge_split_starts(stuck, visits)
    assert len(moves) == 10 * 4  # every pair merged, every state of the result split
    for start in moves:
        assert start.means.shape == (5, x.shape[1])
        np.testing.assert_allclose(start.edges.sum(axis=1) + start.ends, 1.0)
    fits = fit_many(arrays, 5, s, [Spec(None, 0, "move", start) for start in moves])
    moved = [f.log_likelihood(arrays) / steps for f, _ in fits]
    assert max(moved) > best - 0.01

    # In the restarts: the moves are fitted after the restarts and splits, and never lose the best.
    seeds = [restart_seed(0, 5, r) for r in range(2)]
    plain, without = fit_restarts(arrays, [], 5, s.replace(merge_splits=0), seeds, by="train")
    more, with_moves = fit_restarts(arrays, [], 5, s.replace(merge_splits=2), seeds, by="train")
    assert [r.init for r in plain] == [r.init for r in more[: len(plain)]]
    assert any(r.init.startswith("merge-split") for r in more)
    assert with_moves.train_ll >= without.train_ll


@pytest.mark.slow
def test_a_pinned_k_without_a_usable_fit_says_why():
    """K pinned where every restart is degenerate (simulated runs with planted excursions, z-scored
    run by run, 4 restarts without splits: each fit has two states alternating step by step): a
    message naming the setting and the reasons, not a KeyError."""
    from latentstates.states.simulate import Scenario, features, simulate

    s = Scenario(k=5, runs=24, length=100, outliers=2, foreign_shift=5.0)
    table, _ = simulate(s, 1)
    settings = HMMSettings.defaults(
        features=features(s), n_states=5, max_states=5, restarts=4, max_iter=32, merge_splits=0, splits=False
    )
    with pytest.raises(
        ValueError, match=r"hmm.n_states=5: none of its 4 fits is usable \(states \d and \d alternate"
    ):
        selection.fit_task(table, settings)
