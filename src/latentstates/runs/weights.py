"""Loading a checkpoint's state dict, whoever wrote it: this workflow's files, plain state dicts
or checkpoint dicts, safetensors, and Hugging Face `save_pretrained` directories. Always safe:
`weights_only=True` (no code runs), safetensors where present; errors name the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from latentstates.runs.checkpoints import load_checkpoint
from latentstates.tasks.models import fit_state

# Keys under which checkpoint dicts written elsewhere keep the model's state dict.
STATE_DICT_KEYS = ("model", "state_dict", "model_state_dict")


def torch_file(path: Path) -> Any:
    """A `torch.save` file's content, loaded safely (`weights_only`); errors name the file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, foreign, or pickled code (refused with weights_only)
        raise ValueError(f"{path}: not a readable checkpoint ({exc})") from exc


def _safetensors_file(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # truncated or foreign file
        raise ValueError(f"{path}: not a readable safetensors file ({exc})") from exc


def state_dict_of(payload: Any, path: Path) -> dict[str, torch.Tensor]:
    """The state dict in a loaded checkpoint file: the file itself, or its model entry."""
    if isinstance(payload, dict):
        for key in STATE_DICT_KEYS:
            if isinstance(payload.get(key), dict):
                payload = payload[key]
                break
        if payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
            return payload
    raise ValueError(f"{path}: no state dict (a dict of tensors, or one under {list(STATE_DICT_KEYS)})")


def load_weights(path: str | Path, fmt: str) -> dict[str, torch.Tensor]:
    """A checkpoint's state dict, loaded safely (weights_only; safetensors where present).

    `fmt`: "workflow" (this workflow's files), "state_dict" (a file of a state dict, or of a
    checkpoint dict holding one; .safetensors too) or "transformers" (a `save_pretrained`
    directory: model.safetensors, pytorch_model.bin, or their sharded index).
    """
    path = Path(path)
    if fmt == "workflow":
        return load_checkpoint(path)["model"]
    if fmt == "state_dict":
        if path.suffix == ".safetensors":
            return _safetensors_file(path)
        return state_dict_of(torch_file(path), path)
    if fmt == "transformers":
        return _transformers_dir(path)
    raise ValueError(f"unknown checkpoint format {fmt!r}")


def model_config(path: str | Path, fmt: str) -> dict:
    """A `save_pretrained` directory's config.json ({} for other formats, or where there is
    none): what an architecture needs beyond the state dict (e.g. GPT-NeoX's number of heads)."""
    config = Path(path) / "config.json"
    if fmt != "transformers" or not config.exists():
        return {}
    try:
        return json.loads(config.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{config}: not a readable model config ({exc})") from exc


def _transformers_dir(directory: Path) -> dict[str, torch.Tensor]:
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: model directory does not exist")
    for name, loader in (("model.safetensors", _safetensors_file), ("pytorch_model.bin", torch_file)):
        index = directory / f"{name}.index.json"
        if index.exists():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (OSError, ValueError, KeyError) as exc:
                raise ValueError(f"{index}: not a readable shard index ({exc})") from exc
            sd: dict[str, torch.Tensor] = {}
            for shard in shards:
                sd.update(state_dict_of(loader(directory / shard), directory / shard))
            return sd
        if (directory / name).exists():
            return state_dict_of(loader(directory / name), directory / name)
    raise FileNotFoundError(
        f"{directory}: no model.safetensors or pytorch_model.bin (or sharded index) in this model directory"
    )


def load_into(model: torch.nn.Module, path: str | Path, fmt: str = "workflow") -> None:
    """Load checkpoint `path` (of format `fmt`, latentstates.runs.contract) into `model`, safely;
    name the file when it is unreadable or its weights do not fit the configured model."""
    fit_state(model, load_weights(path, fmt), path)
