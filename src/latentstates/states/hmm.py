"""Gaussian HMMs over metric trajectories (pomegranate), model selection and decoding."""

from __future__ import annotations

import functools
import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from latentstates.states.sequences import CRITERIA, Sequences, split_runs, zscore_runs

logger = logging.getLogger("latentstates")

__all__ = ["Sequences", "split_runs", "zscore_runs", "fit_hmm", "select_model", "fit_task"]


def n_parameters(k: int, d: int, covariance: str) -> int:
    """Free parameters of the scored model: (k−1) starts + k(k−1) transitions + emissions.

    As hmmlearn's count: the likelihood is that of the observed length (no end probability).
    """
    emission = 2 * d if covariance == "diag" else d + d * (d + 1) // 2
    return (k - 1) + k * (k - 1) + k * emission


def emission_log_densities(x: np.ndarray, means: np.ndarray, covs: np.ndarray) -> np.ndarray:
    """log N(x_t | μ_k, Σ_k) for (..., T, d) observations: (..., T, k), float64.

    `covs` is (k, d, d) for full covariances or (k, d) for diagonal ones.
    """
    x = np.asarray(x, dtype=np.float64)
    d = x.shape[-1]
    out = []
    for mu, cov in zip(means, covs):
        diff = x - mu
        if cov.ndim == 1:
            maha = (diff**2 / cov).sum(axis=-1)
            logdet = np.log(cov).sum()
        else:
            chol = np.linalg.cholesky(cov)
            z = np.linalg.solve(chol, diff.reshape(-1, d).T).T.reshape(diff.shape)
            maha = (z**2).sum(axis=-1)
            logdet = 2 * np.log(np.diag(chol)).sum()
        out.append(-0.5 * (maha + logdet + d * math.log(2 * math.pi)))
    return np.stack(out, axis=-1)


def forward_log_likelihood(log_b: np.ndarray, starts: np.ndarray, transitions: np.ndarray) -> np.ndarray:
    """log p(x_1..T) of each sequence by the forward algorithm: log_b is (n, T, k); returns (n,)."""
    with np.errstate(divide="ignore"):
        log_a = np.log(transitions)
        alpha = np.log(starts) + log_b[:, 0]
    for t in range(1, log_b.shape[1]):
        alpha = np.logaddexp.reduce(alpha[:, :, None] + log_a[None], axis=1) + log_b[:, t]
    return np.logaddexp.reduce(alpha, axis=1)


@functools.cache
def _normal_class():
    from pomegranate.distributions import Normal

    class FlooredNormal(Normal):
        """Normal with a covariance prior and floor (pomegranate ignores min_cov).

        The M-step adds `prior / n` to the covariance's diagonal, n being the state's summed
        posterior weight (the isotropic form of hmmlearn's `covars_prior`): negligible for a
        state that explains many steps, strong for one that would collapse onto a few. The
        floor then clamps the eigenvalues (variances) from below, a numerical guard only.
        """

        def __init__(self, floor: float, prior: float = 0.0, **kwargs):
            self.floor = floor
            self.prior = prior
            self._ridge = None
            super().__init__(**kwargs)

        def from_summaries(self):
            if not self.frozen and self.prior:
                weight = float(self._w_sum.reshape(-1)[0])
                self._ridge = self.prior / weight if weight > 0 else None
            super().from_summaries()

        def _reset_cache(self):
            if self._initialized and getattr(self, "_ridge", None) is not None:
                with torch.no_grad():
                    if self.covariance_type == "full":
                        self.covs.diagonal().add_(self._ridge)
                    else:
                        self.covs.add_(self._ridge)
                self._ridge = None
            if self._initialized and getattr(self, "floor", None):
                with torch.no_grad():
                    if self.covariance_type == "full":
                        c = self.covs.to(torch.float64)
                        w, q = torch.linalg.eigh((c + c.T) / 2)
                        c = (q * w.clamp(min=self.floor)) @ q.T
                        self.covs.copy_(((c + c.T) / 2).to(self.covs.dtype))
                    else:
                        self.covs.clamp_(min=self.floor)
            super()._reset_cache()

    return FlooredNormal


def _group(arrays: Sequence[np.ndarray]) -> list[tuple[list[int], np.ndarray]]:
    """Group sequences by length into (n, T, d) float64 arrays, for batched scoring."""
    by_len: dict[int, list[int]] = {}
    for i, a in enumerate(arrays):
        by_len.setdefault(len(a), []).append(i)
    return [
        (idx, np.stack([np.asarray(arrays[i], dtype=np.float64) for i in idx]))
        for _, idx in sorted(by_len.items())
    ]


@dataclass
class FittedHMM:
    """A fitted Gaussian HMM (pomegranate's model) with float64 scoring and decoding as hmmlearn."""

    model: object
    k: int
    covariance: str

    @property
    def starts(self) -> np.ndarray:
        return np.exp(self.model.starts.detach().double().numpy())

    @property
    def transitions(self) -> np.ndarray:
        return np.exp(self.model.edges.detach().double().numpy())

    @property
    def ends(self) -> np.ndarray:
        return np.exp(self.model.ends.detach().double().numpy())

    @property
    def means(self) -> np.ndarray:
        return np.stack([d.means.detach().double().numpy() for d in self.model.distributions])

    @property
    def covs(self) -> np.ndarray:
        return np.stack([d.covs.detach().double().numpy() for d in self.model.distributions])

    def _scoring_model(self):
        """Start and transition probabilities renormalised without the end probability."""
        return self.starts / self.starts.sum(), self.transitions / self.transitions.sum(axis=1, keepdims=True)

    def _emissions(self, arrays: Sequence[np.ndarray]):
        """(run indices, (n, T, k) emission log-densities) per group of equal-length sequences."""
        for idx, x in _group(arrays):
            yield idx, emission_log_densities(x, self.means, self.covs)

    def log_likelihood(self, arrays: Sequence[np.ndarray]) -> float:
        """Summed log-likelihood of the sequences given their lengths, in float64.

        The transition rows are renormalised without pomegranate's end probability, which makes
        this hmmlearn's `score` of the same parameters: the end term would add log(1 − end) per
        step and log(end) per sequence, a likelihood of the run lengths, not of the metrics.
        """
        starts, trans = self._scoring_model()
        return sum(float(forward_log_likelihood(b, starts, trans).sum()) for _, b in self._emissions(arrays))

    def viterbi(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Most likely state path of each sequence (float64, same model as `log_likelihood`)."""
        starts, trans = self._scoring_model()
        out: list[np.ndarray | None] = [None] * len(arrays)
        for idx, log_b in self._emissions(arrays):
            for i, path in zip(idx, viterbi_paths(log_b, starts, trans)):
                out[i] = path
        return out


def viterbi_paths(log_b: np.ndarray, starts: np.ndarray, transitions: np.ndarray) -> np.ndarray:
    """Viterbi decoding of (n, T, k) emission log-densities: (n, T) state paths."""
    n, length, k = log_b.shape
    with np.errstate(divide="ignore"):
        log_a = np.log(transitions)
        delta = np.log(starts) + log_b[:, 0]
    back = np.empty((n, length, k), dtype=np.int64)
    for t in range(1, length):
        scores = delta[:, :, None] + log_a[None]  # (n, from, to)
        back[:, t] = scores.argmax(axis=1)
        delta = scores.max(axis=1) + log_b[:, t]
    paths = np.empty((n, length), dtype=np.int64)
    paths[:, -1] = delta.argmax(axis=1)
    for t in range(length - 1, 0, -1):
        paths[:, t - 1] = back[np.arange(n), t, paths[:, t]]
    return paths


@functools.cache
def _padded_hmm_class():
    from pomegranate.hmm import DenseHMM

    class PaddedDenseHMM(DenseHMM):
        """pomegranate's DenseHMM with a faster E-step that also takes ragged batches.

        - Sequences of different lengths may come as one (n, T, d) batch padded with NaN after
          each sequence's end: one time loop instead of pomegranate's one per length. Padded
          steps have emission log-density 0 and no weight, each sequence's backward pass starts
          from the end probabilities at its own last step, and its transitions stop there.
        - Forward-backward runs with per-step scaling in probability space (Rabiner's scaled
          recursion, three tensor operations per step against pomegranate's six in log space);
          the expected transitions are one matrix product over time instead of a (n, T, k, k)
          log-sum-exp. Where a scale factor underflows (a state with no predicted mass and all
          the emission mass), that batch is redone in log space.
        The sufficient statistics are those of pomegranate's own E-step (tested to 1e-9).
        """

        def summarize(self, X, sample_weight=None, emissions=None, priors=None):
            X = torch.as_tensor(X)
            if X.ndim != 3 or sample_weight is not None or emissions is not None or priors is not None:
                return super().summarize(X, sample_weight=sample_weight, emissions=emissions, priors=priors)
            pad = torch.isnan(X).any(dim=-1)
            obs = ~pad
            n, length, d = X.shape
            last = obs.sum(dim=1) - 1  # padding follows each sequence's observations
            x = torch.where(obs[..., None], X, torch.zeros((), dtype=X.dtype))
            e = self._emission_matrix(x).masked_fill(pad[..., None], 0.0)  # (n, T, k)
            stats = self._scaled_expectations(e, pad, last)
            if stats is None:
                stats = self._log_expectations(e, pad, last)
            t, r, starts, ends, logp = stats
            x = x.reshape(-1, d)
            for i, node in enumerate(self.distributions):
                node.summarize(x, sample_weight=r[:, :, i].reshape(-1, 1))
            if not self.frozen:
                self._xw_starts_sum += starts.sum(dim=0)
                self._xw_ends_sum += ends.sum(dim=0)
                self._xw_sum += t.sum(dim=0)
            return logp

        def _scaled_expectations(self, e, pad, last):
            n, length, k = e.shape
            rows = torch.arange(n)
            shift = e.max(dim=2, keepdim=True).values
            # Time-major emission probabilities up to a per-step factor: contiguous steps.
            b = torch.exp(e - shift).transpose(0, 1).contiguous()
            a, pi, end = torch.exp(self.edges), torch.exp(self.starts), torch.exp(self.ends)
            alphas, scales = [], []
            step = pi * b[0]
            for i in range(length):
                if i:
                    step = torch.mm(step, a).mul_(b[i])
                scale = step.sum(dim=1, keepdim=True)
                step = step.div_(scale)
                alphas.append(step)
                scales.append(scale)
            c = torch.cat(scales, dim=1)  # (n, T)
            observed = c.masked_fill(pad, 1.0)
            if not (torch.isfinite(observed).all() and (observed > 0).all()):
                return None
            # Sequences that end before the last step (a padded batch) restart the backward pass
            # from the end probabilities at their own last step.
            ending = {int(i): (last == i).nonzero()[:, 0] for i in torch.unique(last) if i < length - 1}
            a_t, c_t = a.T.contiguous(), c.T.contiguous()[..., None]
            step = end.expand(n, k).clone()
            betas = [step]
            for i in range(length - 2, -1, -1):
                step = torch.mm(b[i + 1] * step, a_t).div_(c_t[i + 1])
                if i in ending:
                    step[ending[i]] = end
                betas.append(step)
            alpha = torch.stack(alphas, dim=1)
            beta = torch.stack(betas[::-1], dim=1)
            z = (alpha[rows, last] * end).sum(dim=1)
            if not (torch.isfinite(z).all() and (z > 0).all()):
                return None
            logp = torch.log(z) + (torch.log(observed) + shift[..., 0].masked_fill(pad, 0.0)).sum(dim=1)
            w = (alpha[:, :-1] / c[:, 1:, None]).masked_fill(pad[:, 1:, None], 0.0)
            v = b[1:].transpose(0, 1) * beta[:, 1:]
            t = torch.einsum("nti,ntj->nij", w, v) * a / z[:, None, None]
            r = alpha * beta
            r = (r / r.sum(dim=2, keepdim=True)).masked_fill(pad[..., None], 0.0)
            return t, r, r[:, 0], r[rows, last], logp

        def _log_expectations(self, e, pad, last):
            n = len(e)
            f = self.forward(emissions=e)
            b = self._padded_backward(e, last)
            f_last = f[torch.arange(n), last]
            logp = torch.logsumexp(f_last + self.ends, dim=1)
            t = f[:, :-1, :, None] + (b[:, 1:] + e[:, 1:])[:, :, None, :] + self.edges
            t = t.masked_fill(pad[:, 1:, None, None], float("-inf"))
            t = torch.exp(torch.logsumexp(t, dim=1) - logp[:, None, None])
            starts = torch.softmax(self.starts + e[:, 0] + b[:, 0], dim=-1)
            ends = torch.softmax(self.ends + f_last, dim=-1)
            r = torch.softmax(f + b, dim=2).masked_fill(pad[..., None], 0.0)
            return t, r, starts, ends, logp

        def _padded_backward(self, e: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
            n, length, k = e.shape
            b = torch.empty(length, n, k, dtype=e.dtype)
            t_max = self.edges.max()
            t = torch.exp(self.edges.T - t_max)
            b[-1] = self.ends
            for i in range(length - 2, -1, -1):
                p = b[i + 1] + e[:, i + 1]
                p_max = torch.max(p, dim=1, keepdim=True).values
                step = torch.log(torch.matmul(torch.exp(p - p_max), t)) + t_max + p_max
                b[i] = torch.where((last == i)[:, None], self.ends, step)
            return b.permute(1, 0, 2)

    return PaddedDenseHMM


def _dense_hmm(distributions, starts=None, edges=None, ends=None, reference=False, **kwargs):
    from pomegranate.hmm import DenseHMM

    # Everything in float64: pomegranate casts the HMM's own parameters to float32, and float32
    # sufficient statistics cannot resolve the small covariance eigenvalues of weight statistics.
    cls = DenseHMM if reference else _padded_hmm_class()
    model = cls(distributions, edges=edges, starts=starts, ends=ends, **kwargs).double()
    model._reset_cache()
    return model


def _padded(arrays: Sequence[np.ndarray]) -> torch.Tensor:
    """Sequences as one (n, T_max, d) float64 batch, NaN after each sequence's end."""
    out = torch.full(
        (len(arrays), max(len(a) for a in arrays), arrays[0].shape[1]), float("nan"), dtype=torch.float64
    )
    for i, a in enumerate(arrays):
        out[i, : len(a)] = torch.as_tensor(a, dtype=torch.float64)
    return out


def data_scale(arrays: Sequence[np.ndarray]) -> float:
    """Mean variance of the pooled data (near 1 for z-scored runs), the unit of prior and floor."""
    scale = float(np.mean(np.var(np.concatenate(arrays), axis=0)))
    return scale if scale > 0 else 1.0


def covariance_floor(arrays: Sequence[np.ndarray], rel_floor: float) -> float:
    """Smallest variance a state may have: `rel_floor` times the mean variance of the pooled data."""
    return rel_floor * data_scale(arrays)


INIT_COVARIANCE_RIDGE = 1e-3


def kmeans_init(x: np.ndarray, k: int, covariance: str, floor: float, seed: int):
    """Initial state means from k-means (10 inits) on the pooled time steps; covariances pooled.

    As hmmlearn: every state starts with the pooled covariance plus a ridge of 1e-3 times the
    mean variance, which is broad enough for the first E-step to share points between states.
    (Per-cluster covariances start states narrow and EM then finds worse held-out optima.)
    """
    from sklearn.cluster import KMeans

    centres = KMeans(n_clusters=k, n_init=10, random_state=seed % 2**32).fit(x).cluster_centers_
    return centres, np.stack([pooled_covariance(x, covariance, floor)] * k)


def pooled_covariance(x: np.ndarray, covariance: str, floor: float) -> np.ndarray:
    """The pooled covariance plus a ridge of 1e-3 × the mean variance, floored (diag: variances)."""
    pooled = np.cov(x.T, bias=True).reshape(x.shape[1], x.shape[1])
    scale = np.trace(pooled) / len(pooled)
    cov = pooled + INIT_COVARIANCE_RIDGE * (scale if scale > 0 else 1.0) * np.eye(len(pooled))
    return floored(cov, covariance, floor)


def segment_init(arrays: Sequence[np.ndarray], k: int, covariance: str, floor: float, seed: int):
    """Initial state means from k consecutive time segments, cut at the same random fractions of
    every run; covariances pooled, as `kmeans_init`.

    Training runs move through their phases in time order, so contiguous segments are a natural
    start: on the default tasks and on simulated left-to-right chains these restarts reach higher
    likelihoods than k-means' clusters (which mix early and late checkpoints with similar values).
    """
    rng = np.random.default_rng([seed, 1])
    bounds = np.concatenate([[0.0], np.sort(rng.uniform(0.0, 1.0, k - 1)), [1.0]])
    x = np.concatenate(arrays)
    parts: list[list[np.ndarray]] = [[] for _ in range(k)]
    for a in arrays:
        which = np.searchsorted(bounds, np.arange(len(a)) / len(a), side="right") - 1
        for j in range(k):
            parts[j].append(a[which == j])
    means = np.array(
        [np.concatenate(part).mean(axis=0) if sum(map(len, part)) else x.mean(axis=0) for part in parts]
    )
    return means, np.stack([pooled_covariance(x, covariance, floor)] * k)


def restart_init(restart: int) -> str:
    """Initialisation of restart `restart`: k-means (as hmmlearn) and time segments, alternately."""
    return "kmeans" if restart % 2 == 0 else "segments"


def floor_covariance(c: np.ndarray, floor: float) -> np.ndarray:
    """Symmetric copy of `c` with its eigenvalues clamped at `floor`."""
    w, q = np.linalg.eigh((c + c.T) / 2)
    out = (q * np.maximum(w, floor)) @ q.T
    return (out + out.T) / 2


def floored(cov: np.ndarray, covariance: str, floor: float) -> np.ndarray:
    """A (d, d) covariance as the emission stores it: floored full matrix, or floored variances."""
    return floor_covariance(cov, floor) if covariance == "full" else np.maximum(np.diag(cov), floor)


def fit_hmm(
    arrays: Sequence[np.ndarray],
    k: int,
    covariance: str = "full",
    max_iter: int = 32,
    tol: float = 0.1,
    var_floor: float = 1e-9,
    seed: int = 0,
    init: str = "kmeans",
    reference: bool = False,
    covariance_prior: float = 1e-3,
) -> FittedHMM:
    """Fit a k-state Gaussian HMM by Baum-Welch (seeded initialisation, float64 emissions).

    The emissions start from k-means' centres (`init="kmeans"`, as hmmlearn) or from random
    time segments (`init="segments"`) and the pooled covariance (as hmmlearn), the start
    probabilities and transition rows are drawn from a Dirichlet(1/k) (as hmmlearn), the end
    probability at its data value (sequences / steps). Each M-step adds `covariance_prior`
    times the data's mean variance, divided by the state's weight (its expected number of
    steps), to the state's covariance diagonal, then floors it at `var_floor` times the data's
    mean variance (`FlooredNormal`). k = 1 is fitted in closed form (one Gaussian with the same
    prior; end probability = sequences / steps), since pomegranate's initialisation needs k ≥ 2.
    Sequences of different lengths are fitted as one NaN-padded batch with a scaled E-step
    (`PaddedDenseHMM`); `reference=True` fits with pomegranate's own `DenseHMM` instead (groups
    of equal length, log-space E-step): the same fit, slower.
    """
    Normal = _normal_class()
    torch.manual_seed(seed)
    scale = data_scale(arrays)
    floor, prior = var_floor * scale, covariance_prior * scale
    x = np.concatenate(arrays)
    end = len(arrays) / len(x)
    if k == 1:
        mean = x.mean(axis=0)
        d = x.shape[1]
        cov = np.cov(x.T, bias=True).reshape(d, d) + prior / len(x) * np.eye(d)
        cov = floored(cov, covariance, floor)
        dist = Normal(
            floor, prior, means=torch.tensor(mean), covs=torch.tensor(cov), covariance_type=covariance
        )
        model = _dense_hmm(
            [dist],
            starts=torch.tensor([1.0]),
            edges=torch.tensor([[1.0 - end]]),
            ends=torch.tensor([end]),
        )
        return FittedHMM(model, 1, covariance)
    if init == "segments":
        means, covs = segment_init(arrays, k, covariance, floor, seed)
    elif init == "kmeans":
        means, covs = kmeans_init(x, k, covariance, floor, seed)
    else:
        raise ValueError(f"unknown HMM initialisation {init!r} (kmeans, segments)")
    # Random start and transition probabilities, drawn as hmmlearn draws them: Dirichlet(1/k),
    # sparse rows. k-means with 10 inits finds nearly the same clusters for every seed, so these
    # are what makes restarts explore; sparse rows explore more than flat Dirichlet(1) ones (on
    # modular addition, K = 8: median held-out LL of 20 restarts −0.35 against −0.74 nats/step).
    rng = np.random.default_rng(seed)
    conc = np.full(k, 1.0 / k)
    starts = rng.dirichlet(conc)
    edges = rng.dirichlet(conc, size=k) * (1.0 - end)
    dists = [
        Normal(floor, prior, means=torch.tensor(m), covs=torch.tensor(c), covariance_type=covariance)
        for m, c in zip(means, covs)
    ]
    model = _dense_hmm(
        dists,
        starts=torch.tensor(starts),
        edges=torch.tensor(edges),
        ends=torch.full((k,), end, dtype=torch.float64),
        reference=reference,
        max_iter=max_iter,
        tol=tol,
        random_state=seed % 2**32,
    )
    if len({len(a) for a in arrays}) > 1 and not reference:
        batch = [_padded(arrays)]  # one time loop for all lengths (PaddedDenseHMM)
    else:
        batch = [torch.tensor(a, dtype=torch.float64) for a in arrays]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model.fit(batch)
    return FittedHMM(model, k, covariance)


# What a restart may fail with (a Cholesky or k-means failure): the restart is skipped, not the fit.
FIT_ERRORS = (RuntimeError, ValueError)


def restart_seed(base: int, k: int, restart: int) -> int:
    """Deterministic seed of restart `restart` for k states."""
    return int(np.random.SeedSequence([base, k, restart]).generate_state(1)[0])


def information_criteria(ll: float, n_params: int, n_steps: int) -> tuple[float, float]:
    """(AIC, BIC) of a log-likelihood over `n_steps` time steps (hmmlearn's definitions)."""
    if n_steps == 0:
        return float("nan"), float("nan")
    return 2 * n_params - 2 * ll, n_params * math.log(n_steps) - 2 * ll


def select_model(
    seqs: Sequences,
    train_runs: Sequence[int],
    val_runs: Sequence[int],
    max_states: int,
    restarts: int,
    covariance: str,
    max_iter: int,
    tol: float,
    var_floor: float,
    seed: int,
    covariance_prior: float,
) -> tuple[pd.DataFrame, dict[int, FittedHMM]]:
    """Fit K = 1..max_states with restarts; keep per K the restart with the best held-out LL.

    Returns one row per (K, restart) and the kept model per K. As the released
    model_selection.py, `aic` and `bic` are computed on the held-out runs (held-out
    log-likelihood, n = held-out time steps); `aic_train` and `bic_train` on the training runs.
    """
    pos = {r: i for i, r in enumerate(seqs.runs)}
    train = [seqs.arrays[pos[r]] for r in train_runs]
    val = [seqs.arrays[pos[r]] for r in val_runs]
    n_train = sum(len(a) for a in train)
    n_val = sum(len(a) for a in val)
    d = len(seqs.features)
    rows, kept = [], {}
    for k in range(1, max_states + 1):
        best = None
        for r in range(restarts if k > 1 else 1):
            s = restart_seed(seed, k, r)
            try:
                fit = fit_hmm(
                    train,
                    k,
                    covariance,
                    max_iter,
                    tol,
                    var_floor,
                    s,
                    restart_init(r),
                    covariance_prior=covariance_prior,
                )
                train_ll = fit.log_likelihood(train)
                val_ll = fit.log_likelihood(val) if val else float("nan")
                error = "" if math.isfinite(train_ll) else "non-finite log-likelihood"
            except FIT_ERRORS as exc:
                fit, train_ll, val_ll, error = None, float("nan"), float("nan"), str(exc)
            p = n_parameters(k, d, covariance)
            aic, bic = information_criteria(val_ll, p, n_val)
            aic_train, bic_train = information_criteria(train_ll, p, n_train)
            rows.append(
                {
                    "k": k,
                    "restart": r,
                    "restart_seed": s,
                    "init": restart_init(r) if k > 1 else "closed form",
                    "train_ll": train_ll,
                    "val_ll": val_ll,
                    "val_ll_per_step": val_ll / n_val if n_val else float("nan"),
                    "n_params": p,
                    "aic": aic,
                    "bic": bic,
                    "aic_train": aic_train,
                    "bic_train": bic_train,
                    "error": error,
                }
            )
            score = val_ll if val else train_ll
            if not error and math.isfinite(score) and (best is None or score > best[0]):
                best = (score, r, fit)
        if best is not None:
            kept[k] = best[2]
            for row in rows:
                if row["k"] == k:
                    row["kept"] = row["restart"] == best[1]
    table = pd.DataFrame(rows)
    table["kept"] = table["kept"].fillna(False).astype(bool) if "kept" in table else False
    return table, kept


def summarise_selection(table: pd.DataFrame) -> pd.DataFrame:
    """Per K: mean ± std over restarts of every criterion, and the kept restart's values."""
    ok = table[table["error"] == ""]
    agg = ok.groupby("k").agg(
        **{f"{c}_{stat}": (c, stat) for c in CRITERIA for stat in ("mean", "std")},
        n_ok=("restart", "count"),
    )
    kept = ok[ok["kept"]].set_index("k")[["restart", "train_ll", *CRITERIA, "n_params"]]
    out = agg.join(kept, how="left").reset_index()
    return out.fillna({f"{c}_std": 0.0 for c in CRITERIA})


def choose_k(summary: pd.DataFrame, criterion: str = "bic", pinned: int | None = None) -> int:
    """K pinned by the config, else the K whose kept restart is best by the criterion.

    Lowest AIC/BIC (held-out by default, `*_train` on the training runs), highest held-out LL.
    The kept restart is the model that is used, so its value counts, not the mean over restarts
    (which punishes a K whose restarts sometimes miss the optimum). Without held-out runs the
    held-out criteria fall back to their training-set versions.
    """
    if pinned is not None:
        if pinned not in set(summary["k"]):
            raise ValueError(f"hmm.n_states={pinned} has no successful fit")
        return int(pinned)
    ok = summary.dropna(subset=["train_ll"])
    column = criterion
    if ok[column].isna().all():  # no validation runs
        column = {"aic": "aic_train", "bic": "bic_train", "val_ll": "bic_train"}.get(criterion, column)
    if column == "val_ll":
        return int(ok.loc[ok[column].idxmax(), "k"])
    return int(ok.loc[ok[column].idxmin(), "k"])


def boundary_note(k: int, max_states: int, pinned: bool) -> str:
    """A warning when the criterion's optimum lies on the searched range's edge, else ''."""
    if pinned or max_states == 1:
        return ""
    if k == max_states:
        return f"the criterion's optimum is at K = max_states = {max_states}: raise hmm.max_states"
    if k == 1:
        return "the criterion's optimum is at K = 1: the metrics show no state structure"
    return ""


def order_states(paths: Sequence[np.ndarray], k: int) -> np.ndarray:
    """Permutation old→new that numbers states by their mean time of occupancy (earliest = 0)."""
    times = np.full(k, np.inf)
    for s in range(k):
        hits = [np.flatnonzero(p == s) / max(len(p) - 1, 1) for p in paths]
        hits = np.concatenate(hits) if hits else np.array([])
        if hits.size:
            times[s] = hits.mean()
    order = np.argsort(times, kind="stable")  # order[new] = old
    perm = np.empty(k, dtype=np.int64)
    perm[order] = np.arange(k)
    return perm


def to_dict(fit: FittedHMM, perm: np.ndarray | None = None) -> dict:
    """Model parameters as plain lists, states renumbered by `perm` (old → new)."""
    k = fit.k
    perm = np.arange(k) if perm is None else perm
    inv = np.argsort(perm)  # inv[new] = old
    return {
        "k": k,
        "covariance": fit.covariance,
        "starts": fit.starts[inv].tolist(),
        "transitions": fit.transitions[np.ix_(inv, inv)].tolist(),
        "ends": fit.ends[inv].tolist(),
        "means": fit.means[inv].tolist(),
        "covs": fit.covs[inv].tolist(),
    }


@dataclass
class TaskFit:
    """Everything the HMM stage writes for one task."""

    restarts: pd.DataFrame
    summary: pd.DataFrame
    model: dict
    states: pd.DataFrame
    excluded: pd.DataFrame


SELECTION_COLUMNS = [
    "k",
    *[f"{c}_{stat}" for c in CRITERIA for stat in ("mean", "std")],
    "n_ok",
    "restart",
    "train_ll",
    *CRITERIA,
    "n_params",
    "chosen",
]
RESTART_COLUMNS = [
    "k",
    "restart",
    "restart_seed",
    "init",
    "train_ll",
    "val_ll",
    "val_ll_per_step",
    "n_params",
    "aic",
    "bic",
    "aic_train",
    "bic_train",
    "error",
    "kept",
]


def _excluded_table(dropped: dict[int, str]) -> pd.DataFrame:
    rows = [{"seed": s, "reason": why} for s, why in sorted(dropped.items())]
    return pd.DataFrame(rows, columns=["seed", "reason"])


def _no_usable_runs(seqs: Sequences, cfg: dict) -> TaskFit:
    """Outputs of a task none of whose runs can be fitted (e.g. every run diverged): K = 0."""
    model = {
        "k": 0,
        "status": "no usable runs: see excluded_runs",
        "at_boundary": False,
        "boundary_warning": "",
        "covariance": cfg["covariance"],
        "features": seqs.features,
        "starts": [],
        "transitions": [],
        "ends": [],
        "means": [],
        "covs": [],
        "excluded_runs": {str(s): why for s, why in sorted(seqs.dropped.items())},
        "settings": dict(sorted(cfg.items())),
    }
    return TaskFit(
        pd.DataFrame(columns=RESTART_COLUMNS),
        pd.DataFrame(columns=SELECTION_COLUMNS),
        model,
        pd.DataFrame(
            {
                "seed": pd.Series(dtype="int64"),
                "checkpoint": pd.Series(dtype="int64"),
                "step": pd.Series(dtype="int64"),
                "state": pd.Series(dtype="int64"),
            }
        ),
        _excluded_table(seqs.dropped),
    )


def fit_task(metrics: pd.DataFrame, cfg: dict) -> TaskFit:
    """Z-score, split, select K, decode every usable run; states numbered by time of first use."""
    diverged = {}
    if "diverged" in metrics:
        bad = metrics[metrics["diverged"].astype(bool)].groupby("seed")["step"].min()
        diverged = {int(s): f"diverged (non-finite loss or weights) by step {int(t)}" for s, t in bad.items()}
        metrics = metrics[~metrics["seed"].isin(list(diverged))]
    seqs = zscore_runs(metrics, cfg["features"])
    seqs.dropped.update(diverged)
    if not seqs.runs:
        return _no_usable_runs(seqs, cfg)
    train_runs, val_runs = split_runs(seqs.runs, cfg["val_fraction"], cfg["seed"])
    restarts, kept = select_model(
        seqs,
        train_runs,
        val_runs,
        max_states=cfg["max_states"],
        restarts=cfg["restarts"],
        covariance=cfg["covariance"],
        max_iter=cfg["max_iter"],
        tol=cfg["tol"],
        var_floor=cfg["var_floor"],
        seed=cfg["seed"],
        covariance_prior=cfg["covariance_prior"],
    )
    summary = summarise_selection(restarts)
    k = choose_k(summary, cfg["criterion"], cfg["n_states"])
    summary["chosen"] = summary["k"] == k
    boundary = boundary_note(k, cfg["max_states"], cfg["n_states"] is not None)
    if boundary:
        logger.warning("%s", boundary)
    fit = kept[k]
    paths = fit.viterbi(seqs.arrays)
    perm = order_states(paths, k)
    model = to_dict(fit, perm)
    model.update(
        {
            "features": seqs.features,
            "criterion": cfg["criterion"],
            "pinned": cfg["n_states"] is not None,
            "at_boundary": bool(boundary),
            "boundary_warning": boundary,
            "train_runs": train_runs,
            "val_runs": val_runs,
            "restart_seed": int(
                restarts.loc[restarts["kept"] & (restarts["k"] == k), "restart_seed"].iloc[0]
            ),
            "zscore": {
                "runs": seqs.runs,
                "mean": seqs.mean.tolist(),
                "std": seqs.std.tolist(),
                "ddof": 0,
            },
            "excluded_runs": {str(s): why for s, why in sorted(seqs.dropped.items())},
            "settings": dict(sorted(cfg.items())),
        }
    )
    frames = []
    by_seed = {s: g for s, g in metrics.sort_values(["seed", "checkpoint"]).groupby("seed")}
    for seed, path in zip(seqs.runs, paths):
        g = by_seed[seed]
        frames.append(
            pd.DataFrame(
                {
                    "seed": seed,
                    "checkpoint": g["checkpoint"].to_numpy(),
                    "step": g["step"].to_numpy(),
                    "state": perm[path],
                }
            )
        )
    states = pd.concat(frames, ignore_index=True)
    return TaskFit(restarts, summary, model, states, _excluded_table(seqs.dropped))
