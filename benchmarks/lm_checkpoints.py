"""Cost of a language-model checkpoint's statistics at Pythia's real sizes.

Usage: python benchmarks/lm_checkpoints.py [--sizes 14m 70m 160m 410m] [--threads 2]

For each size, a synthetic checkpoint of the real shapes (random weights in GPT-NeoX's layout,
float16 safetensors with embeddings, as the Hub's Pythia files) is written to a temporary
`save_pretrained`-like directory. Each method then runs in its own process (so that its peak
memory is its own), reading the directory and computing the 14 statistics:

- baseline: one float64 SVD per matrix (`numpy.linalg.svd`, values only), as the released code;
- ours: the workflow's path (`load_weights` → `gpt_neox_weights` → `weight_metrics`: matrices of
  a shape stacked, singular values of large ones from the float64 Gram matrix).

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


def write_checkpoint(directory: Path, size: str, seed: int = 0) -> None:
    """A synthetic Pythia checkpoint of `size` in the Hub's layout (float16 safetensors)."""
    import torch
    from safetensors.torch import save_file

    h, layers, heads = SIZES[size]
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return (torch.randn(*shape, generator=g) * 0.02).half()

    sd = {"gpt_neox.embed_in.weight": rand(VOCAB, h), "embed_out.weight": rand(VOCAB, h)}
    for i in range(layers):
        p = f"gpt_neox.layers.{i}."
        sd.update(
            {
                p + "input_layernorm.weight": torch.ones(h).half(),
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


def measure(method: str, directory: Path, threads: int) -> dict:
    """Statistics of one checkpoint by `method`, its time (reading included) and peak memory."""
    import numpy as np
    import torch

    from latentstates.columns import MATRIX_FEATURES
    from latentstates.measure.metrics import SINGULAR_VALUE_CUTOFF, weight_metrics
    from latentstates.runs.architectures import gpt_neox_weights
    from latentstates.runs.weights import load_weights, model_config

    torch.set_num_threads(threads)
    start = time.perf_counter()
    matrices, biases = gpt_neox_weights(
        load_weights(directory, "transformers"), model_config(directory, "transformers")
    )
    if method == "ours":
        stats = weight_metrics(matrices, biases)
    else:
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
        stats.update({k: v for k, v in weight_metrics(matrices[:1], biases).items() if k.endswith("_b")})
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "peak_mb": peak_mb, "stats": stats}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--measure", nargs=2, metavar=("METHOD", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:  # the child process of one measurement
        print(json.dumps(measure(args.measure[0], Path(args.measure[1]), args.threads)))
        return
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    print(f"torch {torch.__version__}, {args.threads} threads, CPU capability {capability}")
    head = ["size", "matrices", "baseline s", "ours s", "ratio", "max rel diff", "peak MB (ours)"]
    print(" ".join(f"{h:>{w}}" for h, w in zip(head, (5, 8, 10, 7, 6, 12, 14))))
    results = {}
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            write_checkpoint(Path(tmp), size)
            runs = {}
            for method in ("baseline", "ours"):
                cmd = [sys.executable, __file__, "--threads", str(args.threads), "--measure", method, tmp]
                runs[method] = json.loads(
                    subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                )
        base, ours = runs["baseline"], runs["ours"]
        diff = max(
            abs(ours["stats"][k] - v) / max(abs(v), 1e-300) for k, v in base["stats"].items() if v == v
        )
        h, layers, _ = SIZES[size]
        print(
            f"{size:>5} {6 * layers:>8} {base['seconds']:>10.2f} {ours['seconds']:>7.2f} "
            f"{base['seconds'] / ours['seconds']:>5.1f}x {diff:>12.1e} {ours['peak_mb']:>14.0f}"
        )
        results[size] = (ours, diff)
    if "160m" in results:
        per = results["160m"][0]["seconds"]
        hours = per * 1540 / 3600
        print(f"PolyPythias-160m: 1,540 x {per:.2f} s = {hours:.2f} h: goal <= 2 h {verdict(hours <= 2)}")
    worst = max(d for _, d in results.values())
    print(
        f"statistics against float64 SVDs: largest relative difference {worst:.1e}: {verdict(worst <= 1e-6)}"
    )
    if "410m" in results:
        peak = results["410m"][0]["peak_mb"]
        print(f"410m checkpoint: peak memory {peak:.0f} MB: goal <= ~1,000 MB {verdict(peak <= 1100)}")


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


if __name__ == "__main__":
    main()
