"""The batched EM of this checkout against the same module at another git revision.

Usage: python benchmarks/em_revisions.py REV [RESULTS_DIR] [--config config.yaml] [--tasks a,b]
                                         [--ks 2,4,6,8] [--repeats 3]

`src/latentstates/states/baum_welch.py` as it is at REV (e.g. `HEAD~1`, a tag; before its rename,
`states/batched.py`) is loaded beside the working tree's, and both fit the batches the fold
criteria run (`folds.fold_scores`): for each task's collated table
(RESULTS_DIR/<task>/metrics.parquet), its z-scored runs and each K, one batch of `hmm.cv_folds` ×
(`hmm.cv_restarts` + K − 1) fits, each fold's runs weighted 0 in its fits, every fit started from
the same seeded parameters in both. Printed per K: the best of `--repeats` timings of
each, their ratio, and the largest difference of the fits' log-likelihoods (the same arithmetic up to
the order of sums: ~1e-11). One thread, as a workflow job.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from latentstates.config import load_config  # noqa: E402
from latentstates.device import configure_torch, resolve_device  # noqa: E402
from latentstates.io import read_parquet  # noqa: E402
from latentstates.settings import HMMSettings  # noqa: E402
from latentstates.states import baum_welch  # noqa: E402
from latentstates.states.fit import Spec, plan, restart_init, restart_seed  # noqa: E402
from latentstates.states.sequences import fold_runs, zscore_runs  # noqa: E402

MODULES = ("src/latentstates/states/baum_welch.py", "src/latentstates/states/batched.py")  # renamed


def module_at(rev: str):
    """The batched EM's module as it is at git revision `rev`, imported under its own name."""
    for module in MODULES:
        shown = subprocess.run(
            ["git", "-C", str(REPO), "show", f"{rev}:{module}"], capture_output=True, text=True
        )
        if shown.returncode == 0:
            text = shown.stdout
            break
    else:
        raise SystemExit(f"{rev} has none of {', '.join(MODULES)}")
    path = Path(tempfile.mkdtemp()) / "batched_at_rev.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("batched_at_rev", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["batched_at_rev"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def fold_jobs(arrays, runs, k: int, settings: HMMSettings) -> list[baum_welch.Job]:
    """The jobs of one fold-stage batch: per fold, `cv_restarts` seeded starts and K − 1 more
    (standing in for the splits, which start from a smaller fit), the fold's runs weighted 0."""
    jobs = []
    for f, held in enumerate(fold_runs(runs, settings.cv_folds, settings.seed)):
        weights = [int(r not in held) for r in runs]
        for i in range(settings.cv_restarts + k - 1):
            spec = Spec(weights, restart_seed(settings.seed, k, 1000 * (f + 1) + i), restart_init(i))
            jobs.append(plan(arrays, k, settings, spec))
    return jobs


def timed(module, arrays, jobs, settings: HMMSettings, repeats: int):
    """Best time of `repeats` fits of `jobs` by `module.fit_batch`, and the outcomes."""
    theirs = [
        module.Job(
            module.Start(*(getattr(j.start, f) for f in ("starts", "edges", "ends", "means", "covs"))),
            j.weights,
            j.floor,
            j.prior,
        )
        for j in jobs
    ]
    best, out = np.inf, None
    for _ in range(repeats):
        began = time.perf_counter()
        out = module.fit_batch(arrays, theirs, settings.covariance, settings.max_iter, settings.tol)
        best = min(best, time.perf_counter() - began)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", help="git revision to compare against, e.g. HEAD~1")
    parser.add_argument("results", nargs="?", default=str(REPO / "results"))
    parser.add_argument("--config", default=str(REPO / "config.yaml"))
    parser.add_argument("--tasks", default=None, help="comma-separated; default: every task")
    parser.add_argument("--ks", default="2,4,6,8")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    configure_torch(1, resolve_device("cpu"))
    config = load_config(args.config)
    other = module_at(args.rev)
    tasks = args.tasks.split(",") if args.tasks else sorted(config["tasks"])
    ks = [int(k) for k in args.ks.split(",")]
    head = f"{'task':22s} {'K':>2s} {'fits':>4s} {args.rev + ' s':>10s} {'this s':>8s} {'ratio':>6s}"
    print(f"{head} {'max |dLL|':>9s}")
    for task in tasks:
        settings = HMMSettings.of_task(config, task)
        table = read_parquet(Path(args.results) / task / "metrics.parquet")
        seqs = zscore_runs(table, [f for f in settings.features if f in table], settings.zscore == "pooled")
        for k in ks:
            jobs = fold_jobs(seqs.arrays, list(seqs.runs), k, settings)
            t_old, old = timed(other, seqs.arrays, jobs, settings, args.repeats)
            t_new, new = timed(baum_welch, seqs.arrays, jobs, settings, args.repeats)
            both = [(a, b) for a, b in zip(old, new) if not (a.error or b.error)]
            diff = max((abs(a.log_likelihood - b.log_likelihood) for a, b in both), default=float("nan"))
            row = f"{task:22s} {k:2d} {len(jobs):4d} {t_old:10.2f} {t_new:8.2f} {t_old / t_new:6.2f}"
            print(f"{row} {diff:9.1e}", flush=True)


if __name__ == "__main__":
    main()
