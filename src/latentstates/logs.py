"""Logging for rule scripts: everything a job prints goes to its Snakemake log file."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from latentstates.disk import NO_SPACE, disk_full_error
from latentstates.validation import InputError


class _LogFile:
    """A job's log file opened for writing; a write that finds the disk full raises
    `DiskFullError` naming the log (once: later writes are dropped, so that the error and its
    traceback reach the job's standard error instead of failing again). `full` remembers it,
    since `logging` swallows errors raised while a handler writes."""

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
            if exc.errno not in NO_SPACE:
                raise
            self.full = True
            raise disk_full_error(self.path, written=self.path.stat().st_size) from exc

    def write(self, text: str) -> int:
        self._guard(self._fh.write, text)
        return len(text)

    def flush(self) -> None:
        self._guard(self._fh.flush)

    def isatty(self) -> bool:
        return False

    def close(self) -> None:
        try:
            self._fh.close()
        except OSError as exc:  # the last buffered lines found the disk full
            if exc.errno not in NO_SPACE:
                raise
            self.full = True


@contextlib.contextmanager
def job_log(path: str | Path) -> Iterator[logging.Logger]:
    """Send stdout, stderr and the `latentstates` logger to `path` for the duration.

    A log that finds its disk full fails the job with `DiskFullError` naming the log, also
    where the job's own outputs still fit: a job does not finish with a truncated log. A bad
    input (`validation.InputError`) fails the job with its one message, in the log and on
    standard error, without a traceback.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = _LogFile(path)
    failed = False
    bad_input: InputError | None = None
    try:
        with contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
            logger = logging.getLogger("latentstates")
            handler = logging.StreamHandler(fh)
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            try:
                yield logger
            except InputError as exc:  # a bad input: its one message, no traceback
                failed = True
                bad_input = exc
                logger.error("%s", exc)
            except BaseException:
                failed = True
                logger.exception("job failed")
                raise
            finally:
                logger.removeHandler(handler)
    finally:
        fh.close()
    if bad_input is not None:
        raise SystemExit(f"Error: {bad_input}")
    if fh.full and not failed:
        raise disk_full_error(path, written=path.stat().st_size)
