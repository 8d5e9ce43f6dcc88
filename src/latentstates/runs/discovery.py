"""Where the checkpoints of runs trained elsewhere are: one discovery for the import job and the
Snakefile's inputs (torch-free: stdlib and `columns` only, the Snakefile imports it).

- a checkpoint directory per run (`path` with {seed}): its checkpoint files, ordered by the step
  in their names or, where no name has one, by the step stored inside (read by the caller);
- Hugging Face model directories (`path` with {seed} and {step}): one directory per checkpoint.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Callable
from pathlib import Path

from latentstates.columns import CHECKPOINT_SUFFIXES

_INT = re.compile(r"\d+")


def run_directory(pattern: str, seed: int) -> Path:
    """A run's directory from a path pattern with {seed}."""
    return Path(pattern.replace("{seed}", str(seed)))


def checkpoint_files_in(directory: str | Path) -> list[Path]:
    """The checkpoint files of a run's directory (by suffix, no hidden files), sorted by name;
    errors name the directory."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: checkpoint directory does not exist")
    return sorted(
        p
        for p in directory.iterdir()
        if p.suffix in CHECKPOINT_SUFFIXES and p.is_file() and not p.name.startswith(".")
    )


def checkpoints_by_step(directory: str | Path, stored_step: Callable[[Path], int]) -> list[tuple[int, Path]]:
    """(step, file) of the checkpoint files in a run's directory, in step order.

    The step is the last number in the file name (ckpt_000120.pt, step=120.safetensors); where
    no file name has one, `stored_step(file)` (the step stored in the checkpoint). Errors name
    the directory.
    """
    directory = Path(directory)
    files = checkpoint_files_in(directory)
    if not files:
        raise ValueError(f"{directory}: no checkpoint files ({', '.join(CHECKPOINT_SUFFIXES)})")
    numbered = [_INT.findall(p.stem) for p in files]
    if all(numbered):
        steps = [int(n[-1]) for n in numbered]
    elif not any(numbered):
        steps = [stored_step(p) for p in files]
    else:
        odd = [p.name for p, n in zip(files, numbered) if not n]
        raise ValueError(f"{directory}: some checkpoint file names have no step number: {odd[:5]}")
    seen: dict[int, Path] = {}
    for step, p in zip(steps, files):
        if step in seen:
            # The same weights saved twice: safetensors where present (nothing to unpickle).
            pair = {seen[step].suffix, p.suffix}
            if ".safetensors" in pair and len(pair) == 2:
                seen[step] = seen[step] if seen[step].suffix == ".safetensors" else p
                continue
            raise ValueError(f"{directory}: {seen[step].name} and {p.name} are both step {step}")
        seen[step] = p
    return sorted(seen.items())


def huggingface_checkpoints(pattern: str, seed: int) -> list[tuple[int, Path]]:
    """(step, model directory) of one run: the directories matching `pattern` (with {seed} and
    {step}) for this seed, in step order; errors name the pattern."""
    if "{step}" not in pattern:
        raise ValueError(f"huggingface path {pattern!r} has no {{step}}")
    head = pattern.replace("{seed}", str(seed))
    before, after = head.split("{step}", 1)
    regex = re.compile(re.escape(before) + r"(\d+)" + re.escape(after.rstrip("/")) + "$")
    found = []
    for name in glob.glob(glob.escape(before) + "*" + glob.escape(after)):
        m = regex.match(name.rstrip("/"))
        if m and Path(name).is_dir():
            found.append((int(m[1]), Path(name)))
    if not found:
        raise FileNotFoundError(f"no model directories match {head!r} (huggingface path, seed {seed})")
    return sorted(found)
