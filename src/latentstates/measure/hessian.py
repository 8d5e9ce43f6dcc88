"""Top Hessian eigenvalue of a loss from power-iteration Hessian-vector products (Lanczos-accelerated)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from latentstates.tasks.exact_hessian import EigenResult

# Below this size a Krylov step has left nothing to explore (e.g. a hinge loss at zero: H = 0).
_ZERO = 1e-12


def _lanczos(hvp, v0: torch.Tensor, tol: float, max_iter: int, krylov_dim: int, min_iter: int):
    """`_lanczos_steps` with its products from `hvp`: (θ, Ritz vector, products, converged)."""
    steps = _lanczos_steps(v0, tol, max_iter, krylov_dim, min_iter)
    try:
        v = next(steps)
        while True:
            v = steps.send(hvp(v))
    except StopIteration as done:
        return done.value


def _lanczos_steps(v0: torch.Tensor, tol: float, max_iter: int, krylov_dim: int, min_iter: int):
    """Restarted Lanczos on the power-iteration sequence v, Hv, H²v, … (full reorthogonalisation).

    Power iteration keeps only the last vector of that sequence; Rayleigh–Ritz over the whole
    Krylov space gives the largest algebraic eigenvalue from the same Hessian-vector products,
    also where ± eigenvalue pairs of equal magnitude make plain power iteration oscillate and
    shifted power iteration crawl. Stops when the top Ritz pair's residual ‖Hy − θy‖ ≤ tol·|θ|;
    restarts from the top Ritz vector every `krylov_dim` products (memory: krylov_dim vectors).
    Any eigenpair satisfies the residual test, so at least `min_iter` products are taken first:
    the Krylov space must grow beyond a warm start before its top Ritz value can be trusted.

    A generator: it yields each vector v whose product Hv it needs and is sent that product, so
    that one caller can drive the iterations of several Hessians with batched products
    (`top_eigenvalues`); it returns (θ, Ritz vector, products, converged).
    """
    v = v0 / v0.norm()
    used, theta, y = 0, 0.0, v
    # The Krylov basis in one matrix, row m the m-th Lanczos vector; sized for a warm start's
    # few products and doubled when a run needs more (up to krylov_dim + 1 rows).
    rows = min(krylov_dim, max_iter) + 1
    q = torch.empty(min(rows, 2 * min_iter + 2), len(v), dtype=v.dtype, device=v.device)
    while used < max_iter:
        q[0] = v
        m, alphas, betas = 1, [], []
        for _ in range(min(krylov_dim, max_iter - used)):
            w = yield q[m - 1]
            used += 1
            alphas.append(torch.dot(w, q[m - 1]).item())
            basis = q[:m]
            before = w.norm()
            w = w - basis.T @ (basis @ w)
            beta = w.norm().item()
            if beta < 0.7 * before.item():  # cancellation: once more ("twice is enough")
                w = w - basis.T @ (basis @ w)
                beta = w.norm().item()
            if not (math.isfinite(alphas[-1]) and math.isfinite(beta)):
                # Overflowing curvature (a diverging run): there is no eigenvalue to report.
                return float("nan"), q[m - 1].clone(), used, False
            # The m × m tridiagonal matrix is tiny: NumPy's eigh without torch's per-call cost.
            t = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
            evals, evecs = np.linalg.eigh(t)
            theta, s = float(evals[-1]), evecs[:, -1]
            # The residual bounds the Ritz value's error whatever the gap to the next eigenvalue
            # (the gap-based bound r²/gap, with the Ritz gap for the unknown one, stopped early
            # on the clustered top of the parity Hessian: wrong by > 1e-3 at half its checkpoints).
            residual = beta * abs(s[-1])
            if beta < _ZERO or (used >= min_iter and residual <= tol * max(abs(theta), _ZERO)):
                return theta, _ritz_vector(basis, s), used, True
            betas.append(beta)
            if m == len(q):
                q = torch.cat([q, torch.empty_like(q)])[:rows]
            q[m] = w / beta
            m += 1
        y = _ritz_vector(q[: m - 1], s)
        v = y / y.norm()
    return theta, y, used, False


def _ritz_vector(basis: torch.Tensor, s: np.ndarray) -> torch.Tensor:
    """The Ritz vector Σ_i s_i q_i of the Krylov basis's rows q_i."""
    return basis.T @ torch.from_numpy(s).to(basis.device, basis.dtype)


def top_eigenvalue(
    loss_fn: Callable[[], torch.Tensor],
    params: Sequence[torch.Tensor],
    init: Sequence[torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
    *,
    tol: float,
    max_iter: int,
    krylov_dim: int,
    min_iter: int,
) -> EigenResult:
    """Largest eigenvalue of the Hessian of `loss_fn()` with respect to `params`.

    The gradient graph is built once and reused for every Hessian-vector product (double
    backprop); `max_iter` caps the products. `init` warm-starts the iteration, e.g. with the
    previous checkpoint's eigenvector: it is mixed with a random vector (weight 1/2), so that a top
    eigenvector that has rotated away from it, or a new eigenvalue that has overtaken it, is found.
    """
    params = list(params)
    loss = loss_fn()
    if not torch.isfinite(loss):
        return EigenResult(float("nan"), [torch.zeros_like(p) for p in params], 0, False)
    hvp, split, dtype = _products(loss, params, ())
    v0 = _start(sum(p.numel() for p in params), init, generator, params[0].device, dtype)
    theta, y, used, ok = _lanczos(hvp, v0, tol, max_iter, krylov_dim, min(min_iter, max_iter))
    return EigenResult(float(theta), [x.detach() for x in split(y / y.norm())], used, ok)


def top_eigenvalues(
    losses_fn: Callable[[], torch.Tensor],
    params: Sequence[torch.Tensor],
    inits: Sequence[Sequence[torch.Tensor] | None],
    generators: Sequence[torch.Generator | None],
    *,
    tol: float,
    max_iter: int,
    krylov_dim: int,
    min_iter: int,
    active: Sequence[bool] | None = None,
) -> list[EigenResult | None]:
    """`top_eigenvalue` of each of R replicas at once, with one batched product for all.

    `params` are stacked, of shape (R, ...) (`replicas.Replicas`), and `losses_fn()` gives the
    replicas' losses, shape (R,), replica r's a function of its slices `p[r]` alone: the Hessian
    of their sum is block-diagonal, so one product of it with the stacked vectors is every
    replica's own product. Replica r runs the iteration `top_eigenvalue` would run with
    `inits[r]` and `generators[r]` (same start, same steps, same stopping rule) and stops on its
    own; until the last one stops the others are sent zero vectors. The products differ from a
    replica's alone only by rounding (batched instead of single matrix products). Pays where a
    product is bound by kernel launches rather than arithmetic (small models on a GPU).
    Replicas with `active[r]` False are left out (no product, no random draw): None.
    """
    params = list(params)
    losses, active, finite, (hvp, split, dtype) = _stacked_products(losses_fn, params, active)
    n, device = sum(p[0].numel() for p in params), params[0].device
    results: list[EigenResult | None] = [None] * len(losses)
    steps, wanted = {}, {}
    for r in active.nonzero()[:, 0].tolist():
        if not finite[r]:  # overflowing loss: as `top_eigenvalue`
            results[r] = EigenResult(float("nan"), [torch.zeros_like(p[r]) for p in params], 0, False)
            continue
        v0 = _start(n, inits[r], generators[r], device, dtype)
        steps[r] = _lanczos_steps(v0, tol, max_iter, krylov_dim, min(min_iter, max_iter))
        wanted[r] = next(steps[r])
    while wanted:
        stacked = torch.zeros(len(losses), n, dtype=dtype, device=device)
        for r, v in wanted.items():
            stacked[r] = v
        products = hvp(stacked)
        for r in list(wanted):
            try:
                wanted[r] = steps[r].send(products[r])
            except StopIteration as done:
                theta, y, used, ok = done.value
                del wanted[r]
                results[r] = EigenResult(float(theta), [x.detach() for x in split(y / y.norm())], used, ok)
    return results


@dataclass(frozen=True)
class TraceEstimate:
    """Hutchinson's estimate of the Hessian's trace: the mean of vᵀHv over `probes` Rademacher
    vectors v, and its standard error (their standard deviation over √probes)."""

    trace: float
    se: float
    probes: int

    @classmethod
    def of(cls, values: Sequence[float]) -> TraceEstimate:
        v = np.asarray(values, dtype=float)
        if len(v) == 0 or not np.isfinite(v).all():
            return cls(float("nan"), float("nan"), len(v))
        se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")
        return cls(float(v.mean()), se, len(v))


def rademacher(n: int, generator: torch.Generator | None, device, dtype) -> torch.Tensor:
    """A vector of n independent ±1 entries, each sign drawn from `generator` (on the CPU)."""
    return (torch.randint(0, 2, (n,), generator=generator) * 2 - 1).to(device, dtype)


def hessian_trace(
    loss_fn: Callable[[], torch.Tensor],
    params: Sequence[torch.Tensor],
    generator: torch.Generator | None,
    probes: int,
) -> TraceEstimate:
    """Hutchinson's estimator of tr(H), H the Hessian of `loss_fn()` in `params`: E[vᵀHv] = tr(H)
    for v with independent ±1 entries (Hutchinson 1990), `probes` Hessian-vector products from one
    gradient graph. Its variance is 2 Σ_{i≠j} H_ij² / probes: exact for a diagonal Hessian."""
    params = list(params)
    loss = loss_fn()
    if not torch.isfinite(loss):
        return TraceEstimate.of([float("nan")])
    hvp, _, dtype = _products(loss, params, ())
    n = sum(p.numel() for p in params)
    values = []
    for _ in range(probes):
        v = rademacher(n, generator, params[0].device, dtype)
        values.append(torch.dot(v.double(), hvp(v).double()).item())
    return TraceEstimate.of(values)


def hessian_traces(
    losses_fn: Callable[[], torch.Tensor],
    params: Sequence[torch.Tensor],
    generators: Sequence[torch.Generator | None],
    probes: int,
    active: Sequence[bool] | None = None,
) -> list[TraceEstimate | None]:
    """`hessian_trace` of each of R stacked replicas (as `top_eigenvalues`: `params` of shape
    (R, ...), `losses_fn()` the replicas' losses), each with its own generator's probes, every
    probe's products one batched product of the block-diagonal Hessian of their sum; the values
    are each replica's alone up to rounding. None for replicas with `active[r]` False."""
    params = list(params)
    losses, active, finite, (hvp, _, dtype) = _stacked_products(losses_fn, params, active)
    n, device = sum(p[0].numel() for p in params), params[0].device
    mine = [r for r in range(len(losses)) if active[r] and finite[r]]
    values: dict[int, list[float]] = {r: [] for r in mine}
    for _ in range(probes if mine else 0):
        stacked = torch.zeros(len(losses), n, dtype=dtype, device=device)
        for r in mine:
            stacked[r] = rademacher(n, generators[r], device, dtype)
        products = (stacked.double() * hvp(stacked).double()).sum(dim=1)
        for r in mine:
            values[r].append(products[r].item())
    out: list[TraceEstimate | None] = [None] * len(losses)
    for r in range(len(losses)):
        if active[r]:
            out[r] = TraceEstimate.of(values[r]) if r in values else TraceEstimate.of([float("nan")])
    return out


def _stacked_products(losses_fn: Callable[[], torch.Tensor], params: list[torch.Tensor], active):
    """The replicas' losses, which are active (all where `active` is None) and finite, and the
    Hessian-vector products (`_products`) of the sum of the active, finite ones: the stacked
    replicas' block-diagonal Hessian."""
    losses = losses_fn()
    active = torch.ones(len(losses), dtype=torch.bool) if active is None else torch.tensor(list(active))
    finite = torch.isfinite(losses).cpu()
    summed = torch.where((finite & active).to(losses.device), losses, torch.zeros_like(losses)).sum()
    return losses, active, finite, _products(summed, params, (len(losses),))


def _products(loss: torch.Tensor, params: list[torch.Tensor], lead: tuple[int, ...]):
    """Hessian-vector products of `loss` in `params` from one gradient graph (double backprop).

    Vectors are flat over the parameters, with the leading dimensions `lead` of stacked
    replicas (() for one model). Returns (hvp, split: flat → per-parameter tensors, the vectors'
    dtype); `split` takes any leading dimensions (all replicas' vectors, or one replica's).
    """
    # A parameter the loss does not use (e.g. a ResNet's downsample path without residuals)
    # gets a zero gradient; a gradient that is constant in the parameters (e.g. an output bias
    # under a hinge loss) has no graph: the Hessian rows of both are zero.
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True, materialize_grads=True)
    live = [i for i, g in enumerate(grads) if g.requires_grad]
    sizes = [p.shape[len(lead) :].numel() for p in params]

    # The Krylov basis in the parameters' dtype (float32 for a float32 model: half the memory
    # traffic of float64 and no conversion per product; the tridiagonal problem is float64).
    dtypes = {p.dtype for p in params}
    dtype = params[0].dtype if len(dtypes) == 1 else torch.float64

    def split(flat: torch.Tensor) -> list[torch.Tensor]:
        parts = torch.split(flat, sizes, dim=-1)
        return [x.reshape(*flat.shape[:-1], *p.shape[len(lead) :]).to(p.dtype) for x, p in zip(parts, params)]

    def hvp(flat: torch.Tensor) -> torch.Tensor:
        if not live:
            return torch.zeros_like(flat)
        v = split(flat)
        hv = torch.autograd.grad(
            [grads[i] for i in live],
            params,
            grad_outputs=[v[i] for i in live],
            retain_graph=True,
            allow_unused=True,
            materialize_grads=True,
        )
        return torch.cat([h.reshape(*lead, -1) for h in hv], dim=-1).to(dtype)

    return hvp, split, dtype


def _start(n: int, init, generator, device, dtype) -> torch.Tensor:
    """The iteration's start: a random unit vector (float32 draws from `generator`), plus the
    unit warm-start vector `init` where there is one (the random part then weighs 1/2)."""
    v0 = torch.randn(n, generator=generator).to(device, dtype)
    v0 = v0 / v0.norm()
    if init is not None:
        warm = torch.cat([x.detach().reshape(-1) for x in init]).to(device, dtype)
        v0 = warm / warm.norm() + 0.5 * v0
    return v0
