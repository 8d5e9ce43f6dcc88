"""Hessian top eigenvalue over a run's checkpoints: warm-started vs cold-started iteration.

Usage: python benchmarks/hessian_warm_start.py [CHECKPOINT_DIR] [TASK]
Defaults to results/sparse_parity/runs/seed0/checkpoints from the default config. Trains a fresh
parity run in a temporary directory if that is missing. Prints Hessian-vector products and seconds
for both, their ratio (cold / warm), measured in the same run on the same checkpoints, and at how
many checkpoints the two eigenvalues agree (a warm start must not lock onto a stale eigenvector).
"""

import sys
import tempfile
import time
from pathlib import Path

import torch

from latentstates.checkpoints import list_checkpoints, load_checkpoint
from latentstates.config import load_config
from latentstates.hessian import top_eigenvalue
from latentstates.runtime import build_run
from latentstates.train import train_run

REPO = Path(__file__).resolve().parents[1]


def sweep(task_cfg, paths, warm: bool, batch: int = 256, tol: float = 1e-3, max_iter: int = 100):
    kind, split, model = build_run(task_cfg, 0)
    model.eval()
    x, y = split.x_train[:batch], split.y_train[:batch]
    gen = torch.Generator().manual_seed(0)
    vec, iters, eigs = None, 0, []
    start = time.perf_counter()
    for p in paths:
        model.load_state_dict(load_checkpoint(p)["model"])
        res = top_eigenvalue(
            lambda: kind.loss(model(x), y),
            list(model.parameters()),
            init=vec if warm else None,
            tol=tol,
            max_iter=max_iter,
            generator=gen,
        )
        vec = res.vector
        iters += res.iterations
        eigs.append(res.eigenvalue)
    return iters, time.perf_counter() - start, eigs


if __name__ == "__main__":
    torch.set_num_threads(1)
    task = sys.argv[2] if len(sys.argv) > 2 else "sparse_parity"
    cfg = load_config(REPO / "config.yaml")["tasks"][task]
    ckpt = (
        Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "results" / task / "runs" / "seed0" / "checkpoints"
    )
    if not ckpt.is_dir():
        ckpt = Path(tempfile.mkdtemp()) / "checkpoints"
        train_run(cfg, 0, ckpt, progress=False)
    paths = list_checkpoints(ckpt)[::5]
    cold_i, cold_s, cold_e = sweep(cfg, paths, warm=False)
    warm_i, warm_s, warm_e = sweep(cfg, paths, warm=True)
    agree = sum(abs(a - b) <= 1e-2 * max(abs(a), 1e-6) for a, b in zip(cold_e, warm_e))
    print(f"{task}: {len(paths)} checkpoints, one thread")
    print(f"cold start: {cold_i:6d} Hessian-vector products, {cold_s:7.2f} s")
    print(f"warm start: {warm_i:6d} Hessian-vector products, {warm_s:7.2f} s")
    print(
        f"ratio cold/warm: {cold_i / warm_i:.2f}x products, {cold_s / warm_s:.2f}x time; "
        f"eigenvalues agree within 1% at {agree}/{len(paths)} checkpoints"
    )
