"""Tables users bring (CSV or Parquet): metrics tables for the HMM and performance tables for
imported runs. Torch-free: the Snakefile reads a table's columns when it plans the HMM.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from latentstates.columns import PERFORMANCE_COLUMNS


def read_table(path: str | Path) -> pd.DataFrame:
    """A CSV or Parquet table, naming the file on failure."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        if path.suffix in (".parquet", ".pq"):
            return pd.read_parquet(path, engine="pyarrow")
        return pd.read_csv(path)
    except Exception as exc:  # pandas and pyarrow raise several types
        raise ValueError(f"{path}: not a readable table ({exc})") from exc


def require_columns(df: pd.DataFrame, columns: list[str], path: str | Path) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing} (has {list(df.columns)})")


def performance_log(
    table: pd.DataFrame | None, seed: int, steps: list[int], source: str | Path
) -> pd.DataFrame:
    """Per checkpoint: the performance columns the user's table gives for (seed, step), NaN
    where it gives none."""
    log = pd.DataFrame({"checkpoint": range(len(steps)), "step": steps, "epoch": math.nan})
    if table is None:
        perf = pd.DataFrame({"step": steps})
    else:
        require_columns(table, ["seed", "step"], source)
        perf = table[table["seed"] == seed]
        if perf["step"].duplicated().any():
            raise ValueError(f"{source}: seed {seed} has more than one row for a step")
        perf = perf[["step", *[c for c in PERFORMANCE_COLUMNS if c in table]]]
    log = log.merge(perf, on="step", how="left")
    for c in PERFORMANCE_COLUMNS:
        if c not in log:
            log[c] = np.nan
    log["diverged"] = False
    log["seed"] = seed
    return log


KEY_COLUMNS = ("task", "seed", "run", "checkpoint", "step", "epoch", "diverged")


def table_features(df: pd.DataFrame, run_column: str, step_column: str) -> list[str]:
    """Default HMM features of a metrics table: its numeric columns but keys and performance."""
    skip = {run_column, step_column, *KEY_COLUMNS, *PERFORMANCE_COLUMNS}
    return [c for c in df.columns if c not in skip and pd.api.types.is_numeric_dtype(df[c])]


def metrics_table(
    df: pd.DataFrame, path: str | Path, run_column: str, step_column: str, features: list[str]
) -> pd.DataFrame:
    """A user's metrics table in the collated layout: seed (the run as an integer: the run label
    itself when every label is one, else its rank), run, checkpoint (position in the run),
    step, the features, the performance columns it has (NaN otherwise) and diverged."""
    require_columns(df, [run_column, step_column, *features], path)
    bad = [c for c in features if not pd.api.types.is_numeric_dtype(df[c])]
    if bad:
        raise ValueError(f"{path}: feature column(s) {bad} are not numeric")
    if df[[run_column, step_column]].duplicated().any():
        raise ValueError(f"{path}: more than one row for a ({run_column}, {step_column}) pair")
    labels = df[run_column]
    if pd.api.types.is_integer_dtype(labels) and (labels >= 0).all():
        seed = labels.astype(int)
    else:
        order = {label: i for i, label in enumerate(sorted(labels.astype(str).unique()))}
        seed = labels.astype(str).map(order)
    out = pd.DataFrame({"seed": seed, "run": labels.astype(str), "step": df[step_column]})
    for c in [*features, *[c for c in PERFORMANCE_COLUMNS if c in df and c not in features]]:
        out[c] = df[c].to_numpy()
    out = out.sort_values(["seed", "step"], kind="stable").reset_index(drop=True)
    out.insert(2, "checkpoint", out.groupby("seed").cumcount())
    for c in PERFORMANCE_COLUMNS:
        if c not in out:
            out[c] = np.nan
    out["diverged"] = False
    return out
