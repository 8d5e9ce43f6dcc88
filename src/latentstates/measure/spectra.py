"""The spectra behind the weight statistics (pure functions): a stack of matrices' singular
values, by SVD or from the Gram matrix's eigenvalues, and the power-law exponent alpha of a
matrix's eigenvalues as weightwatcher fits it."""

from __future__ import annotations

import numpy as np
import torch
from scipy.linalg import eigvalsh
from threadpoolctl import ThreadpoolController

# Matrices whose smaller side is at least this get their singular values from the eigenvalues of
# the float64 Gram matrix (W Wᵀ or Wᵀ W), ~8x faster than an SVD for a language model's 768×3072
# (benchmarks/lm_checkpoints.py) and within ~1e-10 relative of it for every value above the cutoff
# (tests/test_metrics.py). Smaller matrices (every default task's) keep the SVD.
GRAM_MIN_SIDE = 256
# numpy's and scipy's BLAS (loaded by the imports above), held to one thread for the Gram path:
# OpenBLAS's second thread makes these products and eigenvalue problems ~2x slower on 2 cores.
_BLAS = ThreadpoolController()


# The power-law exponent alpha of a matrix's eigenvalue spectrum as weightwatcher 0.7.7 fits it:
# the eigenvalues of WᵀW above 1e-5, at least 8 of them (fewer: NaN, weightwatcher skips the
# layer), the bias-corrected estimate below 20 of them (its small-n fit).
ALPHA_EVALS_THRESH = 1e-5
ALPHA_MIN_EVALS = 8
ALPHA_SMALL_N = 20


def power_law_alpha(sv: np.ndarray) -> float:
    """weightwatcher's alpha of the eigenvalues σ² of one matrix (`sv` its singular values): for
    each candidate xmin among the sorted eigenvalues x, the maximum-likelihood exponent of a
    power law on the tail x ≥ xmin, 1 + n / Σ log(x / xmin) (Clauset, Shalizi and Newman 2009;
    n − 1 in the numerator below ALPHA_SMALL_N eigenvalues, with tails of at least 8), and the
    exponent of the xmin whose fit has the smallest Kolmogorov-Smirnov distance to the tail."""
    evals = np.sort(np.asarray(sv, dtype=np.float64) ** 2)
    x = evals[evals > ALPHA_EVALS_THRESH]
    total = len(x)
    if total < ALPHA_MIN_EVALS:
        return float("nan")
    small = total < ALPHA_SMALL_N
    logs = np.log(x)
    n = (total - np.arange(total - 1)).astype(float)
    s = np.cumsum(logs[::-1])[::-1][:-1] - n * logs[:-1]  # Σ log(x_j / x_i) over the tail j ≥ i
    usable = (n >= 8) & (s > 1e-12) if small else np.ones(total - 1, dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        alphas = np.where(usable, 1 + (n - 1 if small else n) / s, 0.0)
    distances = np.ones(total - 1)
    for i in np.flatnonzero(usable & (alphas > 1)):
        fit = 1 - (x[i:] / x[i]) ** (1 - alphas[i])
        distances[i] = np.abs(fit - np.arange(n[i]) / n[i]).max()
    return float(alphas[int(np.argmin(distances))])


def singular_values(w: torch.Tensor, lapack: str | None = None) -> torch.Tensor:
    """Singular values of each matrix of a float64 (B, m, n) stack, descending: by SVD, or for
    large matrices as the square roots of the Gram matrix's eigenvalues (GRAM_MIN_SIDE), by
    `lapack` "scipy" (the CPU's default) or "torch" (any device's)."""
    m, n = w.shape[-2:]
    if min(m, n) < GRAM_MIN_SIDE:
        return torch.linalg.svdvals(w)
    if (lapack or ("scipy" if w.device.type == "cpu" else "torch")) == "scipy":
        # numpy's A Aᵀ is one symmetric rank-k product, and scipy's eigvalsh on OpenBLAS with one
        # thread: together ~1.5x faster than torch's on this project's CPUs, same accuracy.
        with _BLAS.limit(limits=1, user_api="blas"):
            eig = np.stack(
                [
                    eigvalsh(a @ a.T if m <= n else a.T @ a, check_finite=False, driver="evd")
                    for a in w.numpy()
                ]
            )
        return torch.from_numpy(np.sqrt(np.clip(eig, 0, None))[:, ::-1].copy())
    gram = w @ w.mT if m <= n else w.mT @ w
    return torch.linalg.eigvalsh(gram).clamp(min=0).sqrt().flip(-1)
