"""Snakemake's own overhead: planning the paper's DAG, and a rerun with nothing to do.

Usage: python benchmarks/workflow_overhead.py [--workdir DIR]

1. `snakemake -n` of configs/paper.yaml (every paper task, 40 seeds each) in an empty directory:
   parsing, config validation and DAG building. Target: under 3 s.
2. `snakemake --cores 2` in a directory whose default-config run is complete (default: the
   repository itself, after `make run`): Snakemake must find nothing to do. Target: under 5 s.
Each is run three times; the median wall time is printed with its target.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    return elapsed, proc.stdout + proc.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default=str(REPO), help="a directory with a complete run")
    args = parser.parse_args()
    snakemake = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]

    with tempfile.TemporaryDirectory() as tmp:
        plan = snakemake + [
            "-n",
            "--cores",
            "2",
            "--configfile",
            str(REPO / "configs" / "paper.yaml"),
            "--replace-workflow-config",
        ]
        runs = [timed(plan, Path(tmp)) for _ in range(3)]
    jobs = next(line.split()[-1] for line in runs[0][1].splitlines() if line.strip().startswith("total"))
    t_plan = statistics.median(t for t, _ in runs)
    print(f"dry run of configs/paper.yaml ({jobs} jobs): {t_plan:.2f} s (target < 3 s)")

    workdir = Path(args.workdir)
    noop = snakemake + ["--cores", "2", "--directory", str(workdir)]
    if "Nothing to be done" not in timed(noop + ["-n"], workdir)[1]:
        raise SystemExit(f"{workdir}: the default run is not complete (snakemake has work to do)")
    runs = [timed(noop, workdir) for _ in range(3)]
    t_noop = statistics.median(t for t, _ in runs)
    print(f"no-op rerun of the default config in {workdir}: {t_noop:.2f} s (target < 5 s)")


if __name__ == "__main__":
    main()
