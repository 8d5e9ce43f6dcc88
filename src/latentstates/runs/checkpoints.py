"""Checkpoint files: one weights-only file per checkpoint index, written atomically."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from latentstates.disk import DiskFullError, free_space, human_bytes, reporting_full_disk
from latentstates.io import atomic_path

_NAME = re.compile(r"^ckpt_(\d{6})\.pt$")
logger = logging.getLogger("latentstates")


def checkpoint_path(directory: str | Path, index: int) -> Path:
    """Path of checkpoint `index` in `directory`."""
    return Path(directory) / f"ckpt_{index:06d}.pt"


def save_checkpoint(directory: str | Path, index: int, payload: dict[str, Any], atomic: bool = True) -> Path:
    """Write one checkpoint, atomically unless `atomic` is False.

    Training writes into a staging directory that is itself published atomically, and a rerun
    after a kill deletes every checkpoint past its newest resume state (`load_resume`), so a torn
    file cannot survive there: the temporary file and rename (half the cost of a small
    checkpoint's write) are skipped.
    """
    path = checkpoint_path(directory, index)
    if not atomic:
        with reporting_full_disk(path, payload_bytes(payload)):
            torch.save(payload, path)
        return path
    with atomic_path(path, payload_bytes(payload)) as tmp:
        torch.save(payload, tmp)
    return path


def payload_bytes(payload: Any) -> int:
    """Bytes of the tensors in a (nested) payload: about what `torch.save` writes of it."""
    if isinstance(payload, torch.Tensor):
        return payload.numel() * payload.element_size()
    if isinstance(payload, dict):
        return sum(payload_bytes(v) for v in payload.values())
    if isinstance(payload, (list, tuple)):
        return sum(payload_bytes(v) for v in payload)
    return len(payload) if isinstance(payload, (str, bytes)) else 8


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoint files of a run, in index order; errors name the directory."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: checkpoint directory does not exist")
    paths = sorted(p for p in directory.iterdir() if _NAME.match(p.name))
    if not paths:
        raise ValueError(f"{directory}: no checkpoint files (ckpt_NNNNNN.pt) found")
    return paths


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with weights only (no arbitrary code), naming the file on failure."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise ValueError(f"{path}: not a readable checkpoint ({exc})") from exc
    if not isinstance(payload, dict) or "model" not in payload:
        raise ValueError(f"{path}: not a checkpoint of this workflow (no 'model' state dict)")
    return payload


# Resume states kept per run: if the newest is unreadable, the one before it is used.
RESUME_KEEP = 2
_RESUME = re.compile(r"^resume_(\d{6})\.pt$")


def save_resume(directory: str | Path, index: int, payload: dict[str, Any]) -> None:
    """Write the resume state of checkpoint `index` atomically (older states stay: `prune_resume`)."""
    path = Path(directory) / f"resume_{index:06d}.pt"
    with atomic_path(path, payload_bytes(payload)) as tmp:
        torch.save(payload, tmp)


def prune_resume(directories: list[str | Path]) -> None:
    """Keep only the newest RESUME_KEEP resume states of each run of a group.

    Called once every run of the group has written its newest state, so that whenever a kill
    lands the runs share at least RESUME_KEEP indices: if one run's newest state is unreadable,
    the group still has a common older one.
    """
    for directory in map(Path, directories):
        for old in _resume_indices(directory)[:-RESUME_KEEP]:
            (directory / f"resume_{old:06d}.pt").unlink(missing_ok=True)


def encode_log(rows: list[dict[str, Any]]) -> str:
    """A resume state's training log so far as JSON (floats round-trip exactly, NaN included).

    One string instead of a list of dicts, which are slower to pickle (benchmarks/README.md).
    """
    return json.dumps(rows)


def resume_rows(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The training-log rows of a resume state (also of one written before `encode_log`)."""
    return json.loads(state["log"]) if "log" in state else list(state["rows"])


def staging_dir(checkpoint_dir: str | Path) -> Path:
    """Where a run's checkpoints and resume states live until training completes."""
    checkpoint_dir = Path(checkpoint_dir)
    return checkpoint_dir.with_name(checkpoint_dir.name + ".partial")


def _resume_indices(directory: Path) -> list[int]:
    return sorted(int(m[1]) for p in directory.iterdir() if (m := _RESUME.match(p.name)))


def _read_state(path: Path) -> dict[str, Any] | None:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or foreign file
        logger.warning("%s: unreadable resume state (%s)", path, exc)
        return None


def read_resume(directory: str | Path) -> dict[str, Any] | None:
    """The newest readable resume state in `directory`, changing nothing (None if none).

    For readers of a run that may still be training, e.g. a forecast of a running job.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return None
    for index in reversed(_resume_indices(directory)):
        state = _read_state(directory / f"resume_{index:06d}.pt")
        if state is not None:
            return state
    return None


def load_resume(directories: list[str | Path]) -> list[dict[str, Any]] | None:
    """Resume states of a group of runs trained together, all from the same checkpoint index.

    The newest index for which every run has a readable state is used (a kill can land between
    two runs' writes); unreadable states are reported and removed. Files written after that index
    (checkpoints and resume states) are removed, since training will write them again. None when
    there is no common state: the staging directories are then emptied for a fresh start.
    """
    directories = [Path(d) for d in directories]
    for d in directories:
        if d.is_dir():
            for tmp in d.glob(".*.tmp"):  # half-written files of the killed process
                tmp.unlink()
    present = [set(_resume_indices(d)) if d.is_dir() else set() for d in directories]
    for index in sorted(set.intersection(*present), reverse=True):
        states = []
        for d in directories:
            path = d / f"resume_{index:06d}.pt"
            state = _read_state(path)
            if state is None:
                path.unlink()
                break
            states.append(state)
        else:
            for d in directories:
                for later in d.iterdir():
                    m = _NAME.match(later.name) or _RESUME.match(later.name)
                    if m and int(m[1]) > index:
                        later.unlink()
            return states
    for d in directories:
        if d.exists():
            shutil.rmtree(d)
    return None


def publish(staging: str | Path, final: str | Path) -> None:
    """Drop the resume states and rename the finished checkpoint directory into place."""
    staging, final = Path(staging), Path(final)
    for p in staging.iterdir():
        if _RESUME.match(p.name):
            p.unlink()
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)


def check_room(directories: list[str | Path], checkpoints_left: int) -> None:
    """Stop before training if the runs' file system cannot hold what they will still write.

    Each run will write `checkpoints_left` more checkpoints the size of its newest one, and keep
    up to RESUME_KEEP + 1 resume states of at most about three times that (weights and an
    optimiser's two moments). Checked once at the start, so that a run that cannot finish says
    so at once rather than hours later.
    """
    sizes = []
    for d in map(Path, directories):
        written = sorted(p for p in d.iterdir() if _NAME.match(p.name)) if d.is_dir() else []
        if written:
            sizes.append(written[-1].stat().st_size)
    if not sizes:
        return
    per_run = max(sizes)
    needed = len(sizes) * per_run * (max(checkpoints_left, 0) + 3 * (RESUME_KEEP + 1))
    free, total = free_space(directories[0])
    if free < needed:
        raise DiskFullError(
            f"{Path(directories[0]).parent}: not enough space to train: {len(sizes)} run(s) will write "
            f"{checkpoints_left} more checkpoints of {human_bytes(per_run)} each and their resume "
            f"states, about {human_bytes(needed)}, and the file system has {human_bytes(free)} free "
            f"of {human_bytes(total)}. Free space (or point `results` elsewhere, or checkpoint less "
            "often) and rerun: finished work is kept",
        )
