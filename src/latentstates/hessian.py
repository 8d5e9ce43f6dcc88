"""Top Hessian eigenvalue of a loss by power iteration on Hessian-vector products."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

# Below this spectral radius the Hessian is numerically zero (e.g. a hinge loss at zero).
_ZERO_RADIUS = 1e-12


@dataclass
class EigenResult:
    """Largest (algebraic) eigenpair found by power iteration."""

    eigenvalue: float
    vector: list[torch.Tensor]
    iterations: int
    converged: bool


def _dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(a, b))


def _normalise(v: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    norm = torch.sqrt(_dot(v, v))
    return [x / norm for x in v]


def _power(hvp, v, shift, tol, max_iter):
    """Power iteration on H + shift·I; stops when ‖Hv − λv‖ ≤ tol·|λ| (λ the Rayleigh quotient)."""
    lam, radius = 0.0, 0.0
    for it in range(1, max_iter + 1):
        hv = hvp(v)
        lam = _dot(hv, v).item()
        radius = max(radius, torch.sqrt(_dot(hv, hv)).item())
        if radius < _ZERO_RADIUS:
            return 0.0, v, it, True, radius
        residual = torch.sqrt(sum(((h - lam * x) ** 2).sum() for h, x in zip(hv, v))).item()
        if residual <= tol * max(abs(lam), _ZERO_RADIUS):
            return lam, v, it, True, radius
        v = _normalise([h + shift * x for h, x in zip(hv, v)])
    return lam, v, max_iter, False, radius


def top_eigenvalue(
    loss_fn: Callable[[], torch.Tensor],
    params: Sequence[torch.Tensor],
    init: Sequence[torch.Tensor] | None = None,
    tol: float = 1e-3,
    max_iter: int = 100,
    generator: torch.Generator | None = None,
) -> EigenResult:
    """Largest eigenvalue of the Hessian of `loss_fn()` with respect to `params`.

    Plain power iteration finds the eigenvalue of largest magnitude. When that one is negative,
    or the iteration does not settle (a ± pair of equal magnitude, common in ReLU networks),
    a second power iteration on H + ρI (ρ the spectral radius seen) finds the largest one.
    The gradient graph is built once and reused for every Hessian-vector product; `init`
    warm-starts the iteration, e.g. with the previous checkpoint's eigenvector.
    """
    params = list(params)
    grads = torch.autograd.grad(loss_fn(), params, create_graph=True)
    # A gradient that is constant in the parameters (e.g. an output bias under a hinge loss)
    # has no graph: its Hessian rows are zero.
    live = [i for i, g in enumerate(grads) if g.requires_grad]

    def hvp(v: list[torch.Tensor]) -> list[torch.Tensor]:
        if not live:
            return [torch.zeros_like(x) for x in v]
        return list(
            torch.autograd.grad(
                [grads[i] for i in live],
                params,
                grad_outputs=[v[i] for i in live],
                retain_graph=True,
                allow_unused=True,
                materialize_grads=True,
            )
        )

    if init is None:
        v = [torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device) for p in params]
    else:
        v = [x.detach().to(p.device, p.dtype).clone() for x, p in zip(init, params)]
    v0 = _normalise(v)
    # A short first stage: enough to settle a well-separated positive top eigenvalue and to
    # estimate the spectral radius; ± pairs (exact in a one-hidden-layer ReLU net under a
    # piecewise-linear loss) never settle there, so the shifted stage gets the full budget.
    lam, v, iters, ok, radius = _power(hvp, v0, 0.0, tol, max(10, max_iter // 4))
    if not (ok and lam >= 0):
        # Restart from v0: the first stage may have converged onto a negative eigenvector,
        # which has (numerically) no component along the one we want.
        lam, v, more, ok, _ = _power(hvp, v0, radius, tol, max_iter)
        iters += more
    return EigenResult(float(lam), [x.detach() for x in v], iters, ok)
