"""What the merge-and-split moves (`hmm.merge_splits`) cost and change in the HMM stage.

Usage: python benchmarks/merge_splits.py [RESULTS_DIR] [--config config.yaml] [--tasks a,b]
                                         [--repeats N]

For each task's collated table (RESULTS_DIR/<task>/metrics.parquet), the HMM stage's own fit
(`selection.fit_task`, the task's settings) with `merge_splits` 0 and with the config's value,
alternately, `--repeats` times each (one thread, as a workflow job). Prints per task: the
median time of each and their ratio (the moves' cost at the chosen K under the fold criteria,
at every K under the single-split ones), K chosen by each, the chosen K's kept fit (its
initialisation and training log-likelihood per step) and the share of checkpoints decoded into
the same state. Times are comparable within one run of this script only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from latentstates.config import load_config  # noqa: E402
from latentstates.device import configure_torch, resolve_device  # noqa: E402
from latentstates.settings import HMMSettings  # noqa: E402
from latentstates.states.selection import fit_task  # noqa: E402


def kept_fit(fit) -> tuple[str, float]:
    """The chosen K's kept restart: its initialisation and training log-likelihood per step."""
    table = fit.restarts
    row = table[table["kept"] & (table["k"] == fit.model.k)].iloc[0]
    return str(row["init"]), float(row["train_ll"]) / len(fit.states)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", default=str(REPO / "results"))
    parser.add_argument("--config", default=str(REPO / "config.yaml"))
    parser.add_argument("--tasks", default=None, help="comma-separated; default: every task")
    parser.add_argument("--repeats", type=int, default=1, help="timed fits of each setting")
    args = parser.parse_args()
    configure_torch(1, resolve_device("cpu"))
    config = load_config(args.config)
    tasks = args.tasks.split(",") if args.tasks else sorted(config["tasks"])
    for task in tasks:
        table = pd.read_parquet(Path(args.results) / task / "metrics.parquet")
        settings = HMMSettings.of_task(config, task)
        variants = {"without": settings.replace(merge_splits=0), "with": settings}
        times: dict[str, list[float]] = {name: [] for name in variants}
        fits = {}
        for _ in range(args.repeats):
            for name, cfg in variants.items():
                start = time.perf_counter()
                fits[name] = fit_task(table, cfg)
                times[name].append(time.perf_counter() - start)
        without, with_ = (statistics.median(times[n]) for n in ("without", "with"))
        a, b = fits["without"], fits["with"]
        col = next(c for c in a.states.columns if c.startswith("state"))
        same = float(np.mean(a.states[col].to_numpy() == b.states[col].to_numpy()))
        (init_a, ll_a), (init_b, ll_b) = kept_fit(a), kept_fit(b)
        print(
            f"{task} ({settings.criterion}, {settings.merge_splits} round(s)): "
            f"{without:.1f} s without the moves, {with_:.1f} s with ({with_ / without:.2f}x); "
            f"K {a.model.k} / {b.model.k}; kept fit {init_a!r} {ll_a:.4f} / {init_b!r} {ll_b:.4f} "
            f"nats/step; same state at {same:.1%} of checkpoints",
            flush=True,
        )


if __name__ == "__main__":
    main()
