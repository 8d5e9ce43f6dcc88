"""Compare the tables of two results directories: the proof that a change moved no result.

    python benchmarks/compare_results.py RESULTS_BEFORE RESULTS_AFTER [--tol 1e-9]

Every Parquet, CSV, TSV and JSON file under either directory (figures, logs, HTML views, Snakemake's
benchmark timings and checkpoints aside) is compared: first byte for byte; where the bytes differ,
by content: numbers to a tolerance (`--tol`, default 1e-9) on |a - b| / max(1, |a|, |b|) (absolute
below 1, relative above), everything else exactly. Each file is reported as identical (bytes),
equal (content within the tolerance; the largest such difference shown), or different (with the
first differences), and files present on one side only are listed. Exit status 0 when no file
differs and none is missing.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

TABLES = {".parquet", ".csv", ".tsv", ".json"}
SKIPPED_DIRS = {"logs", "benchmarks", "checkpoints", "figures", ".snakemake"}


def table_files(root: Path) -> set[Path]:
    """Relative paths of the comparable files under `root`."""
    return {
        p.relative_to(root)
        for p in root.rglob("*")
        if p.is_file() and p.suffix in TABLES and not SKIPPED_DIRS & set(p.relative_to(root).parts[:-1])
    }


def _close(a: float, b: float, tol: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or abs(a - b) <= tol * max(1.0, abs(a), abs(b))


def compare_json(a, b, tol: float, where: str = "$") -> tuple[list[str], float]:
    """(differences, largest numeric difference relative to max(1, |value|)) between two parsed
    JSON values."""
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None or isinstance(a, str):
        return ([] if a == b else [f"{where}: {a!r} != {b!r}"]), 0.0
    if isinstance(a, int | float) and isinstance(b, int | float):
        diff = abs(a - b) / max(1.0, abs(a), abs(b)) if not (math.isnan(a) or math.isnan(b)) else 0.0
        return ([] if _close(float(a), float(b), tol) else [f"{where}: {a!r} != {b!r}"]), diff
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{where}: keys {sorted(a.keys() ^ b.keys())} on one side only"], 0.0
        pairs = [(a[k], b[k], f"{where}.{k}") for k in a]
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: length {len(a)} != {len(b)}"], 0.0
        pairs = [(x, y, f"{where}[{i}]") for i, (x, y) in enumerate(zip(a, b))]
    else:
        return [f"{where}: {type(a).__name__} != {type(b).__name__}"], 0.0
    diffs, worst = [], 0.0
    for x, y, w in pairs:
        d, m = compare_json(x, y, tol, w)
        diffs += d
        worst = max(worst, m)
    return diffs, worst


def _read(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")


def compare_frames(a: pd.DataFrame, b: pd.DataFrame, tol: float) -> tuple[list[str], float]:
    """(differences, largest numeric difference relative to max(1, |value|)) between two tables."""
    if list(a.columns) != list(b.columns):
        return [f"columns {list(a.columns)} != {list(b.columns)}"], 0.0
    if len(a) != len(b):
        return [f"{len(a)} rows != {len(b)} rows"], 0.0
    diffs, worst = [], 0.0
    for col in a.columns:
        x, y = a[col], b[col]
        if pd.api.types.is_numeric_dtype(x) and pd.api.types.is_numeric_dtype(y):
            xv, yv = x.to_numpy(float), y.to_numpy(float)
            both_nan = np.isnan(xv) & np.isnan(yv)
            gap = np.where(both_nan, 0.0, np.abs(xv - yv))
            gap = np.where(np.isnan(gap), np.inf, gap)  # NaN on one side only
            scaled = gap / np.maximum(1.0, np.maximum(np.abs(np.nan_to_num(xv)), np.abs(np.nan_to_num(yv))))
            worst = max(worst, float(scaled.max(initial=0.0)))
            bad = scaled > tol
            if bad.any():
                i = int(np.argmax(bad))
                diffs.append(
                    f"column {col!r}: {int(bad.sum())} rows differ, e.g. row {i}: {xv[i]!r} != {yv[i]!r}"
                )
        elif not x.astype(str).equals(y.astype(str)):
            i = int(np.argmax(x.astype(str).to_numpy() != y.astype(str).to_numpy()))
            diffs.append(f"column {col!r}: row {i}: {x.iloc[i]!r} != {y.iloc[i]!r}")
    return diffs, worst


def compare_file(a: Path, b: Path, tol: float) -> tuple[str, list[str], float]:
    """('identical' | 'equal' | 'different', differences, largest numeric difference)."""
    if a.read_bytes() == b.read_bytes():
        return "identical", [], 0.0
    if a.suffix == ".json":
        diffs, worst = compare_json(json.loads(a.read_text()), json.loads(b.read_text()), tol)
    else:
        diffs, worst = compare_frames(_read(a), _read(b), tol)
    return ("different" if diffs else "equal"), diffs, worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--tol", type=float, default=1e-9, help="absolute-or-relative tolerance")
    args = parser.parse_args(argv)
    before, after = table_files(args.before), table_files(args.after)
    counts = {"identical": 0, "equal": 0, "different": 0}
    for rel in sorted(before & after):
        verdict, diffs, worst = compare_file(args.before / rel, args.after / rel, args.tol)
        counts[verdict] += 1
        if verdict != "identical":
            print(f"{verdict:9} {rel} (largest difference {worst:.3g}, relative to max(1, |value|))")
            for d in diffs[:5]:
                print(f"          {d}")
    only = sorted(before ^ after)
    for rel in only:
        print(f"missing   {rel} (only in {args.before if rel in before else args.after})")
    print(
        f"{len(before | after)} files: {counts['identical']} identical, {counts['equal']} equal within "
        f"{args.tol:g}, {counts['different']} different, {len(only)} on one side only"
    )
    return 1 if counts["different"] or only else 0


if __name__ == "__main__":
    sys.exit(main())
