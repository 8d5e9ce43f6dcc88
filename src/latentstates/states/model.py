"""The Gaussian HMM as parameters (emission densities, likelihood, decoding, filtering) and a
task's fitted state model with what it was fitted on (`StateModel`: model.json).

One float64 implementation of the model's mathematics, whatever fitted it: model selection
scores and decodes with it, the analyses and the forecast filter with it. No torch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from latentstates.io import read_json, write_json

PARAMETERS = ("starts", "transitions", "ends", "means", "covs")


@dataclass(frozen=True, eq=False)
class GaussianHMM:
    """A Gaussian HMM with pomegranate's end probabilities (transition rows sum to 1 − end).

    `covs` is (k, d, d) for full covariances or (k, d) variances for diagonal ones; `ends` may be
    None (a model written without them; nothing here but `to_json` reads them).
    """

    starts: np.ndarray
    transitions: np.ndarray
    ends: np.ndarray | None
    means: np.ndarray
    covs: np.ndarray
    covariance: str

    @property
    def k(self) -> int:
        return len(self.starts)

    @classmethod
    def from_json(cls, params: dict) -> GaussianHMM:
        """From a dict with the parameter keys and `covariance` (`to_json`'s, model.json's)."""
        ends = params.get("ends")
        return cls(
            np.asarray(params["starts"], dtype=float),
            np.asarray(params["transitions"], dtype=float),
            None if ends is None else np.asarray(ends, dtype=float),
            np.asarray(params["means"], dtype=float),
            np.asarray(params["covs"], dtype=float),
            params["covariance"],
        )

    def to_json(self) -> dict:
        """Parameters as plain lists: model.json's `k`, `covariance` and parameter keys."""
        out = {"k": self.k, "covariance": self.covariance}
        for name in PARAMETERS:
            value = getattr(self, name)
            out[name] = None if value is None else value.tolist()
        return out

    def permuted(self, perm: np.ndarray) -> GaussianHMM:
        """The same model with its states renumbered by `perm` (old → new)."""
        inv = np.argsort(perm)  # inv[new] = old
        return GaussianHMM(
            self.starts[inv],
            self.transitions[np.ix_(inv, inv)],
            None if self.ends is None else self.ends[inv],
            self.means[inv],
            self.covs[inv],
            self.covariance,
        )

    def log_densities(self, x: np.ndarray) -> np.ndarray:
        """log N(x_t | μ_k, Σ_k) for (..., T, d) observations: (..., T, k), float64."""
        x = np.asarray(x, dtype=np.float64)
        d = x.shape[-1]
        maha, logdets = self.mahalanobis(x)
        return -0.5 * (maha + logdets + d * math.log(2 * math.pi))

    def mahalanobis(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Squared Mahalanobis distances (x_t − μ_k)ᵀ Σ_k⁻¹ (x_t − μ_k) of (..., T, d) observations
        to every state, (..., T, k) float64, and each state's log |Σ_k| (k,)."""
        x = np.asarray(x, dtype=np.float64)
        d = x.shape[-1]
        maha, logdets = [], []
        for mu, cov in zip(self.means, self.covs):
            diff = x - mu
            if cov.ndim == 1:
                maha.append((diff**2 / cov).sum(axis=-1))
                logdets.append(np.log(cov).sum())
            else:
                chol = np.linalg.cholesky(cov)
                z = np.linalg.solve(chol, diff.reshape(-1, d).T).T.reshape(diff.shape)
                maha.append((z**2).sum(axis=-1))
                logdets.append(2 * np.log(np.diag(chol)).sum())
        return np.stack(maha, axis=-1), np.array(logdets)

    def _scoring(self) -> tuple[np.ndarray, np.ndarray]:
        """Start and transition probabilities renormalised without the end probability."""
        return self.starts / self.starts.sum(), self.transitions / self.transitions.sum(axis=1, keepdims=True)

    def log_likelihood(self, arrays: Sequence[np.ndarray]) -> float:
        """Summed log-likelihood of the sequences given their lengths, in float64.

        The transition rows are renormalised without the end probability, which makes this
        hmmlearn's `score` of the same parameters: the end term would add log(1 − end) per step
        and log(end) per sequence, a likelihood of the run lengths, not of the metrics.
        """
        starts, trans = self._scoring()
        return sum(
            float(forward_log_likelihood(self.log_densities(x), starts, trans).sum())
            for _, x in group_by_length(arrays)
        )

    def log_likelihoods(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        """Each sequence's log-likelihood (the terms of `log_likelihood`), float64."""
        starts, trans = self._scoring()
        out = np.empty(len(arrays))
        for idx, x in group_by_length(arrays):
            out[idx] = forward_log_likelihood(self.log_densities(x), starts, trans)
        return out

    def viterbi(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Most likely state path of each sequence (the model of `log_likelihood`)."""
        starts, trans = self._scoring()
        out: list[np.ndarray | None] = [None] * len(arrays)
        for idx, x in group_by_length(arrays):
            for i, path in zip(idx, viterbi_paths(self.log_densities(x), starts, trans)):
                out[i] = path
        return out

    def filter(self, x: np.ndarray) -> np.ndarray:
        """Filtered state posteriors p(s_t | x_1..t) of one (T, d) sequence: (T, k).

        With the stored transitions (end probability included), as the analyses always have.
        """
        loge = self.log_densities(x)
        log_a = np.log(self.transitions + 1e-300)
        log_alpha = np.log(self.starts + 1e-300) + loge[0]
        post = np.empty_like(loge)
        for t in range(len(loge)):
            if t:
                log_alpha = np.logaddexp.reduce(log_alpha[:, None] + log_a, axis=0) + loge[t]
            log_alpha = log_alpha - np.logaddexp.reduce(log_alpha)  # normalised: the filtered posterior
            post[t] = np.exp(log_alpha)
        return post

    def precisions(self) -> np.ndarray:
        """Inverse covariance of each state, (k, d, d); diagonal ones as diagonal matrices."""
        if self.covariance == "diag":
            return np.stack([np.diag(1.0 / c) for c in self.covs])
        return np.linalg.inv(self.covs)

    def posterior_gradient(
        self, x: np.ndarray, t: int, j: int, post: np.ndarray, precisions: np.ndarray | None = None
    ) -> np.ndarray:
        """∂ log p(s_t = j | x_1..t) / ∂ x_t, in closed form (`post`: `filter(x)`).

        log p(s_t=j | x_1..t) = log b_j(x_t) + log Σ_i α̂_{t-1}(i) A_ij − log Σ_k (…) b_k(x_t), so
        the gradient is ∇log b_j(x_t) − Σ_k p(s_t=k | x_1..t) ∇log b_k(x_t), with
        ∇log b_k(x) = −Σ_k⁻¹(x − μ_k): a vector over all features.
        """
        prec = self.precisions() if precisions is None else precisions
        scores = -np.einsum("kde,ke->kd", prec, x[t] - self.means)
        return scores[j] - post[t] @ scores


@dataclass(frozen=True)
class ZScores:
    """How the runs' metrics were standardised before the fit (model.json's `zscore`).

    `kind` "run": each run by its own mean and standard deviation; "pooled": every run by those
    of all runs together (`hmm.zscore`). `mean` and `std` hold one row of feature statistics per
    run of `runs`, in that order, computed with `ddof` degrees of freedom.
    """

    kind: str
    runs: list[int]
    mean: list[list[float]]
    std: list[list[float]]
    ddof: int = 0

    @property
    def pooled(self) -> bool:
        return self.kind == "pooled"


@dataclass(frozen=True)
class StateModel:
    """A fitted latent-state model with what it was fitted on and how it was chosen: the content
    of a task's (or a comparison's) `hmm/model.json`, read with `from_json`/`read`, written with
    `to_json`/`write`.

    Fields that a model of the HMM stage always has come first; the rest are None where they do
    not apply (a comparison has no `task`, a task no `recipes`) and are then left out of the JSON.
    """

    hmm: GaussianHMM | None
    """The HMM's parameters, states numbered by time of first use; None when no run could be
    fitted (K = 0, see `status` and `excluded_runs`)."""
    covariance: str
    """"full" or "diag" (`hmm.covariance`), also when `hmm` is None."""
    features: list[str]
    """The metrics the HMM was fitted on, in the order of the parameters' dimensions."""
    first_n: int | None = None
    """Each run's first n checkpoints were fitted (`hmm.first_n`; None: every checkpoint)."""
    task: str | None = None
    """The task's name (a task's model)."""
    comparison: str | None = None
    """The comparison's name (a comparison's shared model)."""
    recipes: list[str] | None = None
    """A comparison's recipes (tasks), in the order of its run numbers."""
    train_runs: list[int] | None = None
    """The runs (seeds, or a comparison's run numbers) the chosen model was fitted on."""
    val_runs: list[int] | None = None
    """The runs held out to choose K (the single-split criteria; empty for the fold criteria)."""
    zscore: ZScores | None = None
    """How every usable run was z-scored (the forecast and the analyses redo it)."""
    criterion: str | None = None
    """The criterion that chose K (`hmm.criterion`)."""
    pinned: bool | None = None
    """Whether K was given (`hmm.n_states`) rather than chosen."""
    at_boundary: bool = False
    """Whether the criterion's optimum lies on the edge of the K tried: `hmm.max_states` (a
    larger K might fit better) or 1 (no state structure)."""
    boundary_warning: str = ""
    """The boundary's meaning in words ('' when K is inside the range)."""
    k_repeats: list[int | None] | None = None
    """The K each fold assignment of the runs chooses alone (fold criteria; `hmm.cv_repeats`)."""
    restart_seed: int | None = None
    """The seed of the restart whose fit was kept at the chosen K."""
    excluded_runs: dict[str, str] = field(default_factory=dict)
    """Runs left out of the fit ({run: why}, e.g. diverged or too short)."""
    dropped_features: dict[str, str] | None = None
    """Features asked for but left out ({feature: why}, e.g. missing for every run)."""
    settings: dict[str, Any] | None = None
    """The `hmm` settings of the fit, as the config gave them."""
    status: str | None = None
    """Why there is no model (K = 0), in words; None when there is one."""

    @property
    def k(self) -> int:
        """The number of states (0: no run could be fitted)."""
        return 0 if self.hmm is None else self.hmm.k

    @property
    def pooled_zscores(self) -> bool:
        """Whether the runs were z-scored together (`zscore.kind` "pooled")."""
        return self.zscore is not None and self.zscore.pooled

    def replace(self, **changes: Any) -> StateModel:
        return dataclasses.replace(self, **changes)

    @classmethod
    def _record_fields(cls) -> list[str]:
        """model.json's keys that are fields here (besides `k`, `covariance` and the parameters)."""
        return [f.name for f in dataclasses.fields(cls) if f.name not in ("hmm", "covariance")]

    @classmethod
    def from_json(cls, record: dict) -> StateModel:
        """From model.json's content; keys of an older model.json that it lacks take the defaults."""
        hmm = GaussianHMM.from_json(record) if record.get("k", len(record.get("starts", []))) else None
        values = {name: record[name] for name in cls._record_fields() if name in record}
        if "zscore" in values and values["zscore"] is not None:
            values["zscore"] = ZScores(**values["zscore"])
        return cls(hmm=hmm, covariance=record["covariance"], **values)

    def to_json(self) -> dict:
        """model.json's content: the HMM's parameters (empty lists when K = 0), `k`, `covariance`
        and every field that applies."""
        if self.hmm is None:
            out: dict[str, Any] = {"k": 0, "covariance": self.covariance}
            out |= {name: [] for name in PARAMETERS}
        else:
            out = self.hmm.to_json()
        for name in self._record_fields():
            value = getattr(self, name)
            if value is None and name != "first_n":
                continue
            out[name] = dataclasses.asdict(value) if isinstance(value, ZScores) else value
        return out

    @classmethod
    def read(cls, path) -> StateModel:
        """A model.json file (an unreadable one named in the error)."""
        record = read_json(path)
        try:
            return cls.from_json(record)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: not a model.json of this workflow ({exc!r})") from None

    def write(self, path) -> None:
        """Write model.json (atomically, keys sorted)."""
        write_json(self.to_json(), path)


def read_kept_fits(path) -> dict[int, GaussianHMM]:
    """The kept fit of each K that the HMM stage wrote (models.json), states as fitted."""
    record = read_json(path)
    try:
        return {int(k): GaussianHMM.from_json(m) for k, m in record["models"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"{path}: not a models.json of this workflow ({exc!r})") from None


# Two states each of which hands over to the other at most steps: they alternate step by step.
ALTERNATION = 0.5


def degeneracy(hmm: GaussianHMM) -> str:
    """Why a fit is degenerate, or '': two states that alternate step by step (each moves to the
    other with probability above ALTERNATION, given that the run goes on). Training runs move
    through phases that last many checkpoints; such a pair fits a period-2 pattern or splits
    one phase's points between two thin states (near-singular covariances), which can score well
    without meaning anything (docs/methods.md, "Choosing K")."""
    a = np.asarray(hmm.transitions, dtype=float)
    rows = a.sum(axis=1, keepdims=True)
    a = np.divide(a, rows, out=np.zeros_like(a), where=rows > 0)
    for i in range(hmm.k):
        for j in range(i + 1, hmm.k):
            if a[i, j] > ALTERNATION and a[j, i] > ALTERNATION:
                return f"states {i} and {j} alternate step by step (P = {a[i, j]:.2f}, {a[j, i]:.2f})"
    return ""


def group_by_length(arrays: Sequence[np.ndarray]) -> list[tuple[list[int], np.ndarray]]:
    """Sequences grouped by length into (n, T, d) float64 arrays, with their indices."""
    by_len: dict[int, list[int]] = {}
    for i, a in enumerate(arrays):
        by_len.setdefault(len(a), []).append(i)
    return [
        (idx, np.stack([np.asarray(arrays[i], dtype=np.float64) for i in idx]))
        for _, idx in sorted(by_len.items())
    ]


def forward_log_likelihood(log_b: np.ndarray, starts: np.ndarray, transitions: np.ndarray) -> np.ndarray:
    """log p(x_1..T) of each sequence by the forward algorithm: log_b is (n, T, k); returns (n,)."""
    with np.errstate(divide="ignore"):
        log_a = np.log(transitions)
        alpha = np.log(starts) + log_b[:, 0]
    for t in range(1, log_b.shape[1]):
        alpha = np.logaddexp.reduce(alpha[:, :, None] + log_a[None], axis=1) + log_b[:, t]
    return np.logaddexp.reduce(alpha, axis=1)


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
