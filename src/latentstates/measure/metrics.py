"""Weight statistics of the paper, per checkpoint (pure functions on tensors)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch

from latentstates.columns import (
    EXTRA_FEATURES,
    MATRIX_FEATURES,
    PER_LAYER_MODES,
    PER_LAYER_SEPARATOR,
    LayerParts,
    group_name,
)
from latentstates.measure.spectra import power_law_alpha, singular_values

SINGULAR_VALUE_CUTOFF = 1e-5
# The global median keeps the weights themselves up to this many values (every default task's
# model); beyond, it counts them in order-preserving buckets (MEDIAN_BUCKET_BITS) and, unless
# every weight is float16 or bfloat16 (one value per bucket), reads them again for the exact
# value: a language model's checkpoint is never held whole.
MEDIAN_KEEP_VALUES = 4_000_000
# The effective rank counts singular values from this fraction of the largest: the Gram path's
# smallest values are rounding noise of ~sqrt(n·eps)·σ_max (~1e-6 of it for a 3,072-wide matrix),
# which would otherwise add up to whole ranks of a rank-deficient matrix (tests/test_custom_metrics.py).
EFFECTIVE_RANK_RTOL = 1e-5
MEDIAN_BUCKET_BITS = 19  # float32's sign, exponent and 10 mantissa bits: float16's and bfloat16's
EXACT_BUCKET_DTYPES = (torch.float16, torch.bfloat16)


def matrix_metrics(w: torch.Tensor) -> dict[str, float]:
    """The eight per-matrix statistics of one weight matrix (float64)."""
    if w.ndim != 2:
        raise ValueError(f"expected a matrix, got shape {tuple(w.shape)}")
    return {name: float(values[0]) for name, values in stacked_matrix_metrics(w[None]).items()}


def stacked_matrix_metrics(
    w: torch.Tensor, device: torch.device | str = "cpu", extra: Sequence[str] = ()
) -> dict[str, np.ndarray]:
    """The eight statistics of each matrix of a (B, m, n) stack, and the `extra` measures
    (EXTRA_FEATURES), in float64 on `device` (the CPU for a model's small matrices wherever it
    trained; a GPU for a language model's).

    stable_rank is ||W||_F^2 / ||W||_2^2; effective_rank is exp(H(p)) with p the singular values
    (those below SINGULAR_VALUE_CUTOFF or EFFECTIVE_RANK_RTOL of the largest as 0) over their sum
    and H the entropy in nats (Roy and Vetterli 2007); both NaN for a zero matrix. alpha is the
    power-law exponent of the eigenvalues σ² as weightwatcher fits it (`power_law_alpha`)."""
    unknown = sorted(set(extra) - set(EXTRA_FEATURES))
    if unknown:
        raise ValueError(f"unknown extra measures {unknown} (known: {EXTRA_FEATURES})")
    w = w.detach().to(device, torch.float64)
    b = len(w)
    out = {name: np.full(b, np.nan) for name in [*MATRIX_FEATURES, *extra]}
    finite = torch.isfinite(w).flatten(1).all(dim=1).cpu().numpy()
    if not finite.any():  # diverged weights: NaN rather than a failing SVD
        return out
    w = w[torch.from_numpy(finite).to(w.device)]
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
    if "stable_rank" in extra:
        values["stable_rank"] = torch.where(spectral > 0, l2.square() / spectral.square(), nan)
    if "effective_rank" in extra:
        counted = torch.where(sv < EFFECTIVE_RANK_RTOL * spectral[:, None], torch.zeros_like(sv), sv)
        total = counted.sum(dim=1, keepdim=True)
        p = torch.where(total > 0, counted / total, torch.zeros_like(counted))
        entropy = -torch.where(p > 0, p * p.log(), torch.zeros_like(p)).sum(dim=1)
        values["effective_rank"] = torch.where(total[:, 0] > 0, entropy.exp(), nan)
    if "alpha" in extra:
        values["alpha"] = torch.tensor([power_law_alpha(row) for row in sv.cpu().numpy()])
    for name, v in values.items():
        out[name][finite] = v.cpu().numpy()
    return out


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
    extra: Sequence[str] = (),
    per_layer: str | None = None,
    parts: LayerParts | None = None,
) -> dict[str, float]:
    """The 14 paper features (and the `extra` measures, EXTRA_FEATURES): per-matrix statistics
    averaged over matrices, plus global moments; with `per_layer`, each group's as well, `parts`
    placing the tensors (`streamed_weight_metrics`).

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
    return streamed_weight_metrics(
        lambda: [(matrices, biases, kernels)], extra=extra, per_layer=per_layer, parts=lambda i, layer: parts
    )


Layer = (
    tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]]
    | tuple[Sequence[torch.Tensor], Sequence[torch.Tensor], Sequence[torch.Tensor]]
)


def streamed_weight_metrics(
    layers: Callable[[], Iterable[Layer]],
    device: torch.device | str = "cpu",
    extra: Sequence[str] = (),
    per_layer: str | None = None,
    parts: Callable[[int, Layer], LayerParts] | None = None,
) -> dict[str, float]:
    """`weight_metrics` of a model given layer by layer: `layers()` yields (matrices, biases[,
    kernels]) and is called a second time only where the exact median needs the weights again
    (more than MEDIAN_KEEP_VALUES of them, not all float16 or bfloat16). Only one layer is held
    at a time; the matrices' statistics are computed on `device`. Equals `weight_metrics` of all
    layers at once (the same values; the variance to rounding).

    With `per_layer` ("blocks" or "parts") each layer group's statistics follow as columns
    `{statistic}@{group}` (`WeightStatistics`), `parts(i, layer)` placing the i-th layer's
    tensors."""
    stats = WeightStatistics(device, extra, per_layer)
    for i, layer in enumerate(layers()):
        stats.add(*layer, parts=parts(i, layer) if per_layer else None)
    if stats.needs_second_pass:
        for layer in layers():
            stats.refine([*layer[0], *(layer[2] if len(layer) > 2 else ())])
    return stats.result()


class WeightStatistics:
    """The 14 features accumulated layer by layer (`streamed_weight_metrics`): each matrix's eight
    statistics, kernel statistics, running moments of the weights (Chan's pairwise update) and of
    the biases, and the weights' exact lower median, kept as values while few and counted in
    order-preserving buckets beyond."""

    def __init__(
        self, device: torch.device | str = "cpu", extra: Sequence[str] = (), per_layer: str | None = None
    ):
        if per_layer is not None and per_layer not in PER_LAYER_MODES:
            raise ValueError(f"per_layer must be one of {PER_LAYER_MODES} or None, got {per_layer!r}")
        self.device = device
        self.extra = tuple(extra)
        self.per_layer = per_layer
        self.groups: dict[str, dict[str, float]] = {}  # per-layer statistics, by group
        self.per_matrix: dict[str, list[np.ndarray]] = {name: [] for name in [*MATRIX_FEATURES, *extra]}
        self.per_kernel: list[dict[str, float]] = []
        self.n, self.mean, self.m2 = 0, 0.0, 0.0
        self.kept: list[np.ndarray] | None = []  # the weights themselves, while few
        self.counts: np.ndarray | None = None  # else their buckets' counts
        self.nan = 0
        self.exact_buckets = True  # every weight float16 or bfloat16 so far
        self.biases: list[torch.Tensor] = []
        self.target: int | None = None  # the median's bucket, for the second pass
        self.below, self.in_target = 0, []

    def add(
        self,
        matrices: Sequence[torch.Tensor],
        biases: Sequence[torch.Tensor] = (),
        kernels: Sequence[torch.Tensor] = (),
        parts: LayerParts | None = None,
    ) -> None:
        """One layer's tensors; with per-layer statistics, `parts` places each in its group (a
        group lies within one layer: its statistics are done when the layer is)."""
        if self.per_layer and parts is None:
            raise ValueError("per-layer statistics need each layer's parts")
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, m in enumerate(matrices):
            if m.ndim != 2:
                raise ValueError(f"expected a matrix, got shape {tuple(m.shape)}")
            by_shape.setdefault(tuple(m.shape), []).append(i)
        ordered = {name: np.full(len(matrices), np.nan) for name in self.per_matrix}
        for index in by_shape.values():  # same-shape matrices in one batched call
            stacked = torch.stack([matrices[i].detach() for i in index])
            stats = stacked_matrix_metrics(stacked, self.device, self.extra)
            for name in self.per_matrix:
                self.per_matrix[name].append(stats[name])
                ordered[name][index] = stats[name]
        per_kernel = [kernel_metrics(k) for k in kernels]
        self.per_kernel += per_kernel
        for w in (*matrices, *kernels):
            self._add_weights(w.detach().reshape(-1))
        self.biases += [b.detach().to("cpu", torch.float64).reshape(-1) for b in biases]
        if self.per_layer:
            self._add_groups(matrices, biases, kernels, parts, ordered, per_kernel)

    def _add_groups(self, matrices, biases, kernels, parts: LayerParts, per_matrix, per_kernel) -> None:
        """Each group's statistics within one layer: the per-matrix ones averaged over its matrices
        (as `result`), the moments and lower median of its weights and of its biases."""
        sizes = {"matrices": len(matrices), "biases": len(biases), "kernels": len(kernels)}
        for what, n in sizes.items():
            if len(getattr(parts, what)) != n:
                raise ValueError(f"the layer has {n} {what} but its parts place {len(getattr(parts, what))}")
        names = {}
        for what in sizes:
            names[what] = [group_name(block, part, self.per_layer) for block, part in getattr(parts, what)]
        order = list(dict.fromkeys([*names["matrices"], *names["kernels"], *names["biases"]]))
        for group in order:
            if group in self.groups:
                raise ValueError(f"layer group {group!r} spans two layers")
            mi = [i for i, g in enumerate(names["matrices"]) if g == group]
            ki = [i for i, g in enumerate(names["kernels"]) if g == group]
            bi = [i for i, g in enumerate(names["biases"]) if g == group]
            group_per = {k: v[mi] for k, v in per_matrix.items()}
            out = _averaged(group_per, MATRIX_FEATURES if mi else [], [per_kernel[i] for i in ki])
            weights = [matrices[i] for i in mi] + [kernels[i] for i in ki]
            if weights:
                out.update(
                    _summary(
                        torch.cat([w.detach().reshape(-1).to("cpu", torch.float64) for w in weights]), "w"
                    )
                )
            if bi:
                out.update(_summary(torch.cat([biases[i].detach().reshape(-1) for i in bi]), "b"))
            out.update(_averaged(group_per, self.extra if mi else []))
            self.groups[group] = out

    def _add_weights(self, w: torch.Tensor) -> None:
        x = w.to("cpu", torch.float64).numpy()
        n_b = x.size
        if n_b == 0:
            return
        mean_b = float(x.mean())
        m2_b = float(((x - mean_b) ** 2).sum())
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta * delta * self.n * n_b / n
        self.n = n
        self.exact_buckets &= w.dtype in EXACT_BUCKET_DTYPES
        if self.kept is not None:
            self.kept.append(x)
            if self.n > MEDIAN_KEEP_VALUES:  # too many to keep: count them instead
                kept, self.kept = self.kept, None
                self.counts = np.zeros(1 << MEDIAN_BUCKET_BITS, dtype=np.int64)
                for values in kept:
                    self._count(values)
        else:
            self._count(x)

    def _count(self, x: np.ndarray) -> None:
        nan = np.isnan(x)
        self.nan += int(nan.sum())
        self.counts += np.bincount(_buckets(x[~nan]), minlength=len(self.counts))

    @property
    def _rank(self) -> int:
        return (self.n - 1) // 2  # the lower middle value of an even count, NaN last (as numpy)

    @property
    def needs_second_pass(self) -> bool:
        return self.kept is None and not self.exact_buckets and self._rank < self.n - self.nan

    def _median_bucket(self) -> tuple[int, int]:
        """The bucket holding the median's rank, and how many values lie in the buckets below."""
        cumulative = np.cumsum(self.counts)
        bucket = int(np.searchsorted(cumulative, self._rank, side="right"))
        return bucket, int(cumulative[bucket - 1]) if bucket else 0

    def refine(self, weights: Sequence[torch.Tensor]) -> None:
        """Second pass: the weights (as given to `add`, in any grouping) that fall in the median's
        bucket."""
        if self.target is None:
            self.target, self.below = self._median_bucket()
        for w in weights:
            x = w.detach().reshape(-1).to("cpu", torch.float64).numpy()
            x = x[~np.isnan(x)]
            self.in_target.append(x[_buckets(x) == self.target])

    def _median(self) -> float:
        if self.n == 0:
            return np.nan
        if self.kept is not None:
            return lower_median(np.concatenate(self.kept))
        if self._rank >= self.n - self.nan:
            return np.nan
        if self.exact_buckets:
            return _bucket_value(self._median_bucket()[0])
        if self.target is None:
            raise RuntimeError("the median needs the weights' second pass (refine)")
        values = np.concatenate(self.in_target)
        return float(np.partition(values, self._rank - self.below)[self._rank - self.below])

    def result(self) -> dict[str, float]:
        if not self.per_matrix[MATRIX_FEATURES[0]]:
            raise ValueError("weight_metrics needs at least one matrix")
        per = {name: np.concatenate(v) for name, v in self.per_matrix.items()}
        out = _averaged(per, MATRIX_FEATURES, self.per_kernel)
        out["mean_w"] = self.mean if self.n else np.nan
        out["median_w"] = self._median()
        out["var_w"] = self.m2 / (self.n - 1) if self.n > 1 else np.nan
        out.update(_summary(torch.cat(self.biases) if self.biases else torch.empty(0), "b"))
        out.update(_averaged(per, self.extra))  # after the paper's
        for group, stats in self.groups.items():
            out.update({f"{name}{PER_LAYER_SEPARATOR}{group}": value for name, value in stats.items()})
        return out


# Averaged over the matrices that have a value: a one-row matrix has one singular value and no
# variance; weightwatcher skips a matrix with too few eigenvalues for alpha.
NAN_IGNORING = frozenset({"variance_lambda", "alpha"})


def _averaged(
    per: dict[str, np.ndarray], names: Sequence[str], per_kernel: Sequence[dict[str, float]] = ()
) -> dict[str, float]:
    """The per-matrix statistics `names` of `per` (name → one value per matrix) averaged over the
    matrices (NAN_IGNORING over those with a value), with the kernels' l1, l2 and code_sparsity
    counted in as one value per convolution (only those three where `names` is empty: no
    matrices)."""
    out: dict[str, float] = {}
    for name in names:
        vals = per[name]
        if name in NAN_IGNORING:
            out[name] = float(np.nanmean(vals)) if np.isfinite(vals).any() else np.nan
        else:
            out[name] = float(vals.mean())
    n = len(per[MATRIX_FEATURES[0]]) if names else 0
    for name in KERNEL_FEATURES if per_kernel else ():
        total = (out[name] * n if n else 0.0) + sum(k[name] for k in per_kernel)
        out[name] = float(total / (n + len(per_kernel)))
    return out


def _buckets(x: np.ndarray) -> np.ndarray:
    """Each value's bucket: the top MEDIAN_BUCKET_BITS of its float32 bits, sign-folded so that
    bucket order is value order (float64 values round to float32 first: monotone, so a bucket's
    values all lie below the next bucket's)."""
    u = x.astype(np.float32).view(np.uint32)
    key = u ^ ((u.view(np.int32) >> 31).view(np.uint32) | np.uint32(0x80000000))
    return key >> np.uint32(32 - MEDIAN_BUCKET_BITS)


def _bucket_value(bucket: int) -> float:
    """The one float16/bfloat16 value of `bucket` (its float32 bits below the bucket's are 0)."""
    shift = 32 - MEDIAN_BUCKET_BITS
    key = bucket << shift
    if key & 0x80000000:  # non-negative: the sign bit was set
        bits = key ^ 0x80000000
    else:  # negative: every bit was flipped (the low bits were 0, so they read 1 in the key)
        bits = ~(key | ((1 << shift) - 1)) & 0xFFFFFFFF
    return float(np.array([bits], dtype=np.uint32).view(np.float32)[0])
