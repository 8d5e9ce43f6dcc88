from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import multivariate_normal
from sklearn.metrics import adjusted_rand_score

from latentstates.settings import HMMSettings
from latentstates.states import baum_welch, pomegranate_reference
from latentstates.states import fit as fitting
from latentstates.states import selection as hmm
from latentstates.states.fit import covariance_floor, fit_hmm
from latentstates.states.sequences import Sequences, split_runs, zscore_runs

MEANS = np.array([[0.0, 0.0, 0.0], [3.0, 3.0, 0.0], [0.0, -3.0, 3.0]])
TRANS = np.array([[0.95, 0.05, 0.0], [0.0, 0.95, 0.05], [0.0, 0.0, 1.0]])


def settings(**overrides) -> HMMSettings:
    """The schema's HMM settings with `overrides`."""
    return HMMSettings.defaults(**overrides)


def planted(n_runs=20, seed=0):
    """Sequences of different lengths from a known left-to-right 3-state Gaussian HMM."""
    rng = np.random.default_rng(seed)
    arrays, truth = [], []
    for _ in range(n_runs):
        length = int(rng.choice([60, 90, 120]))  # ragged, in few groups (pomegranate loops per length)
        s, xs, ss = 0, [], []
        for _ in range(length):
            ss.append(s)
            xs.append(MEANS[s] + rng.normal(size=3) * 0.5)
            s = rng.choice(3, p=TRANS[s])
        arrays.append(np.array(xs))
        truth.append(np.array(ss))
    return arrays, truth


def test_recovers_planted_states_and_bic_picks_three():
    arrays, truth = planted()
    assert len({len(a) for a in arrays}) == 3  # ragged lengths
    seqs = Sequences(
        list(range(len(arrays))),
        arrays,
        ["a", "b", "c"],
        np.zeros((len(arrays), 3)),
        np.ones((len(arrays), 3)),
    )
    train, val = split_runs(seqs.runs, 0.2, seed=0)
    table, kept = hmm.select_model(
        seqs,
        train,
        val,
        settings(
            max_states=5,
            restarts=3,
            covariance="full",
            max_iter=50,
            tol=0.01,
            var_floor=1e-5,
            seed=0,
            covariance_prior=1e-2,
        ),
    )
    summary = hmm.summarise_selection(table)
    assert hmm.choose_k(summary, "bic") == 3  # held-out BIC
    assert hmm.choose_k(summary, "bic_train") == 3
    paths = kept[3].viterbi(arrays)
    assert [len(p) for p in paths] == [len(a) for a in arrays]
    assert adjusted_rand_score(np.concatenate(truth), np.concatenate(paths)) > 0.9


def test_fit_is_deterministic_given_seed():
    arrays, _ = planted(6, seed=1)
    a = fit_hmm(arrays, 3, settings(covariance="diag", max_iter=20, tol=0.01, var_floor=1e-3), seed=5)
    b = fit_hmm(arrays, 3, settings(covariance="diag", max_iter=20, tol=0.01, var_floor=1e-3), seed=5)
    np.testing.assert_array_equal(a.means, b.means)
    np.testing.assert_array_equal(a.transitions, b.transitions)


def test_single_state_is_a_gaussian():
    arrays, _ = planted(4, seed=2)
    fit = fit_hmm(arrays, 1, settings(covariance="diag", max_iter=10, tol=0.1, var_floor=1e-3), seed=0)
    pooled = np.concatenate(arrays)
    np.testing.assert_allclose(fit.means[0], pooled.mean(axis=0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fit.covs[0], pooled.var(axis=0), rtol=1e-3)
    assert np.isfinite(fit.log_likelihood(arrays))
    assert all((p == 0).all() for p in fit.viterbi(arrays))


@pytest.mark.parametrize("cov", ["full", "diag"])
@pytest.mark.parametrize("k", [1, 2, 5])
def test_parameter_count_matches_hmmlearn(k, cov):
    hmmlearn = pytest.importorskip("hmmlearn.hmm")
    ref = hmmlearn.GaussianHMM(k, covariance_type=cov)
    ref.n_features = 3
    assert hmm.n_parameters(k, 3, cov) == sum(ref._get_n_fit_scalars_per_param().values())


def test_constant_feature_in_a_state_gives_finite_likelihood():
    # A feature frozen at one value in the second half: without a variance floor the state's
    # variance collapses and the likelihood becomes NaN/inf.
    rng = np.random.default_rng(0)
    arrays = []
    for _ in range(6):
        x = rng.normal(size=(80, 2))
        x[40:, 1] = 1.5
        arrays.append(x)
    floor = covariance_floor(arrays, 1e-5)  # relative to the pooled data's mean variance
    pooled = np.concatenate(arrays)
    assert floor == pytest.approx(1e-5 * pooled.var(axis=0).mean())
    for cov in ("full", "diag"):
        fit = fit_hmm(arrays, 2, settings(covariance=cov, max_iter=30, tol=0.01, var_floor=1e-5), seed=0)
        assert np.isfinite(fit.log_likelihood(arrays))
        smallest = np.linalg.eigvalsh(fit.covs).min() if cov == "full" else fit.covs.min()
        assert smallest >= floor * 0.999
        assert smallest < 1e-3  # the frozen feature's variance sits near the floor, not at 1e-3


def test_zscore_reports_runs_with_nan_and_handles_constant_features():
    rows = []
    for seed in range(3):
        for t in range(5):
            rows.append({"seed": seed, "checkpoint": t, "a": float(t * (seed + 1)), "b": 2.0})
    df = pd.DataFrame(rows)
    df.loc[(df.seed == 1) & (df.checkpoint == 3), "a"] = np.nan
    seqs = zscore_runs(df, ["a", "b"])
    assert seqs.runs == [0, 2]
    assert "a" in seqs.dropped[1]
    z = seqs.arrays[0]
    np.testing.assert_allclose(z[:, 0].mean(), 0, atol=1e-12)
    np.testing.assert_allclose(z[:, 0].std(), 1)
    assert (z[:, 1] == 0).all()  # constant within the run


def test_split_is_seeded_and_disjoint():
    tr, va = split_runs(range(10), 0.2, seed=3)
    assert len(va) == 2 and not set(tr) & set(va) and sorted(tr + va) == list(range(10))
    assert hmm.split_runs(range(10), 0.2, seed=3) == (tr, va)


def test_order_states_numbers_by_time():
    paths = [np.array([2, 2, 0, 0, 1, 1]), np.array([2, 0, 0, 1, 1, 1])]
    perm = hmm.order_states(paths, 3)
    assert perm.tolist() == [1, 2, 0]


@pytest.mark.parametrize("cov", ["full", "diag"])
def test_viterbi_matches_hmmlearn(cov):
    hmmlearn = pytest.importorskip("hmmlearn.hmm")
    arrays, _ = planted(8, seed=4)
    fit = fit_hmm(arrays, 3, settings(covariance=cov, max_iter=30, tol=0.01, var_floor=1e-5), seed=0)
    ref = hmmlearn.GaussianHMM(3, covariance_type=cov, init_params="", params="")
    ref.startprob_ = fit.starts / fit.starts.sum()
    trans = fit.transitions
    ref.transmat_ = trans / trans.sum(axis=1, keepdims=True)
    ref.means_ = fit.means
    ref.covars_ = fit.covs
    for a, p in zip(arrays, fit.viterbi(arrays)):
        np.testing.assert_array_equal(p, ref.predict(a))  # the same model: the same path


def collinear_runs(n_runs: int = 30, length: int = 120, seed: int = 0) -> list[np.ndarray]:
    """Z-scored runs of 6 nearly collinear features (2 latent directions + 2 % noise).

    A 3-state left-to-right HMM moves the latent means, like norms that move together in
    training: the pooled covariance has eigenvalues down to ~5e-4.
    """
    rng = np.random.default_rng(seed)
    means = np.array([[0.0, 0.0], [4.0, 2.0], [6.0, -2.0]])
    mix = rng.normal(size=(2, 6))
    runs = []
    for _ in range(n_runs):
        s, states = 0, []
        for _ in range(length):
            states.append(s)
            if s < 2 and rng.random() < 0.04:
                s += 1
        x = (means[states] + rng.normal(size=(length, 2)) * 0.4) @ mix
        x += rng.normal(size=(length, 6)) * 0.02
        runs.append((x - x.mean(0)) / x.std(0))
    return runs


def near_singular_runs(n_runs: int = 24, length: int = 150, seed: int = 0) -> list[np.ndarray]:
    """Z-scored runs of 8 features with the digits task's spectrum: one direction of the pooled
    covariance has an eigenvalue of ~4e-7 (a feature that is a linear combination of the others,
    up to tiny noise), a few more ~1e-5, as weight statistics that move together."""
    rng = np.random.default_rng(seed)
    means = np.array([[0.0, 0.0, 0.0], [3.0, 1.0, -1.0], [4.0, -2.0, 1.0]])
    mix = rng.normal(size=(3, 7))
    runs = []
    for _ in range(n_runs):
        s, states = 0, []
        for _ in range(length):
            states.append(s)
            if s < 2 and rng.random() < 0.03:
                s += 1
        x = (means[states] + rng.normal(size=(length, 3)) * 0.5) @ mix
        x += rng.normal(size=(length, 7)) * np.array([3e-3, 3e-3, 5e-3, 0.02, 0.02, 0.05, 0.05])
        x = (x - x.mean(0)) / x.std(0)
        last = x[:, :3].sum(axis=1, keepdims=True) / 3 + rng.normal(size=(length, 1)) * 1e-3
        runs.append(np.hstack([x, last]))
    return runs


def test_single_state_is_the_closed_form_gaussian_on_near_singular_data():
    """K = 1 is the maximum-likelihood Gaussian plus the prior's ridge (prior × mean variance /
    steps), to 1e-9, even where the pooled covariance has eigenvalues as small as the digits
    task's; the floor (a numerical guard) does not touch them."""
    runs = near_singular_runs()
    x = np.concatenate(runs)
    pooled = np.cov(x.T, bias=True)
    assert np.linalg.eigvalsh(pooled).min() < 1e-6
    for prior in (0.0, 1e-2):
        fit = fit_hmm(runs, 1, settings(covariance="full", var_floor=1e-9, covariance_prior=prior), seed=0)
        ridge = prior * pooled.trace() / len(pooled) / len(x)
        np.testing.assert_allclose(fit.means[0], x.mean(axis=0), rtol=0, atol=1e-12)
        np.testing.assert_allclose(fit.covs[0], pooled + ridge * np.eye(len(pooled)), rtol=0, atol=1e-9)
        density = multivariate_normal(x.mean(axis=0), pooled + ridge * np.eye(len(pooled)))
        assert fit.log_likelihood(runs) == pytest.approx(density.logpdf(x).sum(), rel=1e-9)


@pytest.mark.parametrize("cov", ["full", "diag"])
def test_m_step_adds_the_prior_over_the_state_weight(cov):
    """A state's covariance after an M-step is numpy's weighted covariance of its points plus
    prior / (summed weight) on the diagonal, then floored."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 3)) * np.array([1.0, 0.1, 1e-4])
    w = rng.uniform(0.0, 1.0, size=50)
    normal = pomegranate_reference.floored_normal_class()(1e-12, 0.5, covariance_type=cov).double()
    normal.summarize(torch.tensor(x), sample_weight=torch.tensor(w)[:, None])
    normal.from_summaries()
    expected = np.cov(x.T, aweights=w, bias=True) + 0.5 / w.sum() * np.eye(3)
    got = normal.covs.detach().numpy()
    np.testing.assert_allclose(got, expected if cov == "full" else np.diag(expected), rtol=1e-9)
    np.testing.assert_allclose(normal.means.detach().numpy(), np.average(x, axis=0, weights=w), rtol=1e-12)


def test_log_likelihood_is_hmmlearns_score_of_the_same_parameters():
    hmmlearn = pytest.importorskip("hmmlearn.hmm")
    runs = collinear_runs(12)
    for cov in ("full", "diag"):
        fit = fit_hmm(runs[:8], 3, settings(covariance=cov, max_iter=10, tol=0.1, var_floor=1e-5), seed=1)
        ref = hmmlearn.GaussianHMM(3, covariance_type=cov, init_params="", params="")
        ref.startprob_ = fit.starts / fit.starts.sum()
        ref.transmat_ = fit.transitions / fit.transitions.sum(axis=1, keepdims=True)
        ref.means_, ref.covars_ = fit.means, fit.covs
        held = runs[8:]
        expected = ref.score(np.concatenate(held), lengths=[len(a) for a in held])
        assert fit.log_likelihood(held) == pytest.approx(expected, rel=1e-10)


@pytest.mark.slow
def test_held_out_fit_within_one_percent_of_hmmlearn_on_collinear_features():
    """The workflow's 10 restarts against the released 5: ours ≥ hmmlearn's held-out LL − 1 %."""
    pytest.importorskip("hmmlearn.hmm")
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from hmm_vs_hmmlearn import compare

    # The near-singular runs share their thinnest direction exactly, so the default covariance
    # prior, which widens it (README, "Covariance prior and floor"), costs there (K = 3: -5.6 %);
    # without it the fit handles eigenvalues as small as the digits task's.
    for runs, prior in ((collinear_runs(), 1e-3), (near_singular_runs(30), 0.0)):
        assert np.linalg.eigvalsh(np.cov(np.concatenate(runs).T)).min() < 1e-3  # nearly collinear
        table = compare(
            runs[:24],
            runs[24:],
            [1, 2, 3, 4],
            settings(covariance="full", max_iter=32, restarts=10, seed=0, covariance_prior=prior),
        )
        assert (table["relative_gap"] >= -0.01).all(), table.to_string()


def test_boundary_optimum_is_reported():
    assert "raise hmm.max_states" in hmm.boundary_note(8, 8, pinned=False)
    assert "K = 1" in hmm.boundary_note(1, 8, pinned=False)
    assert hmm.boundary_note(5, 8, pinned=False) == ""
    assert hmm.boundary_note(8, 8, pinned=True) == ""


def test_held_out_criteria_follow_hmmlearn():
    """AIC/BIC of the held-out runs: hmmlearn's aic()/bic() of the same parameters and data."""
    hmmlearn = pytest.importorskip("hmmlearn.hmm")
    runs = collinear_runs(12)
    fit = fit_hmm(runs[:8], 2, settings(covariance="full", max_iter=10, tol=0.1, var_floor=1e-5), seed=0)
    ref = hmmlearn.GaussianHMM(2, covariance_type="full", init_params="", params="")
    ref.startprob_ = fit.starts / fit.starts.sum()
    ref.transmat_ = fit.transitions / fit.transitions.sum(axis=1, keepdims=True)
    ref.means_, ref.covars_ = fit.means, fit.covs
    ref.n_features = 6
    held = runs[8:]
    x, lengths = np.concatenate(held), [len(a) for a in held]
    aic, bic = hmm.information_criteria(fit.log_likelihood(held), hmm.n_parameters(2, 6, "full"), len(x))
    assert aic == pytest.approx(ref.aic(x, lengths))
    assert bic == pytest.approx(ref.bic(x, lengths))


def assert_same_fit(ours, reference):
    for name in ["starts", "transitions", "ends", "means", "covs"]:
        np.testing.assert_allclose(getattr(ours, name), getattr(reference, name), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("cov", ["full", "diag"])
@pytest.mark.parametrize("ragged", [True, False], ids=["ragged", "equal"])
def test_batched_fit_is_pomegranates_own(cov, ragged):
    runs, _ = planted(n_runs=12)
    # 12 different lengths (one padded batch), or 12 runs of one length.
    runs = [r[: 30 + 2 * i] if ragged else r[:50] for i, r in enumerate(runs)]
    assert len({len(r) for r in runs}) == (12 if ragged else 1)
    ours = fit_hmm(runs, 3, settings(covariance=cov, max_iter=10), seed=1)
    reference = fit_hmm(runs, 3, settings(covariance=cov, max_iter=10), seed=1, reference=True)
    assert type(reference.model).__name__ == "DenseHMM" and ours.model is None
    assert_same_fit(ours, reference)
    assert ours.log_likelihood(runs) == pytest.approx(reference.log_likelihood(runs), rel=1e-12)


@pytest.mark.parametrize("cov", ["full", "diag"])
def test_a_batch_of_weighted_fits_is_pomegranates_fits_of_the_repeated_runs(cov):
    """Restarts, bootstrap resamples (weights 0, 1, 2, ...) and held-out masks in one batch: each
    fit equals pomegranate's fit of the runs repeated by their weights, stopping where it stops
    (tol 0.5 stops some fits early, others run to max_iter)."""
    runs, _ = planted(n_runs=10, seed=4)
    runs = [r[: 25 + 3 * i] for i, r in enumerate(runs)]
    hmm_settings = settings(covariance=cov, max_iter=12, tol=0.5, covariance_prior=1e-2)
    rng = np.random.default_rng(0)
    specs = [
        fitting.Spec(None, 11, "kmeans"),
        fitting.Spec(None, 12, "segments"),
        fitting.Spec(list(np.bincount(rng.integers(0, 10, 10), minlength=10)), 13, "kmeans"),
        fitting.Spec(list(np.bincount(rng.integers(0, 10, 10), minlength=10)), 14, "segments"),
        fitting.Spec([1, 1, 0, 1, 1, 0, 1, 1, 1, 0], 15, "kmeans"),
    ]
    batch = fitting.fit_many(runs, 3, hmm_settings, specs)
    for spec, (ours, error) in zip(specs, batch):
        assert error == ""
        seen = fitting.repeated(runs, spec.weights)
        assert_same_fit(ours, fit_hmm(seen, 3, hmm_settings, spec.seed, spec.init, reference=True))


def test_batched_fit_stops_each_fit_at_pomegranates_iteration():
    runs, _ = planted(n_runs=8, seed=5)
    hmm_settings = settings(covariance="full", max_iter=40, tol=0.5)
    specs = [fitting.Spec(None, s, fitting.restart_init(s)) for s in range(4)]
    jobs = [fitting.plan(runs, 3, hmm_settings, spec) for spec in specs]
    outcomes = baum_welch.fit_batch(runs, jobs, "full", 40, 0.5)
    for spec, job, outcome in zip(specs, jobs, outcomes):
        model = fitting.reference_model(job.start, hmm_settings, job.floor, job.prior, spec.seed)
        logps = []
        model.verbose = False
        original = model.summarize

        def counting(*args, _orig=original, _logps=logps, **kwargs):
            out = _orig(*args, **kwargs)
            _logps.append(float(out.sum()))
            return out

        model.summarize = counting
        model.fit([torch.tensor(a) for a in runs])
        # pomegranate summarises once per length group per iteration; 8 runs of 3 lengths.
        groups = len({len(a) for a in runs})
        assert len(logps) == groups * (outcome.iterations + 1)
        assert outcome.log_likelihood == pytest.approx(sum(logps[-groups:]), rel=1e-12)
    assert len({o.iterations for o in outcomes}) > 1 or outcomes[0].iterations < 40


def test_scaled_and_log_space_expectations_agree_on_a_padded_batch():
    runs, _ = planted(n_runs=6)
    runs = [r[: 20 + 5 * i] for i, r in enumerate(runs)]
    hmm_settings = settings(covariance="full", max_iter=3)
    jobs = [fitting.plan(runs, 3, hmm_settings, fitting.Spec(None, s, "kmeans")) for s in (2, 3)]
    data = baum_welch._Data(runs, "full")
    p = baum_welch._Params.stack([j.start for j in jobs])
    e, failed = baum_welch.emission_log_densities(p, data, "full")
    assert not failed.any()
    *scaled, bad = baum_welch.scaled_expectations(e, p, data)
    assert not bad.any()
    for a, b in zip(scaled, baum_welch.log_expectations(e, p, data)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-9, atol=1e-12)


def test_emission_densities_are_scipys():
    runs, _ = planted(n_runs=3)
    hmm_settings = settings(covariance="full")
    job = fitting.plan(runs, 3, hmm_settings, fitting.Spec(None, 7, "kmeans"))
    data = baum_welch._Data(runs, "full")
    e, _ = baum_welch.emission_log_densities(baum_welch._Params.stack([job.start]), data, "full")
    for i, run in enumerate(runs):
        for s in range(3):
            expected = multivariate_normal(job.start.means[s], job.start.covs[s]).logpdf(run)
            np.testing.assert_allclose(e[0, i, : len(run), s].numpy(), expected, rtol=1e-12)
        assert (e[0, i, len(run) :] == 0).all()


def test_first_checkpoints_window():
    from latentstates.states.sequences import first_checkpoints

    df = pd.DataFrame({"seed": [0, 0, 0, 1, 1], "checkpoint": [0, 1, 2, 0, 1], "x": range(5)})
    assert first_checkpoints(df, 2)["x"].tolist() == [0, 1, 3, 4]
    assert first_checkpoints(df, None) is df


def planted_metrics(n_runs: int = 16, seed: int = 0) -> pd.DataFrame:
    """`planted` runs as a metrics table (features a, b, c)."""
    arrays, _ = planted(n_runs=n_runs, seed=seed)
    return pd.concat(
        pd.DataFrame(
            {
                "seed": i,
                "checkpoint": range(len(a)),
                "step": range(len(a)),
                "a": a[:, 0],
                "b": a[:, 1],
                "c": a[:, 2],
            }
        )
        for i, a in enumerate(arrays)
    )


def test_cross_validation_over_runs_picks_the_planted_k_and_fits_on_every_run():
    metrics = planted_metrics(n_runs=16)
    s = settings(
        features=["a", "b", "c"],
        max_states=4,
        restarts=3,
        max_iter=40,
        tol=0.01,
        covariance_prior=1e-2,
        criterion="cv",
        cv_folds=4,
        cv_restarts=3,
        cv_repeats=1,
        zscore="pooled",  # HMM data stay HMM data (per-run z-scores add states: test_model_selection)
    )
    fit = hmm.fit_task(metrics, s)
    selection = fit.summary.set_index("k")
    assert fit.model.k == 3 and selection["cv_ll"].idxmax() == 3
    assert fit.model.train_runs == list(range(16)) and fit.model.val_runs == []
    assert selection["val_ll"].isna().all()  # no single held-out split
    seqs = zscore_runs(metrics, ["a", "b", "c"], pooled=True)
    scores = hmm.fold_scores(seqs, s)
    assert len(scores) == 4 * 16 and (scores.groupby("k")["fold"].nunique() == 4).all()
    assert (scores.groupby("k")["seed"].nunique() == 16).all()  # every run held out once per K
    np.testing.assert_allclose(scores.groupby("k")["val_ll"].sum(), selection["cv_ll"], rtol=1e-12)
    # The other fold criteria read the same scores.
    assert hmm.choose_k(fit.summary, "cv_bic") == 3 and hmm.choose_k(fit.summary, "cv_1se") == 3
