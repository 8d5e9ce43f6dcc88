"""Atomic file writes and table I/O: a crash never leaves a half-written output."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from latentstates.disk import reporting_full_disk
from latentstates.validation import InputError, MissingInputError


def _file_mode() -> int:
    """The mode a plain `open` gives a new file under this process's umask (mkstemp's is 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, needed: int | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it into place only on success, with the
    permissions any new file gets under the umask (readable by the group on a shared cluster
    filesystem where the umask allows it, as Snakemake's own outputs are).

    A write that fails for lack of space raises `DiskFullError` naming `path`, the free space
    and `needed` (the bytes the write needed, where the caller knows them).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with reporting_full_disk(path, needed, partial=tmp):
            yield Path(tmp)
            os.chmod(tmp, _file_mode())
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_parquet(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a DataFrame to Parquet (pyarrow) atomically, without the index."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, engine="pyarrow", index=False)


def read_parquet(path: str | os.PathLike, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a Parquet table, naming the file and the missing columns on failure."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(path, "no such file")
    try:
        df = pd.read_parquet(path, engine="pyarrow")
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise InputError(path, f"not a readable Parquet file ({exc})") from exc
    if columns is not None:
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise InputError(path, f"missing columns {missing}")
    return df


def write_csv(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a DataFrame to CSV atomically."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def _strict(obj: Any) -> Any:
    """NaN/inf → null, so the file is valid JSON for every parser."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    return obj


def write_json(obj: Any, path: str | os.PathLike) -> None:
    """Write strict JSON (NaN as null) atomically, indented for reading."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_strict(obj), indent=2, sort_keys=True, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, naming it on failure."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable JSON file ({exc})") from exc
