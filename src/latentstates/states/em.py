"""pomegranate's EM, extended: a covariance prior and floor in the M-step, a faster padded E-step.

The classes are built on first use (`functools.cache`): importing pomegranate takes seconds.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch


@functools.cache
def floored_normal_class():
    """pomegranate's Normal with the covariance prior and floor (`FlooredNormal`)."""
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


@functools.cache
def padded_hmm_class():
    """pomegranate's DenseHMM with the scaled, padded E-step (`PaddedDenseHMM`)."""
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


def dense_hmm(distributions, starts=None, edges=None, ends=None, reference=False, **kwargs):
    """A float64 HMM: ours (`PaddedDenseHMM`), or pomegranate's own DenseHMM with `reference`."""
    from pomegranate.hmm import DenseHMM

    # Everything in float64: pomegranate casts the HMM's own parameters to float32, and float32
    # sufficient statistics cannot resolve the small covariance eigenvalues of weight statistics.
    cls = DenseHMM if reference else padded_hmm_class()
    model = cls(distributions, edges=edges, starts=starts, ends=ends, **kwargs).double()
    model._reset_cache()
    return model


def padded_batch(arrays: Sequence[np.ndarray]) -> torch.Tensor:
    """Sequences as one (n, T_max, d) float64 batch, NaN after each sequence's end."""
    out = torch.full(
        (len(arrays), max(len(a) for a in arrays), arrays[0].shape[1]), float("nan"), dtype=torch.float64
    )
    for i, a in enumerate(arrays):
        out[i, : len(a)] = torch.as_tensor(a, dtype=torch.float64)
    return out
