"""Where the checkpoints of runs trained elsewhere are: one discovery for the import job and the
Snakefile's inputs (torch-free: stdlib and `columns` only, the Snakefile imports it).

- a checkpoint directory per run (`path` with {seed}): its checkpoint files, ordered by the step
  in their names or, where no name has one, by the step stored inside (read by the caller);
- Hugging Face model directories (`path` with {seed} and {step}): one directory per checkpoint.
"""

from __future__ import annotations

import glob
import hashlib
import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path

from latentstates.columns import CHECKPOINT_SUFFIXES
from latentstates.validation import InputError, MissingInputError, require_step

_INT = re.compile(r"\d+")


def run_directory(pattern: str, seed: int) -> Path:
    """A run's directory from a path pattern with {seed}."""
    return Path(pattern.replace("{seed}", str(seed)))


def checkpoint_files_in(directory: str | Path) -> list[Path]:
    """The checkpoint files of a run's directory (by suffix, no hidden files), sorted by name;
    errors name the directory, or the checkpoint that is a broken link."""
    directory = Path(directory)
    if not directory.is_dir():
        raise MissingInputError(directory, "checkpoint directory does not exist")
    found = sorted(
        p for p in directory.iterdir() if p.suffix in CHECKPOINT_SUFFIXES and not p.name.startswith(".")
    )
    broken = [p.name for p in found if p.is_symlink() and not p.exists()]
    if broken:
        raise InputError(directory, f"checkpoint(s) {broken[:5]} are broken symbolic links")
    return [p for p in found if p.is_file()]


def checkpoints_by_step(directory: str | Path, stored_step: Callable[[Path], int]) -> list[tuple[int, Path]]:
    """(step, file) of the checkpoint files in a run's directory, in step order.

    The step is the last number in the file name (ckpt_000120.pt, step=120.safetensors); where
    no file name has one, `stored_step(file)` (the step stored in the checkpoint). Errors name
    the directory.
    """
    directory = Path(directory)
    files = checkpoint_files_in(directory)
    if not files:
        raise InputError(directory, f"no checkpoint files ({', '.join(CHECKPOINT_SUFFIXES)})")
    numbered = [_INT.findall(p.stem) for p in files]
    if all(numbered):
        steps = [require_step(int(n[-1]), p, "the step in its name") for p, n in zip(files, numbered)]
    elif not any(numbered):
        steps = [stored_step(p) for p in files]
    else:
        odd = [p.name for p, n in zip(files, numbered) if not n]
        raise InputError(directory, f"some checkpoint file names have no step number: {odd[:5]}")
    seen: dict[int, Path] = {}
    for step, p in zip(steps, files):
        if step in seen:
            # The same weights saved twice: safetensors where present (nothing to unpickle).
            pair = {seen[step].suffix, p.suffix}
            if ".safetensors" in pair and len(pair) == 2:
                seen[step] = seen[step] if seen[step].suffix == ".safetensors" else p
                continue
            raise InputError(directory, f"{seen[step].name} and {p.name} are both step {step}")
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
            found.append((require_step(int(m[1]), name, "the step in its name"), Path(name)))
    if not found:
        raise FileNotFoundError(f"no model directories match {head!r} (huggingface path, seed {seed})")
    return sorted(found)


# Files up to this size are fingerprinted whole; larger ones by their first and last part (a
# checkpoint's header, a Parquet file's footer).
WHOLE_FILE = 1 << 20
_SAMPLE = 1 << 16


def is_lm_eval(performance: str | None) -> bool:
    """Whether a task's `performance` names lm-evaluation-harness results (a directory of them, or
    one results JSON) rather than a CSV or Parquet table."""
    return bool(performance) and (Path(performance).is_dir() or str(performance).endswith(".json"))


def fingerprint(paths: Iterable[str | Path]) -> str:
    """A digest of imported inputs as they are now: per file (a directory: every file in it) its
    name, size, modification time and content (whole up to 1 MiB, else its first and last 64 KiB).
    As a param of the job that reads them, a changed input reruns it also where the change leaves
    an older modification time (a file restored from a backup with `cp -p` or `rsync -a`)."""
    digest = hashlib.blake2b(digest_size=16)
    for top in sorted({Path(p) for p in paths}):
        files = sorted(f for f in top.rglob("*") if f.is_file()) if top.is_dir() else [top]
        for f in files:
            digest.update(f"{f}\0".encode())
            try:
                st = f.stat()
                with open(f, "rb") as fh:
                    if st.st_size <= WHOLE_FILE:
                        content = fh.read()
                    else:
                        content = fh.read(_SAMPLE)
                        fh.seek(st.st_size - _SAMPLE)
                        content += fh.read(_SAMPLE)
            except OSError:
                digest.update(b"unreadable\0")
                continue
            digest.update(f"{st.st_size} {st.st_mtime_ns}\0".encode())
            digest.update(hashlib.blake2b(content, digest_size=16).digest())
    return digest.hexdigest()


def listed_checkpoints(run_file: str | Path) -> list[Path]:
    """The checkpoint paths a run.json lists (relative ones from its directory); none where the
    file cannot be read as one (the import job then says why)."""
    run_file = Path(run_file)
    try:
        checkpoints = json.loads(run_file.read_text())["checkpoints"]
        return [run_file.parent / c["path"] for c in checkpoints]
    except (OSError, ValueError, KeyError, TypeError):
        return []
