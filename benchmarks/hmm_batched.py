"""Batched HMM fits against pomegranate's own DenseHMM fitted one restart at a time.

Usage: python benchmarks/hmm_batched.py [RESULTS_DIR] [--config config.yaml] [--tasks a,b]
                                        [--restarts R] [--ks 2,4,8]

For each task's collated table (RESULTS_DIR/<task>/metrics.parquet), the workflow's z-scored
runs and training split, and each K: the workflow's `restarts` seeded restarts fitted (a) one at
a time by pomegranate's DenseHMM with the workflow's FlooredNormal emissions
(`fit_hmm(..., reference=True)`: what a pomegranate user runs) and (b) as one batch
(`fit_many`, what the workflow runs). Printed per K: the summed time of each, their ratio, and
the largest relative difference of any fitted parameter, |a − b| / max(1, |a|), between the two
(the batched fit is pomegranate's fit, so it should be ~1e-12). Both are warmed up first; one
thread each, as a workflow job.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from latentstates.config import load_config  # noqa: E402
from latentstates.device import configure_torch, resolve_device  # noqa: E402
from latentstates.settings import HMMSettings  # noqa: E402
from latentstates.states.fit import Spec, fit_hmm, fit_many, restart_init, restart_seed  # noqa: E402
from latentstates.states.model import PARAMETERS  # noqa: E402
from latentstates.states.sequences import split_runs, zscore_runs  # noqa: E402


def largest_difference(a, b) -> float:
    out = 0.0
    for name in PARAMETERS:
        x, y = getattr(a, name), getattr(b, name)
        out = max(out, float(np.max(np.abs(x - y) / np.maximum(1.0, np.abs(x)))))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", default="results")
    parser.add_argument("--config", default=str(REPO / "config.yaml"))
    parser.add_argument("--tasks", default=None)
    parser.add_argument("--restarts", type=int, default=None, help="default: the config's hmm.restarts")
    parser.add_argument("--ks", default="2,4,8")
    args = parser.parse_args()
    configure_torch(1, resolve_device("cpu"))
    config = load_config(args.config)
    tasks = args.tasks.split(",") if args.tasks else sorted(config["tasks"])
    for task in tasks:
        settings = HMMSettings.of_task(config, task)
        restarts = args.restarts or settings.restarts
        metrics = pd.read_parquet(Path(args.results) / task / "metrics.parquet")
        seqs = zscore_runs(metrics, settings.features)
        train_runs, _ = split_runs(seqs.runs, settings.val_fraction, settings.seed)
        train = [seqs.arrays[seqs.runs.index(r)] for r in train_runs]
        print(f"\n{task}: {len(train)} training runs × {len(train[0])} steps, d = {train[0].shape[1]}")
        print(f"{'K':>3} {'pomegranate s':>14} {'batched s':>10} {'ratio':>6} {'max rel diff':>13} failed")
        fit_hmm(train, 2, settings, 0, reference=True)  # warm-up: imports, first calls
        fit_many(train, 2, settings, [Spec(None, 0)])
        for k in map(int, args.ks.split(",")):
            specs = [Spec(None, restart_seed(settings.seed, k, r), restart_init(r)) for r in range(restarts)]
            began = time.perf_counter()
            batched = fit_many(train, k, settings, specs)
            t_batched = time.perf_counter() - began
            began = time.perf_counter()
            reference = []
            for spec in specs:
                try:
                    reference.append(fit_hmm(train, k, settings, spec.seed, spec.init, reference=True))
                except (RuntimeError, ValueError):
                    reference.append(None)
            t_reference = time.perf_counter() - began
            pairs = [(a, b) for (a, _), b in zip(batched, reference) if a is not None and b is not None]
            failed = sum(a is None for a, _ in batched), sum(b is None for b in reference)
            diff = max((largest_difference(b, a) for a, b in pairs), default=float("nan"))
            print(
                f"{k:>3} {t_reference:>14.1f} {t_batched:>10.1f} {t_reference / t_batched:>5.1f}x "
                f"{diff:>13.1e} {failed[0]}/{failed[1]}"
            )


if __name__ == "__main__":
    main()
