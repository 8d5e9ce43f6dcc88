"""Architectures read off a state dict: which weights of a model trained elsewhere are the
matrices and biases of the paper's statistics, without building the model.

For checkpoints whose model the workflow cannot build (a Hugging Face `transformers` series): no
forward pass, so no loss, accuracy or Hessian from the weights alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Architecture:
    name: str
    # (matrices, biases) of a state dict, in a fixed order; errors name what is missing.
    weights: Callable[[StateDict], tuple[list[torch.Tensor], list[torch.Tensor]]]


ARCHITECTURES: dict[str, Architecture] = {}


def register(arch: Architecture) -> Architecture:
    ARCHITECTURES[arch.name] = arch
    return arch


def get_architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise KeyError(f"unknown architecture {name!r}; known: {sorted(ARCHITECTURES)}") from None


# The paper's BERT analysis (the released get_metrics_hf_transformer): per encoder layer the
# attention query, key, value and output dense, the intermediate dense and the output dense, each
# whole (not split by head); the biases of the intermediate and output dense only (the MLP's b_in
# and b_out, as for the grokking transformer). Embeddings, LayerNorms, pooler and heads are left
# out. Keys may carry a prefix (`bert.` in BertForPreTraining / BertForMaskedLM).
BERT_PARTS = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)
BERT_BIASES = ("intermediate.dense", "output.dense")
_BERT_KEY = re.compile(
    r"(?:^|\.)encoder\.layer\.(\d+)\.(" + "|".join(re.escape(p) for p in BERT_PARTS) + r")\.(weight|bias)$"
)


def bert_weights(sd: StateDict) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Matrices and biases of a BERT encoder, ordered by layer, then as BERT_PARTS (biases: of
    BERT_BIASES)."""
    found: dict[tuple[int, int, str], torch.Tensor] = {}
    for key, value in sd.items():
        m = _BERT_KEY.search(key)
        if m:
            found[(int(m[1]), BERT_PARTS.index(m[2]), m[3])] = value
    layers = sorted({layer for layer, _, _ in found})
    if not layers:
        raise ValueError("no BERT encoder weights (encoder.layer.N.attention.self.query.weight, ...) found")
    matrices, biases = [], []
    for layer in layers:
        for part_index, part in enumerate(BERT_PARTS):
            w = found.get((layer, part_index, "weight"))
            if w is None:
                raise ValueError(f"BERT layer {layer} has no {part}.weight")
            matrices.append(w)
            if part in BERT_BIASES:
                b = found.get((layer, part_index, "bias"))
                if b is None:
                    raise ValueError(f"BERT layer {layer} has no {part}.bias")
                biases.append(b)
    return matrices, biases


register(Architecture(name="bert", weights=bert_weights))
