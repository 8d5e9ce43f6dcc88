"""Names shared by the package and the Snakefile: table columns, checkpoint file suffixes
(torch-free: the Snakefile and config checks import it)."""

import fnmatch
from collections.abc import Sequence
from typing import NamedTuple

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
# Per-layer statistics (metrics.per_layer): the paper's statistics, and the extra measures switched
# on, of each named layer group, as columns `{statistic}@{group}` (e.g. `l2@block3`, `alpha@mlp0`).
# Groups are whole blocks (`block{i}`: a transformer layer, an MLP's linear layer) or their parts
# (`attn{i}`, `mlp{i}`, `dense{i}`, `conv{i}`, `fc{i}`); a group without biases has no `*_b` columns,
# one without matrices (convolutions) only l1, l2, code_sparsity and the weights' moments.
PER_LAYER_MODES = ("blocks", "parts")
PER_LAYER_SEPARATOR = "@"
FEATURE_PATTERN_CHARS = frozenset("*?[")


class LayerParts(NamedTuple):
    """Where each tensor of one layer belongs, for per-layer statistics (metrics.per_layer): a
    (block, part) per matrix, bias and kernel, in the layer's order (`columns.group_name`; part
    None where the model has no parts)."""

    matrices: Sequence[tuple[int, str | None]]
    biases: Sequence[tuple[int, str | None]] = ()
    kernels: Sequence[tuple[int, str | None]] = ()


def group_name(block: int, part: str | None, mode: str) -> str:
    """The name of the group holding a tensor of block `block` and part `part` (metrics.per_layer
    `mode`)."""
    if mode == "blocks":
        return f"block{block}"
    if part is None:
        raise ValueError("this model's layers are not split into parts: metrics.per_layer: blocks")
    return f"{part}{block}"


def is_feature_pattern(feature: str) -> bool:
    """Whether an hmm.features entry is a shell-style pattern (`l2@block*`)."""
    return bool(FEATURE_PATTERN_CHARS & set(feature))


def expand_features(
    columns: Sequence[str], features: Sequence[str], where: str = "the metrics table"
) -> list[str]:
    """`features` with each pattern (`is_feature_pattern`: `*`, `?`, `[...]` as in shell globs)
    replaced by the `columns` it matches, in the table's order; a column named twice is kept once.
    A pattern that matches nothing is a ValueError naming `where` and the per-layer columns it has."""
    out: list[str] = []
    for feature in features:
        if not is_feature_pattern(feature):
            matched = [feature]
        else:
            matched = [c for c in columns if fnmatch.fnmatchcase(c, feature)]
            if not matched:
                grouped = [c for c in columns if PER_LAYER_SEPARATOR in c]
                shown = ", ".join(grouped[:8]) + (", ..." if len(grouped) > 8 else "")
                raise ValueError(
                    f"hmm.features pattern {feature!r} matches no column of {where} "
                    f"(per-layer columns: {shown or 'none; metrics.per_layer is off'})"
                )
        out += [c for c in matched if c not in out]
    return out


# Files of a checkpoint directory brought from elsewhere (the import job reads them; the Snakefile
# lists them as its inputs).
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")
