"""Weight statistics of the paper, per checkpoint (pure functions on tensors)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

# The 14 HMM features of the paper, in its order.
PAPER_FEATURES = [
    "l1",
    "l2",
    "trace",
    "spectral",
    "code_sparsity",
    "computational_sparsity",
    "mean_lambda",
    "variance_lambda",
    "mean_w",
    "median_w",
    "var_w",
    "mean_b",
    "median_b",
    "var_b",
]
MATRIX_FEATURES = PAPER_FEATURES[:8]
PERFORMANCE_COLUMNS = ["train_loss", "train_acc", "eval_loss", "eval_acc"]
SINGULAR_VALUE_CUTOFF = 1e-5


def matrix_metrics(w: torch.Tensor) -> dict[str, float]:
    """The eight per-matrix statistics of one weight matrix (float64)."""
    w = w.detach().to(torch.float64)
    if w.ndim != 2:
        raise ValueError(f"expected a matrix, got shape {tuple(w.shape)}")
    if not torch.isfinite(w).all():  # a diverged run: report NaN rather than fail in the SVD
        return dict.fromkeys(MATRIX_FEATURES, float("nan"))
    l1 = w.abs().sum().item()
    l2 = torch.linalg.matrix_norm(w, "fro").item()
    trace = torch.diagonal(w).sum().item()
    sv = torch.linalg.svdvals(w)
    spectral = sv.max().item()
    sv = torch.where(sv < SINGULAR_VALUE_CUTOFF, torch.zeros_like(sv), sv)
    var_sv = sv.var(unbiased=True).item() if len(sv) > 1 else float("nan")
    return {
        "l1": l1,
        "l2": l2,
        "trace": trace,
        "spectral": spectral,
        "code_sparsity": l1 / l2 if l2 > 0 else float("nan"),
        "computational_sparsity": trace / spectral if spectral > 0 else float("nan"),
        "mean_lambda": sv.mean().item(),
        "variance_lambda": var_sv,
    }


def lower_median(v: np.ndarray) -> float:
    """Median that takes the lower middle value of an even count, as torch.median (the paper's)."""
    return float(np.partition(v, (v.size - 1) // 2)[(v.size - 1) // 2])


def _summary(values: torch.Tensor, prefix: str) -> dict[str, float]:
    v = values.detach().to(torch.float64).numpy()
    if v.size == 0:
        return {f"mean_{prefix}": np.nan, f"median_{prefix}": np.nan, f"var_{prefix}": np.nan}
    return {
        f"mean_{prefix}": float(v.mean()),
        f"median_{prefix}": lower_median(v),
        f"var_{prefix}": float(v.var(ddof=1)) if v.size > 1 else np.nan,
    }


def weight_metrics(matrices: Sequence[torch.Tensor], biases: Sequence[torch.Tensor]) -> dict[str, float]:
    """The 14 paper features: per-matrix statistics averaged over matrices, plus global moments.

    Per-matrix values are averaged without weights; the variance of singular values uses a
    NaN-ignoring mean (a one-row matrix has a single singular value and no variance). The global
    mean, median (the lower middle value of an even count, as torch) and variance (unbiased) are
    over all matrix entries concatenated, and over all biases.
    """
    if not matrices:
        raise ValueError("weight_metrics needs at least one matrix")
    per = [matrix_metrics(m) for m in matrices]
    out = {}
    for name in MATRIX_FEATURES:
        vals = np.array([p[name] for p in per], dtype=np.float64)
        if name == "variance_lambda":
            out[name] = float(np.nanmean(vals)) if np.isfinite(vals).any() else np.nan
        else:
            out[name] = float(vals.mean())
    out.update(_summary(torch.cat([m.detach().reshape(-1) for m in matrices]), "w"))
    flat_b = [b.detach().reshape(-1) for b in biases]
    out.update(_summary(torch.cat(flat_b) if flat_b else torch.empty(0), "b"))
    return out
