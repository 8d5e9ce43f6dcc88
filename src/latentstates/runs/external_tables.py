"""Tables users bring (CSV or Parquet): metrics tables for the HMM and performance tables for
imported runs, checked cell by cell where they are read (numbers where numbers belong, steps in
every row, accuracies in [0, 1]; errors name the file, column and line). Torch-free: the
Snakefile reads a table's columns when it plans the HMM.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from latentstates.columns import PERFORMANCE_COLUMNS
from latentstates.validation import MAX_STEP, InputError, MissingInputError, describe, is_number

# Columns that hold fractions: accuracies.
ACCURACY_COLUMNS = ("train_acc", "eval_acc")


def cell(df: pd.DataFrame, position: int, column: str, csv: bool) -> str:
    """Where a cell is, as a user finds it: the CSV line (header = line 1) or the row number."""
    return f"column {column!r}, line {position + 2}" if csv else f"column {column!r}, row {position}"


def numeric_column(
    df: pd.DataFrame, column: str, source: str | os.PathLike, *, allow_missing: bool = True
) -> pd.Series:
    """Column `column` as float64: numbers stay, empty cells are NaN (or an error where
    `allow_missing` is False), and any other cell (text, a bool) is an error naming it. In a CSV
    file, text that reads as a number is that number; in a typed file (Parquet) text is refused."""
    csv = str(source).endswith(".csv")
    values = df[column]
    if pd.api.types.is_bool_dtype(values):
        raise InputError(source, "holds booleans where numbers belong", f"column {column!r}")
    if pd.api.types.is_numeric_dtype(values):
        out = values.astype(np.float64)
    else:
        out = pd.to_numeric(values, errors="coerce").astype(np.float64)
        if csv:
            bad = out.isna() & values.notna() & (values.astype(str).str.strip() != "")
        else:
            bad = ~values.map(lambda v: v is None or is_number(v))
        if bad.any():
            first = int(np.flatnonzero(bad.to_numpy())[0])
            what = f"{describe(values.iloc[first])} is not a number"
            raise InputError(source, f"{what} ({int(bad.sum())} such cell(s))", cell(df, first, column, csv))
    if not allow_missing and out.isna().any():
        first = int(np.flatnonzero(out.isna().to_numpy())[0])
        raise InputError(
            source, "is empty, and this column needs a value in every row", cell(df, first, column, csv)
        )
    return out.set_axis(df.index)


def require_finite(values: pd.Series, column: str, source: str | os.PathLike) -> None:
    """Every value finite (no NaN, no infinity), naming the first that is not."""
    x = values.to_numpy(dtype=np.float64)
    _refuse_cells(
        ~np.isfinite(x),
        x,
        "is not a finite number",
        "a feature needs a value at every checkpoint: fill them, or leave the column out of hmm.features",
        column,
        source,
    )


def require_fractions(values: pd.Series, column: str, source: str | os.PathLike) -> None:
    """Accuracies in [0, 1] (NaN allowed: not measured)."""
    x = values.to_numpy(dtype=np.float64)
    bad = ~np.isnan(x) & ((x < 0) | (x > 1))
    _refuse_cells(bad, x, "is not an accuracy in [0, 1]", "give fractions, not percentages", column, source)


def _refuse_cells(bad: np.ndarray, x: np.ndarray, what: str, advice: str, column: str, source) -> None:
    """Stop at the first `bad` cell of a column, naming it, how many there are and what to do."""
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        where = cell(pd.DataFrame({column: x}), first, column, str(source).endswith(".csv"))
        raise InputError(source, f"{x[first]} {what} ({int(bad.sum())} such cell(s); {advice})", where)


def performance_columns(df: pd.DataFrame, columns: Iterable[str], source: str | os.PathLike) -> pd.DataFrame:
    """The losses and accuracies of a table, as numbers (accuracies in [0, 1]); NaN = not measured."""
    out = df.copy()
    for column in columns:
        if column in out:
            out[column] = numeric_column(out, column, source)
            if column in ACCURACY_COLUMNS:
                require_fractions(out[column], column, source)
    return out


def require_rows(df: pd.DataFrame, source: str | os.PathLike) -> None:
    if df.empty:
        raise InputError(source, f"has no rows (columns {list(df.columns)})")


def read_table(path: str | Path) -> pd.DataFrame:
    """A CSV or Parquet table, naming the file on failure."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(path, "no such file" if not path.exists() else "not a file")
    try:
        if path.suffix in (".parquet", ".pq"):
            return pd.read_parquet(path, engine="pyarrow")
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise InputError(path, "is empty (not even a header)") from None
    except Exception as exc:  # pandas and pyarrow raise several types
        raise InputError(path, f"not a readable table ({str(exc).strip().splitlines()[0]})") from exc


def require_columns(df: pd.DataFrame, columns: list[str], path: str | Path) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(path, f"missing column(s) {missing} (has {list(df.columns)})")


def check_performance_table(table: pd.DataFrame, path: str | Path) -> pd.DataFrame:
    """A performance table as numbers: seed and step in every row (integers), one row per (seed,
    step), losses and accuracies numeric (accuracies in [0, 1]); other columns are ignored."""
    require_columns(table, ["seed", "step"], path)
    require_rows(table, path)
    out = performance_columns(table, PERFORMANCE_COLUMNS, path)
    for column in ("seed", "step"):
        values = numeric_column(out, column, path, allow_missing=False)
        fractional = values != np.floor(values)
        if fractional.any():
            first = int(np.flatnonzero(fractional.to_numpy())[0])
            raise InputError(
                path,
                f"{values.iloc[first]} is not an integer",
                cell(out, first, column, str(path).endswith(".csv")),
            )
        out[column] = values.astype(np.int64)
    pairs = out[["seed", "step"]].duplicated()
    if pairs.any():
        seed, step = out.loc[pairs.idxmax(), ["seed", "step"]]
        raise InputError(path, f"seed {seed} has more than one row for step {step}")
    return out


def performance_log(
    table: pd.DataFrame | None, seed: int, steps: list[int], source: str | Path
) -> pd.DataFrame:
    """Per checkpoint: the performance columns the user's table (`check_performance_table`)
    gives for (seed, step), NaN where it gives none; a table with no row for this run's
    checkpoints is an error, not a run without performance."""
    log = pd.DataFrame({"checkpoint": range(len(steps)), "step": steps, "epoch": math.nan})
    if table is None:
        perf = pd.DataFrame({"step": steps})
    else:
        perf = table[table["seed"] == seed]
        if perf.empty:
            seeds = sorted(table["seed"].unique().tolist())
            raise InputError(
                source,
                f"no row for seed {seed} (the table's seeds: {seeds[:10]}{' ...' if len(seeds) > 10 else ''})"
                "; its column 'seed' must hold the runs' seeds",
            )
        if not perf["step"].isin(steps).any():
            raise InputError(
                source,
                f"no row of seed {seed} is at one of its checkpoints' steps (table: steps "
                f"{perf['step'].min()} to {perf['step'].max()}; checkpoints: {steps[0]} to {steps[-1]})",
            )
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
    """Default HMM features of a metrics table: its columns of numbers but keys and performance.
    A column of numbers with a stray text cell counts (the import names the cell); a column of
    text does not."""
    skip = {run_column, step_column, *KEY_COLUMNS, *PERFORMANCE_COLUMNS}
    return [c for c in df.columns if c not in skip and _numbers(df[c])]


def _numbers(values: pd.Series) -> bool:
    if pd.api.types.is_bool_dtype(values):
        return False
    if pd.api.types.is_numeric_dtype(values):
        return True
    return bool(pd.to_numeric(values, errors="coerce").notna().any())


def metrics_table(
    df: pd.DataFrame, path: str | Path, run_column: str, step_column: str, features: list[str]
) -> pd.DataFrame:
    """A user's metrics table in the collated layout: seed (the run as an integer: the run label
    itself when every label is one, else its rank), run, checkpoint (position in the run),
    step, the features, the performance columns it has (NaN otherwise) and diverged.

    Checked first: rows present; a run label and a numeric step in every row, one row per (run,
    step); at least one feature, each a finite number in every row; losses and accuracies numbers
    (accuracies in [0, 1]). Errors name the file and the cell."""
    require_rows(df, path)
    require_columns(df, [run_column, step_column, *features], path)
    if not features:
        raise InputError(
            path,
            f"no feature column: every column but {run_column!r}, {step_column!r} and performance is text "
            f"or absent (columns {list(df.columns)}); name numeric ones in the task's hmm.features",
        )
    csv = str(path).endswith(".csv")
    df = df.reset_index(drop=True)
    labels = df[run_column]
    if labels.isna().any():
        first = int(np.flatnonzero(labels.isna().to_numpy())[0])
        raise InputError(path, "has no run label (every row needs one)", cell(df, first, run_column, csv))
    steps = numeric_column(df, step_column, path, allow_missing=False)
    require_finite(steps, step_column, path)
    values = {c: numeric_column(df, c, path) for c in features}
    for c, v in values.items():
        require_finite(v, c, path)
    pairs = pd.DataFrame({"run": labels.astype(str), "step": steps}).duplicated()
    if pairs.any():
        first = int(np.flatnonzero(pairs.to_numpy())[0])
        raise InputError(
            path,
            f"more than one row for a ({run_column}, {step_column}) pair: run {labels.iloc[first]!r}, "
            f"step {steps.iloc[first]:g}",
            f"line {first + 2}" if csv else f"row {first}",
        )
    performance = performance_columns(
        df, [c for c in PERFORMANCE_COLUMNS if c in df and c not in features], path
    )
    if pd.api.types.is_integer_dtype(labels) and (labels >= 0).all():
        seed = labels.astype(int)
    else:
        order = {label: i for i, label in enumerate(sorted(labels.astype(str).unique()))}
        seed = labels.astype(str).map(order)
    integral = bool((steps == np.floor(steps)).all() and steps.abs().max() <= MAX_STEP)
    out = pd.DataFrame(
        {"seed": seed, "run": labels.astype(str), "step": steps.astype(np.int64) if integral else steps}
    )
    for c in features:
        out[c] = values[c].to_numpy()
    for c in PERFORMANCE_COLUMNS:
        if c in df and c not in features:
            out[c] = performance[c].to_numpy()
    out = out.sort_values(["seed", "step"], kind="stable").reset_index(drop=True)
    out.insert(2, "checkpoint", out.groupby("seed").cumcount())
    for c in PERFORMANCE_COLUMNS:
        if c not in out:
            out[c] = np.nan
    out["diverged"] = False
    return out


# Columns of the collated layout that hold labels, not numbers.
LABEL_COLUMNS = ("task", "run", "recipe")
COLLATED_KEYS = ("seed", "checkpoint", "step")


def collated_table(df: pd.DataFrame, path: str | Path) -> pd.DataFrame:
    """A table already in the collated layout (the workflow's `metrics.parquet`, or one made like
    it), checked as a user's own table is before it reaches the HMM: rows present; seed,
    checkpoint and step whole numbers in every row, one row per (seed, checkpoint); every other
    column but the labels (task, run, recipe) and the flags (bool) numbers, where an empty or
    non-finite value is allowed (the HMM leaves such a run out and says why, as for the
    workflow's own runs). Errors name the file and the cell."""
    require_rows(df, path)
    df = df.reset_index(drop=True)
    csv = str(path).endswith(".csv")
    out = df.copy()
    for c in COLLATED_KEYS:
        v = numeric_column(df, c, path, allow_missing=False)
        require_finite(v, c, path)
        fractional = v != np.round(v)
        if fractional.any():
            first = int(np.flatnonzero(fractional.to_numpy())[0])
            raise InputError(path, f"{v.iloc[first]:g} is not a whole number", cell(df, first, c, csv))
        out[c] = v.astype(np.int64)
    pairs = out[["seed", "checkpoint"]].duplicated()
    if pairs.any():
        first = int(np.flatnonzero(pairs.to_numpy())[0])
        seed, checkpoint = out["seed"].iloc[first], out["checkpoint"].iloc[first]
        raise InputError(path, f"more than one row for seed {seed}, checkpoint {checkpoint}", f"row {first}")
    for c in df.columns:
        if c in COLLATED_KEYS or c in LABEL_COLUMNS or pd.api.types.is_bool_dtype(df[c]):
            continue
        out[c] = numeric_column(df, c, path)
    return out
