"""A seed group's ResNet18 training steps: grouped convolutions against one replica after another.

Usage: python benchmarks/stacked_resnets.py [--device cuda] [--groups 1 4 8 16] [--batch 256]
                                            [--steps 5] [--profile 8]

One training step (forward, the replicas' cross-entropy losses, backward) of `--groups` CIFAR-100
ResNet18s (batch norm and residuals, 32×32×3 images, `--batch` each) stacked as `Replicas` both ways
of `train.stacking`: `one_by_one` (each replica's model in turn, as alone to the bit) and `grouped`
(one network of grouped convolutions, tasks/stacked_resnet.py). Prints seconds per step, images per
second and the ratio, per group size; the fastest group's images per second against a group of one
is what `seeds_per_job` gains for the ResNets. Deterministic kernels, as training runs them.
`--profile N`: where a step of N grouped replicas spends its time (torch's profiler, top operators
by device time; the issue's "find where the time goes").
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from latentstates.device import configure_torch, resolve_device  # noqa: E402
from latentstates.tasks import image_data  # noqa: E402
from latentstates.tasks.models import ImageInput, ResNet18  # noqa: E402
from latentstates.tasks.replicas import Replicas  # noqa: E402


def seconds_per_step(replicas: Replicas, x: torch.Tensor, y: torch.Tensor, steps: int, dev) -> float:
    def step():
        for p in replicas.parameters():
            p.grad = None
        out = replicas(x)
        F.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="sum").backward()

    step()  # warm-up: kernels, algorithm choice, allocator
    if dev.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def profile(n: int, batch: int, dev: torch.device) -> None:
    """The top operators of one grouped step of `n` replicas, by self device (or CPU) time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    models = [ResNet18(100, input=ImageInput(*image_data.CIFAR100_STATS)).to(dev) for _ in range(n)]
    replicas = Replicas(models, grouped=True).train()
    x = torch.randint(0, 256, (n, batch, 32, 32, 3), dtype=torch.uint8, device=dev)
    y = torch.randint(0, 100, (n, batch), device=dev)
    seconds_per_step(replicas, x, y, 1, dev)  # warm
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        seconds_per_step(replicas, x, y, 1, dev)
    key = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=15))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--groups", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads")
    parser.add_argument("--profile", type=int, default=0, help="profile a step of this many grouped")
    args = parser.parse_args()
    dev = resolve_device(args.device)
    configure_torch(args.threads, dev)
    name = torch.cuda.get_device_name() if dev.type == "cuda" else torch.backends.cpu.get_cpu_capability()
    print(f"torch {torch.__version__}, {dev} ({name}); batch {args.batch} per replica")
    torch.manual_seed(0)
    base = None
    for n in args.groups:
        models = [ResNet18(100, input=ImageInput(*image_data.CIFAR100_STATS)).to(dev) for _ in range(n)]
        x = torch.randint(0, 256, (n, args.batch, 32, 32, 3), dtype=torch.uint8, device=dev)
        y = torch.randint(0, 100, (n, args.batch), device=dev)
        times = {}
        for way in ("one_by_one", "grouped"):
            replicas = Replicas([copy.deepcopy(m) for m in models], grouped=way == "grouped").train()
            times[way] = seconds_per_step(replicas, x, y, args.steps, dev)
            del replicas
        base = base or times["one_by_one"]  # a group of one, one by one: the paper's one run
        one, grouped = times["one_by_one"], times["grouped"]
        print(
            f"group of {n:2d}: one_by_one {one:.4f} s ({n * args.batch / one:,.0f} images/s), "
            f"grouped {grouped:.4f} s ({n * args.batch / grouped:,.0f} images/s): grouped "
            f"{one / grouped:.2f}x one_by_one; best {n * base / min(one, grouped):.2f}x a group of one",
            flush=True,
        )
        del models, x, y
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    if args.profile:
        profile(args.profile, args.batch, dev)


if __name__ == "__main__":
    main()
