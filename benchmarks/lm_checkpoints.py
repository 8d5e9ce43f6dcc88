"""Cost of a language-model checkpoint's statistics at Pythia's real sizes.

Usage: python benchmarks/lm_checkpoints.py [--sizes 14m 70m 160m 410m] [--dtype float32] [--device cuda]

For each size, two synthetic checkpoints of the real shapes (random weights in GPT-NeoX's layout,
safetensors with embeddings, float32 as PolyPythias' files or float16) are written to temporary
`save_pretrained`-like directories. Each measurement runs in its own process (so that its peak
memory is its own), reading a directory and computing the 14 statistics:

- baseline: the whole checkpoint loaded, one float64 SVD per matrix (`numpy.linalg.svd`, values
  only) as the released code, with every core (2 threads);
- ours, alone: the workflow's path with one thread (`open_weights` → `gpt_neox_layers` →
  `streamed_weight_metrics`: read layer by layer, singular values of large matrices from the
  float64 Gram matrix, the exact median by counting);
- ours, side by side: two such processes on the two checkpoints at once, as the workflow's
  one-thread metrics jobs run on two cores; its time per checkpoint is the pair's wall time / 2.
  With `--device cuda` ours computes the matrices' statistics on the GPU (as the workflow's
  `device: auto` where there is one) and the side-by-side pair is not run.

With `--per-layer`, each size is measured instead by ours alone without per-layer statistics and
with `metrics.per_layer` blocks and parts (one process each, in that order, twice, the faster of
the two kept), with their time and peak memory as ratios to the first: the goal is ≤ 1.5x each.

Prints seconds per checkpoint, the ratio, the largest relative difference of the statistics, peak
memory, and the verdicts of the goals for PolyPythias-160m on this CPU: 1,540 checkpoints in
≤ 2 hours (≤ ~4 s each), statistics within 1e-6 of float64 SVDs, ≤ ~1 GB for a 410m checkpoint.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

# hidden size, layers, heads of each Pythia size (intermediate 4h, vocabulary 50,304).
SIZES = {"14m": (128, 6, 4), "70m": (512, 6, 8), "160m": (768, 12, 12), "410m": (1024, 24, 16)}
VOCAB = 50_304


def write_checkpoint(directory: Path, size: str, seed: int = 0, dtype: str = "float32") -> None:
    """A synthetic Pythia checkpoint of `size` in the Hub's layout (safetensors of `dtype`)."""
    import torch
    from safetensors.torch import save_file

    h, layers, heads = SIZES[size]
    g = torch.Generator().manual_seed(seed)
    kind = getattr(torch, dtype)

    def rand(*shape):
        return (torch.randn(*shape, generator=g) * 0.02).to(kind)

    sd = {"gpt_neox.embed_in.weight": rand(VOCAB, h), "embed_out.weight": rand(VOCAB, h)}
    for i in range(layers):
        p = f"gpt_neox.layers.{i}."
        sd.update(
            {
                p + "input_layernorm.weight": torch.ones(h).to(kind),
                p + "attention.query_key_value.weight": rand(3 * h, h),
                p + "attention.query_key_value.bias": rand(3 * h),
                p + "attention.dense.weight": rand(h, h),
                p + "attention.dense.bias": rand(h),
                p + "mlp.dense_h_to_4h.weight": rand(4 * h, h),
                p + "mlp.dense_h_to_4h.bias": rand(4 * h),
                p + "mlp.dense_4h_to_h.weight": rand(h, 4 * h),
                p + "mlp.dense_4h_to_h.bias": rand(h),
            }
        )
    directory.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(directory / "model.safetensors"))
    config = {
        "model_type": "gpt_neox",
        "hidden_size": h,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
    }
    (directory / "config.json").write_text(json.dumps(config))


def measure(method: str, directory: Path, threads: int, start_at: float, device: str = "cpu") -> dict:
    """Statistics of one checkpoint by `method`, its time (reading included) and peak memory;
    modules are imported first and the clock starts at `start_at` (epoch seconds), so that
    processes side by side start together."""
    import numpy as np
    import torch

    from latentstates.columns import MATRIX_FEATURES
    from latentstates.measure.metrics import SINGULAR_VALUE_CUTOFF, streamed_weight_metrics, weight_metrics
    from latentstates.runs.architectures import GPT_NEOX, gpt_neox_layers, gpt_neox_weights
    from latentstates.runs.weights import load_weights, model_config, open_weights

    torch.set_num_threads(threads)
    time.sleep(max(0.0, start_at - time.time()))
    start = time.perf_counter()
    config = model_config(directory, "transformers")
    if method.startswith("ours"):  # ours, or ours-blocks / ours-parts: with per-layer statistics
        per_layer = method.partition("-")[2] or None
        sd = open_weights(directory, "transformers")
        layers = lambda: gpt_neox_layers(sd, config)  # noqa: E731
        stats = streamed_weight_metrics(layers, device, per_layer=per_layer, parts=GPT_NEOX.parts)
        if device != "cpu":
            torch.cuda.synchronize()
    else:
        matrices, biases = gpt_neox_weights(load_weights(directory, "transformers"), config)
        per = []
        for m in matrices:
            a = m.double().numpy()
            sv = np.linalg.svd(a, compute_uv=False)
            spectral = sv.max()
            sv = np.where(sv < SINGULAR_VALUE_CUTOFF, 0.0, sv)
            l1, l2 = np.abs(a).sum(), np.sqrt((a**2).sum())
            per.append(
                [l1, l2, np.trace(a), spectral, l1 / l2, np.trace(a) / spectral, sv.mean(), sv.var(ddof=1)]
            )
        stats = dict(zip(MATRIX_FEATURES, np.mean(per, axis=0).tolist()))
        flat = torch.cat([m.reshape(-1).double() for m in matrices])
        stats.update(mean_w=flat.mean().item(), median_w=flat.median().item(), var_w=flat.var().item())
        stats.update({k: v for k, v in weight_metrics(matrices[:1], biases).items() if k.endswith("_b")})
    seconds = time.perf_counter() - start
    finished = time.time()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "finished": finished, "peak_mb": peak_mb, "stats": stats}


def child(
    method: str, directory: str, threads: int, start_at: float = 0.0, device: str = "cpu"
) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--threads", str(threads), "--start-at", str(start_at)]
    cmd += ["--device", device]
    cmd += ["--measure", method, directory]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


def result(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"a measurement failed (exit {proc.returncode})")
    return json.loads(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for ours on the GPU")
    parser.add_argument(
        "--per-layer", action="store_true", help="ours with and without metrics.per_layer instead"
    )
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--write", nargs=4, metavar=("DIR", "SIZE", "SEED", "DTYPE"), help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--measure", nargs=2, metavar=("METHOD", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write:
        write_checkpoint(Path(args.write[0]), args.write[1], int(args.write[2]), args.write[3])
        return
    if args.measure:  # the child process of one measurement
        print(
            json.dumps(
                measure(args.measure[0], Path(args.measure[1]), args.threads, args.start_at, args.device)
            )
        )
        return
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    print(f"torch {torch.__version__}, CPU capability {capability}, {args.dtype} checkpoints")
    if args.device != "cpu":
        print(f"ours on {torch.cuda.get_device_name()} (the side-by-side column: ours alone)")
    if args.per_layer:
        per_layer(args)
        return
    print("baseline: 2 threads, one process; ours: 1 thread, alone and two processes side by side")
    head = [
        "size",
        "matrices",
        "baseline s",
        "ours alone s",
        "side by side s",
        "ratio",
        "max rel diff",
        "peak MB",
    ]
    widths = (5, 8, 10, 12, 14, 6, 12, 8)
    print(" ".join(f"{h:>{w}}" for h, w in zip(head, widths)))
    results = {}
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            dirs = [str(Path(tmp) / f"seed{seed}") for seed in (0, 1)]
            for seed, d in enumerate(dirs):  # written by a child: a process's peak memory counts
                # what its parent held when it started (Linux keeps ru_maxrss across fork and exec)
                write = [sys.executable, __file__, "--write", d, size, str(seed), args.dtype]
                subprocess.run(write, check=True)
            base = result(child("baseline", dirs[0], 2))
            alone = result(child("ours", dirs[0], 1, device=args.device))
            if args.device == "cpu":
                start_at = time.time() + 15  # after both processes' imports
                pair = [result(p) for p in [child("ours", d, 1, start_at) for d in dirs]]
                side = (max(p["finished"] for p in pair) - start_at) / 2
            else:  # one GPU: one process, its time per checkpoint
                pair, side = [], alone["seconds"]
        diff = max(
            abs(alone["stats"][k] - v) / max(abs(v), 1e-300) for k, v in base["stats"].items() if v == v
        )
        peak = max(alone["peak_mb"], *(p["peak_mb"] for p in pair))
        h, layers, _ = SIZES[size]
        print(
            f"{size:>5} {6 * layers:>8} {base['seconds']:>10.2f} {alone['seconds']:>12.2f} {side:>14.2f} "
            f"{base['seconds'] / side:>5.1f}x {diff:>12.1e} {peak:>8.0f}"
        )
        results[size] = (side, diff, peak)
    if "160m" in results:
        per = results["160m"][0]
        hours = per * 1540 / 3600
        print(f"PolyPythias-160m: 1,540 x {per:.2f} s = {hours:.2f} h: goal <= 2 h {verdict(hours <= 2)}")
    worst = max(d for _, d, _ in results.values())
    print(
        f"statistics against float64 SVDs: largest relative difference {worst:.1e}: {verdict(worst <= 1e-6)}"
    )
    if "410m" in results:
        peak = results["410m"][2]
        print(
            f"410m checkpoint: peak memory {peak:.0f} MB a process: goal <= ~1,000 MB {verdict(peak <= 1100)}"
        )


def per_layer(args: argparse.Namespace) -> None:
    """Ours alone without and with per-layer statistics (blocks, parts): seconds and peak memory
    per checkpoint, and their ratios to without."""
    print("ours alone, 1 thread: without per-layer statistics, with metrics.per_layer blocks and parts")
    head = ["size", "mode", "columns", "seconds", "x time", "peak MB", "x memory"]
    widths = (5, 8, 8, 8, 7, 8, 9)
    print(" ".join(f"{h:>{w}}" for h, w in zip(head, widths)))
    worst = 0.0
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            d = str(Path(tmp) / "seed0")
            subprocess.run([sys.executable, __file__, "--write", d, size, "0", args.dtype], check=True)
            modes = ["ours", "ours-blocks", "ours-parts"]
            runs = {m: [] for m in modes}
            for _ in range(2):  # interleaved: drift in the machine's speed falls on every mode alike
                for m in modes:
                    runs[m].append(result(child(m, d, 1, device=args.device)))
        best = {m: min(r, key=lambda x: x["seconds"]) for m, r in runs.items()}
        base = best["ours"]
        for m in modes:
            b = best[m]
            t, mem = b["seconds"] / base["seconds"], b["peak_mb"] / base["peak_mb"]
            if m != "ours":
                worst = max(worst, t, mem)
            name = m.partition("-")[2] or "without"
            print(
                f"{size:>5} {name:>8} {len(b['stats']):>8} {b['seconds']:>8.2f} {t:>6.2f}x "
                f"{b['peak_mb']:>8.0f} {mem:>8.2f}x"
            )
    print(
        f"per-layer statistics: at most {worst:.2f}x the time and memory: "
        f"goal <= 1.5x {verdict(worst <= 1.5)}"
    )


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


if __name__ == "__main__":
    main()
