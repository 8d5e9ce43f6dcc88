"""Weight statistics of the paper, per checkpoint (pure functions on tensors)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from latentstates.columns import MATRIX_FEATURES

SINGULAR_VALUE_CUTOFF = 1e-5
# Matrices whose smaller side is at least this get their singular values from the eigenvalues of
# the float64 Gram matrix (W Wᵀ or Wᵀ W), ~8x faster than an SVD for a language model's 768×3072
# (benchmarks/lm_checkpoints.py) and within ~1e-10 relative of it for every value above the cutoff
# (tests/test_metrics.py). Smaller matrices (every default task's) keep the SVD.
GRAM_MIN_SIDE = 256


def matrix_metrics(w: torch.Tensor) -> dict[str, float]:
    """The eight per-matrix statistics of one weight matrix (float64)."""
    if w.ndim != 2:
        raise ValueError(f"expected a matrix, got shape {tuple(w.shape)}")
    return {name: float(values[0]) for name, values in stacked_matrix_metrics(w[None]).items()}


def stacked_matrix_metrics(w: torch.Tensor) -> dict[str, np.ndarray]:
    """The eight statistics of each matrix of a (B, m, n) stack (float64), one SVD call for all."""
    w = w.detach().to("cpu", torch.float64)  # small matrices: float64 on the CPU, any device
    b = len(w)
    out = {name: np.full(b, np.nan) for name in MATRIX_FEATURES}
    finite = torch.isfinite(w).flatten(1).all(dim=1).numpy()
    if not finite.any():  # diverged weights: NaN rather than a failing SVD
        return out
    w = w[torch.from_numpy(finite)]
    l1 = w.abs().sum(dim=(1, 2))
    l2 = torch.linalg.matrix_norm(w, "fro")
    trace = torch.diagonal(w, dim1=1, dim2=2).sum(dim=1)
    sv = singular_values(w)
    spectral = sv.max(dim=1).values
    sv = torch.where(sv < SINGULAR_VALUE_CUTOFF, torch.zeros_like(sv), sv)
    var_sv = sv.var(dim=1, unbiased=True) if sv.shape[1] > 1 else torch.full((len(w),), float("nan"))
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    values = {
        "l1": l1,
        "l2": l2,
        "trace": trace,
        "spectral": spectral,
        "code_sparsity": torch.where(l2 > 0, l1 / l2, nan),
        "computational_sparsity": torch.where(spectral > 0, trace / spectral, nan),
        "mean_lambda": sv.mean(dim=1),
        "variance_lambda": var_sv,
    }
    for name, v in values.items():
        out[name][finite] = v.numpy()
    return out


def singular_values(w: torch.Tensor) -> torch.Tensor:
    """Singular values of each matrix of a float64 (B, m, n) stack, descending: by SVD, or for
    large matrices as the square roots of the Gram matrix's eigenvalues (GRAM_MIN_SIDE)."""
    m, n = w.shape[-2:]
    if min(m, n) < GRAM_MIN_SIDE:
        return torch.linalg.svdvals(w)
    gram = w @ w.mT if m <= n else w.mT @ w
    return torch.linalg.eigvalsh(gram).clamp(min=0).sqrt().flip(-1)


def lower_median(v: np.ndarray) -> float:
    """Median that takes the lower middle value of an even count, as torch.median (the paper's)."""
    return float(np.partition(v, (v.size - 1) // 2)[(v.size - 1) // 2])


def _summary(values: torch.Tensor, prefix: str) -> dict[str, float]:
    v = values.detach().to("cpu", torch.float64).numpy()
    if v.size == 0:
        return {f"mean_{prefix}": np.nan, f"median_{prefix}": np.nan, f"var_{prefix}": np.nan}
    return {
        f"mean_{prefix}": float(v.mean()),
        f"median_{prefix}": lower_median(v),
        f"var_{prefix}": float(v.var(ddof=1)) if v.size > 1 else np.nan,
    }


KERNEL_FEATURES = ["l1", "l2", "code_sparsity"]


def kernel_metrics(k: torch.Tensor) -> dict[str, float]:
    """L1, L2 and L1/L2 of each (out, in) kernel of a convolution weight (out, in, h, w),
    averaged over the kernels (float64), as the released get_tensor_metrics."""
    if k.ndim != 4:
        raise ValueError(f"expected a convolution weight (out, in, h, w), got shape {tuple(k.shape)}")
    k = k.detach().to("cpu", torch.float64)
    if not torch.isfinite(k).all():
        return dict.fromkeys(KERNEL_FEATURES, np.nan)
    l1 = k.abs().sum(dim=(2, 3)).flatten()
    l2 = k.pow(2).sum(dim=(2, 3)).sqrt().flatten()
    return {"l1": float(l1.mean()), "l2": float(l2.mean()), "code_sparsity": float((l1 / l2).mean())}


def weight_metrics(
    matrices: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor],
    kernels: Sequence[torch.Tensor] = (),
) -> dict[str, float]:
    """The 14 paper features: per-matrix statistics averaged over matrices, plus global moments.

    Per-matrix values are averaged without weights; the variance of singular values uses a
    NaN-ignoring mean (a one-row matrix has a single singular value and no variance). Convolution
    `kernels` (out, in, h, w) add their per-kernel L1, L2 and L1/L2 (`kernel_metrics`) to those
    three averages, one value per convolution as per matrix (the released CNN statistics: each
    feature is the mean over the layers that have it); the spectral statistics are the matrices'
    alone. The global mean, median (the lower middle value of an even count, as torch) and
    variance (unbiased) are over all matrix and kernel entries concatenated, and over all biases.
    """
    if not matrices:
        raise ValueError("weight_metrics needs at least one matrix")
    out = _matrix_averages(matrices)
    if kernels:
        per_kernel = [kernel_metrics(k) for k in kernels]
        n = len(matrices)
        for name in KERNEL_FEATURES:
            out[name] = float((out[name] * n + sum(m[name] for m in per_kernel)) / (n + len(per_kernel)))
    weights = [m.detach().reshape(-1) for m in (*matrices, *kernels)]
    out.update(_summary(torch.cat(weights), "w"))
    flat_b = [b.detach().reshape(-1) for b in biases]
    out.update(_summary(torch.cat(flat_b) if flat_b else torch.empty(0), "b"))
    return out


def _matrix_averages(matrices: Sequence[torch.Tensor]) -> dict[str, float]:
    # Same-shape matrices (e.g. every head's keys, queries and values) in one batched SVD.
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, m in enumerate(matrices):
        if m.ndim != 2:
            raise ValueError(f"expected a matrix, got shape {tuple(m.shape)}")
        by_shape.setdefault(tuple(m.shape), []).append(i)
    per = {name: np.empty(len(matrices)) for name in MATRIX_FEATURES}
    for idx in by_shape.values():
        stats = stacked_matrix_metrics(torch.stack([matrices[i].detach() for i in idx]))
        for name in MATRIX_FEATURES:
            per[name][idx] = stats[name]
    out = {}
    for name in MATRIX_FEATURES:
        vals = per[name]
        if name == "variance_lambda":
            out[name] = float(np.nanmean(vals)) if np.isfinite(vals).any() else np.nan
        else:
            out[name] = float(vals.mean())
    return out
