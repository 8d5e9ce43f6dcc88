"""Per-layer statistics (metrics.per_layer): each layer group's statistics against numpy on the
group's own tensors, the whole model's columns unchanged, names and patterns as HMM features, and
what the config check refuses. The workflow run is in test_custom_metrics.py."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from latentstates.columns import PAPER_FEATURES, LayerParts, expand_features, group_name
from latentstates.config import ConfigError
from latentstates.measure.metrics import SINGULAR_VALUE_CUTOFF, streamed_weight_metrics, weight_metrics
from latentstates.runs.architectures import GPT_NEOX, get_architecture, gpt_neox_layers
from latentstates.tasks.registry import get_task


def numpy_statistics(matrices, biases=()) -> dict[str, float]:
    """The paper's fourteen statistics of a group of matrices and biases, by numpy alone: the
    per-matrix ones averaged (a one-row matrix has one singular value and no variance: left out of
    that mean), the weights' and biases' mean, lower median and unbiased variance."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        per = np.array([_matrix_statistics(w) for w in matrices])
        out = dict(zip(PAPER_FEATURES[:8], np.nanmean(per, axis=0)))
    for prefix, tensors in (("w", matrices), ("b", biases)):
        if len(tensors):
            v = np.sort(np.concatenate([np.asarray(t, dtype=np.float64).ravel() for t in tensors]))
            var = v.var(ddof=1) if v.size > 1 else np.nan
            out |= {
                f"mean_{prefix}": v.mean(),
                f"median_{prefix}": v[(v.size - 1) // 2],
                f"var_{prefix}": var,
            }
    return out


def _matrix_statistics(w) -> list[float]:
    a = np.asarray(w, dtype=np.float64)
    s = np.linalg.svd(a, compute_uv=False)
    spectral = s.max()
    s = np.where(s < SINGULAR_VALUE_CUTOFF, 0.0, s)
    l1, l2, trace = np.abs(a).sum(), np.sqrt((a**2).sum()), np.trace(a)
    variance = s.var(ddof=1) if s.size > 1 else np.nan
    return [l1, l2, trace, spectral, l1 / l2, trace / spectral, s.mean(), variance]


def assert_group(stats: dict, group: str, reference: dict, rtol: float = 1e-10) -> None:
    got = {name.split("@")[0]: v for name, v in stats.items() if name.endswith(f"@{group}")}
    assert sorted(got) == sorted(reference), group
    for name, value in reference.items():
        assert got[name] == pytest.approx(value, rel=rtol, abs=1e-14, nan_ok=True), f"{name}@{group}"


def randomised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """`model` with every parameter drawn at random (zero biases would make the bias statistics
    trivial)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


def test_each_linear_layer_of_an_mlp_is_a_block_with_numpys_statistics():
    kind = get_task("sparse_parity")
    model = randomised(kind.make_model({"hidden": [24, 16]}, {"n_bits": 20}))
    layer = (kind.matrices(model), kind.biases(model), kind.kernels(model))
    plain = weight_metrics(*layer, extra=["stable_rank"])
    for mode, name in [("blocks", "block"), ("parts", "dense")]:
        stats = weight_metrics(*layer, extra=["stable_rank"], per_layer=mode, parts=kind.parts(model))
        assert {k: stats[k] for k in plain} == plain  # the model's own columns, bit for bit
        assert list(stats)[: len(plain)] == list(plain)  # and first
        for i, linear in enumerate(model.layers):
            w, b = linear.weight.detach().numpy(), linear.bias.detach().numpy()
            s = np.linalg.svd(w.astype(np.float64), compute_uv=False)
            reference = numpy_statistics([w], [b]) | {"stable_rank": (s**2).sum() / s.max() ** 2}
            assert_group(stats, f"{name}{i}", reference)
        assert len(stats) == len(plain) + 3 * 15


def test_a_transformers_attention_and_mlp_are_its_parts_and_one_block_is_the_whole_model():
    kind = get_task("modular_addition")
    spec = {"d_model": 16, "n_heads": 2, "d_mlp": 32, "layer_norm": False}
    model = randomised(kind.make_model(spec, {"modulus": 7}))
    layer = (kind.matrices(model), kind.biases(model), kind.kernels(model))
    parts = weight_metrics(*layer, per_layer="parts", parts=kind.parts(model))
    matrices = [m.detach().numpy() for m in kind.matrices(model)]
    attention, mlp = matrices[: 3 * 2 + 1], matrices[3 * 2 + 1 :]
    biases = [b.detach().numpy() for b in kind.biases(model)]
    assert_group(parts, "attn0", numpy_statistics(attention))  # no bias columns: its biases are none
    assert_group(parts, "mlp0", numpy_statistics(mlp, biases))
    blocks = weight_metrics(*layer, per_layer="blocks", parts=kind.parts(model))
    whole = {k: v for k, v in blocks.items() if "@" not in k}
    assert_group(blocks, "block0", whole, rtol=1e-12)


def test_a_resnets_convolutions_have_the_kernel_statistics_and_its_classifier_all():
    kind = get_task("cifar100_resnet18")
    spec = {"batch_norm": False, "residual": True}
    model = kind.make_model(spec, {})
    layer = (kind.matrices(model), kind.biases(model), kind.kernels(model))
    stats = weight_metrics(*layer, per_layer="parts", parts=kind.parts(model))
    groups = sorted({k.split("@")[1] for k in stats if "@" in k})
    assert groups == sorted([*(f"conv{i}" for i in range(9)), "fc9"])
    kernels = [k.detach().double() for k in (model.blocks[2].conv1.weight, model.blocks[2].conv2.weight)]
    l1 = [k.abs().sum(dim=(2, 3)).flatten().numpy() for k in kernels]  # per (out, in) kernel
    l2 = [k.pow(2).sum(dim=(2, 3)).sqrt().flatten().numpy() for k in kernels]
    flat = np.sort(np.concatenate([k.flatten().numpy() for k in kernels]))
    reference = {  # one value per convolution, averaged (the released CNN statistics)
        "l1": np.mean([x.mean() for x in l1]),
        "l2": np.mean([x.mean() for x in l2]),
        "code_sparsity": np.mean([(a / b).mean() for a, b in zip(l1, l2)]),
        "mean_w": flat.mean(),
        "median_w": flat[(flat.size - 1) // 2],
        "var_w": flat.var(ddof=1),
    }
    assert_group(stats, "conv3", reference)
    fc = model.fc
    assert_group(stats, "fc9", numpy_statistics([fc.weight.detach().numpy()], [fc.bias.detach().numpy()]))


def test_a_language_models_blocks_and_parts_read_layer_by_layer():
    """A GPT-NeoX checkpoint streamed block by block: each block's attention (its fused
    query_key_value cut per head, and dense) and MLP (both matrices and biases) against numpy, and
    the whole model's columns as without per-layer statistics."""
    transformers = pytest.importorskip("transformers")
    heads = 4
    config = transformers.GPTNeoXConfig(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=heads, intermediate_size=64, vocab_size=64
    )
    sd = randomised(transformers.GPTNeoXForCausalLM(config)).state_dict()
    cfg = config.to_dict()
    plain = streamed_weight_metrics(lambda: gpt_neox_layers(sd, cfg))
    parts = streamed_weight_metrics(lambda: gpt_neox_layers(sd, cfg), per_layer="parts", parts=GPT_NEOX.parts)
    blocks = streamed_weight_metrics(
        lambda: gpt_neox_layers(sd, cfg), per_layer="blocks", parts=GPT_NEOX.parts
    )
    assert {k: parts[k] for k in plain} == plain == {k: blocks[k] for k in plain}
    for i in range(3):
        p = f"gpt_neox.layers.{i}."
        fused = sd[p + "attention.query_key_value.weight"].numpy().reshape(heads, 3, 8, 32)
        attention = [fused[:, j].reshape(32, 32) for j in range(3)] + [
            sd[p + "attention.dense.weight"].numpy()
        ]
        mlp = [sd[p + "mlp.dense_h_to_4h.weight"].numpy(), sd[p + "mlp.dense_4h_to_h.weight"].numpy()]
        biases = [sd[p + "mlp.dense_h_to_4h.bias"].numpy(), sd[p + "mlp.dense_4h_to_h.bias"].numpy()]
        assert_group(parts, f"attn{i}", numpy_statistics(attention))
        assert_group(parts, f"mlp{i}", numpy_statistics(mlp, biases))
        assert_group(blocks, f"block{i}", numpy_statistics(attention + mlp, biases))
    auto = get_architecture("auto")
    with pytest.raises(ValueError, match="not split into parts"):
        streamed_weight_metrics(lambda: auto.layers(sd, cfg), per_layer="parts", parts=auto.parts)
    by_block = streamed_weight_metrics(lambda: auto.layers(sd, cfg), per_layer="blocks", parts=auto.parts)
    assert sorted({k.split("@")[1] for k in by_block if "@" in k}) == ["block0", "block1", "block2"]


def test_a_group_lies_within_one_layer_and_every_tensor_is_placed():
    w = [torch.randn(4, 3)]
    with pytest.raises(ValueError, match="'block0' spans two layers"):
        streamed_weight_metrics(
            lambda: [(w, []), (w, [])], per_layer="blocks", parts=lambda i, _: LayerParts([(0, None)])
        )
    with pytest.raises(ValueError, match="1 matrices but its parts place 2"):
        weight_metrics(w, [], per_layer="blocks", parts=LayerParts([(0, None), (1, None)]))
    with pytest.raises(ValueError, match="per_layer must be one of"):
        weight_metrics(w, [], per_layer="heads", parts=LayerParts([(0, None)]))
    assert group_name(3, "attn", "parts") == "attn3" and group_name(3, "attn", "blocks") == "block3"


def test_patterns_select_per_layer_columns_in_the_tables_order():
    columns = [
        "seed",
        "l2",
        "spectral",
        "l2@block0",
        "spectral@block0",
        "l2@block1",
        "l2@mlp1",
        "mean_b@block1",
    ]
    assert expand_features(columns, ["l2", "l2@block*", "spectral@*"]) == [
        "l2",
        "l2@block0",
        "l2@block1",
        "spectral@block0",
    ]
    assert expand_features(columns, ["l2@block?", "l2@block0", "*_b@*"]) == [
        "l2@block0",
        "l2@block1",
        "mean_b@block1",
    ]
    with pytest.raises(
        ValueError, match=r"'l2@attn\*' matches no column of m.parquet \(per-layer columns: l2@block0"
    ):
        expand_features(columns, ["l2@attn*"], "m.parquet")
    with pytest.raises(ValueError, match="metrics.per_layer is off"):
        expand_features(["l2", "spectral"], ["l2@*"])


def test_the_hmm_fits_the_columns_a_pattern_names():
    from latentstates.settings import HMMSettings
    from latentstates.states.selection import fit_task

    rng = np.random.default_rng(0)
    frames = []
    for seed in range(6):
        t = np.arange(12)
        x = np.where(t < 6, 0.0, 3.0)[:, None] + rng.normal(scale=0.3, size=(12, 3))
        frames.append(pd.DataFrame({"seed": seed, "checkpoint": t, "step": t, "eval_acc": t / 12}))
        frames[-1][["l2", "l2@block0", "l2@block1"]] = x
    settings = HMMSettings.defaults(features=["l2@block*"], n_states=2, criterion="bic", restarts=2)
    fit = fit_task(pd.concat(frames, ignore_index=True), settings)
    assert list(fit.model.features) == ["l2@block0", "l2@block1"]


def test_the_config_check_of_per_layer_features(config):
    cfg = config(
        metrics={"per_layer": "blocks", "extra": ["alpha"]},
        hmm={"features": ["l2", "l2@block*", "alpha@block0"]},
    )
    assert cfg["metrics"]["per_layer"] == "blocks"
    assert config()["metrics"]["per_layer"] is False
    with pytest.raises(
        ConfigError, match=r"features.*'l2@block\*' is a per-layer statistic .* metrics.per_layer"
    ):
        config(hmm={"features": ["l2", "l2@block*"]})
    with pytest.raises(ConfigError, match=r"'alpha@block0': 'alpha' is not a per-layer statistic"):
        config(metrics={"per_layer": "parts"}, hmm={"features": ["alpha@block0"]})
    with pytest.raises(ConfigError, match=r"features.*pattern 'x\*' matches none of"):
        config(hmm={"features": ["l2", "x*"]})
    with pytest.raises(ConfigError, match=r"metrics.per_layer"):
        config(metrics={"per_layer": "layers"})
    series = {
        "source": "huggingface",
        "architecture": "auto",
        "hub": {"repo": "EleutherAI/pythia-14m-seed{seed}", "revision": "step{step}", "steps": "pythia"},
        "seeds": 1,
    }
    with pytest.raises(ConfigError, match=r"tasks.lm.architecture.*auto does not split layers"):
        config(metrics={"per_layer": "parts"}, tasks={"lm": series})
