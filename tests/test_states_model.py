"""The Gaussian HMM's parameter object against independent numpy/scipy computations."""

import itertools

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from latentstates.states.model import GaussianHMM


def random_model(covariance: str, k: int = 3, d: int = 2, seed: int = 0) -> GaussianHMM:
    rng = np.random.default_rng(seed)
    ends = rng.uniform(0.01, 0.1, size=k)
    transitions = rng.dirichlet(np.ones(k), size=k) * (1 - ends)[:, None]
    if covariance == "full":
        a = rng.normal(size=(k, d, d))
        covs = a @ a.transpose(0, 2, 1) + 0.5 * np.eye(d)
    else:
        covs = rng.uniform(0.5, 2.0, size=(k, d))
    means = rng.normal(size=(k, d)) * 2
    return GaussianHMM(rng.dirichlet(np.ones(k)), transitions, ends, means, covs, covariance)


def dense(model: GaussianHMM) -> np.ndarray:
    return model.covs if model.covariance == "full" else np.stack([np.diag(c) for c in model.covs])


def test_json_round_trip_keeps_every_parameter():
    for covariance in ("full", "diag"):
        model = random_model(covariance)
        data = model.to_json()
        assert set(data) == {"k", "covariance", "starts", "transitions", "ends", "means", "covs"}
        back = GaussianHMM.from_json(data)
        assert back.to_json() == data and back.k == 3 and back.covariance == covariance
        for name in ("starts", "transitions", "ends", "means", "covs"):
            np.testing.assert_array_equal(getattr(back, name), getattr(model, name))


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_log_densities_are_scipys(covariance):
    model = random_model(covariance)
    x = np.random.default_rng(1).normal(size=(2, 7, 2)) * 2
    got = model.log_densities(x)
    assert got.shape == (2, 7, 3)
    for j, (mean, cov) in enumerate(zip(model.means, dense(model))):
        np.testing.assert_allclose(got[..., j], multivariate_normal(mean, cov).logpdf(x), rtol=1e-12)


def brute_force(model: GaussianHMM, x: np.ndarray, transitions: np.ndarray, starts: np.ndarray):
    """Every state path's joint probability p(path, x_1..T), by enumeration."""
    densities = np.stack(
        [np.atleast_1d(multivariate_normal(m, c).pdf(x)) for m, c in zip(model.means, dense(model))], axis=1
    )
    joint = {}
    for path in itertools.product(range(model.k), repeat=len(x)):
        p = starts[path[0]] * densities[0, path[0]]
        for t in range(1, len(x)):
            p *= transitions[path[t - 1], path[t]] * densities[t, path[t]]
        joint[path] = p
    return joint


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_filter_is_the_brute_force_filtered_posterior(covariance):
    model = random_model(covariance)
    x = np.random.default_rng(2).normal(size=(5, 2)) * 2
    post = model.filter(x)
    for t in range(len(x)):
        # p(s_t | x_1..t) from paths of length t + 1, with the stored transitions (as the filter).
        joint = brute_force(model, x[: t + 1], model.transitions, model.starts)
        expected = np.zeros(model.k)
        for path, p in joint.items():
            expected[path[-1]] += p
        np.testing.assert_allclose(post[t], expected / expected.sum(), rtol=1e-10)


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_viterbi_and_likelihood_are_brute_force(covariance):
    model = random_model(covariance, seed=3)
    rng = np.random.default_rng(4)
    arrays = [rng.normal(size=(n, 2)) * 2 for n in (5, 4, 5)]
    # Scored without the end probability: rows renormalised, as hmmlearn.
    starts = model.starts / model.starts.sum()
    transitions = model.transitions / model.transitions.sum(axis=1, keepdims=True)
    total = 0.0
    for x, path in zip(arrays, model.viterbi(arrays)):
        joint = brute_force(model, x, transitions, starts)
        assert tuple(path) == max(joint, key=joint.get)
        total += np.log(sum(joint.values()))
    assert model.log_likelihood(arrays) == pytest.approx(total, rel=1e-12)


def test_permuted_renumbers_states():
    model = random_model("full")
    perm = np.array([2, 0, 1])  # old → new
    new = model.permuted(perm)
    for old in range(3):
        np.testing.assert_array_equal(new.means[perm[old]], model.means[old])
        assert new.transitions[perm[old], perm[0]] == model.transitions[old, 0]
    x = np.random.default_rng(5).normal(size=(6, 2))
    np.testing.assert_allclose(new.filter(x)[:, perm], model.filter(x), rtol=1e-12)


def test_the_ems_densities_are_the_models_on_near_singular_covariances():
    """The Gaussian log-density is computed twice: by the model for scoring and decoding (numpy:
    Cholesky, then a solve of x − μ) and by the batched EM (torch: pomegranate's X @ inv − μ @ inv).
    Pinned equal on full covariances whose eigenvalues reach the variance floor (1e-9 of the data's
    scale), at points drawn from each state and far from all of them. Against 50-digit arithmetic
    (mpmath, 2026-12-07) the model's values are off by ~1e-9 near a state and ~2e-10 relative far
    from it, the EM's by up to 3e-8 and 2e-9 (its difference of two large products cancels):
    equal to 1e-7, absolute near a state, relative far from it."""
    from latentstates.states import baum_welch

    rng = np.random.default_rng(5)
    k, d = 3, 14
    rotations = [np.linalg.qr(rng.normal(size=(d, d)))[0] for _ in range(k)]
    covs = np.stack([q @ np.diag(np.logspace(0, -9, d)) @ q.T for q in rotations])
    covs = (covs + covs.transpose(0, 2, 1)) / 2
    means = rng.normal(size=(k, d)) * 2
    near = [rng.multivariate_normal(means[j], covs[j], size=20, method="cholesky") for j in range(k)]
    x = np.concatenate([*near, rng.normal(size=(10, d)) * 3])
    model = GaussianHMM(np.ones(k) / k, np.full((k, k), 0.3), np.full(k, 0.1), means, covs, "full")
    start = baum_welch.Start(model.starts, model.transitions, model.ends, means, covs)
    data = baum_welch._Data([x], "full")
    em, failed = baum_welch.emission_log_densities(baum_welch._Params.stack([start]), data, "full")
    ours = model.log_densities(x)
    assert not failed.any() and em.shape == (1, 1, len(x), k)
    np.testing.assert_allclose(em[0, 0].numpy(), ours, rtol=1e-7, atol=1e-7)
    assert np.array_equal(np.argmax(em[0, 0].numpy()[:60], axis=1), np.repeat(np.arange(k), 20))
