"""The findings of runs under rounding perturbations, against one run's stability intervals.

Usage: python benchmarks/perturbations.py BASE_RESULTS NAME=RESULTS [NAME=RESULTS ...]
       [--reference NAME=K,R2,DETOURS ...]

Training amplifies rounding: another CPU instruction set (`ATEN_CPU_CAPABILITY=avx2` on an
AVX-512 machine, or an AVX2-only machine), another `seeds_per_job` (other stacked products) or
another torch build gives other weights, metrics and so findings. Each RESULTS directory is a
default-config run under one such perturbation; BASE_RESULTS is the run whose stability stage
(`results/<task>/stability/`) is checked. `--reference` adds findings recorded elsewhere (e.g.
`avx512=modular_addition:5,0.932,2`). Printed per task and run: K, R² and the detour states, and
whether the base run's stability covers them: K among the Ks its resamples choose (with that
K's frequency), R² inside its percentile interval, each detour with the base frequency of the
matched state (by number: the perturbed runs' states are numbered by time of use as the base's).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd


def findings(results: Path, task: str) -> dict:
    s = json.loads((results / task / "analysis" / "summary.json").read_text())
    return {"k": s["k"], "r2": s["r2"], "detours": s["detour_states"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", type=Path)
    parser.add_argument("runs", nargs="*", help="NAME=RESULTS_DIR")
    parser.add_argument("--reference", action="append", default=[], help="NAME=TASK:K,R2,DETOUR+DETOUR")
    args = parser.parse_args()
    runs = dict(r.split("=", 1) for r in args.runs)
    references: dict[str, dict[str, dict]] = {}
    for ref in args.reference:
        name, rest = ref.split("=", 1)
        task, values = rest.split(":", 1)
        k, r2, detours = values.split(",")
        detour_list = [int(d) for d in detours.split("+") if d]
        references.setdefault(name, {})[task] = {"k": int(k), "r2": float(r2), "detours": detour_list}
    tasks = sorted(p.parent.parent.name for p in args.base.glob("*/stability/summary.json"))
    rows = []
    for task in tasks:
        stab = json.loads((args.base / task / "stability" / "summary.json").read_text())
        k_freq = pd.read_csv(args.base / task / "stability" / "k.csv").set_index("k")["frequency"]
        states = pd.read_csv(args.base / task / "stability" / "states.csv").set_index("state")
        low, high = stab["r2"]["low"], stab["r2"]["high"]
        found = {"base": findings(args.base, task)}
        found.update({name: findings(Path(d), task) for name, d in runs.items()})
        found.update({name: refs[task] for name, refs in references.items() if task in refs})
        for name, f in found.items():
            r2 = f["r2"]
            rows.append(
                {
                    "task": task,
                    "run": name,
                    "K": f["k"],
                    "K frequency in base resamples": f"{k_freq.get(f['k'], 0.0):.0%}",
                    "R2": "–" if r2 is None else f"{r2:.3f}",
                    "R2 in base interval": "–"
                    if r2 is None or low is None
                    else f"{'yes' if low <= r2 <= high else 'no'} [{low:.2f}, {high:.2f}]",
                    "detours (base detour frequency)": ", ".join(
                        f"{d} ({states['detour_frequency'].get(d, float('nan')):.0%})" for d in f["detours"]
                    )
                    or "none",
                }
            )
    table = pd.DataFrame(rows)
    print(table.to_markdown(index=False) if hasattr(table, "to_markdown") else table.to_string(index=False))


if __name__ == "__main__":
    main()
