"""The local learning coefficient (LLC) of a checkpoint, estimated by SGLD (pure torch functions).

The estimator of singular learning theory as the devinterp library computes it (Lau et al. 2023),
so that numbers are comparable: with n training examples, nβ = n / log n by default and w* the
checkpoint's weights,

    λ̂ = nβ · (E_w[L_n(w)] − L_n(w*)),

the expectation over the localized tempered posterior ∝ exp(−nβ L_n(w) − (γ/2)‖w − w*‖²),
sampled by stochastic-gradient Langevin dynamics on minibatch losses L_m:

    Δw = −(ε/2) (nβ ∇L_m(w) + γ (w − w*)) + √ε N(0, I).

E_w[L_n] is the mean of the minibatch losses after burn-in (each step's loss, at the weights the
step starts from); L_n(w*) the mean over several minibatches (one batch would give correlated
chains and a falsely small spread). Each chain gives one λ̂; the estimate is their mean, with the
standard error over chains.

Batched as the rest of the workflow: the update is elementwise, so every run of a seed group and
every chain of every run are one replica dimension R of stacked parameters (`tasks.replicas`),
one batched gradient per step for all of them. A replica's chain depends only on its own
generator draws, which are taken per replica in a fixed order: a replica's chain is the same in
any group (tests: batched equals one at a time).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

# Each replica draws its noise for this many parameters' worth of steps at once (fewer, larger
# draws from its generator; the block depends on the model only, so a replica's stream is the
# same in any group).
NOISE_BLOCK_VALUES = 1 << 20

# Chains whose last tenth of losses lies below the checkpoint's own loss (or whose mean does: a
# negative λ̂) found lower loss nearby: the checkpoint is not at a local minimum and λ̂ is not an
# LLC (devinterp's guidance); it is flagged and reported as NaN.
TAIL_SHARE = 0.1


def default_nbeta(n: int) -> float:
    """nβ = n / log n, the inverse temperature of the WBIC (devinterp's default)."""
    if n < 2:
        raise ValueError(f"the LLC needs at least 2 training examples, got {n}")
    return n / math.log(n)


@dataclass(frozen=True)
class LLCEstimate:
    """One checkpoint's estimate: λ̂ (mean over chains) and its standard error, each chain's λ̂,
    the checkpoint's loss L_n(w*), each chain's loss trace (every step, burn-in included) and
    whether the chains ended below the checkpoint's loss (then `llc` is NaN: not a minimum)."""

    llc: float
    se: float
    chains: np.ndarray
    init_loss: float
    trace: np.ndarray
    not_minimum: bool


class Minibatches:
    """Per replica, minibatches of example indices drawn as a shuffled data loader draws them: a
    permutation of 0..n-1 per replica, walked in batches of `size` (the last incomplete batch
    dropped), a new one after each pass; replica r's draws use its own generator only.
    `size` ≥ n: the full batch every step (None)."""

    def __init__(self, n: int, size: int, generators: Sequence[torch.Generator], device: torch.device):
        self.n, self.size, self.generators, self.device = n, min(size, n), generators, device
        self.full = size >= n
        self.perms: torch.Tensor | None = None
        self.pos = 0

    def next(self) -> torch.Tensor | None:
        if self.full:
            return None
        if self.perms is None or self.pos + self.size > self.n:
            self.perms = torch.stack([torch.randperm(self.n, generator=g) for g in self.generators])
            self.perms = self.perms.to(self.device)
            self.pos = 0
        idx = self.perms[:, self.pos : self.pos + self.size]
        self.pos += self.size
        return idx


def sgld_traces(
    loss_and_grads: Callable[[torch.Tensor | None], torch.Tensor],
    params: Sequence[torch.Tensor],
    n: int,
    *,
    epsilon: float,
    gamma: float,
    nbeta: float,
    steps: int,
    batch_size: int,
    generators: Sequence[torch.Generator],
    bounding_box: float | None = None,
    masks: Sequence[torch.Tensor | None] | None = None,
) -> torch.Tensor:
    """Run SGLD from the current values of the stacked `params` (R replicas along dim 0, each at
    its w*) for `steps` steps; returns the (R, steps) minibatch losses, each at the weights its
    step starts from. `loss_and_grads(idx)` gives the R losses on the minibatches `idx` (R, m) of
    example indices (None: the full batch) and leaves each replica's gradient in `.grad`.

    `generators`: one per replica, for its minibatches and its noise (drawn on the CPU, so that a
    replica's chain is the same on any device and in any group). `masks`: per parameter, where
    it may move (1) or stays at w* (0), broadcastable to the parameter; None: everywhere.
    `bounding_box`: each weight kept within w* ± the box (devinterp's option)."""
    device = params[0].device
    replicas = len(generators)
    anchor = [p.detach().clone() for p in params]
    masks = list(masks) if masks is not None else [None] * len(params)
    batches = Minibatches(n, batch_size, generators, device)
    losses = torch.empty(replicas, steps, dtype=torch.float64)
    scale = math.sqrt(epsilon)
    # The update w ← w − (ε/2)(nβ ∇L_m + γ(w − w*)) + √ε ξ, as (1 − εγ/2) w − (εnβ/2) ∇L_m + √ε ξ
    # + (εγ/2) w*: four in-place passes over the weights, no temporaries.
    shrink, pull = 1 - epsilon * gamma / 2, [w0 * (epsilon * gamma / 2) for w0 in anchor]
    sizes = [p[0].numel() for p in params]
    block = max(1, min(64, NOISE_BLOCK_VALUES // sum(sizes)))
    drawn = torch.empty(replicas, min(block, steps), sum(sizes), dtype=params[0].dtype)
    for t in range(steps):
        idx = batches.next()
        step_losses = loss_and_grads(idx)
        losses[:, t] = step_losses.detach().to("cpu", torch.float64)
        if t % block == 0:  # each replica's noise for the next `block` steps, from its own generator
            ahead = min(block, steps - t)
            for r, g in enumerate(generators):
                drawn[r, :ahead].normal_(generator=g)
            on_device = drawn.to(device)
        noises = on_device[:, t % block].split(sizes, dim=1)
        with torch.no_grad():
            for p, w0, w0_pull, mask, noise in zip(params, anchor, pull, masks, noises):
                noise = noise.reshape(p.shape)
                moved = p if mask is None else p.clone()
                moved.mul_(shrink).add_(p.grad, alpha=-epsilon * nbeta / 2)
                moved.add_(noise, alpha=scale).add_(w0_pull)
                if mask is not None:  # masked weights stay; the others move as without a mask
                    torch.where(mask != 0, moved, p, out=p)
                if bounding_box is not None:
                    torch.maximum(p, w0 - bounding_box, out=p)
                    torch.minimum(p, w0 + bounding_box, out=p)
    return losses


def llc_estimates(
    traces: torch.Tensor,
    init_losses: Sequence[float],
    chains: int,
    burn_in: int,
    nbeta: float,
) -> list[LLCEstimate]:
    """Per run, the estimate from its chains' loss traces: `traces` (runs × chains, steps) with
    run r's chains at rows r·chains … r·chains + chains − 1; `init_losses` each run's L_n(w*)."""
    out = []
    for r, init in enumerate(init_losses):
        full = traces[r * chains : (r + 1) * chains].numpy()
        trace = full[:, burn_in:]
        per_chain = nbeta * (trace.mean(axis=1) - init)
        tail = trace[:, -max(1, int(round(trace.shape[1] * TAIL_SHARE))) :]
        finite = np.isfinite(per_chain).all()
        not_minimum = bool(finite and (tail.mean() < init or per_chain.mean() < 0))
        llc = float(per_chain.mean()) if finite and not not_minimum else np.nan
        se = float(per_chain.std(ddof=1) / math.sqrt(chains)) if chains > 1 and np.isfinite(llc) else np.nan
        out.append(LLCEstimate(llc, se, per_chain, float(init), full, not_minimum))
    return out


def expected_quadratic_llc(eigenvalues: Sequence[float], epsilon: float, gamma: float, nbeta: float) -> float:
    """The exact expectation of the estimator on L = L* + ΔᵀHΔ with H's `eigenvalues`, full
    batch, at SGLD's stationary distribution: Σ nβ s ε / (a (2 − a)), a = ε (nβ s + γ/2), which
    tends to d/2 as ε → 0 with γ = 0 (each direction is an AR(1) process x ← (1 − a) x + √ε ξ
    of variance ε / (a (2 − a)), and E[L − L*] = Σ s · variance)."""
    total = 0.0
    for s in eigenvalues:
        a = epsilon * (nbeta * s + gamma / 2)
        if not 0 < a < 2:
            raise ValueError(f"SGLD diverges or stands still at this step: a = {a:g} (needs 0 < a < 2)")
        total += nbeta * s * epsilon / (a * (2 - a))
    return total


def aoyagi_watanabe_rrr(m: int, h: int, n: int) -> float:
    """The learning coefficient of reduced-rank regression x (m) → h → y (n) at a true map of
    rank 0 (Aoyagi and Watanabe 2005), as devinterp's rrr_test: cases by m, h, n."""
    if m + h < n:
        return m * h / 2
    if n + h < m:
        return h * n / 2
    if m + n < h:
        return m * n / 2
    odd = (m + h + n) % 2
    return (odd + 2 * m * n + 2 * h * n + 2 * m * h - n * n - m * m - h * h) / 8
