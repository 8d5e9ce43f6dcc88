"""Metric extraction: checkpoints per second, batched SVDs against one SVD per matrix.

Usage: python benchmarks/metrics.py [--task modular_addition] [--checkpoints DIR]

Baseline: the 14 statistics with one `svdvals` (and one set of norms) per weight matrix, as the
released code computes them. Ours: `weight_metrics`, which stacks same-shape matrices (e.g. every
head's keys, queries and values) into one batched call. Both read the same checkpoints (loading
included); the script prints checkpoints per second of each, the ratio, and the largest
difference between the two tables. It also times the whole per-run extraction of the workflow
(`run_metrics`, with the Hessian at every stride-th checkpoint) for context. The checkpoints are
those of results/<task>/runs/seed0 when present, else of a run trained here.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from latentstates.columns import MATRIX_FEATURES  # noqa: E402
from latentstates.config import load_config  # noqa: E402
from latentstates.device import configure_torch, resolve_device  # noqa: E402
from latentstates.measure.extract import run_metrics  # noqa: E402
from latentstates.measure.metrics import _summary, stacked_matrix_metrics, weight_metrics  # noqa: E402
from latentstates.runs.checkpoints import list_checkpoints, load_checkpoint  # noqa: E402
from latentstates.runs.runtime import build_run  # noqa: E402
from latentstates.runs.train import train_run  # noqa: E402
from latentstates.runs.weights import load_into  # noqa: E402
from latentstates.settings import HessianSettings, TaskSpec  # noqa: E402


def per_matrix_metrics(matrices, biases) -> dict[str, float]:
    """The baseline: every matrix on its own, then the same averages as `weight_metrics`."""
    per = [stacked_matrix_metrics(m.detach()[None]) for m in matrices]
    out = {}
    for name in MATRIX_FEATURES:
        vals = np.array([p[name][0] for p in per])
        out[name] = float(np.nanmean(vals)) if name == "variance_lambda" else float(vals.mean())
    out.update(_summary(torch.cat([m.detach().reshape(-1) for m in matrices]), "w"))
    out.update(_summary(torch.cat([b.detach().reshape(-1) for b in biases]), "b"))
    return out


def table(fn, task, paths) -> tuple[pd.DataFrame, float]:
    kind, _, model = build_run(task.run_spec, 0)
    start = time.perf_counter()
    rows = []
    with torch.no_grad():
        for p in paths:
            load_into(model, p)
            rows.append(fn(kind.matrices(model), kind.biases(model)))
    return pd.DataFrame(rows), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="modular_addition")
    parser.add_argument("--checkpoints", default=None)
    args = parser.parse_args()
    configure_torch(1, resolve_device("cpu"))
    cfg = load_config(REPO / "config.yaml")
    task = TaskSpec.of_task(cfg, args.task)
    ckpt = Path(args.checkpoints or REPO / "results" / args.task / "runs" / "seed0" / "checkpoints")
    if not ckpt.is_dir():
        ckpt = Path(tempfile.mkdtemp()) / "checkpoints"
        train_run(task, 0, ckpt, device="cpu", progress=False)
    paths = list_checkpoints(ckpt)
    table(weight_metrics, task, paths[:5])  # warm up both paths (imports, allocator)
    base, t_base = table(per_matrix_metrics, task, paths)
    ours, t_ours = table(weight_metrics, task, paths)
    diff = float((base - ours).abs().max().max())
    n = len(paths)
    print(f"{args.task}: {n} checkpoints of {ckpt}, one thread")
    print(f"  baseline, one SVD per matrix: {n / t_base:7.1f} checkpoints/s")
    print(f"  ours, batched by shape:       {n / t_ours:7.1f} checkpoints/s")
    print(f"  speed-up: {t_base / t_ours:.2f}x; largest difference {diff:.1e}")
    # The run's step and epoch of each checkpoint from the checkpoints themselves; the losses are
    # not what is timed.
    saved = [load_checkpoint(p) for p in paths]
    log = pd.DataFrame({k: [c[k] for c in saved] for k in ["index", "step", "epoch"]})
    log = log.rename(columns={"index": "checkpoint"})
    for col in ["train_loss", "train_acc", "eval_loss", "eval_acc"]:
        log[col] = 0.0
    start = time.perf_counter()
    hessian = HessianSettings.of_task(cfg, args.task)
    run_metrics(task, 0, ckpt, log, hessian, device="cpu", progress=False)
    whole = time.perf_counter() - start
    stride = hessian.stride
    print(f"  whole run_metrics, the Hessian every {stride}: {n / whole:.1f} checkpoints/s")


if __name__ == "__main__":
    main()
