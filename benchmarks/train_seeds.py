"""Training many seeds: seed-batched jobs (ours) against one seed per process (the paper's way).

Usage:
  python benchmarks/train_seeds.py [--task sparse_parity] [--seeds 40] [--epochs N] [--jobs 2]
                                   [--seeds-per-job K] [--device cpu] [--baseline-sample M] [--alone]

Both sides run as the workflow runs them: one Python process per job (start-up and imports
included), `--jobs` processes at a time (the cores given to Snakemake; use 1 on a single GPU).
The baseline trains each seed in its own process with autograd (`train.backward: autograd`), the
paper's way; ours trains groups of `--seeds-per-job` seeds (default: seeds split evenly over the
jobs), stacked, with the config's `train.backward` (auto: MLPs backpropagate by hand). `--alone`
also times ours with one seed per process, to tell the two gains apart. `--baseline-sample M`
times the baseline on the first M seeds only and scales its time to all seeds (every seed's
process does the same work), to keep GPU checks short. Prints the seconds of each, the ratio,
and the largest difference between the two sides' per-checkpoint logs for the seeds both
trained. With `--check-device cpu` it also trains the first 2 seeds there and reports the
largest difference of the logs (e.g. GPU against CPU).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from latentstates.config import load_config  # noqa: E402

JOB = """
import json, sys
from latentstates.io import write_parquet
from latentstates.runs.train import train_group
from latentstates.settings import TaskSpec
spec = json.loads(sys.argv[1])
logs = train_group(
    TaskSpec.from_dict(spec["task"]), spec["seeds"], spec["dirs"], device=spec["device"], progress=False,
    resume_every=spec["resume_every"],
)
for log, out in zip(logs, spec["logs"]):
    write_parquet(log, out)
"""


def run_jobs(
    task: dict, groups: list[list[int]], out: Path, device: str, jobs: int, resume_every: float
) -> float:
    """Seconds to train `groups` (one process each), `jobs` processes at a time, with a resume
    state every `resume_every` seconds as the workflow writes them."""
    out.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}

    def one(group: list[int]) -> None:
        spec = {
            "task": task,
            "seeds": group,
            "dirs": [str(out / f"seed{s}" / "checkpoints") for s in group],
            "logs": [str(out / f"seed{s}.parquet") for s in group],
            "device": device,
            "resume_every": resume_every,
        }
        subprocess.run([sys.executable, "-c", JOB, json.dumps(spec)], check=True, env=env)

    start = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(one, groups))
    return time.perf_counter() - start


def log_difference(a: Path, b: Path, seeds: list[int]) -> pd.Series:
    """Largest difference of the loss/accuracy columns per checkpoint, over `seeds`."""
    cols = ["train_loss", "train_acc", "eval_loss", "eval_acc"]
    diffs = []
    for s in seeds:
        la, lb = pd.read_parquet(a / f"seed{s}.parquet"), pd.read_parquet(b / f"seed{s}.parquet")
        if la["checkpoint"].tolist() != lb["checkpoint"].tolist():
            raise AssertionError(f"seed {s}: different checkpoints")
        diffs.append((la[cols] - lb[cols]).abs().max(axis=1))
    return pd.concat(diffs, axis=1).max(axis=1)


def describe(diff: pd.Series) -> str:
    # Float rounding differs between kernels (batched or not, CPU or GPU); training amplifies it
    # chaotically, so the first checkpoints show agreement and the last the amplification.
    return f"largest log difference {diff.iloc[1]:.1e} at checkpoint 1, {diff.max():.1e} over the run"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(REPO / "config.yaml"))
    parser.add_argument("--task", default="sparse_parity")
    parser.add_argument("--seeds", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=None, help="default: the config's")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seeds-per-job", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--baseline-sample", type=int, default=None)
    parser.add_argument("--check-device", default=None)
    parser.add_argument("--alone", action="store_true", help="also time ours with one seed per process")
    args = parser.parse_args()

    config = load_config(args.config)
    task, resume_every = config["tasks"][args.task], config["resume_every"]
    if args.epochs:
        task["train"]["epochs"] = args.epochs
    seeds = list(range(args.seeds))
    per_job = args.seeds_per_job or math.ceil(len(seeds) / args.jobs)
    groups = [seeds[i : i + per_job] for i in range(0, len(seeds), per_job)]
    sample = seeds[: args.baseline_sample or len(seeds)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ours = run_jobs(task, groups, tmp / "ours", args.device, args.jobs, resume_every)
        # The paper's way: one seed per process, autograd.
        paper = {**task, "train": {**task["train"], "backward": "autograd"}}
        base = run_jobs(paper, [[s] for s in sample], tmp / "base", args.device, args.jobs, resume_every)
        base_all = base * len(seeds) / len(sample)
        if args.alone:  # ours, one seed per process: the gain of the step alone
            alone = run_jobs(task, [[s] for s in sample], tmp / "alone", args.device, args.jobs, resume_every)
            alone_all = alone * len(seeds) / len(sample)
        diff = log_difference(tmp / "ours", tmp / "base", sample)
        print(
            f"{args.task} on {args.device}: {len(seeds)} seeds x {task['train']['epochs']} epochs, "
            f"{args.jobs} job(s) at a time"
        )
        scaled = f" (measured on {len(sample)} seeds, scaled)" if len(sample) < len(seeds) else ""
        print(f"  baseline, one seed per process: {base_all:8.1f} s{scaled}")
        if args.alone:
            print(
                f"  ours, one seed per process:     {alone_all:8.1f} s{scaled} ({base_all / alone_all:.2f}x)"
            )
        print(f"  ours, {len(groups)} job(s) of <= {per_job} seeds: {ours:8.1f} s")
        print(f"  speed-up: {base_all / ours:.2f}x; {describe(diff)}")
        if args.check_device:
            check = seeds[:2]
            run_jobs(task, [check], tmp / "check", args.check_device, 1, resume_every)
            other = log_difference(tmp / "ours", tmp / "check", check)
            print(f"  {args.device} against {args.check_device}, seeds {check}: {describe(other)}")


if __name__ == "__main__":
    main()
