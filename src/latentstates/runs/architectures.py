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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import torch

from latentstates.columns import LayerParts
from latentstates.runs.weights import tensor_meta

StateDict = Mapping[str, torch.Tensor]  # a dict, or a LazyStateDict read tensor by tensor
Weights = tuple[list[torch.Tensor], list[torch.Tensor]]


@dataclass(frozen=True)
class Architecture:
    name: str
    # One layer's (matrices, biases) at a time, in a fixed order, from a state dict and the
    # model's config.json (or {}): a lazy state dict is read layer by layer. Errors (what is
    # missing) are raised before the first layer.
    layers: Callable[[StateDict, dict], Iterator[Weights]]
    # How many of each layer's matrices, from the first, are the attention's (the rest and every
    # bias the MLP's), for per-layer statistics by part; None: not split (metrics.per_layer: blocks).
    attention: int | None = None

    def parts(self, index: int, layer: tuple) -> LayerParts:
        """Where the tensors of the `index`-th layer `layer` (matrices, biases) belong: block
        `index`, part attn or mlp (None where the architecture does not say)."""
        matrices, biases = layer[0], layer[1]
        if self.attention is None:
            return LayerParts([(index, None)] * len(matrices), [(index, None)] * len(biases))
        names = ["attn" if j < self.attention else "mlp" for j in range(len(matrices))]
        return LayerParts([(index, n) for n in names], [(index, "mlp")] * len(biases))

    def weights(self, sd: StateDict, config: dict | None = None) -> Weights:
        """Every layer's matrices and biases, in order."""
        return _joined(self.layers(sd, config or {}))


def _joined(layers: Iterator[Weights]) -> Weights:
    matrices, biases = [], []
    for m, b in layers:
        matrices += m
        biases += b
    return matrices, biases


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


def _by_layer(sd: StateDict, key: re.Pattern, parts: tuple[str, ...]) -> dict[tuple[int, str, str], str]:
    """(layer, part, weight|bias) → the key `key` matches (groups: layer, part, kind); names only,
    nothing is read."""
    found = {}
    for name in sd:
        m = key.search(name)
        if m and m[2] in parts:
            found[(int(m[1]), m[2], m[3])] = name
    return found


def _layered(
    sd: StateDict,
    found: dict[tuple[int, str, str], str],
    parts: tuple[str, ...],
    biases: tuple[str, ...],
    name: str,
    example: str,
    biases_required: bool = True,
) -> Iterator[tuple[list[torch.Tensor], list[torch.Tensor]]]:
    """Per layer, each part's weight in `parts` order and the layer's biases of `biases`, read
    layer by layer; missing weights (and missing biases where `biases_required`) are errors, raised
    before anything is read."""
    layers = sorted({layer for layer, _, _ in found})
    if not layers:
        raise ValueError(f"no {name} weights ({example}, ...) found")
    plan = []
    for layer in layers:
        for part in parts:
            if (layer, part, "weight") not in found:
                raise ValueError(f"{name} layer {layer} has no {part}.weight")
        present = [part for part in biases if (layer, part, "bias") in found]
        if biases_required and len(present) < len(biases):
            missing = next(part for part in biases if part not in present)
            raise ValueError(f"{name} layer {layer} has no {missing}.bias")
        plan.append((layer, present))
    for layer, present in plan:
        for part, kind in [*((p, "weight") for p in parts), *((p, "bias") for p in present)]:
            _require_float(sd, found[(layer, part, kind)], 2 if kind == "weight" else 1)
    return _read_layers(sd, found, parts, plan)


def _require_float(sd: StateDict, name: str, ndim: int) -> None:
    """A matrix (ndim 2) or bias (ndim 1) the statistics take: floating point, of that rank."""
    dtype, shape = tensor_meta(sd, name)
    if not dtype.is_floating_point:
        raise ValueError(
            f"tensor {name!r} is {str(dtype).replace('torch.', '')}, "
            "and integer or boolean weights are refused"
        )
    if len(shape) != ndim:
        raise ValueError(
            f"tensor {name!r} has shape {list(shape)}, not a {'matrix' if ndim == 2 else 'vector'}"
        )


def _read_layers(sd, found, parts, plan) -> Iterator[tuple[list[torch.Tensor], list[torch.Tensor]]]:
    for layer, present in plan:
        yield (
            [sd[found[(layer, part, "weight")]] for part in parts],
            [sd[found[(layer, part, "bias")]] for part in present],
        )


def bert_layers(sd: StateDict, config: dict | None = None) -> Iterator[Weights]:
    """Per encoder layer: the matrices as BERT_PARTS and the biases of BERT_BIASES."""
    found = _by_layer(sd, _BERT_KEY, BERT_PARTS)
    return _layered(
        sd, found, BERT_PARTS, BERT_BIASES, "BERT encoder", "encoder.layer.N.attention.self.query.weight"
    )


BERT = register(Architecture(name="bert", layers=bert_layers, attention=4))
bert_weights = BERT.weights


# GPT-NeoX (Pythia): the fused query_key_value weight is [3h, h] interleaved per head, i.e. a view
# [heads, 3, head_dim, h] whose [:, 0] are the queries (rows 0:h are not). Old Pythia files carry
# attention.bias (a bool causal mask), attention.masked_bias and rotary_emb.inv_freq: never taken.
NEOX_PARTS = ("attention.query_key_value", "attention.dense", "mlp.dense_h_to_4h", "mlp.dense_4h_to_h")
NEOX_BIASES = ("mlp.dense_h_to_4h", "mlp.dense_4h_to_h")
_NEOX_KEY = re.compile(r"(?:^|\.)layers\.(\d+)\.(attention\.\w+|mlp\.\w+)\.(weight|bias)$")


def gpt_neox_layers(sd: StateDict, config: dict | None = None) -> Iterator[Weights]:
    """Per layer: query, key, value (cut from the fused, per-head interleaved weight with the
    config's num_attention_heads), attention.dense, mlp.dense_h_to_4h, mlp.dense_4h_to_h; the MLP's
    biases."""
    heads = (config or {}).get("num_attention_heads")
    if not heads:
        raise ValueError(
            "gpt_neox: config.json with num_attention_heads is needed to cut the fused query_key_value"
        )
    if not isinstance(heads, int) or isinstance(heads, bool) or heads < 1:
        raise ValueError(f"gpt_neox: num_attention_heads must be a positive integer, got {heads!r}")
    found = _by_layer(sd, _NEOX_KEY, NEOX_PARTS)
    for key in (k for k in found if k[1] == NEOX_PARTS[0] and k[2] == "weight"):
        shape = tensor_meta(sd, found[key])[1]
        if len(shape) != 2 or shape[0] != 3 * shape[1] or shape[1] % heads:
            raise ValueError(f"gpt_neox: query_key_value {shape} is not [3h, h] with {heads} heads")
    layers = _layered(
        sd, found, NEOX_PARTS, NEOX_BIASES, "GPT-NeoX", "gpt_neox.layers.N.attention.query_key_value.weight"
    )
    return (_neox_cut(weights, biases, heads) for weights, biases in layers)


def _neox_cut(weights: list[torch.Tensor], biases: list[torch.Tensor], heads: int) -> Weights:
    qkv, dense, up, down = weights
    h = qkv.shape[1]
    per_head = qkv.reshape(heads, 3, h // heads, h)
    return [per_head[:, j].reshape(h, h) for j in range(3)] + [dense, up, down], biases


GPT_NEOX = register(Architecture(name="gpt_neox", layers=gpt_neox_layers, attention=4))
gpt_neox_weights = GPT_NEOX.weights


# GPT-2: Conv1D weights are [in, out] (transposed here to nn.Linear's [out, in]); c_attn's
# columns are the query, key and value blocks. Keys with or without the `transformer.` prefix;
# attn.bias / attn.masked_bias (mask buffers) are not matched.
GPT2_PARTS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
GPT2_BIASES = ("mlp.c_fc", "mlp.c_proj")
_GPT2_KEY = re.compile(r"(?:^|\.)h\.(\d+)\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.(weight|bias)$")


def gpt2_layers(sd: StateDict, config: dict | None = None) -> Iterator[Weights]:
    """Per layer: query, key, value (c_attn's column blocks), attn.c_proj, mlp.c_fc, mlp.c_proj,
    each as [out, in]; the MLP's biases."""
    found = _by_layer(sd, _GPT2_KEY, GPT2_PARTS)
    for key in (k for k in found if k[1] == GPT2_PARTS[0] and k[2] == "weight"):
        shape = tensor_meta(sd, found[key])[1]
        if len(shape) != 2 or shape[1] != 3 * shape[0]:
            raise ValueError(f"gpt2: attn.c_attn {shape} is not Conv1D [h, 3h]")
    layers = _layered(sd, found, GPT2_PARTS, GPT2_BIASES, "GPT-2", "transformer.h.N.attn.c_attn.weight")
    return (_gpt2_cut(weights, biases) for weights, biases in layers)


def _gpt2_cut(weights: list[torch.Tensor], biases: list[torch.Tensor]) -> Weights:
    c_attn, c_proj, c_fc, mlp_proj = weights
    h = c_attn.shape[0]
    return [c_attn[:, j * h : (j + 1) * h].T for j in range(3)] + [c_proj.T, c_fc.T, mlp_proj.T], biases


GPT2 = register(Architecture(name="gpt2", layers=gpt2_layers, attention=4))
gpt2_weights = GPT2.weights


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


def llama_layers(sd: StateDict, config: dict | None = None) -> Iterator[Weights]:
    """Per layer: q, k, v, o projections, the MLP's gate, up and down projections; the MLP's
    biases where the model has them."""
    found = _by_layer(sd, _LLAMA_KEY, LLAMA_PARTS)
    return _layered(
        sd,
        found,
        LLAMA_PARTS,
        LLAMA_BIASES,
        "Llama",
        "model.layers.N.self_attn.q_proj.weight",
        biases_required=False,
    )


LLAMA = register(Architecture(name="llama", layers=llama_layers, attention=4))
llama_weights = LLAMA.weights


# Any other model: the floating 2-D weights inside numbered layers, and those modules' biases.
_AUTO_KEY = re.compile(r"(?:^|\.)(?:layers|h|layer|blocks)\.(\d+)\.(?:(.+)\.)?(weight|bias)$")


def auto_layers(sd: StateDict, config: dict | None = None) -> Iterator[Weights]:
    """Every floating 2-D `.weight` inside a numbered layer (`.layers.N.`, `.h.N.`, `.layer.N.`,
    `.blocks.N.`, or the numbered module itself, `layers.N.weight`), by layer then name, and the
    1-D biases of those modules; fused weights are taken whole, and bool or integer buffers never."""
    weights: dict[tuple[int, str], str] = {}
    biases: dict[tuple[int, str], str] = {}
    for name in sd:
        m = _AUTO_KEY.search(name)
        if not m:
            continue
        dtype, shape = tensor_meta(sd, name)
        if not dtype.is_floating_point:
            continue
        key = (int(m[1]), m[2] or "")  # layers.N.weight: the layer is the module itself
        if m[3] == "weight" and len(shape) == 2:
            weights[key] = name
        elif m[3] == "bias" and len(shape) == 1:
            biases[key] = name
    if not weights:
        raise ValueError(
            "auto: no 2-D floating weights inside numbered layers (.layers.N., .h.N., .layer.N., .blocks.N.)"
        )
    layers = sorted({layer for layer, _ in weights})
    return (
        (
            [sd[weights[k]] for k in sorted(weights) if k[0] == layer],
            [sd[biases[k]] for k in sorted(weights) if k[0] == layer and k in biases],
        )
        for layer in layers
    )


AUTO = register(Architecture(name="auto", layers=auto_layers))
auto_weights = AUTO.weights
