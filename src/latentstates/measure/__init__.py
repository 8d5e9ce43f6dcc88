"""Measure: weight metrics, the Hessian's top eigenvalue and trace, per-checkpoint extraction.

Modules:
    metrics   the paper's weight statistics of one checkpoint (pure functions on tensors), stable
              and effective rank and alpha (metrics.extra), per layer group (metrics.per_layer)
    spectra   singular values of stacked matrices (SVD or Gram eigenvalues), weightwatcher's alpha
    custom    your own metrics: the plug-ins of metrics.custom, called with a checkpoint's layers
    hessian   the Hessian's top eigenvalue by Lanczos-accelerated power iteration, its trace by
              Hutchinson's estimator
    llc       the local learning coefficient of a checkpoint by SGLD (pure torch functions)
    llc_runs  the local learning coefficient of a metrics job's runs
    llc_calibration  the command line `latentstates llc-calibration`: a sweep of the LLC's SGLD
              step size and temperature on one run, and the pair it suggests
    extract   every checkpoint of a run → one row of metrics
    streamed  a streamed Hub series' rows, each written durably as it is measured (resume)
"""

from latentstates._lazy import exports

__all__, __getattr__, __dir__ = exports(
    __name__,
    {
        "weight_metrics": ".metrics",
        "matrix_metrics": ".metrics",
        "top_eigenvalue": ".hessian",
        "metrics_of_run": ".extract",
        "llc_estimates": ".llc",
        "LLCEstimate": ".llc",
    },
)
