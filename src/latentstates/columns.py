"""Names shared by the package and the Snakefile: table columns, checkpoint file suffixes
(torch-free: the Snakefile and config checks import it)."""

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
# Per-matrix measures beyond the paper (metrics.extra), averaged over matrices as its eight.
EXTRA_FEATURES = ["stable_rank", "effective_rank", "alpha"]
PERFORMANCE_COLUMNS = ["train_loss", "train_acc", "eval_loss", "eval_acc"]
# The analyses' status (analysis/summary.json) when the runs have no eval accuracy; the plots say it.
NO_PERFORMANCE = (
    "convergence analyses skipped: the runs have no eval_acc (an imported series without a "
    "performance table); states, transitions and feature changes are complete"
)
# The local learning coefficient's columns (metrics.llc): the estimate, its standard error over
# chains, and whether the chains found lower loss (not a minimum: the estimate is then NaN).
LLC_COLUMNS = ["llc", "llc_se", "llc_not_minimum"]
# The Hessian's trace by Hutchinson's estimator and its standard error (metrics.hessian.trace_probes).
TRACE_COLUMNS = ["hessian_trace", "hessian_trace_se"]
# Every metric column of a metrics table the workflow computes.
KNOWN_FEATURES = [*PAPER_FEATURES, "hessian_top_eig", "llc", *PERFORMANCE_COLUMNS]
# Columns of a metrics table besides the features: a plug-in's (metrics.custom) may not take them.
RESERVED_COLUMNS = frozenset(
    [
        *KNOWN_FEATURES,
        *EXTRA_FEATURES,
        *LLC_COLUMNS,
        *TRACE_COLUMNS,
        "task",
        "checkpoint",
        "step",
        "epoch",
        "hessian_iters",
        "hessian_converged",
        "hessian_seed",
        "diverged",
        "seed",
        "init_seed",
        "data_seed",
        "order_seed",
    ]
)
# Files of a checkpoint directory brought from elsewhere (the import job reads them; the Snakefile
# lists them as its inputs).
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")
