import torch
from torch.func import functional_call

from latentstates.hessian import top_eigenvalue
from latentstates.models import MLP
from latentstates.tasks import get_task


def _exact_eigenvalues(model, loss_of_output, x, y):
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def f(theta):
        parts = torch.split(theta, sizes)
        params = {n: p.reshape(s) for n, p, s in zip(names, parts, shapes)}
        return loss_of_output(functional_call(model, params, (x,)), y)

    return torch.linalg.eigvalsh(torch.autograd.functional.hessian(f, flat))


def test_top_eigenvalue_matches_full_hessian_cross_entropy():
    torch.manual_seed(0)
    model = MLP([3, 5, 2]).double()
    x, y = torch.randn(20, 3, dtype=torch.float64), torch.randint(0, 2, (20,))
    loss = torch.nn.functional.cross_entropy
    exact = _exact_eigenvalues(model, loss, x, y)[-1].item()
    res = top_eigenvalue(
        lambda: loss(model(x), y),
        list(model.parameters()),
        tol=1e-6,
        max_iter=5000,
        generator=torch.Generator().manual_seed(0),
    )
    assert res.converged
    assert abs(res.eigenvalue - exact) / abs(exact) < 1e-3


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
        tol=1e-6,
        max_iter=20000,
        generator=torch.Generator().manual_seed(0),
    )
    assert res.converged
    assert abs(res.eigenvalue - ev[-1].item()) / abs(ev[-1].item()) < 1e-3


def test_warm_start_converges_faster():
    torch.manual_seed(1)
    model = MLP([3, 8, 3]).double()
    x, y = torch.randn(30, 3, dtype=torch.float64), torch.randint(0, 3, (30,))
    loss = lambda: torch.nn.functional.cross_entropy(model(x), y)  # noqa: E731
    params = list(model.parameters())
    cold = top_eigenvalue(loss, params, tol=1e-6, max_iter=5000, generator=torch.Generator().manual_seed(0))
    warm = top_eigenvalue(loss, params, init=cold.vector, tol=1e-6, max_iter=5000)
    assert warm.iterations < cold.iterations
    assert abs(warm.eigenvalue - cold.eigenvalue) < 1e-6 * abs(cold.eigenvalue) + 1e-9


def test_warm_start_on_a_stale_eigenvector_still_finds_the_top():
    # Quadratic loss ½ θᵀAθ: the Hessian is A. Start exactly on the eigenvector of the second
    # largest eigenvalue, as when another eigenvalue overtakes the previous checkpoint's top one.
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(30, 30, generator=g, dtype=torch.float64))
    evals = torch.linspace(-2.0, 1.0, 30, dtype=torch.float64)
    evals[-2] = 0.99
    a = q @ torch.diag(evals) @ q.T
    theta = torch.randn(30, dtype=torch.float64, requires_grad=True)
    res = top_eigenvalue(
        lambda: 0.5 * theta @ a @ theta,
        [theta],
        init=[q[:, -2].clone()],
        tol=1e-8,
        max_iter=500,
        generator=torch.Generator().manual_seed(1),
    )
    assert res.converged
    assert abs(res.eigenvalue - 1.0) < 1e-6
    assert abs(torch.dot(res.vector[0], q[:, -1]).abs().item() - 1.0) < 1e-4


def test_overflowing_loss_gives_nan_not_an_error():
    w = torch.tensor([1e30, -1e30], requires_grad=True)
    res = top_eigenvalue(lambda: (w**4).sum() * 1e30, [w], generator=torch.Generator().manual_seed(0))
    assert res.eigenvalue != res.eigenvalue and not res.converged  # NaN
