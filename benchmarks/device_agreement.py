"""CPU and GPU tables of the same runs: do they agree?

Usage: python benchmarks/device_agreement.py [--task modular_addition] [--seeds 2] [--epochs N]
                                             [--device cuda] [--batch-runs auto|true|false]

Trains `--seeds` seeds of the task (default config, `--epochs` shortened) on the CPU, then
extracts the metrics of those same checkpoints on the CPU and on CUDA as one metrics job of the
workflow would (on CUDA the seeds' Hessians together, `metrics.hessian.batch_runs: auto`; on the
CPU one at a time) and prints, per column, the largest relative difference (weight statistics
are float64 on either device; the Hessian's products are float32). It also trains the same seeds
on CUDA and prints how far its per-checkpoint losses and accuracies drift from the CPU's: the
first checkpoints show that the two compute the same steps, the later ones how training amplifies
float rounding.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from latentstates.columns import PAPER_FEATURES, PERFORMANCE_COLUMNS  # noqa: E402
from latentstates.config import load_config  # noqa: E402
from latentstates.device import resolve_device  # noqa: E402
from latentstates.measure.extract import batches_hessians, metrics_of_runs  # noqa: E402
from latentstates.runs.contract import trained_run  # noqa: E402
from latentstates.runs.train import train_group  # noqa: E402
from latentstates.settings import HessianSettings, TaskSpec  # noqa: E402


def relative(a: pd.Series, b: pd.Series) -> float:
    a, b = a.to_numpy(float), b.to_numpy(float)
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.max(np.abs(a[ok] - b[ok]) / np.maximum(np.abs(b[ok]), 1e-12), initial=0.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="modular_addition")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--device", default="cuda", help="the device compared with the CPU")
    parser.add_argument(
        "--batch-runs",
        choices=["auto", "true", "false"],
        default="auto",
        help="metrics.hessian.batch_runs on the compared device (the CPU side: one run at a time)",
    )
    args = parser.parse_args()
    gpu = args.device
    cfg = load_config(REPO / "config.yaml")
    task = cfg["tasks"][args.task]
    if args.epochs:
        task["train"]["epochs"] = args.epochs
    seeds = list(range(args.seeds))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cpu_logs = train_group(
            TaskSpec.from_dict(task), seeds, [tmp / f"cpu{s}" for s in seeds], device="cpu", progress=False
        )
        gpu_logs = train_group(
            TaskSpec.from_dict(task), seeds, [tmp / f"gpu{s}" for s in seeds], device=gpu, progress=False
        )
        worst: dict[str, float] = {}
        dirs = [tmp / f"cpu{s}" for s in seeds]
        runs = [trained_run(TaskSpec.from_dict(task), s, d, log) for s, d, log in zip(seeds, dirs, cpu_logs)]
        batch = {"auto": "auto", "true": True, "false": False}[args.batch_runs]
        hessian = HessianSettings.of_task(cfg, args.task)
        reference = list(
            metrics_of_runs(
                runs, dirs, cpu_logs, hessian.replace(batch_runs=False), device="cpu", progress=False
            )
        )
        compared_cfg = hessian.replace(batch_runs=batch)
        compared = list(metrics_of_runs(runs, dirs, cpu_logs, compared_cfg, device=gpu, progress=False))
        for cpu_table, gpu_table in zip(reference, compared):
            for col in [*PAPER_FEATURES, "hessian_top_eig"]:
                worst[col] = max(worst.get(col, 0.0), relative(gpu_table[col], cpu_table[col]))
        print(f"{args.task}: {len(seeds)} seeds x {task['train']['epochs']} epochs")
        mode = (
            "together" if batches_hessians(runs, compared_cfg, resolve_device(gpu)) else "one run at a time"
        )
        print(
            f"metrics of the same checkpoints, {gpu} (Hessians {mode}) against cpu (one run at a "
            "time), largest relative difference:"
        )
        for col, value in worst.items():
            print(f"  {col:24s} {value:.1e}")
        diff = pd.concat(
            [
                (g[PERFORMANCE_COLUMNS] - c[PERFORMANCE_COLUMNS]).abs().max(axis=1)
                for g, c in zip(gpu_logs, cpu_logs)
            ],
            axis=1,
        ).max(axis=1)
        print(
            f"training on {gpu} against cpu, largest loss/accuracy difference: "
            f"{diff.iloc[1]:.1e} at checkpoint 1, {diff.iloc[: len(diff) // 10 + 2].max():.1e} over the "
            f"first tenth, {diff.max():.1e} over the run"
        )


if __name__ == "__main__":
    main()
