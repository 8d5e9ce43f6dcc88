"""The paper's experiments at full size: training and metrics time, seed groups against one seed
per process, and the GPU hours configs/paper.yaml needs.

Usage: python benchmarks/image_tasks.py [--device cuda] [--groups 1 4 8] [--epochs 1]

MNIST and CIFAR-100 cannot be downloaded here, so files of their exact sizes and formats (60,000
+ 10,000 28×28 and 50,000 + 10,000 32×32×3 images) are written with random pixels: the time of a
step does not depend on the pixel values. Each task is configs/paper.yaml's, trained for
`--epochs` epochs (modular addition: `--modular-epochs` of its 10,000), with its checkpoints and
their evaluations; the seconds per
seed-epoch of each group size are printed with the ratio to a group of one (the paper's one run
per process), then the metrics of one run's checkpoints (weight statistics and the Hessian), and
the resulting estimate for the whole paper config.
"""

from __future__ import annotations

import argparse
import copy
import pickle
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from latentstates.config import load_config  # noqa: E402
from latentstates.measure.extract import run_metrics  # noqa: E402
from latentstates.runs.runtime import build_run  # noqa: E402
from latentstates.runs.train import schedule, train_group  # noqa: E402
from latentstates.settings import (  # noqa: E402
    HessianSettings,
    TaskSpec,  # noqa: E402
    TrainSettings,
)
from latentstates.tasks import image_data  # noqa: E402


def write_data(root: Path, scale: float = 1.0, seed: int = 0) -> None:
    """MNIST IDX files and CIFAR-100 pickles of the real sizes (times `scale`), random pixels."""
    rng = np.random.default_rng(seed)
    d = image_data.mnist_dir(root)
    d.mkdir(parents=True)
    for split, n in (("train", int(60_000 * scale)), ("test", int(10_000 * scale))):
        for name, arr in zip(
            image_data.MNIST_FILES[split],
            (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)),
        ):
            header = bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
            (d / name).write_bytes(header + arr.tobytes())
    d = image_data.cifar100_dir(root)
    d.mkdir(parents=True)
    for split, n in (("train", int(50_000 * scale)), ("test", int(10_000 * scale))):
        entry = {
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "fine_labels": rng.integers(0, 100, n).tolist(),
        }
        (d / split).write_bytes(pickle.dumps(entry))


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def seconds_per_seed_epoch(task: dict, group: int, device: str, tmp: Path, resume_every: float) -> float:
    seeds = list(range(group))
    dirs = [tmp / f"{task['kind']}_{task['train'].get('stacking', 'auto')}_{group}_{s}" for s in seeds]
    sync(device)
    start = time.perf_counter()
    logs = train_group(
        TaskSpec.from_dict(task), seeds, dirs, device=device, progress=False, resume_every=resume_every
    )
    sync(device)
    return (time.perf_counter() - start) / (group * task["train"]["epochs"]), dirs, logs[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--groups", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--mnist-groups", type=int, nargs="+", default=[1, 40])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--hessian-checkpoints", type=int, default=5, help="0: the Hessian not timed")
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=[
            "mnist_mlp",
            "cifar100_resnet18",
            "cifar100_resnet18_plain",
            "modular_addition",
            "modular_addition_ln",
        ],
    )
    parser.add_argument("--modular-groups", type=int, nargs="+", default=[1, 40])
    parser.add_argument("--modular-epochs", type=int, default=20, help="of 10,000 (15 steps each)")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="data size; epoch times scaled back up (smoke test: 0.01)"
    )
    parser.add_argument(
        "--stacking",
        nargs="+",
        default=["one_by_one", "grouped"],
        help="train.stacking of the ResNets' seed groups (each timed)",
    )
    args = parser.parse_args()
    paper = load_config(REPO / "configs" / "paper.yaml")
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"device: {args.device} ({name}), torch {torch.__version__}")
    estimate = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_data(tmp / "data", args.scale)
        for task_name, groups, epochs in (
            ("mnist_mlp", args.mnist_groups, args.epochs),
            ("cifar100_resnet18", args.groups, args.epochs),
            ("cifar100_resnet18_plain", args.groups[:1], args.epochs),
            ("modular_addition", args.modular_groups, args.modular_epochs),
            ("modular_addition_ln", args.modular_groups[-1:], args.modular_epochs),
        ):
            if task_name not in args.tasks:
                continue
            task = copy.deepcopy(paper["tasks"][task_name])
            if "dir" in task["data"]:
                task["data"]["dir"] = str(tmp / "data")
            full_epochs = task["train"]["epochs"]
            task["train"]["epochs"] = epochs
            n_train = len(build_run(TaskSpec.from_dict(task).run_spec, 0)[1].x_train)
            epoch_share = 1.0  # of the real data set's epoch that a timed epoch is
            if "dir" in task["data"]:  # image files written at --scale
                n_train, epoch_share = round(n_train / args.scale), args.scale
            times = {}
            resume_every = paper["resume_every"]
            seconds_per_seed_epoch(task, 1, args.device, tmp / "warm-up", resume_every)  # kernels, allocator
            ways = args.stacking if task["kind"].startswith("cifar") else ["auto"]
            for way in ways:
                task["train"]["stacking"] = way
                for g in groups:
                    times[way, g], dirs, log = seconds_per_seed_epoch(task, g, args.device, tmp, resume_every)
                    print(
                        f"{task_name}: group of {g:2d}{'' if way == 'auto' else ', ' + way}: "
                        f"{times[way, g]:8.4f} s per seed-epoch "
                        f"({times[ways[0], groups[0]] / times[way, g]:.2f}x a group of {groups[0]}"
                        f"{'' if way == 'auto' else ', ' + ways[0]})",
                        flush=True,
                    )
            # Metrics of one run's checkpoints: weight statistics everywhere, the Hessian at the
            # first few (stride 1 here), timed apart.
            hessian = HessianSettings.of_task(paper, task_name)
            n_ckpt = len(list(dirs[0].glob("*.pt")))
            start = time.perf_counter()
            run_metrics(
                TaskSpec.from_dict(task),
                0,
                dirs[0],
                log,
                hessian.replace(enabled=False),
                device=args.device,
                progress=False,
            )
            per_ckpt = (time.perf_counter() - start) / n_ckpt
            per_hessian, products = 0.0, "not timed"
            if args.hessian_checkpoints:
                few = tmp / "few"
                few.mkdir(exist_ok=True)
                for p in sorted(dirs[0].glob("*.pt"))[: args.hessian_checkpoints]:
                    (few / p.name).write_bytes(p.read_bytes())
                start = time.perf_counter()
                table = run_metrics(
                    TaskSpec.from_dict(task),
                    0,
                    few,
                    log,
                    hessian.replace(stride=1),
                    device=args.device,
                    progress=False,
                )
                per_hessian = (time.perf_counter() - start) / len(table) - per_ckpt
                products = f"{table['hessian_iters'].mean():.0f} products, batch {hessian.batch_size}"
            print(
                f"{task_name}: metrics {per_ckpt * 1e3:.0f} ms per checkpoint, Hessian "
                f"{per_hessian:.2f} s per checkpoint ({products})",
                flush=True,
            )
            best = min(times.values())
            fastest = min(times, key=times.get)
            print(f"{task_name}: fastest {fastest[1]} seeds per job ({fastest[0]})", flush=True)
            _, steps_per_epoch, interval = schedule(n_train, TrainSettings.of_task(paper, task_name))
            n_checkpoints = full_epochs * steps_per_epoch // interval + 1
            seeds = paper["tasks"][task_name]["seeds"]
            hours = (
                seeds
                * (
                    full_epochs * best / epoch_share
                    + n_checkpoints * per_ckpt
                    + n_checkpoints / hessian.stride * per_hessian
                )
                / 3600
            )
            estimate[task_name] = (hours, n_checkpoints)
    print("\nconfigs/paper.yaml on this device:")
    for task_name, (hours, n_checkpoints) in estimate.items():
        print(f"  {task_name}: {hours:.1f} h ({n_checkpoints} checkpoints per seed)")


if __name__ == "__main__":
    main()
