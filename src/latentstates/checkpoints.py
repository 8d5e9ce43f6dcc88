"""Checkpoint files: one weights-only file per checkpoint index, written atomically."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from .io import atomic_path

_NAME = re.compile(r"^ckpt_(\d{6})\.pt$")


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
