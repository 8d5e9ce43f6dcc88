"""Many Gaussian-HMM fits at once: Baum-Welch with a leading dimension over fits.

Every restart of a K, every bootstrap resample and every forecast fold is a fit of one model
family to a weighting of the same runs (a run's weight is how often the fit sees it: 1 or 0 for a
split or a fold, 0, 1, 2, … for a bootstrap resample). `fit_batch` runs them as one EM: one time
loop over a (fits, runs, steps, states) forward-backward, so pomegranate's per-call overhead on
small tensors (nearly all of an iteration's time at these sizes) is paid once per iteration for
all fits instead of once per fit.

Each fit is pomegranate's fit of the runs repeated by their weights (`fit.fit_hmm(...,
reference=True)`, tested to 1e-9): the E-step statistics of its DenseHMM (scaled forward-backward
over a NaN-padded batch, redone in log space where a scale factor underflows), the M-step of its
DenseHMM with learned end probabilities and of `FlooredNormal` (covariance prior and floor), the
emission densities as its Normal computes them (Cholesky factor, triangular inverse), and its
stopping rule per fit: stop, before the M-step, at the first iteration whose total
log-likelihood improves on the previous one by less than `tol`, else after `max_iter` M-steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

LOG_2_PI = math.log(2 * math.pi)
# Elements of the emission densities' temporary per block (steps × fits × states × d): small
# enough to stay in cache (measured: 2**18 is 4x faster than one 2**23 block on 2 cores).
BLOCK_ELEMENTS = 2**18


@dataclass(frozen=True)
class Start:
    """Where one fit's EM starts: probabilities and emissions ((k, d, d) or (k, d) covs)."""

    starts: np.ndarray
    edges: np.ndarray
    ends: np.ndarray
    means: np.ndarray
    covs: np.ndarray


@dataclass(frozen=True)
class Job:
    """One fit: its start, each run's weight, and its covariance floor and prior (data units)."""

    start: Start
    weights: np.ndarray
    floor: float
    prior: float


@dataclass(frozen=True)
class Outcome:
    """A finished fit: its parameters (Start's fields), EM iterations run, total training
    log-likelihood of the last E-step (pomegranate's, end probabilities included), error or ''."""

    params: Start | None
    iterations: int
    log_likelihood: float
    error: str


def padded(arrays: Sequence[np.ndarray]) -> torch.Tensor:
    """Sequences as one (n, T_max, d) float64 batch, NaN after each sequence's end."""
    out = torch.full(
        (len(arrays), max(len(a) for a in arrays), arrays[0].shape[1]), float("nan"), dtype=torch.float64
    )
    for i, a in enumerate(arrays):
        out[i, : len(a)] = torch.as_tensor(a, dtype=torch.float64)
    return out


class _Data:
    """The runs as the E- and M-steps use them: zero-filled padding, mask, last steps, x xᵀ."""

    def __init__(self, arrays: Sequence[np.ndarray], covariance: str):
        x = padded(arrays)
        self.pad = torch.isnan(x).any(dim=-1)
        self.n, self.length, self.d = x.shape
        self.last = (~self.pad).sum(dim=1) - 1
        self.padded = bool(self.pad.any())  # runs of unequal length: statistics to be masked
        self.x = torch.where(self.pad[..., None], torch.zeros((), dtype=x.dtype), x)
        flat = self.x.reshape(-1, self.d)
        self.flat = flat
        if covariance == "full":
            # x xᵀ's upper triangle (x_i x_j = x_j x_i exactly: the full matrix is its mirror).
            rows, cols = torch.triu_indices(self.d, self.d)
            self.second = flat[:, rows] * flat[:, cols]
            self.mirror = _mirror_index(self.d)
        else:
            self.second = flat**2


def _mirror_index(d: int) -> torch.Tensor:
    """For each entry (i, j) of a d × d matrix (row-major), its position in the row-major upper
    triangle (`torch.triu_indices`): the full symmetric matrix from its triangle."""
    rows, cols = torch.triu_indices(d, d)
    position = torch.empty(d, d, dtype=torch.long)
    position[rows, cols] = torch.arange(len(rows))
    position[cols, rows] = torch.arange(len(rows))
    return position.reshape(-1)


class _Params:
    """Parameters of F fits as stacked float64 tensors (probabilities, not logs)."""

    def __init__(self, starts, edges, ends, means, covs):
        self.starts, self.edges, self.ends, self.means, self.covs = starts, edges, ends, means, covs

    @classmethod
    def stack(cls, starts: Sequence[Start]) -> _Params:
        def t(name):
            return torch.as_tensor(np.stack([getattr(s, name) for s in starts]), dtype=torch.float64)

        return cls(t("starts"), t("edges"), t("ends"), t("means"), t("covs"))

    def take(self, idx: torch.Tensor) -> _Params:
        return _Params(*(v[idx] for v in self.values()))

    def put(self, idx: torch.Tensor, other: _Params) -> None:
        for mine, theirs in zip(self.values(), other.values()):
            mine[idx] = theirs

    def values(self):
        return self.starts, self.edges, self.ends, self.means, self.covs

    def start(self, f: int) -> Start:
        return Start(*(v[f].numpy().copy() for v in self.values()))


def emission_log_densities(p: _Params, data: _Data, covariance: str) -> tuple[torch.Tensor, torch.Tensor]:
    """log N(x | μ, Σ) of every fit, run, step and state: (F, n, T, k), 0 at padded steps; and
    which fits' covariances have no Cholesky factor (F,) (pomegranate's fit raises there)."""
    f_count, k, d = p.means.shape
    steps = data.flat.shape[0]
    if covariance == "full":
        chol, info = torch.linalg.cholesky_ex(p.covs)
        failed = (info > 0).any(dim=1)
        chol = torch.where(failed[:, None, None, None], torch.eye(d, dtype=chol.dtype), chol)
        eye = torch.eye(d, dtype=p.covs.dtype).expand(f_count, k, d, d)
        inv = torch.linalg.solve_triangular(chol, eye, upper=False).transpose(-1, -2)
        inv_mu = (p.means[:, :, None, :] @ inv)[:, :, 0].reshape(f_count * k, d)
        log_det = -0.5 * torch.linalg.slogdet(p.covs)[1]  # (F, k)
        # One GEMM per block of steps for every fit and state, (rows, d) @ (d, F·k·d), as
        # pomegranate's X @ inv: blocks of steps keep the (rows, F·k, d) temporary in cache.
        w = inv.permute(2, 0, 1, 3).reshape(d, -1)
        sq = torch.empty(steps, f_count * k, dtype=torch.float64)
        rows = max(16, BLOCK_ELEMENTS // max(1, f_count * k * d))
        for lo in range(0, steps, rows):
            hi = min(steps, lo + rows)
            z = (data.flat[lo:hi] @ w).reshape(hi - lo, f_count * k, d).sub_(inv_mu).square_()
            torch.sum(z, dim=-1, out=sq[lo:hi])
        out = sq.reshape(data.n, data.length, f_count, k).permute(2, 0, 1, 3)
        e = log_det[:, None, None, :] - 0.5 * (d * LOG_2_PI + out)
    else:
        failed = (p.covs <= 0).any(dim=(1, 2))
        log_sigma = -torch.log(torch.sqrt(p.covs) * math.sqrt(2 * math.pi))
        inv_two = 1.0 / (2 * p.covs)
        out = torch.empty(f_count, k, steps, dtype=torch.float64)
        per_fit = max(1, BLOCK_ELEMENTS // max(1, k * steps * d))
        for lo in range(0, f_count, per_fit):
            hi = min(f_count, lo + per_fit)
            diff = data.flat - p.means[lo:hi, :, None, :]
            out[lo:hi] = (log_sigma[lo:hi, :, None, :] - diff**2 * inv_two[lo:hi, :, None, :]).sum(dim=-1)
        e = out.reshape(f_count, k, data.n, data.length).permute(0, 2, 3, 1)
    return _zero_padding(e, data.pad[None, ..., None], data.padded), failed


def _zero_padding(x: torch.Tensor, mask: torch.Tensor, padded: bool) -> torch.Tensor:
    """`x` (a fresh temporary) with 0 at the padded steps `mask`, in place; as is without padding."""
    return x.masked_fill_(mask, 0.0) if padded else x


def scaled_expectations(e: torch.Tensor, p: _Params, data: _Data):
    """Scaled forward-backward of every fit (pomegranate's DenseHMM statistics, per run):
    transitions (F, n, k, k), posteriors (F, n, T, k), log-likelihoods (F, n), and which fits
    underflowed (F,) (their statistics are to be redone in log space)."""
    f_count, n, length, k = e.shape
    pad, last = data.pad, data.last
    # Each step's largest density (k − 1 elementwise maxima: faster than a reduction over k).
    shift = e[..., 0].clone()
    for j in range(1, k):
        torch.maximum(shift, e[..., j], out=shift)
    shift = shift[..., None]
    b = torch.empty(length, f_count, n, k, dtype=e.dtype)  # (T, F, n, k): contiguous steps
    torch.sub(e.permute(2, 0, 1, 3), shift.permute(2, 0, 1, 3), out=b).exp_()
    a = p.edges
    # Forward and backward variables written in place, step by step: (T, F, n, k).
    fwd = torch.empty(length, f_count, n, k, dtype=e.dtype)
    scales = torch.empty(length, f_count, n, 1, dtype=e.dtype)
    torch.mul(p.starts[:, None, :], b[0], out=fwd[0])
    for i in range(length):
        if i:
            torch.bmm(fwd[i - 1], a, out=fwd[i]).mul_(b[i])
        torch.sum(fwd[i], dim=2, keepdim=True, out=scales[i])
        fwd[i].div_(scales[i])
    c = scales[..., 0].permute(1, 2, 0)  # (F, n, T)
    observed = c.masked_fill(pad, 1.0)
    bad = ~(torch.isfinite(observed) & (observed > 0)).all(dim=2).all(dim=1)
    ending = {int(i): (last == i).nonzero()[:, 0] for i in torch.unique(last) if i < length - 1}
    a_t = a.transpose(1, 2).contiguous()
    end = p.ends[:, None, :]
    bwd = torch.empty_like(fwd)
    bwd[-1] = end
    for i in range(length - 2, -1, -1):
        torch.bmm(b[i + 1] * bwd[i + 1], a_t, out=bwd[i]).div_(scales[i + 1])
        if i in ending:
            bwd[i][:, ending[i]] = end
    alpha = fwd.permute(1, 2, 0, 3)  # (F, n, T, k)
    beta = bwd.permute(1, 2, 0, 3)
    rows = torch.arange(n)
    z = (alpha[:, rows, last] * end).sum(dim=2)  # (F, n)
    bad |= ~(torch.isfinite(z) & (z > 0)).all(dim=1)
    logp = torch.log(z) + (torch.log(observed) + shift[..., 0].masked_fill(pad, 0.0)).sum(dim=2)
    w = _zero_padding(alpha[:, :, :-1] / c[:, :, 1:, None], pad[None, :, 1:, None], data.padded)
    v = b[1:].permute(1, 2, 0, 3) * beta[:, :, 1:]
    t = torch.einsum("fnti,fntj->fnij", w, v) * a[:, None] / z[..., None, None]
    r = alpha * beta
    r = _zero_padding(r.div_(r.sum(dim=3, keepdim=True)), pad[None, ..., None], data.padded)
    return t, r, logp, bad


def log_expectations(e: torch.Tensor, p: _Params, data: _Data):
    """The statistics of `scaled_expectations` in log space (where scaling underflows)."""
    f_count, n, length, k = e.shape
    pad, last = data.pad, data.last
    log_a, log_pi, log_end = torch.log(p.edges), torch.log(p.starts), torch.log(p.ends)
    fwd = torch.empty(f_count, n, length, k, dtype=e.dtype)
    fwd[:, :, 0] = log_pi[:, None] + e[:, :, 0]
    for i in range(1, length):
        fwd[:, :, i] = torch.logsumexp(fwd[:, :, i - 1, :, None] + log_a[:, None], dim=2) + e[:, :, i]
    bwd = torch.empty_like(fwd)
    bwd[:, :, -1] = log_end[:, None]
    for i in range(length - 2, -1, -1):
        step = torch.logsumexp(log_a[:, None] + (bwd[:, :, i + 1] + e[:, :, i + 1])[:, :, None, :], dim=3)
        bwd[:, :, i] = torch.where((last == i)[None, :, None], log_end[:, None], step)
    rows = torch.arange(n)
    f_last = fwd[:, rows, last]
    logp = torch.logsumexp(f_last + log_end[:, None], dim=2)
    t = fwd[:, :, :-1, :, None] + (bwd[:, :, 1:] + e[:, :, 1:])[..., None, :] + log_a[:, None, None]
    t = t.masked_fill(pad[None, :, 1:, None, None], float("-inf"))
    t = torch.exp(torch.logsumexp(t, dim=2) - logp[..., None, None])
    r = torch.softmax(fwd + bwd, dim=3).masked_fill(pad[None, ..., None], 0.0)
    return t, r, logp


def _m_step(p: _Params, t, r, weights, data: _Data, covariance: str, floor, prior):
    """pomegranate's M-step of weighted statistics, with FlooredNormal's prior and floor: the
    new parameters, and which fits' covariances came out non-finite (F,)."""
    f_count, n, length, k = r.shape
    rw = r * weights[:, :, None, None]
    trans = (t * weights[:, :, None, None]).sum(dim=1)
    starts_sum = rw[:, :, 0].sum(dim=1)
    ends_sum = rw[:, torch.arange(n), data.last].sum(dim=1)
    out = trans.sum(dim=2) + ends_sum
    flat = rw.reshape(f_count, n * length, k).transpose(1, 2).reshape(f_count * k, -1)  # (F·k, steps)
    w_sum = flat.sum(dim=1).reshape(f_count, k, 1)
    xw = (flat @ data.flat).reshape(f_count, k, -1)  # (F, k, d)
    xxw = (flat @ data.second).reshape(f_count, k, -1)  # (F, k, d(d+1)/2) or (F, k, d)
    means = xw / w_sum
    d = data.d
    ridge = torch.where(w_sum[..., 0] > 0, prior[:, None] / w_sum[..., 0], torch.zeros(()))
    if covariance == "full":
        xxw = xxw[..., data.mirror].reshape(f_count, k, d, d)
        covs = xxw / w_sum[..., None] - xw[..., :, None] * xw[..., None, :] / w_sum[..., None] ** 2
        covs = covs + ridge[..., None, None] * torch.eye(d, dtype=covs.dtype)
        covs, failed = _floored(covs, floor)
    else:
        covs = xxw / w_sum - xw**2 / w_sum**2 + ridge[..., None]
        covs = torch.maximum(covs, floor[:, None, None])
        failed = ~torch.isfinite(covs).flatten(1).all(dim=1)
    starts = starts_sum / starts_sum.sum(dim=1, keepdim=True)
    return _Params(starts, trans / out[..., None], ends_sum / out, means, covs), failed


def _floored(covs: torch.Tensor, floor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetrised covariances with eigenvalues clamped at each fit's floor (FlooredNormal), and
    which fits' covariances are not finite or have no eigendecomposition (pomegranate raises)."""
    failed = ~torch.isfinite(covs).flatten(1).all(dim=1)
    eye = torch.eye(covs.shape[-1], dtype=covs.dtype)
    sym = torch.where(failed[:, None, None, None], eye, (covs + covs.transpose(-1, -2)) / 2)
    try:
        vals, vecs = torch.linalg.eigh(sym)
    except RuntimeError:  # one ill-conditioned fit fails the batch: decompose one fit at a time
        vals, vecs = torch.ones(sym.shape[:-1], dtype=sym.dtype), eye.expand_as(sym).clone()
        for f in range(len(sym)):
            try:
                vals[f], vecs[f] = torch.linalg.eigh(sym[f])
            except RuntimeError:
                failed[f] = True
    out = (vecs * vals.clamp(min=floor[:, None, None])[..., None, :]) @ vecs.transpose(-1, -2)
    return (out + out.transpose(-1, -2)) / 2, failed


def fit_batch(
    arrays: Sequence[np.ndarray], jobs: Sequence[Job], covariance: str, max_iter: int, tol: float
) -> list[Outcome]:
    """Baum-Welch for every job at once over the runs `arrays` (all jobs with one number of
    states); one Outcome per job, in order. A fit whose covariance has no Cholesky factor, or
    whose log-likelihood is not finite, stops with an error; the others go on."""
    if not jobs:
        return []
    data = _Data(arrays, covariance)
    params = _Params.stack([j.start for j in jobs])
    weights = torch.as_tensor(np.stack([j.weights for j in jobs]), dtype=torch.float64)
    floor = torch.tensor([j.floor for j in jobs], dtype=torch.float64)
    prior = torch.tensor([j.prior for j in jobs], dtype=torch.float64)
    count = len(jobs)
    iterations = [max_iter] * count
    logps = [float("nan")] * count
    errors = [""] * count
    last = torch.full((count,), float("nan"), dtype=torch.float64)
    active = torch.arange(count)
    for it in range(max_iter):
        p = params.take(active)
        e, failed = emission_log_densities(p, data, covariance)
        t, r, logp, bad = scaled_expectations(e, p, data)
        if bad.any():
            redo = bad.nonzero()[:, 0]
            t[redo], r[redo], logp[redo] = log_expectations(e[redo], p.take(redo), data)
        total = (logp * weights[active]).sum(dim=1)
        keep = torch.ones(len(active), dtype=torch.bool)
        for i, f in enumerate(active.tolist()):
            logps[f] = float(total[i])
            if failed[i] or not math.isfinite(logps[f]):
                errors[f] = "covariance not positive definite" if failed[i] else "non-finite log-likelihood"
                iterations[f], keep[i] = it, False
            elif it > 0 and logps[f] - float(last[f]) < tol:
                iterations[f], keep[i] = it, False
        last[active] = total
        active, p, t, r = active[keep], p.take(keep), t[keep], r[keep]
        if not len(active):
            break
        updated, failed = _m_step(p, t, r, weights[active], data, covariance, floor[active], prior[active])
        params.put(active, updated)
        for f in active[failed].tolist():
            errors[f], iterations[f] = "non-finite covariance", it + 1
        active = active[~failed]
    return [
        Outcome(None if errors[f] else params.start(f), iterations[f], logps[f], errors[f])
        for f in range(count)
    ]
