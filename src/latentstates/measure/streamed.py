"""The metrics of a Hub series streamed through its metrics job (`hub.keep_cache: false`): each
revision downloaded, checked, measured and evicted in turn (runs.hub_stream), its row written
durably as soon as it is measured, so that a rerun after a kill measures only the revisions with
no row, as training resumes from its resume states.

The rows live beside the run's record, in `metrics.partial/` (one JSON file per checkpoint, with
the stream's ledger of downloads), until the run's metrics table is written. The table is built
from the rows as written, interrupted or not, so a resumed run's table is identical to an
uninterrupted one's; floats round-trip JSON exactly. The settings they were measured under are
kept with them: rows measured under other settings (other extra measures, per-layer groups,
plug-ins or checkpoints) are measured again.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np

from latentstates.io import atomic_path

logger = logging.getLogger("latentstates")

PARTIAL = "metrics.partial"
SETTINGS = "settings.json"


def partial_dir(run_file: str | Path) -> Path:
    """Where a streamed run's rows wait for its metrics table: beside its run.json."""
    return Path(run_file).parent / PARTIAL


class MeasuredRows:
    """Rows written one file per checkpoint index, under the settings `key` (rows written under
    another key are removed)."""

    def __init__(self, directory: str | Path, key: dict[str, Any]):
        self.directory = Path(directory)
        text = json.dumps(key, sort_keys=True, default=str) + "\n"
        settings = self.directory / SETTINGS
        written = settings.read_text() if settings.is_file() else None
        if written != text:
            if written is not None:
                stale = list(self.directory.glob("row_*.json"))
                for f in stale:
                    f.unlink()
                logger.info(
                    "%s: %d rows measured under other settings, measured again", self.directory, len(stale)
                )
            with atomic_path(settings) as tmp:
                tmp.write_text(text)

    def _file(self, index: int) -> Path:
        return self.directory / f"row_{index:06d}.json"

    def done(self) -> set[int]:
        return {int(p.stem.split("_")[1]) for p in self.directory.glob("row_*.json")}

    def add(self, checkpoint: dict, row: dict) -> None:
        with atomic_path(self._file(checkpoint["index"])) as tmp:
            tmp.write_text(json.dumps(row, default=_plain))

    def rows(self) -> list[dict]:
        return [json.loads(self._file(i).read_text()) for i in sorted(self.done())]


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"a metric value of type {type(value).__name__} cannot be written")


def streamed_rows(
    run: dict,
    run_file: str | Path,
    measure: Callable[[Iterable[tuple[dict, Path]], Callable[[dict, dict], None]], Any],
    settings: dict[str, Any],
) -> list[dict]:
    """Rows of every checkpoint of a streamed run: those measured before (under the same
    `settings`) read back, the others streamed through `measure(checkpoints, keep)`, which calls
    `keep(checkpoint, row)` once each row is complete and before it asks for the next one."""
    from latentstates.runs.hub_stream import LEDGER, RevisionStream

    store = MeasuredRows(
        partial_dir(run_file), {"checkpoints": run["checkpoints"], "spec": run["spec"], **settings}
    )
    done = store.done()
    todo = [c for c in run["checkpoints"] if c["index"] not in done]
    if done:
        logger.info(
            "seed %d: %d of %d checkpoints measured before (%s); measuring the other %d",
            run["seed"],
            len(done),
            len(run["checkpoints"]),
            store.directory,
            len(todo),
        )
    stream = RevisionStream(run["hub"], store.directory / LEDGER)
    with closing(stream([(c, c["repo"], c["revision"]) for c in todo])) as snapshots:
        measure(_checked(snapshots, run), store.add)
    return store.rows()


def _checked(snapshots: Iterator[tuple[dict, Path]], run: dict) -> Iterator[tuple[dict, Path]]:
    """Each downloaded snapshot checked as an import checks one (`sources.check_checkpoint`)."""
    from latentstates.runs.sources import check_checkpoint

    for checkpoint, snapshot in snapshots:
        check_checkpoint(snapshot, run["format"], run["spec"])
        yield checkpoint, snapshot


def discard_partial(run_file: str | Path) -> None:
    """Remove a run's measured rows once its metrics table is written (kept while its ledger
    still lists downloads to evict)."""
    from latentstates.runs.hub_stream import LEDGER, Ledger

    directory = partial_dir(run_file)
    if directory.is_dir() and not Ledger(directory / LEDGER).entries:
        shutil.rmtree(directory)
