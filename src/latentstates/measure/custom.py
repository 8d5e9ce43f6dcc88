"""Your own metrics (`metrics.custom`): each plug-in's columns of one checkpoint.

A plug-in is a function of one argument, the checkpoint's layers: an iterable of `Layer`s
(matrices, biases and convolution kernels: tensors in their stored dtype, on the metrics job's
device, gradients off), the view the built-in statistics read. A registered task's model is one
layer; a language model comes block by block and is never held whole, so a plug-in that keeps only
running sums works at any size. It returns a mapping of its declared column names to numbers
(floats, numpy or 0-d torch scalars).

    def row_norms(layers):
        norms = [m.double().norm(dim=1).max().item() for layer in layers for m in layer.matrices]
        return {"max_row_norm": max(norms)}
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple

import torch

from latentstates.plugins import PluginError, load_function


class Layer(NamedTuple):
    """One layer's weights as a plug-in receives them."""

    matrices: Sequence[torch.Tensor]
    biases: Sequence[torch.Tensor] = ()
    kernels: Sequence[torch.Tensor] = ()


@functools.cache
def _function(spec: str) -> Callable:
    return load_function(spec)


def custom_metrics(
    entries: Sequence[Mapping], layers: Callable[[], Iterable[tuple]], where: str = ""
) -> dict[str, float]:
    """The columns of each `metrics.custom` entry ({function, columns}) at one checkpoint whose
    layers `layers()` yields (called once per plug-in: (matrices, biases[, kernels]) tuples).
    PluginError names the entry, the checkpoint (`where`) and what is wrong."""
    out: dict[str, float] = {}
    for i, entry in enumerate(entries):
        spec, columns = entry["function"], list(entry["columns"])
        key = f"metrics.custom.{i} ({spec}){' at ' + where if where else ''}"
        fn = _function(spec)
        with torch.no_grad():
            values = fn(Layer(*layer) for layer in layers())
        if not isinstance(values, Mapping):
            what = type(values).__name__
            raise PluginError(f"{key}: returned {what}, not a mapping of its columns {columns}")
        if set(values) != set(columns):
            raise PluginError(
                f"{key}: returned columns {sorted(map(str, values))}, but the config declares {columns}"
            )
        for name in columns:
            out[name] = _number(values[name], f"{key}: column {name!r}")
    return out


def _number(value, what: str) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise PluginError(f"{what} is a tensor of shape {tuple(value.shape)}, not a scalar")
        value = value.item()
    try:
        return float(value)
    except (TypeError, ValueError):
        raise PluginError(f"{what} is {value!r}, not a number") from None
