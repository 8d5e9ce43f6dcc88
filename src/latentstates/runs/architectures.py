"""Architectures read off a state dict: which weights of a model trained elsewhere are the
matrices and biases of the paper's statistics, without building the model (no `transformers` at
run time).

For checkpoints whose model the workflow cannot build (a Hugging Face `transformers` series): no
forward pass, so no loss, accuracy or Hessian from the weights alone. Every architecture keeps the
released code's BERT convention: per layer the attention's query, key, value and output and the
MLP's matrices, each whole (not split by head) in `nn.Linear`'s (out, in) orientation; the MLP's
biases only; embeddings, norms, heads and buffers (causal masks, rotary frequencies) left out.
Which tensors each architecture takes: docs/own-runs.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

StateDict = dict[str, torch.Tensor]
Weights = tuple[list[torch.Tensor], list[torch.Tensor]]


@dataclass(frozen=True)
class Architecture:
    name: str
    # (matrices, biases) of a state dict and the model's config.json (or {}), in a fixed order;
    # errors name what is missing.
    weights: Callable[[StateDict, dict], Weights]


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


def _by_layer(
    sd: StateDict, key: re.Pattern, parts: tuple[str, ...]
) -> dict[tuple[int, str, str], torch.Tensor]:
    """(layer, part, weight|bias) → tensor for the keys `key` matches (groups: layer, part, kind)."""
    found = {}
    for name, value in sd.items():
        m = key.search(name)
        if m and m[2] in parts:
            found[(int(m[1]), m[2], m[3])] = value
    return found


def _layered(
    found: dict[tuple[int, str, str], torch.Tensor],
    parts: tuple[str, ...],
    biases: tuple[str, ...],
    name: str,
    example: str,
    biases_required: bool = True,
) -> tuple[list[list[torch.Tensor]], list[torch.Tensor]]:
    """Per layer, each part's weight in `parts` order; and the biases of `biases`, layer by layer
    (missing weights are errors; missing biases too where `biases_required`)."""
    layers = sorted({layer for layer, _, _ in found})
    if not layers:
        raise ValueError(f"no {name} weights ({example}, ...) found")
    per_layer, out_biases = [], []
    for layer in layers:
        weights = []
        for part in parts:
            w = found.get((layer, part, "weight"))
            if w is None:
                raise ValueError(f"{name} layer {layer} has no {part}.weight")
            weights.append(w)
        per_layer.append(weights)
        for part in biases:
            b = found.get((layer, part, "bias"))
            if b is not None:
                out_biases.append(b)
            elif biases_required:
                raise ValueError(f"{name} layer {layer} has no {part}.bias")
    return per_layer, out_biases


def bert_weights(sd: StateDict, config: dict | None = None) -> Weights:
    """Matrices and biases of a BERT encoder, ordered by layer, then as BERT_PARTS (biases: of
    BERT_BIASES)."""
    found = _by_layer(sd, _BERT_KEY, BERT_PARTS)
    per_layer, biases = _layered(
        found, BERT_PARTS, BERT_BIASES, "BERT encoder", "encoder.layer.N.attention.self.query.weight"
    )
    return [w for layer in per_layer for w in layer], biases


register(Architecture(name="bert", weights=bert_weights))


# GPT-NeoX (Pythia): the fused query_key_value weight is [3h, h] interleaved per head, i.e. a view
# [heads, 3, head_dim, h] whose [:, 0] are the queries (rows 0:h are not). Old Pythia files carry
# attention.bias (a bool causal mask), attention.masked_bias and rotary_emb.inv_freq: never taken.
NEOX_PARTS = ("attention.query_key_value", "attention.dense", "mlp.dense_h_to_4h", "mlp.dense_4h_to_h")
NEOX_BIASES = ("mlp.dense_h_to_4h", "mlp.dense_4h_to_h")
_NEOX_KEY = re.compile(r"(?:^|\.)layers\.(\d+)\.(attention\.\w+|mlp\.\w+)\.(weight|bias)$")


def gpt_neox_weights(sd: StateDict, config: dict | None = None) -> Weights:
    """Per layer: query, key, value (cut from the fused, per-head interleaved weight with the
    config's num_attention_heads), attention.dense, mlp.dense_h_to_4h, mlp.dense_4h_to_h; the MLP's
    biases."""
    heads = (config or {}).get("num_attention_heads")
    if not heads:
        raise ValueError(
            "gpt_neox: config.json with num_attention_heads is needed to cut the fused query_key_value"
        )
    found = _by_layer(sd, _NEOX_KEY, NEOX_PARTS)
    per_layer, biases = _layered(
        found, NEOX_PARTS, NEOX_BIASES, "GPT-NeoX", "gpt_neox.layers.N.attention.query_key_value.weight"
    )
    matrices = []
    for qkv, dense, up, down in per_layer:
        three_h, h = qkv.shape
        if three_h != 3 * h or h % heads:
            raise ValueError(
                f"gpt_neox: query_key_value {tuple(qkv.shape)} is not [3h, h] with {heads} heads"
            )
        per_head = qkv.reshape(heads, 3, h // heads, h)
        matrices += [per_head[:, j].reshape(h, h) for j in range(3)] + [dense, up, down]
    return matrices, biases


register(Architecture(name="gpt_neox", weights=gpt_neox_weights))


# GPT-2: Conv1D weights are [in, out] (transposed here to nn.Linear's [out, in]); c_attn's
# columns are the query, key and value blocks. Keys with or without the `transformer.` prefix;
# attn.bias / attn.masked_bias (mask buffers) are not matched.
GPT2_PARTS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
GPT2_BIASES = ("mlp.c_fc", "mlp.c_proj")
_GPT2_KEY = re.compile(r"(?:^|\.)h\.(\d+)\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.(weight|bias)$")


def gpt2_weights(sd: StateDict, config: dict | None = None) -> Weights:
    """Per layer: query, key, value (c_attn's column blocks), attn.c_proj, mlp.c_fc, mlp.c_proj,
    each as [out, in]; the MLP's biases."""
    found = _by_layer(sd, _GPT2_KEY, GPT2_PARTS)
    per_layer, biases = _layered(
        found, GPT2_PARTS, GPT2_BIASES, "GPT-2", "transformer.h.N.attn.c_attn.weight"
    )
    matrices = []
    for c_attn, c_proj, c_fc, mlp_proj in per_layer:
        h, three_h = c_attn.shape
        if three_h != 3 * h:
            raise ValueError(f"gpt2: attn.c_attn {tuple(c_attn.shape)} is not Conv1D [h, 3h]")
        matrices += [c_attn[:, j * h : (j + 1) * h].T for j in range(3)] + [c_proj.T, c_fc.T, mlp_proj.T]
    return matrices, biases


register(Architecture(name="gpt2", weights=gpt2_weights))


# Llama and kin (OLMo, OLMo 2, Qwen2, Mistral): separate projections, k and v not square under
# grouped-query attention; usually no biases (then the bias statistics are NaN and the HMM drops
# them), and Qwen2's attention biases are not the MLP's.
LLAMA_PARTS = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)
LLAMA_BIASES = ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
_LLAMA_KEY = re.compile(r"(?:^|\.)layers\.(\d+)\.((?:self_attn|mlp)\.\w+)\.(weight|bias)$")


def llama_weights(sd: StateDict, config: dict | None = None) -> Weights:
    """Per layer: q, k, v, o projections, the MLP's gate, up and down projections; the MLP's
    biases where the model has them."""
    found = _by_layer(sd, _LLAMA_KEY, LLAMA_PARTS)
    per_layer, biases = _layered(
        found,
        LLAMA_PARTS,
        LLAMA_BIASES,
        "Llama",
        "model.layers.N.self_attn.q_proj.weight",
        biases_required=False,
    )
    return [w for layer in per_layer for w in layer], biases


register(Architecture(name="llama", weights=llama_weights))


# Any other model: the floating 2-D weights inside numbered layers, and those modules' biases.
_AUTO_KEY = re.compile(r"(?:^|\.)(?:layers|h|layer|blocks)\.(\d+)\.(.+)\.(weight|bias)$")


def auto_weights(sd: StateDict, config: dict | None = None) -> Weights:
    """Every floating 2-D `.weight` inside a numbered layer (`.layers.N.`, `.h.N.`, `.layer.N.`,
    `.blocks.N.`), by layer then name, and the 1-D biases of those modules; fused weights are
    taken whole, and bool or integer buffers never."""
    weights, biases = {}, {}
    for name, value in sd.items():
        m = _AUTO_KEY.search(name)
        if not m or not value.is_floating_point():
            continue
        key = (int(m[1]), m[2])
        if m[3] == "weight" and value.dim() == 2:
            weights[key] = value
        elif m[3] == "bias" and value.dim() == 1:
            biases[key] = value
    if not weights:
        raise ValueError(
            "auto: no 2-D floating weights inside numbered layers (.layers.N., .h.N., .layer.N., .blocks.N.)"
        )
    order = sorted(weights)
    return [weights[k] for k in order], [biases[k] for k in order if k in biases]


register(Architecture(name="auto", weights=auto_weights))
