"""Checks of what users bring, made where it enters the workflow (the import jobs, the table
readers, the data readers) before anything is computed from it.

Every check that fails raises `InputError`: one message naming the file (and the key, row, cell
or tensor) and what was expected. Rule scripts report it as that one line, without a traceback
(`latentstates.logs.job_log`). What each source validates: docs/operations.md#bad-inputs.

The standard library only: every job imports it (the data and Hub environments too). The checks
of tables' cells are the table readers' (latentstates.runs.external_tables).
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# The largest step a checkpoint may have: the tables store steps as int64.
MAX_STEP = 2**63 - 1
# Bytes per element of safetensors' dtypes (the format's header names).
SAFETENSORS_ITEMSIZE = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
}
# Part of the available memory one tensor may take once read and widened to float64 (the
# statistics' precision): the rest is for the process, the other tensors and other jobs.
MEMORY_SHARE = 0.5


class InputError(ValueError):
    """An input (a file, or a value in it) is unusable: the message names the file, where in it,
    and what was expected."""

    def __init__(self, source: str | os.PathLike, what: str, where: str | None = None):
        self.source, self.where, self.what = str(source), where, what
        super().__init__(f"{source}: {where}: {what}" if where else f"{source}: {what}")


class MissingInputError(InputError, FileNotFoundError):
    """An input file or directory that is not there."""


def is_int(value: Any) -> bool:
    """An integer, also numpy's (bools are not)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A real number, also numpy's (bools are not)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def describe(value: Any) -> str:
    """A value as a message quotes it: its repr, shortened, with its type where that matters."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return text if isinstance(value, (str, int, float, type(None))) else f"{text} ({type(value).__name__})"


def require_step(value: Any, source: str | os.PathLike, where: str) -> int:
    """A checkpoint step: an integer in [0, 2^63)."""
    if not is_int(value):
        raise InputError(source, f"a step must be an integer, got {describe(value)}", where)
    if not 0 <= int(value) <= MAX_STEP:
        raise InputError(source, f"step {value} is outside [0, 2^63)", where)
    return int(value)


def require_increasing(steps: Sequence[int], source: str | os.PathLike, where: str) -> None:
    """Steps in strictly increasing order (as integers)."""
    for i in range(1, len(steps)):
        if steps[i] <= steps[i - 1]:
            raise InputError(
                source,
                f"steps must increase: entry {i} has step {steps[i]} after {steps[i - 1]}",
                where,
            )


# ---- weights ------------------------------------------------------------------------------


def safetensors_layout(
    header: Any, data_bytes: int, source: str | os.PathLike
) -> dict[str, tuple[str, tuple[int, ...], int, int]]:
    """A safetensors header checked against the file: name → (dtype, shape, begin, end), offsets
    into the data that follows the header. Each tensor's byte range must hold exactly its shape
    in its dtype, and the ranges must tile the data (`data_bytes`) without gaps or overlaps."""
    if not isinstance(header, dict):
        raise InputError(source, f"the safetensors header is a {type(header).__name__}, not a mapping")
    layout = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        where = f"tensor {name!r}"
        if not isinstance(info, dict):
            raise InputError(source, f"header entry is {describe(info)}, not a mapping", where)
        missing = [k for k in ("dtype", "shape", "data_offsets") if k not in info]
        if missing:
            raise InputError(source, f"header entry lacks {missing}", where)
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in SAFETENSORS_ITEMSIZE:
            raise InputError(
                source, f"unknown dtype {describe(dtype)} (known: {sorted(SAFETENSORS_ITEMSIZE)})", where
            )
        if not isinstance(shape, list) or not all(is_int(n) and n >= 0 for n in shape):
            raise InputError(
                source, f"shape must be a list of non-negative integers, got {describe(shape)}", where
            )
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(is_int(n) for n in offsets)):
            raise InputError(source, f"data_offsets must be two integers, got {describe(offsets)}", where)
        begin, end = offsets
        if not 0 <= begin <= end:
            raise InputError(source, f"data_offsets {offsets} are not an ordered byte range", where)
        needed = math.prod(shape) * SAFETENSORS_ITEMSIZE[dtype]
        if end - begin != needed:
            raise InputError(
                source,
                f"shape {shape} of {dtype} needs {needed} bytes, "
                f"its data_offsets {offsets} hold {end - begin}",
                where,
            )
        layout[name] = (dtype, tuple(shape), begin, end)
    position, previous = 0, None
    for name, (_, _, begin, end) in sorted(layout.items(), key=lambda item: (item[1][2], item[1][3])):
        if begin != position:
            what = (
                f"its bytes {begin}..{end} overlap tensor {previous!r}'s"
                if begin < position
                else f"bytes {position}..{begin} before it belong to no tensor"
            )
            raise InputError(source, what, f"tensor {name!r}")
        position, previous = end, name
    if position != data_bytes:
        raise InputError(
            source,
            f"its tensors hold {position} bytes of data, the file has {data_bytes} after the header"
            + (" (truncated?)" if data_bytes < position else ""),
        )
    return layout


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux's MemAvailable), None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:  # elsewhere: the free pages (fewer than the available ones: a cautious estimate)
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def require_memory(source: str | os.PathLike, name: str, shape: Sequence[int]) -> None:
    """Stop before reading a tensor whose float64 copy would not fit in the memory available."""
    needed = math.prod(shape) * 8
    available = available_memory()
    if available is not None and needed > MEMORY_SHARE * available:
        raise InputError(
            source,
            f"shape {list(shape)} needs {needed / 2**30:.1f} GiB in float64, more than this machine can "
            f"give one tensor ({MEMORY_SHARE * available / 2**30:.1f} GiB of {available / 2**30:.1f} GiB "
            "available)",
            f"tensor {name!r}",
        )


def require_floating(source: str | os.PathLike, name: str, dtype: Any) -> None:
    """Weights must be floating point: integer or boolean tensors are refused, not cast."""
    if not getattr(dtype, "is_floating_point", False):
        raise InputError(
            source,
            f"is {str(dtype).replace('torch.', '')}, and integer or boolean weights are refused "
            "(a checkpoint's weights are floating point)",
            f"tensor {name!r}",
        )


def shard_names(index: Any, source: str | os.PathLike) -> list[str]:
    """The shard files a sharded checkpoint's index names: its `weight_map` must map tensor names
    to file names inside the checkpoint's directory."""
    if not isinstance(index, dict) or not isinstance(index.get("weight_map"), dict):
        got = index.get("weight_map") if isinstance(index, dict) else index
        raise InputError(source, f"must map tensor names to shard files, got {describe(got)}", "weight_map")
    names = set()
    for tensor, shard in index["weight_map"].items():
        if not isinstance(shard, str) or not shard:
            raise InputError(source, f"shard {describe(shard)} is not a file name", f"weight_map[{tensor!r}]")
        if Path(shard).is_absolute() or ".." in Path(shard).parts:
            raise InputError(
                source, f"shard {shard!r} is outside the checkpoint's directory", f"weight_map[{tensor!r}]"
            )
        names.add(shard)
    if not names:
        raise InputError(source, "names no shard", "weight_map")
    return sorted(names)


# Integers of a model's config.json that architectures read: positive where present.
MODEL_CONFIG_INTS = ("num_attention_heads", "hidden_size", "num_hidden_layers", "intermediate_size")


def model_config(config: Any, source: str | os.PathLike) -> dict:
    """A model's config.json: a mapping whose sizes (heads, widths, layers) are positive integers."""
    if not isinstance(config, dict):
        raise InputError(source, f"a model config must be a mapping, got {describe(config)}")
    for key in MODEL_CONFIG_INTS:
        if key in config and not (is_int(config[key]) and config[key] > 0):
            raise InputError(source, f"must be a positive integer, got {describe(config[key])}", key)
    return config
