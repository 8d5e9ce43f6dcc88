"""pomegranate's EM with a covariance prior and floor in the M-step: the reference that the
batched fits (`states.baum_welch`) are tested against (`fit.fit_hmm(..., reference=True)`).

The class is built on first use (`functools.cache`): importing pomegranate takes seconds.
"""

from __future__ import annotations

import functools

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


def dense_hmm(distributions, starts=None, edges=None, ends=None, **kwargs):
    """pomegranate's DenseHMM in float64."""
    from pomegranate.hmm import DenseHMM

    # Everything in float64: pomegranate casts the HMM's own parameters to float32, and float32
    # sufficient statistics cannot resolve the small covariance eigenvalues of weight statistics.
    model = DenseHMM(distributions, edges=edges, starts=starts, ends=ends, **kwargs).double()
    model._reset_cache()
    return model
