"""Atomic file writes and table I/O: a crash never leaves a half-written output."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

# Below this much free space, a write that failed without an errno (torch's serializer reports a
# full disk as "basic_ios::clear: iostream error") is taken to have failed for lack of space.
LOW_SPACE = 1 << 20


class DiskFullError(OSError):
    """A write failed for lack of space; the message names the file, the space left and the need."""

    def __init__(self, message: str):
        super().__init__(message)
        self.errno = errno.ENOSPC


def human_bytes(n: float) -> str:
    """Bytes in B, kB, MB, GB or TB (powers of 1000, as df -H)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def free_space(path: str | os.PathLike) -> tuple[int, int]:
    """(free bytes, total bytes) of the file system holding `path` (or its nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    usage = shutil.disk_usage(p)
    return usage.free, usage.total


def _no_space(exc: BaseException, path: Path) -> bool:
    """Whether `exc`, raised while writing `path`, means its file system is full."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        seen = seen.__cause__ or seen.__context__
    if not isinstance(exc, (OSError, RuntimeError)):
        return False
    try:
        return free_space(path)[0] < LOW_SPACE
    except OSError:
        return False


def disk_full_error(path: str | os.PathLike, needed: int | None = None, written: int = 0) -> DiskFullError:
    """The error for a write of `path` that found its file system full (after its cleanup)."""
    free, total = free_space(path)
    if needed is not None:
        need = f"this write needed about {human_bytes(needed)}"
    else:
        need = f"this write had {human_bytes(written)} written when it failed"
    return DiskFullError(
        f"{path}: no space left on its file system ({human_bytes(free)} free of {human_bytes(total)}; "
        f"{need}). Nothing unfinished was published: free space (or point `results` elsewhere) and "
        "rerun, and the workflow continues from what is finished",
    )


@contextlib.contextmanager
def reporting_full_disk(path: str | os.PathLike, needed: int | None = None) -> Iterator[None]:
    """Turn a write error of `path` caused by a full file system into a `DiskFullError`."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as exc:
        if not _no_space(exc, Path(path)):
            raise
        written = Path(path).stat().st_size if Path(path).exists() else 0
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a torn file: the caller rewrites it on the rerun
        raise disk_full_error(path, needed, written) from exc


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, needed: int | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it into place only on success.

    A write that fails for lack of space raises `DiskFullError` naming `path`, the free space
    and `needed` (the bytes the write needed, where the caller knows them).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        full = isinstance(exc, Exception) and not isinstance(exc, DiskFullError) and _no_space(exc, path)
        written = Path(tmp).stat().st_size if full and os.path.exists(tmp) else 0
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if full:
            raise disk_full_error(path, needed, written) from exc
        raise


def write_parquet(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a DataFrame to Parquet (pyarrow) atomically, without the index."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, engine="pyarrow", index=False)


def read_parquet(path: str | os.PathLike, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a Parquet table, naming the file and the missing columns on failure."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        df = pd.read_parquet(path, engine="pyarrow")
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise ValueError(f"{path}: not a readable Parquet file ({exc})") from exc
    if columns is not None:
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise ValueError(f"{path}: missing columns {missing}")
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
