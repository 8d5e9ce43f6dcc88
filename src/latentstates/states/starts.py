"""Where EM starts: state means from k-means or from time segments with the pooled covariance,
random start and transition probabilities as hmmlearn draws them, another fit's parameters (a
warm start), a smaller fit with one state split in two (`split_starts`), or a fit with two
states merged and another split (`merge_split_starts`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from latentstates.states.baum_welch import Start
from latentstates.states.model import GaussianHMM

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


def floor_covariance(c: np.ndarray, floor: float) -> np.ndarray:
    """Symmetric copy of `c` with its eigenvalues clamped at `floor`."""
    w, q = np.linalg.eigh((c + c.T) / 2)
    out = (q * np.maximum(w, floor)) @ q.T
    return (out + out.T) / 2


def floored(cov: np.ndarray, covariance: str, floor: float) -> np.ndarray:
    """A (d, d) covariance as the emission stores it: floored full matrix, or floored variances."""
    return floor_covariance(cov, floor) if covariance == "full" else np.maximum(np.diag(cov), floor)


def start_of(hmm: GaussianHMM) -> Start:
    """A model's parameters as the start of another fit (`Spec.start`: a warm start)."""
    if hmm.ends is None:
        raise ValueError("a warm start needs the model's end probabilities")
    return Start(hmm.starts, hmm.transitions, hmm.ends, hmm.means, hmm.covs)


def split_starts(fit: GaussianHMM) -> list[Start]:
    """Every way to grow `fit` by one state, as starts of EM: state j split in two along its
    widest axis (means ± one standard deviation along the covariance's leading eigenvector; for
    diagonal covariances the widest coordinate), the new state a copy of j otherwise (the same
    covariance, outgoing row and end probability; j's start probability and incoming
    transitions shared half and half). One start per state.

    Greedy growth in the manner of split-and-merge EM (Ueda et al. 2000): a K-state fit whose
    restarts all merge two true states is one split away from the better optimum, which random
    restarts may miss (simulated 5-state chains: best of 10 restarts 0.03 nats/step, the split
    of the best 4-state fit 0.26, the truth's own optimum 0.26).
    """
    if fit.ends is None:
        raise ValueError("growing a fit needs its end probabilities")
    out = []
    for j in range(fit.k):
        cov = fit.covs[j]
        if cov.ndim == 1:
            axis = np.zeros_like(cov)
            axis[int(np.argmax(cov))] = 1.0
            spread = float(np.max(cov))
        else:
            w, v = np.linalg.eigh((cov + cov.T) / 2)
            axis, spread = v[:, -1], float(max(w[-1], 0.0))
        shift = np.sqrt(spread) * axis
        means = np.vstack([fit.means, fit.means[j] + shift])
        means[j] = fit.means[j] - shift
        edges = np.hstack([fit.transitions, fit.transitions[:, [j]] / 2])
        edges[:, j] /= 2
        edges = np.vstack([edges, edges[[j]]])
        starts = np.append(fit.starts, fit.starts[j] / 2)
        starts[j] /= 2
        ends = np.append(fit.ends, fit.ends[j])
        out.append(Start(starts, edges, ends, means, np.concatenate([fit.covs, cov[None]])))
    return out


def merge_states(fit: GaussianHMM, i: int, j: int, occupancy: Sequence[float]) -> GaussianHMM:
    """`fit` with states i and j merged into one (K − 1 states, the merged state in i's place,
    j's left out): its mean and covariance the occupancy-weighted moments of
    the two Gaussians, its outgoing row and end probability the occupancy-weighted mix of theirs
    (staying put: staying in either or moving between them), its incoming column and start
    probability their sums. Probabilities still sum to 1 per row."""
    if fit.ends is None:
        raise ValueError("merging states needs the fit's end probabilities")
    wi, wj = max(float(occupancy[i]), 1e-12), max(float(occupancy[j]), 1e-12)
    a = wi / (wi + wj)
    mean = a * fit.means[i] + (1 - a) * fit.means[j]
    di, dj = fit.means[i] - mean, fit.means[j] - mean
    if fit.covs.ndim == 3:
        cov = a * (fit.covs[i] + np.outer(di, di)) + (1 - a) * (fit.covs[j] + np.outer(dj, dj))
    else:
        cov = a * (fit.covs[i] + di**2) + (1 - a) * (fit.covs[j] + dj**2)
    t = np.asarray(fit.transitions, dtype=float)
    row = a * t[i] + (1 - a) * t[j]
    stay = row[i] + row[j]
    edges = t.copy()
    edges[:, i] = t[:, i] + t[:, j]
    edges[i] = row
    edges[i, i] = stay
    starts, ends = fit.starts.copy(), fit.ends.copy()
    starts[i] += starts[j]
    ends[i] = a * ends[i] + (1 - a) * ends[j]
    means, covs = fit.means.copy(), fit.covs.copy()
    means[i], covs[i] = mean, cov
    keep = [s for s in range(fit.k) if s != j]
    return GaussianHMM(
        starts[keep], edges[np.ix_(keep, keep)], ends[keep], means[keep], covs[keep], fit.covariance
    )


def merge_split_starts(fit: GaussianHMM, occupancy: Sequence[float]) -> list[Start]:
    """Every merge-and-split move of `fit` as starts of EM: each pair of states merged
    (`merge_states`), then each state of the merged fit split in two (`split_starts`): K(K−1)/2
    × (K−1) starts with K states, none for K < 3.

    Split-and-merge EM (Ueda, Nakano, Ghahramani & Hinton, Neural Computation 12, 2000): where
    EM has put two states on one phase and one state on two phases, no small step reaches the
    better optimum; the move does. Random restarts and the splits of the smaller fit miss such
    optima on the default tables at K ≥ 5 (digits at lr 3e-3, K = 6: best of 20 restarts and
    the splits 24.05 nats/step, one round of these moves 24.16; hmmlearn's best of 20, 23.82)."""
    if fit.k < 3:
        return []
    return [
        start
        for i in range(fit.k)
        for j in range(i + 1, fit.k)
        for start in split_starts(merge_states(fit, i, j, occupancy))
    ]


def initial_start(
    arrays: Sequence[np.ndarray], k: int, covariance: str, floor: float, seed: int, init: str
) -> Start:
    """The seeded starting point of EM (emissions by `init`)."""
    x = np.concatenate(arrays)
    end = len(arrays) / len(x)
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
    return Start(
        starts, edges, np.full(k, end), np.asarray(means, dtype=float), np.asarray(covs, dtype=float)
    )
