import pytest
import torch
from torch.func import functional_call

from latentstates.measure.hessian import top_eigenvalue
from latentstates.settings import HessianSettings
from latentstates.tasks.models import MLP
from latentstates.tasks.registry import get_task


def lanczos(**changes) -> dict:
    """`top_eigenvalue`'s iteration settings: the workflow's defaults (metrics.hessian), changed."""
    return {**HessianSettings.defaults().lanczos(), **changes}


def _exact_hessian(model, loss_of_output, x, y):
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def f(theta):
        parts = torch.split(theta, sizes)
        params = {n: p.reshape(s) for n, p, s in zip(names, parts, shapes)}
        return loss_of_output(functional_call(model, params, (x,)), y)

    return torch.autograd.functional.hessian(f, flat)


def _exact_eigenvalues(model, loss_of_output, x, y):
    return torch.linalg.eigvalsh(_exact_hessian(model, loss_of_output, x, y))


def test_top_eigenvalue_matches_full_hessian_cross_entropy():
    torch.manual_seed(0)
    model = MLP([3, 5, 2]).double()
    x, y = torch.randn(20, 3, dtype=torch.float64), torch.randint(0, 2, (20,))
    loss = torch.nn.functional.cross_entropy
    exact = _exact_eigenvalues(model, loss, x, y)[-1].item()
    res = top_eigenvalue(
        lambda: loss(model(x), y),
        list(model.parameters()),
        generator=torch.Generator().manual_seed(0),
        **lanczos(tol=1e-6, max_iter=5000),
    )
    assert res.converged
    assert abs(res.eigenvalue - exact) / abs(exact) < 1e-3


@pytest.mark.parametrize("krylov_dim", [3, 20, 60])
def test_restarted_lanczos_matches_an_exact_eigendecomposition(krylov_dim):
    """Restarts every 3 products, a basis grown past its first allocation (20), or one that is
    never restarted (60): the same top eigenvalue as LAPACK's, to a tight tolerance."""
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(40, 40, generator=gen, dtype=torch.float64)
    h = (a + a.T) / 2
    w = torch.zeros(40, dtype=torch.float64, requires_grad=True)
    exact = torch.linalg.eigvalsh(h)[-1].item()
    res = top_eigenvalue(
        lambda: w @ h @ w / 2,
        [w],
        generator=torch.Generator().manual_seed(0),
        **lanczos(tol=1e-9, max_iter=3000, krylov_dim=krylov_dim, min_iter=1),
    )
    assert res.converged
    assert abs(res.eigenvalue - exact) < 1e-7 * abs(exact)
    vec = res.vector[0]
    assert torch.linalg.norm(h @ vec - exact * vec) < 1e-3 * abs(exact)


def test_top_eigenvalue_is_the_largest_not_the_largest_magnitude():
    # Hinge loss on a ReLU MLP: the Hessian is indefinite with ± pairs; power iteration on H
    # alone would return a negative or mixed value.
    torch.manual_seed(3)
    kind = get_task("sparse_parity")
    model = MLP([4, 6, 1]).double()
    x = torch.randint(0, 2, (32, 4)).double() * 2 - 1
    y = x[:, :2].prod(1)
    ev = _exact_eigenvalues(model, kind.loss, x, y)
    assert ev[0].item() < -1e-3  # really indefinite
    res = top_eigenvalue(
        lambda: kind.loss(model(x), y),
        list(model.parameters()),
        generator=torch.Generator().manual_seed(0),
        **lanczos(tol=1e-6, max_iter=20000),
    )
    assert res.converged
    assert abs(res.eigenvalue - ev[-1].item()) / abs(ev[-1].item()) < 1e-3


def test_warm_start_converges_faster():
    torch.manual_seed(1)
    model = MLP([3, 8, 3]).double()
    x, y = torch.randn(30, 3, dtype=torch.float64), torch.randint(0, 3, (30,))
    loss = lambda: torch.nn.functional.cross_entropy(model(x), y)  # noqa: E731
    params = list(model.parameters())
    cold = top_eigenvalue(
        loss, params, generator=torch.Generator().manual_seed(0), **lanczos(tol=1e-6, max_iter=5000)
    )
    warm = top_eigenvalue(loss, params, init=cold.vector, **lanczos(tol=1e-6, max_iter=5000))
    assert warm.iterations < cold.iterations
    assert abs(warm.eigenvalue - cold.eigenvalue) < 1e-6 * abs(cold.eigenvalue) + 1e-9


def _top_from_an_overtaken_start(q: torch.Tensor, evals: torch.Tensor, generator, **settings):
    """`top_eigenvalue` of the quadratic loss ½ θᵀAθ, whose Hessian is A = Q diag(evals) Qᵀ,
    started exactly on the eigenvector of the second largest eigenvalue (the last two of `evals`
    are the top two), as when another eigenvalue overtakes the previous checkpoint's top one."""
    a = (q * evals) @ q.T
    theta = torch.zeros(len(evals), dtype=torch.float64, requires_grad=True)
    return top_eigenvalue(
        lambda: 0.5 * theta @ a @ theta,
        [theta],
        init=[q[:, -2].clone()],
        generator=generator,
        **lanczos(**settings),
    )


def test_warm_start_on_a_stale_eigenvector_still_finds_the_top():
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(30, 30, generator=g, dtype=torch.float64))
    evals = torch.linspace(-2.0, 1.0, 30, dtype=torch.float64)
    evals[-2] = 0.99
    res = _top_from_an_overtaken_start(
        q, evals, tol=1e-8, max_iter=500, generator=torch.Generator().manual_seed(1)
    )
    assert res.converged
    assert abs(res.eigenvalue - 1.0) < 1e-6
    assert abs(torch.dot(res.vector[0], q[:, -1]).abs().item() - 1.0) < 1e-4


def test_default_min_iter_finds_a_top_that_overtook_the_warm_start_at_the_metrics_tolerance():
    # The previous checkpoint's top eigenvector (0.95) has been overtaken by an orthogonal one
    # (1.0) over a full-rank bulk; at tol 1e-3 the residual test passes on the stale pair, so
    # only the minimum number of products lets the Krylov space find the new top.
    MIN_ITER = HessianSettings.defaults().min_iter  # the workflow's (metrics.hessian.min_iter)

    def found(seed: int, min_iter: int) -> bool:
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(500, 500, generator=g, dtype=torch.float64))
        evals = torch.randn(500, generator=g, dtype=torch.float64).abs() * 0.1
        evals[-1], evals[-2] = 1.0, 0.95
        res = _top_from_an_overtaken_start(
            q, evals, tol=1e-3, max_iter=100, generator=torch.Generator().manual_seed(seed), min_iter=min_iter
        )
        return abs(res.eigenvalue - 1.0) <= 1e-3

    seeds = range(12)
    assert all(found(s, MIN_ITER) for s in seeds)
    assert not all(found(s, 5) for s in seeds)  # fewer products miss it: the guard matters


def test_replicas_iterated_together_each_get_what_they_get_alone():
    """`top_eigenvalues` over stacked replicas (one batched product for all) gives each replica
    the eigenpair, products and stopping `top_eigenvalue` gives it alone, whatever its start
    (cold, warm) and its stopping point; an overflowing replica gets NaN, as alone, an inactive one
    nothing, and neither disturbs the others. The replicas' top eigenvalues differ by more than 2 %, so
    a mix-up of replicas cannot pass, and each is checked against an exact eigendecomposition."""
    from latentstates.measure.hessian import top_eigenvalues
    from latentstates.tasks.replicas import Replicas

    loss = torch.nn.functional.cross_entropy
    models, xs, ys = [], [], []
    for r in range(5):
        torch.manual_seed(r)
        models.append(MLP([3, 6, 3]).double())
        with torch.no_grad():
            models[-1].layers[0].weight.mul_(1 + r)  # spread the replicas' curvature
        xs.append(torch.randn(25, 3, dtype=torch.float64))
        ys.append(torch.randint(0, 3, (25,)))
    with torch.no_grad():
        models[3].layers[1].weight.fill_(1e300)  # overflows: NaN loss
    settings = dict(tol=1e-6, max_iter=300, krylov_dim=8, min_iter=3)
    warm = top_eigenvalue(
        lambda: loss(models[1](xs[1]), ys[1]),
        list(models[1].parameters()),
        generator=torch.Generator().manual_seed(9),
        **lanczos(),
    ).vector
    inits = [None, warm, None, None, None]
    active = [True, True, True, True, False]

    alone = [
        top_eigenvalue(
            lambda m=m, x=x, y=y: loss(m(x), y),
            list(m.parameters()),
            init=init,
            generator=torch.Generator().manual_seed(100 + r),
            **settings,
        )
        for r, (m, x, y, init) in enumerate(zip(models, xs, ys, inits))
    ]
    replicas = Replicas(models)
    x, y = torch.stack(xs), torch.stack(ys)
    together = top_eigenvalues(
        lambda: replicas.map(loss, replicas(x), y),
        replicas.parameters(),
        inits,
        [torch.Generator().manual_seed(100 + r) for r in range(5)],
        active=active,
        **settings,
    )
    assert together[4] is None
    nan = together[3].eigenvalue
    assert nan != nan and alone[3].eigenvalue != alone[3].eigenvalue  # overflowing curvature: NaN
    assert together[3].iterations == alone[3].iterations and not together[3].converged
    assert len({res.iterations for res in together[:3]}) > 1  # they stop at different products
    for r in range(3):
        exact = _exact_eigenvalues(models[r], loss, xs[r], ys[r])[-1].item()
        assert together[r].converged and alone[r].converged
        assert together[r].iterations == alone[r].iterations
        assert abs(together[r].eigenvalue - alone[r].eigenvalue) < 1e-9 * abs(exact)
        assert abs(together[r].eigenvalue - exact) < 1e-5 * abs(exact)
        for a, b, p in zip(together[r].vector, alone[r].vector, models[r].parameters()):
            assert a.shape == p.shape and torch.allclose(a, b, atol=1e-6)
    tops = sorted(res.eigenvalue for res in together[:3])
    assert all(b > 1.02 * a for a, b in zip(tops, tops[1:]))


def test_overflowing_loss_gives_nan_not_an_error():
    w = torch.tensor([1e30, -1e30], requires_grad=True)
    res = top_eigenvalue(
        lambda: (w**4).sum() * 1e30, [w], generator=torch.Generator().manual_seed(0), **lanczos()
    )
    assert res.eigenvalue != res.eigenvalue and not res.converged  # NaN


@pytest.mark.parametrize("trained", [False, True], ids=["init", "perturbed"])
def test_parity_closed_form_equals_exact_eigendecomposition(trained):
    # One hidden ReLU layer under the hinge loss: the closed form against eigh of autograd's
    # full Hessian, eigenvalue and eigenvector.
    torch.manual_seed(1)
    kind = get_task("sparse_parity")
    model = kind.make_model({"hidden": [24]}, {"n_bits": 8}).double()
    if trained:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.3)
    x = torch.randint(0, 2, (64, 8)).double() * 2 - 1
    y = x[:, :3].prod(1)
    hessian = _exact_hessian(model, kind.loss, x, y)
    exact = torch.linalg.eigvalsh(hessian)
    res = kind.hessian_top(model, x, y)
    assert res.converged and res.iterations == 0
    assert abs(res.eigenvalue - exact[-1].item()) <= 1e-12 * max(1.0, exact[-1].item())
    assert exact[-1].item() > 1e-3 and abs(exact[0].item() + exact[-1].item()) < 1e-12  # a ± pair
    v = torch.cat([t.reshape(-1) for t in res.vector])
    assert abs(v.norm().item() - 1) < 1e-12
    assert (hessian @ v - res.eigenvalue * v).norm().item() < 1e-10


def test_metrics_stage_uses_the_closed_form_only_where_it_holds():
    from latentstates.measure.extract import checkpoint_hessian

    kind = get_task("sparse_parity")
    cfg = HessianSettings.defaults(tol=1e-6, max_iter=2000, krylov_dim=20)
    torch.manual_seed(2)
    x = torch.randint(0, 2, (64, 8)).double() * 2 - 1
    y = x[:, :3].prod(1)
    one = kind.make_model({"hidden": [24]}, {"n_bits": 8}).double()
    gen = torch.Generator().manual_seed(0)
    auto = checkpoint_hessian(kind, one, x, y, cfg.replace(method="auto"), None, gen)
    lanczos = checkpoint_hessian(kind, one, x, y, cfg.replace(method="lanczos"), None, gen)
    assert auto.iterations == 0 and lanczos.iterations > 0
    assert abs(auto.eigenvalue - lanczos.eigenvalue) < 1e-5 * auto.eigenvalue
    # Two hidden layers: the second derivative through the second layer's ReLU input is not
    # blockwise, so no closed form: Lanczos, checked against the exact Hessian.
    two = kind.make_model({"hidden": [12, 10]}, {"n_bits": 8}).double()
    assert kind.hessian_top(two, x, y) is None
    res = checkpoint_hessian(kind, two, x, y, cfg.replace(method="auto"), None, gen)
    exact = _exact_eigenvalues(two, kind.loss, x, y)[-1].item()
    assert res.iterations > 0 and abs(res.eigenvalue - exact) < 1e-4 * exact


def test_a_metrics_job_batches_its_runs_hessians_only_where_that_can_pay():
    """`batch_runs`: auto batches on a GPU only; never a single run, runs of different models or
    Hessian schedules, a closed form (parities under `method: auto`), or BatchNorm models (their
    replicas run one after another)."""
    import yaml

    from conftest import REPO
    from latentstates.measure.extract import batches_hessians

    paper = yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())["tasks"]
    cfg = HessianSettings.defaults(stride=2, batch_runs=True)

    def runs(task: str, n: int = 2, every: int = 1) -> list[dict]:
        checkpoints = [{"index": i} for i in range(0, 10, every)]
        return [{"spec": paper[task], "seed": s, "checkpoints": checkpoints} for s in range(n)]

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert batches_hessians(runs("modular_addition"), cfg, cpu)
    assert batches_hessians(runs("mnist_mlp"), cfg, cpu)
    assert batches_hessians(runs("modular_addition"), cfg.replace(batch_runs="auto"), cuda)
    assert not batches_hessians(runs("modular_addition"), cfg.replace(batch_runs="auto"), cpu)
    assert not batches_hessians(runs("modular_addition"), cfg.replace(batch_runs=False), cuda)
    assert not batches_hessians(runs("modular_addition"), cfg.replace(enabled=False), cpu)
    assert not batches_hessians(runs("modular_addition", n=1), cfg, cpu)
    assert not batches_hessians(runs("modular_addition") + runs("modular_addition_ln", n=1), cfg, cpu)
    assert not batches_hessians(runs("modular_addition", n=1) + runs("modular_addition", every=3), cfg, cpu)
    assert not batches_hessians(runs("sparse_parity"), cfg, cpu)
    assert batches_hessians(runs("sparse_parity"), cfg.replace(method="lanczos"), cpu)
    assert not batches_hessians(runs("cifar100_resnet18"), cfg, cpu)


def _probes(n: int, seed: int, count: int) -> torch.Tensor:
    """The Rademacher probes `hessian_trace` draws from a generator seeded `seed`."""
    from latentstates.measure.hessian import rademacher

    g = torch.Generator().manual_seed(seed)
    return torch.stack([rademacher(n, g, "cpu", torch.float64) for _ in range(count)])


def test_hutchinson_trace_equals_autograds_full_hessian_probe_by_probe_and_on_average():
    """On a tiny MLP under cross-entropy (float64), each probe's vᵀHv is that of autograd's full
    Hessian to 1e-10; over 4,000 probes the estimate lies within 4 standard errors of the exact
    trace, and the standard error is Hutchinson's: √(2 Σ_{i≠j} H_ij² / probes), to 10 %."""
    from latentstates.measure.hessian import hessian_trace

    torch.manual_seed(0)
    model = MLP([3, 5, 3]).double()
    x, y = torch.randn(30, 3, dtype=torch.float64), torch.randint(0, 3, (30,))
    loss = torch.nn.functional.cross_entropy
    h = _exact_hessian(model, loss, x, y)
    params = list(model.parameters())
    few = hessian_trace(lambda: loss(model(x), y), params, torch.Generator().manual_seed(5), 8)
    v = _probes(len(h), 5, 8)
    assert few.probes == 8
    assert few.trace == pytest.approx(torch.einsum("pi,ij,pj->p", v, h, v).mean().item(), rel=1e-10)
    many = hessian_trace(lambda: loss(model(x), y), params, torch.Generator().manual_seed(6), 4000)
    exact = torch.trace(h).item()
    off = h - torch.diag(torch.diag(h))
    assert abs(many.trace - exact) < 4 * many.se
    assert many.se == pytest.approx((2 * off.square().sum().item() / 4000) ** 0.5, rel=0.1)


def test_hutchinson_trace_is_exact_for_a_diagonal_hessian_and_zero_for_the_parities_hinge():
    """A diagonal Hessian's vᵀHv is its trace for every ±1 probe (no variance); the parities'
    hinge Hessian has a zero diagonal (blocks [[0, g], [g, 0]]: tasks/exact_hessian.py), so its
    trace is 0: autograd's full Hessian says so, and the estimate is within 4 standard errors."""
    from latentstates.measure.hessian import hessian_trace

    w = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64, requires_grad=True)
    a = torch.tensor([0.5, 2.0, -1.0], dtype=torch.float64)
    est = hessian_trace(lambda: (a * w**2).sum(), [w], torch.Generator().manual_seed(0), 5)
    assert est.trace == pytest.approx(2 * a.sum().item(), rel=1e-14) and est.se == pytest.approx(0, abs=1e-14)

    kind = get_task("sparse_parity")
    torch.manual_seed(1)
    model = kind.make_model({"hidden": [6]}, {"n_bits": 10}).double()
    xb = torch.randint(0, 2, (64, 10)).double() * 2 - 1
    yb = xb[:, :3].prod(1)
    h = _exact_hessian(model, kind.loss, xb, yb)
    assert torch.diag(h).abs().max() == 0 and h.abs().max() > 0
    est = hessian_trace(
        lambda: kind.loss(model(xb), yb), list(model.parameters()), torch.Generator().manual_seed(2), 200
    )
    assert abs(est.trace) < 4 * est.se


def test_replicas_traces_together_equal_each_alone():
    """`hessian_traces` over stacked replicas gives each the estimate `hessian_trace` gives it
    alone with the same generator (to rounding); an inactive replica gets nothing, an overflowing
    one NaN, and neither changes the others' probes."""
    from latentstates.measure.hessian import hessian_trace, hessian_traces
    from latentstates.tasks.replicas import Replicas

    loss = torch.nn.functional.cross_entropy
    models, xs, ys = [], [], []
    for r in range(4):
        torch.manual_seed(r)
        models.append(MLP([3, 6, 3]).double())
        xs.append(torch.randn(25, 3, dtype=torch.float64))
        ys.append(torch.randint(0, 3, (25,)))
    with torch.no_grad():
        models[2].layers[1].weight.fill_(1e300)
    alone = [
        hessian_trace(
            lambda m=m, x=x, y=y: loss(m(x), y),
            list(m.parameters()),
            torch.Generator().manual_seed(50 + r),
            20,
        )
        for r, (m, x, y) in enumerate(zip(models, xs, ys))
    ]
    replicas = Replicas(models)
    together = hessian_traces(
        lambda: replicas.map(loss, replicas(torch.stack(xs)), torch.stack(ys)),
        replicas.parameters(),
        [torch.Generator().manual_seed(50 + r) for r in range(4)],
        20,
        active=[True, True, True, False],
    )
    assert together[3] is None
    assert together[2].trace != together[2].trace and alone[2].trace != alone[2].trace  # NaN
    for r in (0, 1):
        assert together[r].trace == pytest.approx(alone[r].trace, rel=1e-10)
        assert together[r].se == pytest.approx(alone[r].se, rel=1e-8)
    assert abs(alone[0].trace - alone[1].trace) > 0.1  # far beyond the rounding: a mix-up fails
