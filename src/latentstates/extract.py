"""Metric extraction for one run: every checkpoint → one row of weight statistics."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from .checkpoints import list_checkpoints, load_checkpoint
from .hessian import EigenResult, top_eigenvalue
from .metrics import PERFORMANCE_COLUMNS, weight_metrics
from .models import finite_weights
from .runtime import build_run, configure_torch, resolve_device


def load_into(model: torch.nn.Module, path: str | Path) -> dict:
    """Load checkpoint `path` into `model` (weights only); return the checkpoint, naming the file
    when its weights do not fit the configured model."""
    ckpt = load_checkpoint(path)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not fit the configured model ({exc})") from exc
    return ckpt


def checkpoint_hessian(
    kind, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, hessian_cfg: dict, init, generator
) -> EigenResult:
    """Top Hessian eigenpair of the task's loss on (x, y) at the model's weights, with the
    `metrics.hessian` settings, warm-started from `init` (the previous checkpoint's vector)."""
    return top_eigenvalue(
        lambda: kind.loss(model(x), y),
        [p for p in model.parameters() if p.requires_grad],
        init=init,
        tol=hessian_cfg["tol"],
        max_iter=hessian_cfg["max_iter"],
        generator=generator,
        krylov_dim=hessian_cfg["krylov_dim"],
    )


def run_metrics(
    task_cfg: dict,
    seed: int,
    checkpoint_dir: str | Path,
    train_log: pd.DataFrame,
    hessian_cfg: dict,
    device: str = "auto",
    threads: int = 1,
    progress: bool = True,
) -> pd.DataFrame:
    """Weight statistics (and the Hessian's top eigenvalue at every `stride`-th checkpoint).

    The Hessian is that of the training loss on a fixed batch (the first `batch_size` training
    examples) in eval mode; each computation is warm-started from the previous eigenvector.
    """
    dev = resolve_device(device)
    configure_torch(threads, dev)
    kind, split, model = build_run(task_cfg, seed)
    model.to(dev).eval()
    hb = hessian_cfg["batch_size"] or len(split.x_train)
    xh, yh = split.x_train[:hb].to(dev), split.y_train[:hb].to(dev)
    hessian_seed = seed + hessian_cfg["seed"]
    gen = torch.Generator().manual_seed(hessian_seed)
    vec = None
    rows = []
    paths = list_checkpoints(checkpoint_dir)
    for path in tqdm(
        paths, desc=f"metrics seed {seed}", file=sys.stderr, mininterval=5.0, disable=not progress
    ):
        ckpt = load_into(model, path)
        row = {"checkpoint": ckpt["index"], "step": ckpt["step"], "epoch": ckpt["epoch"]}
        row.update(weight_metrics(kind.matrices(model), kind.biases(model)))
        row["hessian_top_eig"] = np.nan
        row["hessian_iters"] = 0
        row["hessian_converged"] = False
        finite = finite_weights(model)
        if finite and hessian_cfg["enabled"] and ckpt["index"] % hessian_cfg["stride"] == 0:
            res = checkpoint_hessian(kind, model, xh, yh, hessian_cfg, vec, gen)
            vec = res.vector if math.isfinite(res.eigenvalue) else None  # NaN: cold-start next time
            row["hessian_top_eig"] = res.eigenvalue
            row["hessian_iters"] = res.iterations
            row["hessian_converged"] = res.converged
        rows.append(row)
    df = pd.DataFrame(rows)
    df["hessian_seed"] = hessian_seed
    perf = train_log[["checkpoint", *PERFORMANCE_COLUMNS, *(["diverged"] if "diverged" in train_log else [])]]
    merged = df.merge(perf, on="checkpoint", how="left", validate="one_to_one")
    if merged[PERFORMANCE_COLUMNS].isna().all(axis=1).any():
        missing = merged.loc[merged[PERFORMANCE_COLUMNS].isna().all(axis=1), "checkpoint"].tolist()
        raise ValueError(f"train log has no row for checkpoints {missing[:5]}")
    return merged
