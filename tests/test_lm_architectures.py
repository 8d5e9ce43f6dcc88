"""Language models read off their state dicts (GPT-NeoX/Pythia, GPT-2, Llama, auto), checked
against the models' own computations, and series of them through the whole workflow."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import REPO, SMALL_FORECAST, SMALL_HMM, dry_run, small_config, snakemake
from latentstates.columns import PAPER_FEATURES
from latentstates.measure.metrics import weight_metrics
from latentstates.runs.architectures import auto_weights, get_architecture, gpt2_weights, gpt_neox_weights
from latentstates.runs.weights import load_weights, model_config
from latentstates.settings import HMMSettings
from latentstates.states.selection import fit_task

transformers = pytest.importorskip("transformers")

VOCAB = 64


def neox_config():
    return transformers.GPTNeoXConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=VOCAB
    )


def gpt2_config():
    return transformers.GPT2Config(
        n_embd=32, n_layer=2, n_head=4, vocab_size=VOCAB, n_positions=16, bos_token_id=0, eos_token_id=0
    )


def llama_config():
    return transformers.LlamaConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        vocab_size=VOCAB,
    )


def opt_config():
    return transformers.OPTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        ffn_dim=64,
        vocab_size=VOCAB,
        word_embed_proj_dim=32,
        max_position_embeddings=16,
    )


MODELS = {
    "gpt_neox": (neox_config, "GPTNeoXForCausalLM"),
    "gpt2": (gpt2_config, "GPT2LMHeadModel"),
    "llama": (llama_config, "LlamaForCausalLM"),
}


def attention_and_mlp(
    name: str, model
) -> list[tuple[torch.nn.Module, list[torch.Tensor], list[torch.Tensor]]]:
    """Per layer, from the modules themselves (not key names): the attention module, the
    attention output and MLP matrices as (out, in), and the MLP's biases."""
    if name == "gpt_neox":
        return [
            (
                layer.attention,
                [
                    layer.attention.dense.weight,
                    layer.mlp.dense_h_to_4h.weight,
                    layer.mlp.dense_4h_to_h.weight,
                ],
                [layer.mlp.dense_h_to_4h.bias, layer.mlp.dense_4h_to_h.bias],
            )
            for layer in model.gpt_neox.layers
        ]
    if name == "gpt2":
        return [
            (
                block.attn,
                [block.attn.c_proj.weight.T, block.mlp.c_fc.weight.T, block.mlp.c_proj.weight.T],
                [block.mlp.c_fc.bias, block.mlp.c_proj.bias],
            )
            for block in model.transformer.h
        ]
    return [
        (
            layer.self_attn,
            [
                layer.self_attn.o_proj.weight,
                layer.mlp.gate_proj.weight,
                layer.mlp.up_proj.weight,
                layer.mlp.down_proj.weight,
            ],
            [],
        )
        for layer in model.model.layers
    ]


@pytest.fixture(scope="module")
def capture():
    """An attention implementation that records the queries, keys and values each attention
    module computes (then attends as PyTorch's SDPA does)."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    seen = []

    def attend(module, query, key, value, attention_mask, **kwargs):
        seen.append((query, key, value))
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register("capture_qkv", attend)
    return seen


@pytest.mark.parametrize("name", list(MODELS))
def test_query_key_value_give_the_models_own_projections(name, capture):
    make_config, cls = MODELS[name]
    config = make_config()
    config._attn_implementation = "capture_qkv"
    torch.manual_seed(0)
    model = getattr(transformers, cls)(config).eval()
    layers = attention_and_mlp(name, model)
    inputs = []
    hooks = [
        attn.register_forward_pre_hook(
            lambda m, a, kw: inputs.append(kw.get("hidden_states", a[0] if a else None)), with_kwargs=True
        )
        for attn, _, _ in layers
    ]
    with torch.no_grad():
        # Attention biases zeroed, one token at position 0 (rotary embeddings are the identity
        # there): each captured projection is then x @ W.T for the matrix we read.
        for attn, _, _ in layers:
            for module in attn.modules():
                if getattr(module, "bias", None) is not None and isinstance(module.bias, torch.nn.Parameter):
                    module.bias.zero_()
        capture.clear()
        model(torch.tensor([[5]]))
    for h in hooks:
        h.remove()
    matrices, biases = get_architecture(name).weights(model.state_dict(), config.to_dict())
    per_layer = len(matrices) // len(layers)
    for i, (x, (q, k, v), (_, rest, _)) in enumerate(zip(inputs, capture, layers)):
        x = x[0]  # (tokens, hidden)
        ours = matrices[i * per_layer : (i + 1) * per_layer]
        for w, projected in zip(ours[:3], (q, k, v)):
            theirs = projected[0].transpose(0, 1).reshape(x.shape[0], -1)  # heads back together
            torch.testing.assert_close(x @ w.T, theirs, rtol=0, atol=1e-6)
        for w, expected in zip(ours[3:], rest, strict=True):
            assert torch.equal(w, expected)
    expected_biases = [b for _, _, bs in layers for b in bs]
    assert len(biases) == len(expected_biases) and all(
        torch.equal(a, b) for a, b in zip(biases, expected_biases)
    )
    if name == "llama":  # grouped-query attention: k and v are not square
        assert matrices[1].shape == matrices[2].shape == (16, 32)


def test_the_first_rows_of_neoxs_fused_weight_are_not_its_queries():
    """The test above would catch a plain [q; k; v] split: it gives other matrices."""
    torch.manual_seed(0)
    model = transformers.GPTNeoXForCausalLM(neox_config())
    fused = model.gpt_neox.layers[0].attention.query_key_value.weight
    q = gpt_neox_weights(model.state_dict(), neox_config().to_dict())[0][0]
    assert not torch.equal(q, fused[:32])


def test_mask_buffers_and_prefixes_read_the_same():
    torch.manual_seed(0)
    neox = transformers.GPTNeoXForCausalLM(neox_config()).state_dict()
    old = dict(neox)
    for i in range(2):  # as in the original Pythia files
        old[f"gpt_neox.layers.{i}.attention.bias"] = torch.ones(1, 1, 16, 16, dtype=torch.bool).tril()
        old[f"gpt_neox.layers.{i}.attention.masked_bias"] = torch.tensor(-1e9)
        old[f"gpt_neox.layers.{i}.attention.rotary_emb.inv_freq"] = torch.rand(4)
    cfg = neox_config().to_dict()
    for a, b in zip(gpt_neox_weights(neox, cfg), gpt_neox_weights(old, cfg)):
        assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))
    gpt2 = transformers.GPT2LMHeadModel(gpt2_config()).state_dict()
    original = {k.removeprefix("transformer."): v for k, v in gpt2.items()}  # OpenAI's files
    for i in range(2):
        original[f"h.{i}.attn.bias"] = torch.ones(1, 1, 16, 16).tril()
        original[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    for a, b in zip(gpt2_weights(gpt2), gpt2_weights(original)):
        assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))
    with_buffers = {**neox, "gpt_neox.layers.0.attention.bias": torch.ones(2, 2, dtype=torch.bool)}
    assert len(auto_weights(with_buffers)[0]) == len(auto_weights(neox)[0])


def test_auto_reads_another_family_by_its_numbered_layers():
    torch.manual_seed(0)
    model = transformers.OPTForCausalLM(opt_config())
    matrices, biases = auto_weights(model.state_dict())
    linears = [
        m
        for layer in model.model.decoder.layers
        for m in sorted(
            (mod for mod in layer.modules() if isinstance(mod, torch.nn.Linear)),
            key=lambda mod: next(n for n, x in layer.named_modules() if x is mod),
        )
    ]
    assert len(matrices) == len(linears) == 12 and len(biases) == 12
    assert all(torch.equal(a, m.weight) for a, m in zip(matrices, linears))
    assert all(torch.equal(a, m.bias) for a, m in zip(biases, linears))
    with pytest.raises(ValueError, match="no 2-D floating weights"):
        auto_weights({"embed.weight": torch.zeros(3, 3)})


def test_neox_needs_its_number_of_heads():
    sd = transformers.GPTNeoXForCausalLM(neox_config()).state_dict()
    with pytest.raises(ValueError, match="num_attention_heads"):
        gpt_neox_weights(sd, {})


def test_the_hmm_leaves_out_features_no_run_has():
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(4):
        steps = np.arange(30)
        rows.append(
            pd.DataFrame(
                {
                    "seed": seed,
                    "checkpoint": steps,
                    "step": steps,
                    "l1": np.where(steps < 15, 0.0, 3.0) + rng.normal(scale=0.3, size=30),
                    "l2": np.where(steps < 15, 0.0, 3.0) + rng.normal(scale=0.3, size=30),
                    "var_b": np.nan,  # a model without biases
                }
            )
        )
    settings = HMMSettings.defaults(
        features=["l1", "l2", "var_b"], max_states=2, restarts=2, val_fraction=0.0, criterion="bic_train"
    )
    fit = fit_task(pd.concat(rows, ignore_index=True), settings)
    assert fit.model.features == ["l1", "l2"] and fit.model.dropped_features == {
        "var_b": "missing for every run"
    }
    assert fit.model.excluded_runs == {} and fit.model.k == 2


# ---------------------------------------------------------------- series through the workflow


def save_series(
    root, name: str, cls: str, config, seeds=(0, 1, 2), steps=(0, 4, 8, 12, 16), shard: bool = False
):
    """Tiny models trained a few steps on random tokens, saved with save_pretrained at each step
    (optionally in small shards): one directory per (seed, step)."""
    for seed in seeds:
        torch.manual_seed(seed)
        model = getattr(transformers, cls)(config)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        ids = torch.randint(0, VOCAB, (8, 12), generator=torch.Generator().manual_seed(seed))
        done = 0
        for step in steps:
            while done < step:
                loss = model(input_ids=ids, labels=ids).loss
                opt.zero_grad()
                loss.backward()
                opt.step()
                done += 1
            extra = {"max_shard_size": "20KB"} if shard else {}
            model.save_pretrained(root / name / f"seed{seed}" / f"step{step}", **extra)


@pytest.mark.slow
def test_language_model_series_run_through_the_workflow(make_workdir, tmp_path):
    save_series(tmp_path, "pythia", "GPTNeoXForCausalLM", neox_config(), shard=True)
    save_series(tmp_path, "gpt2", "GPT2LMHeadModel", gpt2_config())
    save_series(tmp_path, "llama", "LlamaForCausalLM", llama_config())
    save_series(tmp_path, "opt", "OPTForCausalLM", opt_config())
    assert len(list((tmp_path / "pythia" / "seed0" / "step4").glob("model-*.safetensors"))) > 1  # sharded
    tasks = {
        name: {
            "source": "huggingface",
            "architecture": arch,
            "seeds": 3,
            "path": str(tmp_path / name / "seed{seed}" / "step{step}"),
        }
        for name, arch in [("pythia", "gpt_neox"), ("gpt2", "gpt2"), ("llama", "llama"), ("opt", "auto")]
    }
    config = {
        "seeds_per_job": 3,
        "hmm": {**SMALL_HMM, "covariance": "diag", "features": PAPER_FEATURES},
        "forecast": SMALL_FORECAST,
        "stability": {"resamples": 3, "refit_k": False},
        "tasks": tasks,
    }
    wd = make_workdir(config)
    snakemake(wd)
    res = wd / "results"
    for name, arch in [("pythia", "gpt_neox"), ("gpt2", "gpt2"), ("llama", "llama"), ("opt", "auto")]:
        metrics = pd.read_parquet(res / name / "metrics.parquet")
        assert metrics.groupby("seed").size().to_dict() == {0: 5, 1: 5, 2: 5}
        # Each row is the statistics of the matrices the architecture reads, from the directory.
        directory = tmp_path / name / "seed1" / "step8"
        direct = weight_metrics(
            *get_architecture(arch).weights(
                load_weights(directory, "transformers"), model_config(directory, "transformers")
            )
        )
        row = metrics[(metrics.seed == 1) & (metrics.step == 8)].iloc[0]
        for f in PAPER_FEATURES:
            assert row[f] == pytest.approx(direct[f], rel=1e-12, nan_ok=True), (name, f)
        model = json.loads((res / name / "hmm" / "model.json").read_text())
        assert model["k"] >= 1 and model["excluded_runs"] == {}
        if name == "llama":  # no biases: the three bias statistics are left out, not the runs
            assert metrics[["mean_b", "median_b", "var_b"]].isna().all().all()
            assert set(model["dropped_features"]) == {"mean_b", "median_b", "var_b"}
            assert "missing for every run" in (res / "logs" / "hmm" / "llama.log").read_text()
        else:
            assert model["dropped_features"] == {} and metrics["var_b"].notna().all()
        for fig in ("model_selection", "training_curves", "transition_graph", "stability"):
            assert (res / name / "figures" / f"{fig}.png").stat().st_size > 0


# ---------------------------------------------------------------- Hub series and the HF cache


def hub_cache(cache, series_dir, repo_pattern: str, seeds=(0, 1, 2), steps=(0, 4, 8, 12, 16), ref=None):
    """A Hugging Face hub cache as huggingface_hub lays it out, from save_pretrained directories:
    models--ORG--NAME/blobs/<sha256>, snapshots/<commit>/<file> → ../../blobs/<sha256>, and
    refs/<revision> holding the commit (revision step<N>, or `ref(step)`)."""
    import hashlib

    for seed in seeds:
        root = cache / ("models--" + repo_pattern.format(seed=seed).replace("/", "--"))
        (root / "blobs").mkdir(parents=True, exist_ok=True)
        (root / "refs").mkdir(exist_ok=True)
        for step in steps:
            source = series_dir / f"seed{seed}" / f"step{step}"
            commit = hashlib.sha1(f"{seed}-{step}".encode()).hexdigest()
            snapshot = root / "snapshots" / commit
            snapshot.mkdir(parents=True)
            for f in sorted(source.iterdir()):
                data = f.read_bytes()
                blob = root / "blobs" / hashlib.sha256(data).hexdigest()
                blob.write_bytes(data)
                (snapshot / f.name).symlink_to(f"../../blobs/{blob.name}")
            (root / "refs" / (ref(step) if ref else f"step{step}")).write_text(commit)


def test_pythia_schedule_and_polypythias_repositories():
    from latentstates.config import load_config
    from latentstates.runs import hub

    assert len(hub.PYTHIA_STEPS) == 154 and hub.PYTHIA_STEPS[:5] == [0, 1, 2, 4, 8]
    assert hub.PYTHIA_STEPS[10:13] == [512, 1000, 2000] and hub.PYTHIA_STEPS[-1] == 143_000
    task = load_config(REPO / "configs" / "polypythias.yaml")["tasks"]["pythia_160m"]
    planned = [r for seed in range(task["seeds"]) for r in hub.revisions(task["hub"], seed)]
    assert len(planned) == 10 * 154
    assert {repo for _, repo, _ in planned} == {
        "EleutherAI/pythia-160m",
        *(f"EleutherAI/pythia-160m-seed{s}" for s in range(1, 10)),
    }
    assert planned[1] == (1, "EleutherAI/pythia-160m", "step1")


def test_cached_revisions_are_found_and_missing_ones_named(tmp_path, monkeypatch):
    from huggingface_hub import scan_cache_dir

    from latentstates.runs import hub

    save_series(tmp_path, "neox", "GPTNeoXForCausalLM", neox_config(), seeds=(0, 1), steps=(0, 4))
    cache = tmp_path / "cache"
    hub_cache(cache, tmp_path / "neox", "org/neox-seed{seed}", seeds=(0, 1), steps=(0, 4))
    scanned = scan_cache_dir(cache)  # huggingface_hub reads the layout as its own
    assert {r.repo_id for r in scanned.repos} == {"org/neox-seed0", "org/neox-seed1"}
    assert {ref for r in scanned.repos for rev in r.revisions for ref in rev.refs} == {"step0", "step4"}
    series = {"repo": "org/neox-seed{seed}", "revision": "step{step}", "steps": [0, 4], "cache": str(cache)}
    found = hub.resolve(series, [0, 1], download=False)
    assert [s for s, _ in found[1]] == [0, 4]
    weights = load_weights(found[1][1][1], "transformers")
    direct = load_weights(tmp_path / "neox" / "seed1" / "step4", "transformers")
    assert all(torch.equal(weights[k], direct[k]) for k in direct)
    # Offline: one message naming every missing repository and revision, with the reason.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        FileNotFoundError, match=r"2 checkpoints .*org/neox-seed2@step0, org/neox-seed2@step4"
    ):
        hub.resolve(series, [0, 2], download=True)
    with pytest.raises(FileNotFoundError, match=r"download: off"):
        hub.resolve({**series, "steps": [8]}, [0], download=False)


def OLMO_REVISION(step: int) -> str:
    return f"stage1-step{step}-tokens{4 * step}B"


def test_revisions_by_name_are_read_in_step_order_and_a_name_without_a_step_is_named(tmp_path):
    import hashlib

    from huggingface_hub import scan_cache_dir

    from latentstates.config import ConfigError, validate_config
    from latentstates.revisions import step_of
    from latentstates.runs import hub

    save_series(tmp_path, "olmo", "LlamaForCausalLM", llama_config(), seeds=(0,), steps=(0, 4, 8))
    cache = tmp_path / "cache"
    hub_cache(cache, tmp_path / "olmo", "org/olmo-seed{seed}", seeds=(0,), steps=(0, 4, 8), ref=OLMO_REVISION)
    assert {ref for r in scan_cache_dir(cache).repos for rev in r.revisions for ref in rev.refs} == {
        "stage1-step0-tokens0B",
        "stage1-step4-tokens16B",
        "stage1-step8-tokens32B",
    }
    names = [OLMO_REVISION(8), OLMO_REVISION(0), OLMO_REVISION(4)]
    task = {"source": "huggingface", "architecture": "llama", "seeds": 1}
    series = {"repo": "org/olmo-seed{seed}", "revisions": names, "cache": str(cache), "download": False}
    checked = validate_config({"tasks": {"olmo": {**task, "hub": series}}})["tasks"]["olmo"]["hub"]
    assert checked["step_pattern"] == r"step(\d+)"  # the default: the first step<digits> in a name
    assert hub.steps(checked) == [0, 4, 8]
    found = hub.resolve(checked, [0], download=False)[0]
    assert [s for s, _ in found] == [0, 4, 8]
    # Each name's own snapshot (hub_cache's commit of seed 0 at that step).
    commits = [hashlib.sha1(f"0-{step}".encode()).hexdigest() for step in (0, 4, 8)]
    assert [p for _, p in found] == [cache / "models--org--olmo-seed0" / "snapshots" / c for c in commits]
    # A named group wins over the first group.
    assert step_of("v2-tokens40B-step12", r"tokens(\d+)B-step(?P<step>\d+)") == 12

    bad = {
        "revisions": (
            {"revisions": [*names, "main"]},
            r"'tasks.olmo.hub.revisions': revision 'main' does not match 'step\(\\d\+\)'",
        ),
        "same step": (
            {"revisions": ["step-4", "stage1-step4-tokens16B"], "step_pattern": r"step-?(\d+)"},
            "'tasks.olmo.hub.revisions': revisions 'stage1-step4-tokens16B' and 'step-4' are both step 4",
        ),
        "no group": (
            {"revisions": names, "step_pattern": "step"},
            "'tasks.olmo.hub.step_pattern': 'step' has no group",
        ),
        "not a regex": (
            {"revisions": names, "step_pattern": "step(["},
            "'tasks.olmo.hub.step_pattern': 'step\\(\\[' is not a",
        ),
        "both": (
            {"revisions": names, "steps": [0]},
            "'tasks.olmo.hub': give the revisions one way.* has steps and revisions",
        ),
        "neither": ({}, "'tasks.olmo.hub': give the revisions one way.* has neither"),
    }
    for what, (change, message) in bad.items():
        hub_config = {"repo": "org/olmo-seed{seed}", "cache": str(cache), **change}
        with pytest.raises(ConfigError, match=message):
            validate_config({"tasks": {"olmo": {**task, "hub": hub_config}}})
            pytest.fail(what)


@pytest.mark.slow
def test_hub_series_run_from_the_cache_and_stop_on_a_missing_revision(make_workdir, tmp_path):
    cache = tmp_path / "cache"
    tasks = {}
    for name, arch in [("neox", "gpt_neox"), ("gpt2", "gpt2"), ("llama", "llama")]:
        make_config, cls = MODELS[arch]
        save_series(tmp_path, name, cls, make_config())
        series = {"repo": f"org/{name}-seed{{seed}}", "cache": str(cache), "download": False}
        if name == "neox":  # kept in the cache (rule fetch_*); the others streamed from it
            series["keep_cache"] = True
        if name == "llama":  # revisions by name, as OLMo's: their steps read by a pattern
            hub_cache(cache, tmp_path / name, series["repo"], ref=OLMO_REVISION)
            series |= {
                "revisions": [OLMO_REVISION(s) for s in (8, 0, 16, 4, 12)],
                "step_pattern": r"step(\d+)-",
            }
        else:
            hub_cache(cache, tmp_path / name, series["repo"])
            series["steps"] = [0, 4, 8, 12, 16]
        tasks[name] = {"source": "huggingface", "architecture": arch, "seeds": 3, "hub": series}
    config = small_config(tasks, seeds_per_job=2)
    wd = make_workdir(config)
    snakemake(wd)
    for name in tasks:
        metrics = pd.read_parquet(wd / "results" / name / "metrics.parquet")
        assert metrics.groupby("seed").size().to_dict() == {0: 5, 1: 5, 2: 5}
        assert metrics.groupby("seed")["step"].apply(list).map([0, 4, 8, 12, 16].__eq__).all()
        run = json.loads((wd / "results" / name / "runs" / "seed2" / "run.json").read_text())
        if name == "neox":  # read where the cache has them
            assert all(str(cache) in c["path"] for c in run["checkpoints"])
        else:  # streamed: the cache's revisions are the user's, read and kept
            assert run["hub"]["cache"] == str(cache.resolve()) and run["checkpoints"][1]["revision"]
            assert len(list(cache.glob(f"models--org--{name}-seed2/snapshots/*"))) == 5
        assert (wd / "results" / name / "figures" / "transition_graph.png").stat().st_size > 0
    # A revision missing from the cache (and no download): the job names it, nothing is made up.
    (cache / "models--org--neox-seed3" / "refs").mkdir(parents=True)
    config["tasks"] = {"neox": {**tasks["neox"], "seeds": 4}}
    wd = make_workdir(config, "more")
    proc = snakemake(wd, "--until", "hmm", check=False)
    assert proc.returncode != 0
    log = (wd / "results" / "logs" / "fetch" / "neox" / "seeds2-3.log").read_text()
    assert "5 checkpoints are neither in the Hugging Face cache" in log and "org/neox-seed3@step0" in log
    assert not (wd / "results" / "neox" / "runs" / "seed3").exists()


def test_polypythias_dry_run_plans_every_seed(tmp_path):
    out = dry_run(tmp_path, REPO / "configs" / "polypythias.yaml")
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out, re.M))
    # Each seed's metrics job streams Pythia's 154 revisions of its repository: 10 × 154 checkpoints.
    planned = re.findall(r"pythia_160m: (\d+) revisions of ([^\s,;]+)", out)
    assert sorted(planned) == sorted(
        [
            ("154", "EleutherAI/pythia-160m"),
            *(("154", f"EleutherAI/pythia-160m-seed{s}") for s in range(1, 10)),
        ]
    )
    for stage in ("import", "metrics"):  # streamed: no fetch jobs, the metrics jobs download
        assert sorted(r for r in counts if r.startswith(f"{stage}_pythia_160m")) == sorted(
            f"{stage}_pythia_160m_seeds{s}_{s}" for s in range(10)
        )
    assert not [r for r in counts if r.startswith("fetch_")]
    assert out.count("streamed (downloaded, measured, evicted)") == 10
    assert counts["hmm"] == "1"
