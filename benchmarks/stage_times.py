"""Per-stage time of a workflow run, from Snakemake's benchmark files (results/benchmarks/).

Usage: python benchmarks/stage_times.py [RESULTS_DIR]
Prints, per rule: jobs, summed job wall time, mean and max per job, peak memory (max RSS).
The sum over rules divided by the cores used approximates the end-to-end time.
"""

import sys
from pathlib import Path

import pandas as pd


def stage_table(results: Path) -> pd.DataFrame:
    rows = []
    for tsv in sorted((results / "benchmarks").rglob("*.tsv")):
        rule = tsv.relative_to(results / "benchmarks").parts[0]
        b = pd.read_csv(tsv, sep="\t")
        rows.append({"rule": rule, "s": float(b["s"].iloc[-1]), "max_rss_mb": float(b["max_rss"].iloc[-1])})
    df = pd.DataFrame(rows)
    return (
        df.groupby("rule", sort=False)
        .agg(
            jobs=("s", "size"),
            total_s=("s", "sum"),
            mean_s=("s", "mean"),
            max_s=("s", "max"),
            peak_rss_mb=("max_rss_mb", "max"),
        )
        .round(1)
    )


if __name__ == "__main__":
    results = Path(sys.argv[1] if len(sys.argv) > 1 else "results")
    table = stage_table(results)
    print(table.to_string())
    print(f"\nsum of job times: {table['total_s'].sum():.0f} s")
