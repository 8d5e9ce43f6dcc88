"""A full disk: errors that name the file, the free space of its file system and the need.

Standard library only, so that every rule script's environment can use it (the job log too).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

# Below this much free space, a write that failed without an errno (torch's serializer reports a
# full disk as "basic_ios::clear: iostream error") is taken to have failed for lack of space.
LOW_SPACE = 1 << 20
# The errors of a write that found no space (a full file system, or a full quota).
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


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


def no_space(exc: BaseException, path: Path) -> bool:
    """Whether `exc`, raised while writing `path`, means its file system is full."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in NO_SPACE:
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
def reporting_full_disk(
    path: str | os.PathLike, needed: int | None = None, partial: str | os.PathLike | None = None
) -> Iterator[None]:
    """Turn a write error of `path` caused by a full file system into a `DiskFullError`.

    The torn file (`partial`, default `path` itself: a temporary file where the write goes
    through one) is removed; the caller rewrites it on the rerun.
    """
    torn = Path(partial if partial is not None else path)
    try:
        yield
    except DiskFullError:
        raise
    except Exception as exc:
        if not no_space(exc, Path(path)):
            raise
        written = torn.stat().st_size if torn.exists() else 0
        with contextlib.suppress(FileNotFoundError):
            os.unlink(torn)
        raise disk_full_error(path, needed, written) from exc
