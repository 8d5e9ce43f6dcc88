"""Checkpoint files: one weights-only file per checkpoint index, written atomically."""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from .io import atomic_path

_NAME = re.compile(r"^ckpt_(\d{6})\.pt$")
logger = logging.getLogger("latentstates")


def checkpoint_path(directory: str | Path, index: int) -> Path:
    """Path of checkpoint `index` in `directory`."""
    return Path(directory) / f"ckpt_{index:06d}.pt"


def save_checkpoint(directory: str | Path, index: int, payload: dict[str, Any]) -> Path:
    """Write one checkpoint atomically."""
    path = checkpoint_path(directory, index)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


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
    """Write the resume state of checkpoint `index` atomically; keep only the newest RESUME_KEEP."""
    directory = Path(directory)
    with atomic_path(directory / f"resume_{index:06d}.pt") as tmp:
        torch.save(payload, tmp)
    for old in sorted(p for p in directory.iterdir() if _RESUME.match(p.name))[:-RESUME_KEEP]:
        old.unlink()


def load_resume(directory: str | Path) -> dict[str, Any] | None:
    """The newest readable resume state in `directory` (None if there is none).

    Unreadable states are reported and skipped; checkpoint files written after the state that is
    used are removed, since training will write them again.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return None
    for tmp in directory.glob(".*.tmp"):  # half-written files of the killed process
        tmp.unlink()
    for path in sorted((p for p in directory.iterdir() if _RESUME.match(p.name)), reverse=True):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated or foreign file
            logger.warning("%s: unreadable resume state (%s); trying the previous one", path, exc)
            path.unlink()
            continue
        index = int(_RESUME.match(path.name)[1])
        for later in directory.iterdir():
            m = _NAME.match(later.name)
            if m and int(m[1]) > index:
                later.unlink()
        return state
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
