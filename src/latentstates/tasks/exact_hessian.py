"""Exact Hessians a task knows in closed form, and the eigenpair type every Hessian method returns.

A task whose model's loss Hessian has a closed form gives it here (`Task.hessian_top`); the
measure stage (`latentstates.measure.hessian`) iterates for every other model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class EigenResult:
    """Largest (algebraic) eigenpair of the Hessian."""

    eigenvalue: float
    vector: list[torch.Tensor]
    iterations: int
    converged: bool


def one_hidden_relu_piecewise_linear_top(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss_grad
) -> EigenResult | None:
    """Exact top eigenpair of the loss Hessian of a one-hidden-layer ReLU MLP with one output
    under a loss that is piecewise linear in the output (the parities' hinge loss); None for any
    other model (`models.MLP` with more layers or outputs).

    With f(x) = Σ_j v_j relu(w_j·x + b_j) + c and a loss whose second derivative in f vanishes,
    the only nonzero second derivatives are ∂²L/∂v_j∂(w_j, b_j) = g_j, where
    g_j = Σ_n L'(f_n) 1[w_j·x_n + b_j > 0] (x_n, 1): the Hessian is a direct sum over hidden units
    of blocks [[0, g_jᵀ], [g_j, 0]], whose eigenvalues are ±‖g_j‖ and 0. Its top eigenvalue is
    max_j ‖g_j‖, with eigenvector (1, g_j/‖g_j‖)/√2 on unit j's parameters: one pass over the
    batch instead of tens of Hessian-vector products, and no ± pair to confuse an iteration.
    Autograd's Hessian is the same matrix (the ReLU's and the hinge's derivatives are piecewise
    constant), which the tests check against an exact eigendecomposition.
    """
    layers = getattr(model, "layers", None)
    if layers is None or len(layers) != 2 or layers[1].out_features != 1:
        return None
    hidden, out = layers
    with torch.no_grad():
        inputs = model.input(x) if hasattr(model, "input") else x
        pre = hidden(inputs)
        delta = loss_grad(out(torch.relu(pre)), y).squeeze(-1)  # dL/df_n, (batch,)
        weights = (pre > 0).to(inputs.dtype) * delta[:, None]  # (batch, hidden)
        g_w = weights.T.double() @ inputs.double()  # (hidden, inputs)
        g_b = weights.double().sum(0)
        norms = (g_w.square().sum(1) + g_b.square()).sqrt()
        j = int(norms.argmax())
        top = norms[j].item()
        v = {p: torch.zeros_like(p, dtype=torch.float64) for p in model.parameters()}
        if top > 0:
            scale = 1 / math.sqrt(2)
            v[out.weight][0, j] = scale
            v[hidden.weight][j] = g_w[j] / top * scale
            v[hidden.bias][j] = g_b[j] / top * scale
        else:  # H = 0: any unit vector
            v[out.bias][0] = 1.0
    return EigenResult(top, [t.to(p.dtype) for p, t in v.items()], 0, True)
