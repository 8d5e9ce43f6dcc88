"""The local learning coefficient's SGLD estimator against known answers: the exact expectation on
a quadratic loss, degenerate models of known LLC (devinterp's normal-crossing polynomials),
reduced-rank regression against Aoyagi and Watanabe, batched equal to one at a time, masks."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from latentstates.measure.llc import (
    aoyagi_watanabe_rrr,
    default_nbeta,
    expected_quadratic_llc,
    llc_estimates,
    sgld_traces,
)
from latentstates.settings import TaskSpec


def generators(count: int, seed: int = 0) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed + i) for i in range(count)]


def quadratic(eigenvalues, seed=0):
    """H = Q diag(s) Qᵀ with a random rotation Q, w* random; L = 0.3 + ΔᵀHΔ."""
    g = torch.Generator().manual_seed(seed)
    d = len(eigenvalues)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    h = q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ q.T
    w_star = torch.randn(d, generator=g, dtype=torch.float64)
    return h, w_star


def quadratic_chains(h, w_star, chains, steps, epsilon, gamma, nbeta, seed=0, masks=None):
    w = w_star.repeat(chains, 1).requires_grad_(False)

    def loss_and_grads(idx):
        delta = w - w_star
        w.grad = 2 * delta @ h
        return 0.3 + torch.einsum("ri,ij,rj->r", delta, h, delta)

    traces = sgld_traces(
        loss_and_grads,
        [w],
        1000,
        epsilon=epsilon,
        gamma=gamma,
        nbeta=nbeta,
        steps=steps,
        batch_size=1000,
        generators=generators(chains, seed),
        masks=masks,
    )
    return traces


@pytest.mark.parametrize("epsilon, gamma", [(1e-4, 0.0), (1e-3, 100.0)])
def test_quadratic_loss_gives_the_exact_expectation(epsilon, gamma):
    """On L = L* + ΔᵀHΔ (d = 10, full batch) the estimate is within three standard errors of the
    estimator's exact expectation Σ nβ s ε / (a (2 − a)), a = ε (nβ s + γ/2)."""
    s = np.linspace(0.5, 2.0, 10)
    h, w_star = quadratic(s)
    nbeta = default_nbeta(1000)
    chains, burn_in = 16, 1000
    traces = quadratic_chains(h, w_star, chains, burn_in + 4000, epsilon, gamma, nbeta)
    (est,) = llc_estimates(traces, [0.3], chains, burn_in, nbeta)
    expected = expected_quadratic_llc(s, epsilon, gamma, nbeta)
    assert abs(est.llc - expected) < 3 * est.se, (est.llc, est.se, expected)
    assert 0.005 < est.se < 0.5 and not est.not_minimum
    if gamma == 0:
        assert expected == pytest.approx(5.0, abs=0.1)  # → d/2 as ε → 0


def test_the_expectation_formula_tends_to_half_the_dimension():
    s = [0.1, 1.0, 10.0]
    assert expected_quadratic_llc(s, 1e-7, 0.0, default_nbeta(1000)) == pytest.approx(1.5, rel=1e-4)
    with pytest.raises(ValueError, match="diverges"):
        expected_quadratic_llc([1e3], 1.0, 0.0, 100.0)


def test_a_mask_keeps_what_does_not_matter_and_removes_what_does():
    """A direction the loss ignores (eigenvalue 0, γ > 0) masked: every loss of every chain
    unchanged; a direction that matters masked: the estimate loses exactly its term."""
    s = [0.5, 1.0, 1.5, 2.0, 0.0]
    h = torch.diag(torch.tensor(s, dtype=torch.float64))
    w_star = torch.zeros(5, dtype=torch.float64)
    nbeta, eps, gamma = default_nbeta(1000), 1e-3, 100.0
    free = quadratic_chains(h, w_star, 8, 3000, eps, gamma, nbeta)
    ignore = torch.tensor([1.0, 1, 1, 1, 0], dtype=torch.float64)
    assert torch.equal(quadratic_chains(h, w_star, 8, 3000, eps, gamma, nbeta, masks=[ignore]), free)
    keep = torch.tensor([1.0, 1, 1, 0, 1], dtype=torch.float64)  # the eigenvalue 2 frozen
    masked = quadratic_chains(h, w_star, 16, 5000, eps, gamma, nbeta, masks=[keep])
    (est,) = llc_estimates(masked, [0.3], 16, 1000, nbeta)
    expected = expected_quadratic_llc([0.5, 1.0, 1.5], eps, gamma, nbeta)
    assert abs(est.llc - expected) < 3 * est.se, (est.llc, est.se, expected)


def polynomial_losses(powers, w, x, y):
    """devinterp's normal-crossing model y = x · Π w_i^{p_i}, mean squared error per replica."""
    p = torch.tensor(powers, dtype=w.dtype)

    def loss_and_grads(idx):
        w.grad = None
        with torch.enable_grad():
            pred = x * torch.prod(w**p, dim=1, keepdim=True)  # (R, n)
            losses = ((pred - y) ** 2).mean(dim=1)
            losses.sum().backward()
        return losses.detach()

    return loss_and_grads


@pytest.mark.parametrize("powers, llc", [([1, 1], 0.5), ([1, 2], 0.25), ([1, 3], 1 / 6)])
def test_degenerate_models_of_known_llc(powers, llc):
    """y = x · w1^a · w2^b at w* = 0 has λ = 1 / (2 max(a, b)) for a ≠ b (1/2 for a = b = 1):
    devinterp's sampler accuracy test (n = 1,000, x ~ N(0, 2²), y = 0.25·N(0, 1), full batch,
    ε = 2e-4, 10 chains of 5,000 draws, a bounding box of 1): within two chain standard deviations."""
    g = torch.Generator().manual_seed(42)
    x = torch.randn(1000, generator=g, dtype=torch.float64) * 2
    y = 0.25 * torch.randn(1000, generator=g, dtype=torch.float64)
    chains = 10
    w = torch.zeros(chains, 2, dtype=torch.float64, requires_grad=True)
    nbeta = default_nbeta(1000)
    traces = sgld_traces(
        polynomial_losses(powers, w, x, y),
        [w],
        1000,
        epsilon=2e-4,
        gamma=0.0,
        nbeta=nbeta,
        steps=5000,
        batch_size=1000,
        generators=generators(chains, 7),
        bounding_box=1.0,
    )
    init = float((y**2).mean())
    (est,) = llc_estimates(traces, [init], chains, 0, nbeta)
    sd = est.se * math.sqrt(chains)
    assert abs(est.llc - llc) < 2 * sd, (est.llc, sd, llc)


@pytest.mark.parametrize("m, h, n", [(5, 3, 5), (4, 3, 8), (8, 3, 4), (3, 8, 4)])
def test_reduced_rank_regression_against_aoyagi_watanabe(m, h, n):
    """x (m) → h → y (n) fitted to unrelated y (a true map of rank 0) by Adam, then SGLD as
    devinterp's rrr_test (ε = 6e-5, γ = 1, 3 chains of 2,000 draws): within 30 % of the learning
    coefficient of Aoyagi and Watanabe."""
    torch.manual_seed(42)
    g = torch.Generator().manual_seed(42)
    x = torch.randn(1000, m, generator=g)
    y = torch.randn(1000, n, generator=g)
    a = torch.nn.Parameter(torch.randn(h, m, generator=g) * 0.3)
    b = torch.nn.Parameter(torch.randn(n, h, generator=g) * 0.3)
    opt = torch.optim.Adam([a, b], lr=0.01)
    for _ in range(3000):
        opt.zero_grad()
        loss = ((x @ a.T @ b.T - y) ** 2).mean()
        loss.backward()
        opt.step()
    chains = 3
    sa = a.detach().repeat(chains, 1, 1).requires_grad_(True)
    sb = b.detach().repeat(chains, 1, 1).requires_grad_(True)

    def loss_and_grads(idx):
        sa.grad = sb.grad = None
        with torch.enable_grad():
            pred = torch.einsum("ki,rhi,rjh->rkj", x, sa, sb)
            losses = ((pred - y) ** 2).mean(dim=(1, 2))
            losses.sum().backward()
        return losses.detach()

    nbeta = default_nbeta(1000)
    init = float(((x @ a.T @ b.T - y) ** 2).mean().detach())
    traces = sgld_traces(
        loss_and_grads,
        [sa, sb],
        1000,
        epsilon=6e-5,
        gamma=1.0,
        nbeta=nbeta,
        steps=2000,
        batch_size=1000,
        generators=generators(chains, 42),
    )
    (est,) = llc_estimates(traces, [init], chains, 0, nbeta)
    assert est.llc == pytest.approx(aoyagi_watanabe_rrr(m, h, n), rel=0.3), (
        est.llc,
        aoyagi_watanabe_rrr(m, h, n),
    )


def test_aoyagi_watanabe_cases():
    assert aoyagi_watanabe_rrr(4, 3, 8) == 6.0  # m + h < n: m h / 2
    assert aoyagi_watanabe_rrr(8, 3, 4) == 6.0  # n + h < m: h n / 2
    assert aoyagi_watanabe_rrr(3, 8, 4) == 6.0  # m + n < h: m n / 2
    assert aoyagi_watanabe_rrr(5, 3, 5) == (1 + 50 + 30 + 30 - 25 - 25 - 9) / 8  # odd
    assert aoyagi_watanabe_rrr(5, 4, 5) == (50 + 40 + 40 - 25 - 25 - 16) / 8  # even


def test_batched_replicas_equal_each_alone_with_minibatches():
    """Four replicas (two runs × two chains) on minibatches of a regression, together and each
    alone with its own generator: the same losses at every step."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 200, 3, generator=g, dtype=torch.float64)
    y = torch.randn(2, 200, generator=g, dtype=torch.float64)
    w_star = torch.randn(2, 3, generator=g, dtype=torch.float64)
    run_of = [0, 0, 1, 1]

    def chains(replicas):
        w = w_star[[run_of[r] for r in replicas]].clone()
        runs = torch.tensor([run_of[r] for r in replicas])

        def loss_and_grads(idx):
            xb = x[runs[:, None], idx]  # (R, m, 3)
            yb = y[runs[:, None], idx]
            resid = torch.einsum("rmi,ri->rm", xb, w) - yb
            w.grad = 2 * torch.einsum("rm,rmi->ri", resid, xb) / idx.shape[1]
            return (resid**2).mean(dim=1)

        return sgld_traces(
            loss_and_grads,
            [w],
            200,
            epsilon=1e-4,
            gamma=10.0,
            nbeta=default_nbeta(200),
            steps=150,  # more than one pass over the data: new permutations
            batch_size=64,
            generators=[torch.Generator().manual_seed(100 + r) for r in replicas],
        )

    together = chains([0, 1, 2, 3])
    for r in range(4):
        torch.testing.assert_close(chains([r])[0], together[r], rtol=1e-12, atol=1e-14)


def test_a_checkpoint_below_which_the_chains_find_lower_loss_is_flagged_not_reported():
    """A loss still falling around w* (not a minimum): the chains' losses end below L_n(w*), the
    estimate is NaN and flagged (as devinterp's guidance: not a negative LLC)."""
    traces = torch.linspace(1.0, 0.2, 100).repeat(4, 1).double()
    (est,) = llc_estimates(traces, [1.0], 4, 10, 50.0)
    assert est.not_minimum and math.isnan(est.llc) and math.isnan(est.se)
    assert (est.chains < 0).all()


def test_a_seed_groups_runs_together_equal_each_run_alone(tmp_path, tiny_config):
    """`group_llcs` on two trained parity runs (2 chains each, minibatches, real checkpoints) equals
    each run alone: the same estimate at every 4th checkpoint; seeded, so a rerun is identical."""
    from latentstates.config import validate_config
    from latentstates.measure.llc_runs import group_llcs
    from latentstates.runs.contract import trained_run
    from latentstates.runs.train import train_run
    from latentstates.settings import LLCSettings

    config = validate_config(tiny_config)
    task = config["tasks"]["sparse_parity"]
    runs, files = [], []
    for seed in (0, 1):
        out = tmp_path / f"seed{seed}"
        log = train_run(TaskSpec.from_dict(task), seed, out, progress=False)
        runs.append(trained_run(TaskSpec.from_dict(task), seed, out, log))
        files.append(out / "run.json")
    llc = LLCSettings.of_task(config, "sparse_parity")
    both = group_llcs(runs, files, llc, device="cpu", progress=False)
    assert sorted(both[0]) == [0, 4, 8, 12, 16, 20]
    for r in range(2):
        alone = group_llcs([runs[r]], [files[r]], llc, device="cpu", progress=False)[0]
        for index, est in both[r].items():
            assert est.not_minimum == alone[index].not_minimum
            np.testing.assert_allclose(est.chains, alone[index].chains, rtol=1e-6)
    again = group_llcs(runs, files, llc, device="cpu", progress=False)
    assert all(np.array_equal(again[0][i].trace, both[0][i].trace) for i in both[0])
    # Later checkpoints sit in sharper basins than the initialisation: a larger LLC.
    finite = {i: e.llc for i, e in both[0].items() if not e.not_minimum}
    assert finite[max(finite)] > finite[min(finite)]


# --- the LLC beside the states (states/llc.py) ---


def _series(states_per_run, llc_per_run):
    rows = []
    for seed, (st, lc) in enumerate(zip(states_per_run, llc_per_run)):
        for c, (s, v) in enumerate(zip(st, lc)):
            rows.append(
                {
                    "seed": seed,
                    "checkpoint": c,
                    "step": 10 * c,
                    "state": s,
                    "llc": v,
                    "llc_se": 0.1,
                    "llc_not_minimum": False,
                }
            )
    df = pd.DataFrame(rows)
    return df.drop(columns="state"), df[["seed", "checkpoint", "state"]]


def test_llc_per_state_and_per_edge_by_hand():
    from latentstates.states import llc as lc

    nan = float("nan")
    metrics, states = _series(
        [[0, 0, 1, 1, 2], [0, 1, 1, 1, 1]],
        [[1.0, nan, 3.0, nan, 6.0], [2.0, 4.0, nan, 4.0, nan]],
    )
    data = lc.with_states(metrics, states)
    per_state = lc.llc_by_state(data, 3, resamples=200).set_index("state")
    assert per_state.loc[0, "mean"] == 1.5 and per_state.loc[1, "mean"] == pytest.approx(11 / 3)
    assert per_state.loc[2, "checkpoints"] == 1 and np.isnan(per_state.loc[2, "ci_low"])  # one run
    assert (
        per_state.loc[1, "runs"] == 2 and per_state.loc[1, "ci_low"] <= 11 / 3 <= per_state.loc[1, "ci_high"]
    )
    changes = lc.transitions(data)
    # run 0: 0→1 at position 2 (1 → 3), 1→2 at 4 (3 → 6); run 1: 0→1 at 1 (2 → 4)
    assert changes[["seed", "position", "source", "target"]].values.tolist() == [
        [0, 2, 0, 1],
        [0, 4, 1, 2],
        [1, 1, 0, 1],
    ]
    assert changes["delta_llc"].tolist() == [2.0, 3.0, 2.0]
    edges = lc.llc_by_edge(changes).set_index(["source", "target"])
    assert edges.loc[(0, 1), "transitions"] == 2 and edges.loc[(0, 1), "mean_delta_llc"] == 2.0


def _simulated(rng, runs, length, coupled):
    """Runs whose LLC steps up at two random positions; their states change there (coupled) or
    at two other random positions (independent)."""
    states, llcs = [], []
    for _ in range(runs):
        jumps = np.sort(rng.choice(np.arange(5, length - 5), 2, replace=False))
        llc = 1.0 + (np.arange(length) >= jumps[0]) * 2.0 + (np.arange(length) >= jumps[1]) * 3.0
        llc = llc + rng.normal(0, 0.05, length)
        moves = jumps if coupled else np.sort(rng.choice(np.arange(1, length), 2, replace=False))
        state = (np.arange(length) >= moves[0]).astype(int) + (np.arange(length) >= moves[1]).astype(int)
        states.append(state.tolist())
        llcs.append(llc.tolist())
    return _series(states, llcs)


def test_transitions_at_llc_changes_are_found_and_independent_ones_are_not():
    """Simulations with a known answer: states that change where the LLC jumps coincide (p small
    in 20 of 20 simulations); states that change at independent times are flagged at about the
    test's level (at most 3 of 20 at 0.05)."""
    from latentstates.states import llc as lc

    rng = np.random.default_rng(0)
    found = flagged = 0
    for sim in range(20):
        m, s = _simulated(rng, 8, 40, coupled=True)
        res = lc.coincidence(lc.with_states(m, s), window=1, permutations=199, seed=sim)
        found += res["p_value"] <= 0.05
        assert res["fraction"] > res["null_fraction"]
        m, s = _simulated(rng, 8, 40, coupled=False)
        flagged += (
            lc.coincidence(lc.with_states(m, s), window=1, permutations=199, seed=sim)["p_value"] <= 0.05
        )
    assert found == 20 and flagged <= 3, (found, flagged)


def test_agrees_with_devinterp_on_a_trained_checkpoint(tmp_path, tiny_config):
    """Outside check: devinterp's own estimator (1.3, `estimate_learning_coeff_with_summary`, its
    SGLD) on a trained parity run's last checkpoint, with the same ε, γ, nβ, minibatch size,
    burn-in, draws and L_n(w*), against ours (`group_llcs`): the two means agree within 4 combined
    standard errors (different random streams, so not value by value). Skipped where devinterp
    is not installed (`make setup` installs it)."""
    import warnings

    devinterp_sampler = pytest.importorskip(
        "devinterp.slt.sampler", reason="devinterp is not installed: `pip install devinterp==1.3.2`"
    )
    from devinterp.optim.sgld import SGLD

    from latentstates.config import validate_config
    from latentstates.measure.llc_runs import group_llcs
    from latentstates.runs.contract import trained_run
    from latentstates.runs.runtime import build_run
    from latentstates.runs.train import train_run
    from latentstates.runs.weights import load_into
    from latentstates.settings import LLCSettings

    config = validate_config(tiny_config)
    task = config["tasks"]["sparse_parity"]
    task["train"]["epochs"] = 40
    log = train_run(TaskSpec.from_dict(task), 0, tmp_path, progress=False)
    run = trained_run(TaskSpec.from_dict(task), 0, tmp_path, log)
    run["checkpoints"] = run["checkpoints"][-1:]
    settings = {"chains": 16, "draws": 200, "burn_in": 50, "batch_size": 32, "epsilon": 1e-3}
    llc = LLCSettings.from_dict({**config["metrics"]["llc"], **settings, "stride": 1})
    (found,) = group_llcs([run], [tmp_path / "run.json"], llc, device="cpu", progress=False)
    (ours,) = found.values()
    assert not ours.not_minimum

    torch.manual_seed(0)
    kind, split, model = build_run(run["spec"], run["seed"])
    load_into(model.eval(), tmp_path / run["checkpoints"][0]["path"], run["format"])
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(split.x_train, split.y_train), batch_size=32, shuffle=True
    )
    n = len(split.x_train)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # devinterp's deprecation and seeding notices
        theirs = devinterp_sampler.estimate_learning_coeff_with_summary(
            model,
            loader,
            evaluate=lambda m, data: kind.loss(m(data[0]), data[1]),
            sampling_method=SGLD,
            optimizer_kwargs=dict(lr=llc.epsilon, localization=llc.gamma, nbeta=default_nbeta(n)),
            num_chains=llc.chains,
            num_draws=llc.draws,
            num_burnin_steps=llc.burn_in,
            init_loss=ours.init_loss,
            seed=0,
            verbose=False,
        )
    chains = np.array([theirs[f"llc-chain/{c}"] for c in range(llc.chains)])
    se = math.hypot(ours.se, chains.std(ddof=1) / math.sqrt(len(chains)))
    assert abs(ours.llc - chains.mean()) < 4 * se, (ours.llc, ours.se, chains.mean(), se)
    assert ours.llc > 0 and chains.mean() > 0
