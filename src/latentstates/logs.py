"""Logging for rule scripts: everything a job prints goes to its Snakemake log file."""

from __future__ import annotations

import contextlib
import errno
import logging
from collections.abc import Iterator
from pathlib import Path

from .disk import disk_full_error


class _LogFile:
    """A job's log file opened for writing; a write that finds the disk full raises
    `DiskFullError` naming the log (once: later writes are dropped, so that the error and its
    traceback reach the job's standard error instead of failing again)."""

    def __init__(self, path: Path):
        self.path = path
        self._fh = open(path, "w", buffering=1)
        self.full = False

    def _guard(self, call, *args):
        if self.full:
            return None
        try:
            return call(*args)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            self.full = True
            raise disk_full_error(self.path, needed=sum(len(a) for a in args) or None) from exc

    def write(self, text: str) -> int:
        self._guard(self._fh.write, text)
        return len(text)

    def flush(self) -> None:
        self._guard(self._fh.flush)

    def isatty(self) -> bool:
        return False

    def close(self) -> None:
        with contextlib.suppress(OSError) if self.full else contextlib.nullcontext():
            self._fh.close()


@contextlib.contextmanager
def job_log(path: str | Path) -> Iterator[logging.Logger]:
    """Send stdout, stderr and the `latentstates` logger to `path` for the duration."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = _LogFile(path)
    try:
        with contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
            logger = logging.getLogger("latentstates")
            handler = logging.StreamHandler(fh)
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            try:
                yield logger
            except BaseException:
                logger.exception("job failed")
                raise
            finally:
                logger.removeHandler(handler)
    finally:
        try:
            fh.close()
        except OSError as exc:  # the log's last lines found the disk full
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise disk_full_error(path) from exc
