"""Loading a checkpoint's state dict, whoever wrote it: this workflow's files, plain state dicts
or checkpoint dicts, safetensors, and Hugging Face `save_pretrained` directories. Always safe:
`weights_only=True` (no code runs), safetensors where present; errors name the file."""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from latentstates import validation
from latentstates.runs.checkpoints import load_checkpoint
from latentstates.tasks.models import fit_state
from latentstates.validation import InputError, MissingInputError, require_memory, safetensors_layout

# Keys under which checkpoint dicts written elsewhere keep the model's state dict.
STATE_DICT_KEYS = ("model", "state_dict", "model_state_dict")


def torch_file(path: Path, mmap: bool = False) -> Any:
    """A `torch.save` file's content, loaded safely (`weights_only`: no code runs); errors name
    the file and say in one line what is wrong."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # truncated, foreign, or pickled code (refused with weights_only)
        raise InputError(path, f"not a readable checkpoint ({torch_load_error(exc)})") from exc


def torch_load_error(exc: Exception) -> str:
    """What `torch.load` found wrong, in one line: its weights-only refusals without the advice
    to load the file unsafely."""
    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in text:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        detail = next(
            (line for line in lines if line.startswith(("Trying to load", "Unsupported", "Could not find"))),
            lines[-1] if lines else "",
        )
        return f"it holds something other than tensors, refused since loading it could run code: {detail}"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first.replace(str(exc.filename), "").strip() if getattr(exc, "filename", None) else first


# safetensors' dtype names (the format's header) and the torch dtypes they store.
SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}


def _safetensors_file(path: Path) -> LazyStateDict:
    """A safetensors file's tensors, each read with a plain file read when asked for: its header
    (8 bytes of length, then JSON: dtype, shape and byte offsets per tensor) is parsed and checked
    against the file here (`validation.safetensors_layout`: every byte range holds exactly its
    shape, the ranges tile the data), and nothing is memory-mapped, so a checkpoint's pages never
    count towards the process's memory (safetensors' own reader maps the file; both read the same,
    tests/test_metrics.py)."""
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            file_size = os.fstat(f.fileno()).st_size
            raw = f.read(size) if 2 <= size <= min(100_000_000, file_size - 8) else None
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror or exc})") from exc
    if raw is None:
        raise InputError(
            path, f"not a readable safetensors file (header length {size}, file of {file_size} bytes)"
        )
    try:
        header = json.loads(raw)
    except ValueError as exc:  # the header is not JSON (UnicodeDecodeError is a ValueError)
        raise InputError(path, f"not a readable safetensors file (its header is not JSON: {exc})") from exc
    start = 8 + size
    layout = safetensors_layout(header, file_size - start, path)
    meta = {name: (SAFETENSORS_DTYPES[dtype], shape) for name, (dtype, shape, _, _) in layout.items()}
    spans = {name: (start + begin, end - begin) for name, (_, _, begin, end) in layout.items()}

    def getter(name: str) -> Callable[[], torch.Tensor]:
        def read() -> torch.Tensor:
            (dtype, shape), (offset, nbytes) = meta[name], spans[name]
            require_memory(path, name, shape)
            buffer = bytearray(nbytes)
            with open(path, "rb") as f:
                f.seek(offset)
                if f.readinto(buffer) != nbytes:  # the file shrank since its header was read
                    raise InputError(
                        path, "is truncated (the file shrank while it was read)", f"tensor {name!r}"
                    )
            if not nbytes:  # no elements: a shape with a zero (the layout check allows nothing else)
                return torch.zeros(shape, dtype=dtype)
            return torch.frombuffer(buffer, dtype=dtype).reshape(shape)

        return read

    return LazyStateDict({name: getter(name) for name in meta}, meta)


def state_dict_of(payload: Any, path: Path) -> dict[str, torch.Tensor]:
    """The state dict in a loaded checkpoint file: the file itself, or its model entry."""
    if isinstance(payload, dict):
        for key in STATE_DICT_KEYS:
            if isinstance(payload.get(key), dict):
                payload = payload[key]
                break
        if payload and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in payload.items()):
            return payload
    raise InputError(path, f"no state dict (a dict of tensors by name, or one under {list(STATE_DICT_KEYS)})")


def load_weights(path: str | Path, fmt: str) -> dict[str, torch.Tensor]:
    """A checkpoint's state dict, loaded safely (weights_only; safetensors where present).

    `fmt`: "workflow" (this workflow's files), "state_dict" (a file of a state dict, or of a
    checkpoint dict holding one; .safetensors too) or "transformers" (a `save_pretrained`
    directory: model.safetensors, pytorch_model.bin, or their sharded index).
    """
    return dict(open_weights(path, fmt).items())


class LazyStateDict(Mapping[str, torch.Tensor]):
    """A checkpoint's tensors by name, each read from its file when asked for and not kept, so that
    a checkpoint larger than memory is read one tensor at a time; `meta(name)` gives a tensor's
    dtype and shape without reading it."""

    def __init__(
        self, getters: dict[str, Callable[[], torch.Tensor]], meta: dict[str, tuple[torch.dtype, tuple]]
    ):
        self._getters, self._meta = getters, meta

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._getters[name]()

    def __iter__(self) -> Iterator[str]:
        return iter(self._getters)

    def __len__(self) -> int:
        return len(self._getters)

    def meta(self, name: str) -> tuple[torch.dtype, tuple]:
        return self._meta[name]

    def update(self, other: LazyStateDict) -> None:
        self._getters.update(other._getters)
        self._meta.update(other._meta)


def tensor_meta(sd: Mapping[str, torch.Tensor], name: str) -> tuple[torch.dtype, tuple]:
    """dtype and shape of `sd[name]`, without reading it where `sd` is lazy."""
    if isinstance(sd, LazyStateDict):
        return sd.meta(name)
    return sd[name].dtype, tuple(sd[name].shape)


def open_weights(path: str | Path, fmt: str) -> Mapping[str, torch.Tensor]:
    """A checkpoint's state dict as `load_weights`, but lazy where the file allows it (safetensors;
    zip-format torch files, memory-mapped): each tensor is read when asked for."""
    path = Path(path)
    if fmt == "workflow":
        return load_checkpoint(path)["model"]
    if fmt == "state_dict":
        return _lazy_file(path)
    if fmt == "transformers":
        return _transformers_dir(path)
    raise InputError(path, f"unknown checkpoint format {fmt!r} (known: workflow, state_dict, transformers)")


def _lazy_file(path: Path) -> Mapping[str, torch.Tensor]:
    if not path.is_file():
        raise MissingInputError(path, "no such file" if not path.is_symlink() else "a broken symbolic link")
    if path.suffix == ".safetensors":
        return _safetensors_file(path)
    if zipfile.is_zipfile(path):  # a zip-format torch file is memory-mapped: tensors read as used
        return state_dict_of(torch_file(path, mmap=True), path)
    return state_dict_of(torch_file(path), path)  # a legacy (non-zip) file is read whole


def model_config(path: str | Path, fmt: str) -> dict:
    """A `save_pretrained` directory's config.json ({} for other formats, or where there is
    none): what an architecture needs beyond the state dict (e.g. GPT-NeoX's number of heads)."""
    config = Path(path) / "config.json"
    if fmt != "transformers" or not config.exists():
        return {}
    try:
        return validation.model_config(json.loads(config.read_text()), config)
    except (OSError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(config, f"not a readable model config ({exc})") from exc


def _transformers_dir(directory: Path) -> Mapping[str, torch.Tensor]:
    if not directory.is_dir():
        raise MissingInputError(directory, "model directory does not exist")
    for name in ("model.safetensors", "pytorch_model.bin"):
        index = directory / f"{name}.index.json"
        if index.exists():
            try:
                shards = validation.shard_names(json.loads(index.read_text()), index)
            except (OSError, ValueError) as exc:
                if isinstance(exc, InputError):
                    raise
                raise InputError(index, f"not a readable shard index ({exc})") from exc
            sd: Mapping[str, torch.Tensor] | None = None
            for shard in shards:
                part = _lazy_file(directory / shard)
                if sd is None:
                    sd = part
                elif isinstance(sd, LazyStateDict) and isinstance(part, LazyStateDict):
                    sd.update(part)
                else:
                    sd = {**sd, **part}
            return sd or {}
        if (directory / name).exists() or (directory / name).is_symlink():
            return _lazy_file(directory / name)
    raise MissingInputError(
        directory, "no model.safetensors or pytorch_model.bin (or sharded index) in this model directory"
    )


def load_into(model: torch.nn.Module, path: str | Path, fmt: str = "workflow") -> None:
    """Load checkpoint `path` (of format `fmt`, latentstates.runs.contract) into `model`, safely;
    name the file when it is unreadable or its weights do not fit the configured model."""
    fit_state(model, load_weights(path, fmt), path)
