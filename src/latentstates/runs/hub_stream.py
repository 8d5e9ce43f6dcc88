"""A Hub series streamed through its metrics job, for a bounded disk (`hub.keep_cache: false`):
each revision is downloaded into the Hugging Face cache, measured, and evicted from the cache
through huggingface_hub's own cache API (`scan_cache_dir(...).delete_revisions`), while the next
`prefetch` revisions download in a thread beside the measurement. At most prefetch + 1 revisions
this job downloaded are in the cache at any time.

A revision that was in the cache before (the user's: any of its files, or its ref) is read and
kept. What this workflow downloaded is recorded in a ledger before each download starts, so
that after a kill the rerun still knows which cached revisions are its own to evict; one that
was downloaded but not measured before the kill is measured from the cache, not downloaded again.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from latentstates.io import atomic_path
from latentstates.runs.hub import cached_snapshot, download_revision, missing_error, repo_root, snapshot_path

logger = logging.getLogger(__name__)

LEDGER = "downloaded.json"


class Ledger:
    """The revisions (`repo@revision`) this workflow downloaded and has not evicted yet, in a
    JSON file written atomically at every change."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.entries: set[str] = set(json.loads(self.path.read_text())) if self.path.is_file() else set()

    def __contains__(self, entry: str) -> bool:
        return entry in self.entries

    def add(self, entry: str) -> None:
        self._write(self.entries | {entry})

    def discard(self, entry: str) -> None:
        if entry in self.entries:
            self._write(self.entries - {entry})

    def _write(self, entries: set[str]) -> None:
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(sorted(entries)) + "\n")
        self.entries = entries


def present(cache: Path, repo: str, revision: str) -> bool:
    """Whether the cache has anything of `repo` at `revision`: its ref, or a snapshot directory
    of that commit (complete or not): a revision the user had, never evicted."""
    root = repo_root(cache, repo)
    return (root / "refs" / revision).exists() or (root / "snapshots" / revision).exists()


def evict(cache: Path, snapshot: Path) -> int:
    """Remove one revision (its snapshot's commit) from the cache with huggingface_hub's cache
    API, which deletes its files, its ref and the blobs no other revision uses. Returns the bytes
    it expected to free."""
    from huggingface_hub import scan_cache_dir

    commit = snapshot.name
    info = scan_cache_dir(cache)
    strategy = info.delete_revisions(commit)
    strategy.execute()
    return strategy.expected_freed_size


class RevisionStream:
    """Snapshots of a series' revisions in order, each evicted (where this workflow downloaded
    it) once the caller asks for the next: `hub` holds the run record's `cache`, `prefetch` and
    `download` (and the `endpoint` of a mirror); `ledger` is the file of this run's own downloads."""

    def __init__(self, hub: dict[str, Any], ledger: Path):
        self.cache = Path(hub["cache"])
        self.prefetch = int(hub["prefetch"])
        self.download = bool(hub["download"])
        self.endpoint = hub.get("endpoint")
        self.ledger = Ledger(ledger)

    def __call__(self, items: Sequence[tuple[Any, str, str]]) -> Iterator[tuple[Any, Path]]:
        """(key, snapshot directory) of each (key, repository, revision) of `items`, in order;
        raises FileNotFoundError naming a revision neither cached nor downloadable (all of them
        at once, before any is measured, when downloads are off)."""
        self._evict_leftovers({f"{repo}@{rev}" for _, repo, rev in items})
        if not self.download:
            missing = [
                f"{repo}@{rev}" for _, repo, rev in items if cached_snapshot(self.cache, repo, rev) is None
            ]
            if missing:
                raise missing_error(self.cache, missing, [])
        slots = threading.Semaphore(self.prefetch + 1)
        evictions: queue.SimpleQueue = queue.SimpleQueue()
        results: queue.SimpleQueue = queue.SimpleQueue()
        stop = threading.Event()

        def work() -> None:  # downloads, and the evictions between them (never two at once)
            try:
                for _, repo, revision in items:
                    while not slots.acquire(timeout=0.05):
                        self._drain(evictions, slots)
                        if stop.is_set():
                            return
                    self._drain(evictions, slots)
                    if stop.is_set():
                        return
                    results.put(self._fetch(repo, revision))
            except BaseException as exc:  # handed to the reader, who raises it
                results.put(exc)

        worker = threading.Thread(target=work, name="hub-prefetch", daemon=True)
        worker.start()
        try:
            for key, _, _ in items:
                got = results.get()
                if isinstance(got, BaseException):
                    raise got
                try:
                    yield key, got[0]
                finally:
                    evictions.put(got)
        finally:
            stop.set()
            worker.join()
            while not results.empty():  # downloaded ahead, never measured: evicted as well
                got = results.get()
                if not isinstance(got, BaseException):
                    evictions.put(got)
            self._drain(evictions, None)

    def _fetch(self, repo: str, revision: str) -> tuple[Path, str, bool]:
        """(snapshot, entry, evict afterwards) of one revision, downloaded if the cache lacks it."""
        entry = f"{repo}@{revision}"
        snapshot = cached_snapshot(self.cache, repo, revision)
        if snapshot is not None:
            return snapshot, entry, entry in self.ledger
        if not self.download:
            raise missing_error(self.cache, [entry], [])
        ours = not present(self.cache, repo, revision) or entry in self.ledger
        if ours:
            self.ledger.add(entry)  # before the download: a kill during it leaves the record
        snapshot, error = download_revision(self.cache, repo, revision, self.endpoint)
        if snapshot is None:
            raise missing_error(self.cache, [entry], [error])
        logger.info("downloaded %s", entry)
        return snapshot, entry, ours

    def _drain(self, evictions: queue.SimpleQueue, slots: threading.Semaphore | None) -> None:
        while not evictions.empty():
            snapshot, entry, ours = evictions.get()
            if ours:
                freed = evict(self.cache, snapshot)
                self.ledger.discard(entry)
                logger.info("evicted %s from the cache (%.1f MB)", entry, freed / 1e6)
            if slots is not None:
                slots.release()

    def _evict_leftovers(self, wanted: set[str]) -> None:
        """Evict what an interrupted job downloaded and measured but did not evict."""
        for entry in sorted(self.ledger.entries - wanted):
            repo, _, revision = entry.rpartition("@")
            snapshot = snapshot_path(self.cache, repo, revision)  # complete or not (cut short)
            if snapshot.is_dir():
                evict(self.cache, snapshot)
                logger.info("evicted %s, left in the cache by an interrupted job", entry)
            self.ledger.discard(entry)
