"""Hessian top eigenvalue over a run's checkpoints: ours against PyHessian's power iteration.

Usage: python benchmarks/hessian.py [--task sparse_parity] [--runs 0 3 7] [--checkpoints DIR]
                                    [--stride 5] [--device cpu] [--prepare DIR | --prepared DIR]

Baseline: PyHessian's `hessian.eigenvalues()` as released (cold start from a random vector at
every checkpoint, double-backprop Hessian-vector products, stop when the estimate changes by less
than 1e-3 relative, at most 100 products), written out below. Ours: as the metrics stage, with
the config's settings: the task's exact closed form where it has one (parities), and Lanczos
iteration warm-started from the previous checkpoint's eigenvector (also shown for the parities,
as `method: lanczos`).
With several `--runs`, also ours with the runs' Hessians iterated together, one batched product
for all (`metrics.hessian.batch_runs`, what a metrics job does with its seed group on a GPU).
All are checked against a tightly converged outside reference (ARPACK's implicitly restarted
Lanczos, scipy's eigsh with 64 Lanczos vectors, to a relative accuracy of 1e-10). Prints time,
products and how many checkpoints each gets wrong by more than 1e-3 (relative to the reference),
and the time ratio.
The checkpoints are those of results/<task>/runs/seed<r> for each run seed r of `--runs` when
present, else of a run trained here with the default config; with several runs it also prints
their totals (the ratio moves from run to run with how many products each side needs).

On a GPU lent for minutes, ARPACK (~65 products per checkpoint) would spend the time: `--prepare
DIR` trains the runs and computes their references here on the CPU, keeping only the strided
checkpoints and `DIR/references.json`; `--prepared DIR` on the GPU machine (DIR carried there)
then times the methods on those checkpoints against those references, without ARPACK.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from latentstates.config import load_config  # noqa: E402
from latentstates.device import configure_torch, resolve_device  # noqa: E402
from latentstates.measure.extract import checkpoint_hessian, stacked_hessian_losses  # noqa: E402
from latentstates.measure.hessian import top_eigenvalues  # noqa: E402
from latentstates.runs.checkpoints import list_checkpoints, load_checkpoint  # noqa: E402
from latentstates.runs.runtime import build_run  # noqa: E402
from latentstates.runs.train import train_run  # noqa: E402
from latentstates.settings import HessianSettings, TaskSpec  # noqa: E402
from latentstates.tasks.registry import get_task  # noqa: E402


def pyhessian_top(loss, params, max_iter=100, tol=1e-3, generator=None):
    """PyHessian's eigenvalues(top_n=1): plain power iteration, cold start, relative-change stop."""
    grads = torch.autograd.grad(loss, params, create_graph=True)
    # As ours: a gradient with no graph (the parity MLP's output bias) has zero Hessian rows.
    live = [(g, p) for g, p in zip(grads, params) if g.requires_grad]
    grads, params = [g for g, _ in live], [p for _, p in live]
    v = [torch.randn(p.shape, generator=generator).to(p.device) for p in params]
    norm = torch.sqrt(sum((x * x).sum() for x in v))
    v = [x / (norm + 1e-6) for x in v]
    eigenvalue, used = None, 0
    for _ in range(max_iter):
        hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True, allow_unused=True)
        hv = [h if h is not None else torch.zeros_like(p) for h, p in zip(hv, params)]
        used += 1
        tmp = sum((h * x).sum() for h, x in zip(hv, v)).item()
        norm = torch.sqrt(sum((h * h).sum() for h in hv))
        v = [h / (norm + 1e-6) for h in hv]
        if eigenvalue is not None and abs(eigenvalue - tmp) / (abs(eigenvalue) + 1e-6) < tol:
            eigenvalue = tmp
            break
        eigenvalue = tmp
    return eigenvalue, used


def arpack_top(loss, params):
    """The reference: ARPACK (scipy's eigsh) on the Hessian-vector product, largest algebraic
    eigenvalue to a relative accuracy of 1e-10."""
    import numpy as np
    from scipy.sparse.linalg import LinearOperator, eigsh

    grads = torch.autograd.grad(loss, params, create_graph=True)
    live = [(g, p) for g, p in zip(grads, params) if g.requires_grad]
    grads, params = [g for g, _ in live], [p for _, p in live]
    sizes = [p.numel() for p in params]
    calls = [0]

    def matvec(x):
        calls[0] += 1
        flat = torch.from_numpy(np.asarray(x, dtype=np.float64).reshape(-1)).to(params[0].device)
        v = [c.view_as(p).to(p.dtype) for c, p in zip(torch.split(flat, sizes), params)]
        hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True, allow_unused=True)
        hv = [h if h is not None else torch.zeros_like(p) for h, p in zip(hv, params)]
        return torch.cat([h.reshape(-1) for h in hv]).double().cpu().numpy()

    n = sum(sizes)
    op = LinearOperator((n, n), matvec=matvec, dtype=np.float64)
    v0 = np.random.default_rng(0).standard_normal(n)
    eig = eigsh(op, k=1, which="LA", tol=1e-10, v0=v0, ncv=64, maxiter=20000, return_eigenvectors=False)
    return float(eig[0]), calls[0]


def sweep(method, task, paths, hessian_cfg, device, run_seed=0):
    kind, split, model = build_run(task.run_spec, run_seed)
    model.to(device).eval()
    batch = hessian_cfg.batch_size or len(split.x_train)
    x, y = split.x_train[:batch].to(device), split.y_train[:batch].to(device)
    gen = torch.Generator().manual_seed(hessian_cfg.seed)
    vec, used, eigs = None, 0, []
    elapsed = 0.0
    for p in paths:
        model.load_state_dict(load_checkpoint(p)["model"])
        params = list(model.parameters())
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        if method == "baseline":
            eig, n = pyhessian_top(kind.loss(model(x), y), params, generator=gen)
        elif method == "reference":
            eig, n = arpack_top(kind.loss(model(x), y), params)
        else:  # ours and lanczos: as the metrics stage
            res = checkpoint_hessian(kind, model, x, y, hessian_cfg, vec, gen)
            eig, n, vec = res.eigenvalue, res.iterations, res.vector
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed += time.perf_counter() - start
        used += n
        eigs.append(eig)
    return elapsed, used, eigs


def sweep_together(task, runs, hessian_cfg, device):
    """Ours with the runs' Hessians iterated together (`extract.group_hessians`): one batched
    product for all runs at each checkpoint position. Returns seconds, products (per run, summed),
    batched products, and each run's eigenvalues."""
    seeds = [seed for seed, _ in runs]
    _, replicas, losses = stacked_hessian_losses(task.run_spec, seeds, hessian_cfg.batch_size, device)
    gens = [torch.Generator().manual_seed(hessian_cfg.seed) for _ in runs]
    vectors, used, batched, elapsed = [None] * len(runs), 0, 0, 0.0
    eigs = [[] for _ in runs]
    for pos in range(len(runs[0][1])):
        replicas.load_state_dicts([load_checkpoint(paths[pos])["model"] for _, paths in runs])
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        results = top_eigenvalues(
            losses,
            replicas.parameters(),
            vectors,
            gens,
            **hessian_cfg.lanczos(),
        )
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed += time.perf_counter() - start
        vectors = [res.vector for res in results]
        used += sum(res.iterations for res in results)
        batched += max(res.iterations for res in results)
        for r, res in enumerate(results):
            eigs[r].append(res.eigenvalue)
    return elapsed, used, batched, eigs


def run_checkpoints(args, task, hessian_cfg, run_seed: int, out: Path | None = None) -> list[Path]:
    """Every stride-th checkpoint of run `run_seed`: the default run's results, --checkpoints, or
    a run trained here (into `out`, else a temporary directory)."""
    default = REPO / "results" / args.task / "runs" / f"seed{run_seed}" / "checkpoints"
    ckpt = Path(args.checkpoints or default)
    if out is not None or not ckpt.is_dir():
        ckpt = out or Path(tempfile.mkdtemp()) / "checkpoints"
        train_run(task, run_seed, ckpt, device="cpu" if out else args.device, progress=False)
    return list_checkpoints(ckpt)[:: args.stride or hessian_cfg.stride]


def prepare(out: Path, args, task, hessian_cfg, device) -> None:
    """The runs trained on the CPU, their strided checkpoints kept in `out`/seed<r>/ and ARPACK's
    references in `out`/references.json (for --prepared on a GPU machine)."""
    refs = {"task": args.task, "stride": args.stride or hessian_cfg.stride, "runs": {}}
    for run_seed in args.runs:
        with tempfile.TemporaryDirectory() as tmp:
            paths = run_checkpoints(args, task, hessian_cfg, run_seed, Path(tmp) / "checkpoints")
            kept = out / f"seed{run_seed}"
            kept.mkdir(parents=True, exist_ok=True)
            for p in paths:  # the weights only (no optimiser state): a third of the size
                torch.save({"model": load_checkpoint(p)["model"]}, kept / p.name)
        paths = [kept / p.name for p in paths]
        _, n, eigs = sweep("reference", task, paths, hessian_cfg, device, run_seed)
        names = [p.name for p in paths]
        refs["runs"][str(run_seed)] = {"checkpoints": names, "products": n, "eigenvalues": eigs}
        print(f"{args.task} seed {run_seed}: {len(paths)} checkpoints, ARPACK {n} products", flush=True)
    (out / "references.json").write_text(json.dumps(refs, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="sparse_parity")
    parser.add_argument("--runs", type=int, nargs="+", default=[0], help="run seeds (default: 0)")
    parser.add_argument("--checkpoints", default=None, help="one run's checkpoint directory")
    parser.add_argument("--stride", type=int, default=None, help="default: the config's metrics stride")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--prepare", default=None, help="write checkpoints and references to DIR, then stop")
    parser.add_argument("--prepared", default=None, help="checkpoints and references of --prepare DIR")
    args = parser.parse_args()
    cfg = load_config(REPO / "config.yaml")
    task, hessian_cfg = TaskSpec.of_task(cfg, args.task), HessianSettings.of_task(cfg, args.task)
    device = resolve_device(args.device)
    configure_torch(1, device)
    if args.checkpoints and len(args.runs) != 1:
        parser.error("--checkpoints names one run's checkpoints: give one --runs seed")
    closed = get_task(task.kind).hessian_top is not None
    names = {
        "baseline": "baseline (PyHessian power iteration)",
        "ours": "ours (closed form)" if closed else "ours (warm Lanczos)",
        "lanczos": "ours, method lanczos (warm Lanczos)",
    }
    methods = ["baseline", "ours", "lanczos"] if closed else ["baseline", "ours"]
    totals = {m: [0.0, 0, 0, 0] for m in methods}  # seconds, products, wrong, checkpoints
    runs, refs = [], []  # (seed, checkpoint paths), references: for the runs together
    if args.prepare:
        prepare(Path(args.prepare), args, task, hessian_cfg, device)
        return
    prepared = json.loads((Path(args.prepared) / "references.json").read_text()) if args.prepared else None
    if prepared and (prepared["task"], prepared["stride"]) != (args.task, args.stride or hessian_cfg.stride):
        parser.error(f"{args.prepared} holds {prepared['task']} at stride {prepared['stride']}")
    for run_seed in args.runs:
        if prepared:
            entry = prepared["runs"][str(run_seed)]
            paths = [Path(args.prepared) / f"seed{run_seed}" / name for name in entry["checkpoints"]]
            ref_n, ref = entry["products"], entry["eigenvalues"]
        else:
            paths = run_checkpoints(args, task, hessian_cfg, run_seed)
            _, ref_n, ref = sweep("reference", task, paths, hessian_cfg, device, run_seed)
        runs.append((run_seed, paths))
        refs.append(ref)
        print(f"{args.task} seed {run_seed} on {device}: {len(paths)} checkpoints; ARPACK {ref_n} products")
        times = {}
        for method in methods:
            settings = hessian_cfg.replace(method="lanczos") if method == "lanczos" else hessian_cfg
            seconds, used, eigs = sweep(method, task, paths, settings, device, run_seed)
            wrong = sum(abs(e - r) > 1e-3 * max(abs(r), 1e-6) for e, r in zip(eigs, ref))
            worst = max(abs(e - r) / max(abs(r), 1e-6) for e, r in zip(eigs, ref))
            times[method] = seconds
            for i, x in enumerate((seconds, used, wrong, len(paths))):
                totals[method][i] += x
            print(
                f"  {names[method]:38s} {seconds:7.3f} s  {used:6d} products  wrong at "
                f"{wrong}/{len(paths)}  (largest relative error {worst:.1e})"
            )
        for method in methods[1:]:
            print(f"  speed-up, {names[method]}: {times['baseline'] / times[method]:.2f}x")
    if len(args.runs) > 1:
        print(f"{args.task}, runs {', '.join(map(str, args.runs))} together:")
        for method, (seconds, used, wrong, n) in totals.items():
            print(f"  {names[method]:38s} {seconds:7.3f} s  {used:6d} products  wrong at {wrong}/{n}")
        if len({len(paths) for _, paths in runs}) == 1 and not closed:
            seconds, used, batched, eigs = sweep_together(task, runs, hessian_cfg, device)
            pairs = [(e, r) for run_eigs, ref in zip(eigs, refs) for e, r in zip(run_eigs, ref)]
            wrong = sum(abs(e - r) > 1e-3 * max(abs(r), 1e-6) for e, r in pairs)
            totals["together"] = [seconds]
            names["together"] = "ours, the runs' Hessians together"
            methods.append("together")
            print(
                f"  {names['together']:38s} {seconds:7.3f} s  {used:6d} products  wrong at "
                f"{wrong}/{len(pairs)}  ({batched} batched products of {len(runs)} runs)"
            )
        for method in methods[1:]:
            print(f"  speed-up, {names[method]}: {totals['baseline'][0] / totals[method][0]:.2f}x")


if __name__ == "__main__":
    main()
