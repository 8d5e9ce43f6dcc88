"""Runs trained elsewhere: checkpoint directories, Hugging Face model directories and metrics
tables go through the same DAG as runs trained here (real Snakemake runs, offline)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import SMALL_FORECAST, SMALL_HMM, TINY, snakemake
from latentstates.columns import PAPER_FEATURES
from latentstates.config import load_config
from latentstates.measure.metrics import matrix_metrics, weight_metrics
from latentstates.runs.architectures import bert_weights
from latentstates.runs.checkpoints import load_checkpoint
from latentstates.runs.contract import read_run
from latentstates.runs.discovery import huggingface_checkpoints
from latentstates.runs.external_tables import metrics_table, performance_log, read_table
from latentstates.runs.sources import checkpoint_steps
from latentstates.runs.train import train_run
from latentstates.runs.weights import load_weights
from latentstates.settings import TaskSpec


class Payload:  # pickled code in a checkpoint: refused by weights_only
    pass


# ---------------------------------------------------------------- unit: loaders and tables


def test_checkpoint_files_order_by_number_and_refuse_ambiguity(tmp_path):
    for step in (100, 5, 20):
        torch.save({"w": torch.zeros(1)}, tmp_path / f"model_step{step}.pt")
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    assert [s for s, _ in checkpoint_steps(tmp_path)] == [5, 20, 100]  # numeric, not by name
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "model_step20.safetensors"))
    assert checkpoint_steps(tmp_path)[1][1].name == "model_step20.safetensors"  # preferred
    torch.save({"w": torch.zeros(1)}, tmp_path / "model_step020.pt")
    with pytest.raises(ValueError, match="both step 20"):
        checkpoint_steps(tmp_path)

    stored = tmp_path / "stored"
    stored.mkdir()
    for name, step in (("first", 7), ("second", 3)):
        torch.save({"model": {"w": torch.zeros(1)}, "step": step}, stored / f"{name}.pt")
    assert [(s, p.name) for s, p in checkpoint_steps(stored)] == [(3, "second.pt"), (7, "first.pt")]
    with pytest.raises(FileNotFoundError, match="nowhere"):
        checkpoint_steps(tmp_path / "nowhere")


def test_safetensors_are_read_tensor_by_tensor_as_safetensors_reads_them(tmp_path):
    """Our reader (plain reads, no memory map) gives what safetensors' own gives, for every
    dtype, an empty tensor and a file with metadata; dtype and shape come without reading."""
    from safetensors.torch import load_file, save_file

    from latentstates.runs.weights import open_weights, tensor_meta

    g = torch.Generator().manual_seed(0)
    sd = {
        "f32": torch.randn(3, 4, generator=g),
        "f16": torch.randn(5, generator=g).half(),
        "bf16": torch.randn(2, 3, generator=g).bfloat16(),
        "f64": torch.randn(2, 2, generator=g).double(),
        "i64": torch.arange(7),
        "mask": torch.ones(1, 1, 4, 4, dtype=torch.bool).tril(),
        "empty": torch.empty(0, 3),
    }
    save_file(sd, str(tmp_path / "m.safetensors"), metadata={"format": "pt"})
    lazy = open_weights(tmp_path / "m.safetensors", "state_dict")
    reference = load_file(str(tmp_path / "m.safetensors"))
    assert set(lazy) == set(reference)
    for name, value in reference.items():
        assert tensor_meta(lazy, name) == (value.dtype, tuple(value.shape))
        assert lazy[name].dtype == value.dtype and torch.equal(lazy[name], value), name


def test_load_weights_reads_every_layout_safely(tmp_path):
    from safetensors.torch import save_file

    sd = {"a.weight": torch.randn(3, 2), "a.bias": torch.randn(3)}
    torch.save(sd, tmp_path / "plain.pt")
    torch.save({"model_state_dict": sd, "optimizer": {}, "step": 3}, tmp_path / "dict.pt")
    save_file(sd, str(tmp_path / "w.safetensors"))
    for name in ("plain.pt", "dict.pt", "w.safetensors"):
        got = load_weights(tmp_path / name, "state_dict")
        assert set(got) == set(sd) and all(torch.equal(got[k], sd[k]) for k in sd)
    torch.save({"model": Payload()}, tmp_path / "code.pt")
    with pytest.raises(ValueError, match=r"code\.pt: not a readable checkpoint"):
        load_weights(tmp_path / "code.pt", "state_dict")
    raw = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"cut\.safetensors: not a readable safetensors file"):
        load_weights(tmp_path / "cut.safetensors", "state_dict")
    with pytest.raises(FileNotFoundError, match="no model.safetensors or pytorch_model.bin"):
        (tmp_path / "empty_model").mkdir()
        load_weights(tmp_path / "empty_model", "transformers")


def test_metrics_table_validates_and_keeps_ragged_runs(tmp_path):
    df = pd.DataFrame(
        {"run": ["b", "b", "a", "a", "a"], "step": [10, 0, 0, 10, 20], "gnorm": [1.0, 2, 3, 4, 5]}
    )
    out = metrics_table(df, "t.csv", "run", "step", ["gnorm"])
    assert out["seed"].tolist() == [0, 0, 0, 1, 1]  # labels by rank: a = 0, b = 1
    assert out["run"].tolist() == ["a", "a", "a", "b", "b"]
    assert out["checkpoint"].tolist() == [0, 1, 2, 0, 1] and out["step"].tolist() == [0, 10, 20, 0, 10]
    assert out["gnorm"].tolist() == [3.0, 4, 5, 2, 1] and out["eval_acc"].isna().all()
    with pytest.raises(ValueError, match=r"t\.csv: missing column\(s\) \['lr'\]"):
        metrics_table(df, "t.csv", "run", "step", ["gnorm", "lr"])
    with pytest.raises(ValueError, match=r"t\.csv: missing column\(s\) \['seed'\]"):
        metrics_table(df, "t.csv", "seed", "step", ["gnorm"])
    with pytest.raises(ValueError, match="more than one row"):
        metrics_table(pd.concat([df, df.iloc[:1]]), "t.csv", "run", "step", ["gnorm"])
    (tmp_path / "bad.parquet").write_text("garbage")
    with pytest.raises(ValueError, match=r"bad\.parquet: not a readable table"):
        read_table(tmp_path / "bad.parquet")


def test_performance_log_takes_what_the_table_gives():
    table = pd.DataFrame({"seed": [0, 0, 1], "step": [0, 20, 0], "eval_acc": [0.1, 0.5, 0.2]})
    log = performance_log(table, 0, [0, 10, 20], "perf.csv")
    assert log["checkpoint"].tolist() == [0, 1, 2]
    np.testing.assert_array_equal(log["eval_acc"], [0.1, np.nan, 0.5])
    assert log["train_loss"].isna().all() and not log["diverged"].any()
    assert performance_log(None, 3, [0, 5], None)["eval_acc"].isna().all()


def _bert_linears(model):
    """A BertForMaskedLM's six Linear layers per encoder layer, from the modules themselves (not
    key names): query, key, value, attention output, intermediate, output."""
    return [
        lin
        for layer in model.bert.encoder.layer
        for lin in (
            layer.attention.self.query,
            layer.attention.self.key,
            layer.attention.self.value,
            layer.attention.output.dense,
            layer.intermediate.dense,
            layer.output.dense,
        )
    ]


def test_bert_matrices_are_the_layers_query_key_value_output_intermediate_dense():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(
        vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24
    )
    torch.manual_seed(0)
    model = transformers.BertForMaskedLM(cfg)
    matrices, biases = bert_weights(model.state_dict())
    expected = _bert_linears(model)
    assert len(matrices) == 12 and len(biases) == 4
    for got, lin in zip(matrices, expected):
        assert got is lin.weight or torch.equal(got, lin.weight)
    # Biases: the intermediate and output dense layers' only, as the released code.
    mlp = [
        lin for layer in model.bert.encoder.layer for lin in (layer.intermediate.dense, layer.output.dense)
    ]
    for got, lin in zip(biases, mlp):
        assert torch.equal(got, lin.bias)
    with pytest.raises(ValueError, match="no BERT encoder weights"):
        bert_weights({"embeddings.word_embeddings.weight": torch.zeros(2, 2)})


# ---------------------------------------------------------------- workflow runs


def _save_bert_series(root, seeds=(0, 1, 2), steps=(0, 50, 100)):
    """Tiny BERTs (2 layers, hidden 32) trained a few steps on a random masked-LM task, saved with
    save_pretrained at each step: one directory per (seed, step). Seed 2 stops early (ragged)."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=16,
    )
    for seed in seeds:
        torch.manual_seed(seed)
        model = transformers.BertForMaskedLM(cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        ids = torch.randint(0, 50, (16, 12), generator=torch.Generator().manual_seed(seed))
        done = 0
        for step in steps if seed != 2 else steps[:2]:
            while done < step:
                loss = model(input_ids=ids, labels=ids).loss
                opt.zero_grad()
                loss.backward()
                opt.step()
                done += 1
            model.save_pretrained(root / f"seed_{seed}" / f"step_{step}")
    return cfg


def _plain_state_dict_runs(task_cfg, root, seeds):
    """Runs trained in the test (the workflow's loop, one seed at a time), each written as
    files of plain state dicts (seed 0: model_step<N>.pt) or safetensors (seed 1)."""
    from safetensors.torch import save_file

    for seed in seeds:
        out = root / "trained" / f"seed{seed}"
        train_run(TaskSpec.from_dict(task_cfg), seed, out, progress=False)
        dest = root / "theirs" / f"run{seed}"
        dest.mkdir(parents=True)
        for ckpt in sorted(out.glob("ckpt_*.pt")):
            payload = load_checkpoint(ckpt)
            if seed % 2 == 0:
                torch.save(payload["model"], dest / f"model_step{payload['step']}.pt")
            else:
                save_file(payload["model"], str(dest / f"step={payload['step']}.safetensors"))


def _ragged_table(path, n_runs=6, seed=0):
    """A metrics table from elsewhere: runs of different lengths that switch from one regime to
    another at a run-dependent step, with eval accuracy that rises at the switch."""
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(n_runs):
        length = 30 + 4 * r
        switch = 8 + 3 * r
        for t in range(length):
            after = t >= switch
            rows.append(
                {
                    "run": f"job-{r}",
                    "step": 10 * t,
                    "grad_norm": (3.0 if after else 0.0) + rng.normal(0, 0.3),
                    "weight_norm": (1.0 if after else -1.0) + rng.normal(0, 0.3),
                    "eval_acc": 0.95 if after else 0.1,
                }
            )
    pd.DataFrame(rows).to_csv(path, index=False)


@pytest.mark.slow
def test_every_source_runs_through_the_workflow(make_workdir, tmp_path):
    tiny = load_config(TINY)["tasks"]["sparse_parity"]
    tiny["train"]["epochs"] = 8
    _plain_state_dict_runs(tiny, tmp_path, seeds=[0, 1])
    _save_bert_series(tmp_path / "bert")
    _ragged_table(tmp_path / "table.csv")
    parity = {k: tiny[k] for k in ("kind", "convergence_threshold", "data", "model")}
    config = {
        "seeds_per_job": 1,
        "metrics": {"hessian": {"batch_size": 64, "stride": 2, "max_iter": 20}},
        "hmm": {**SMALL_HMM, "features": ["l1", "l2", "spectral", "mean_w"]},
        "forecast": SMALL_FORECAST,
        # What differs between sources ends at the metrics table; the stability stage, the same
        # for every source, runs in the tiny run's tests.
        "stability": {"enabled": False},
        "tasks": {
            "parity_here": {**parity, "seeds": 2, "train": tiny["train"]},
            "parity_theirs": {
                **parity,
                "source": "checkpoints",
                "seeds": 2,
                "path": str(tmp_path / "theirs" / "run{seed}"),
            },
            "bert": {
                "source": "huggingface",
                "architecture": "bert",
                "seeds": 3,
                "path": str(tmp_path / "bert" / "seed_{seed}" / "step_{step}"),
                "hmm": {"covariance": "diag", "features": PAPER_FEATURES},
            },
            "logged": {"source": "table", "path": str(tmp_path / "table.csv")},  # every numeric column
        },
    }
    wd = make_workdir(config)
    snakemake(wd)
    res = wd / "results"

    # Plain state dicts from outside = the same runs trained inside the workflow.
    here = pd.read_parquet(res / "parity_here" / "metrics.parquet")
    theirs = pd.read_parquet(res / "parity_theirs" / "metrics.parquet")
    assert len(here) == len(theirs) == 2 * 9
    weights = [*PAPER_FEATURES, "hessian_top_eig", "step", "checkpoint", "seed", "data_seed"]
    np.testing.assert_allclose(theirs[weights].to_numpy(float), here[weights].to_numpy(float), rtol=1e-12)
    perf = ["train_loss", "train_acc", "eval_loss", "eval_acc"]
    np.testing.assert_allclose(theirs[perf].to_numpy(float), here[perf].to_numpy(float), atol=1e-6)
    states = [
        pd.read_parquet(res / t / "hmm" / "states.parquet")["state"] for t in ("parity_here", "parity_theirs")
    ]
    assert states[0].tolist() == states[1].tolist()
    run = read_run(res / "parity_theirs" / "runs" / "seed1" / "run.json")
    assert run["source"] == "checkpoints" and run["format"] == "state_dict"
    assert [c["step"] for c in run["checkpoints"]] == sorted(here.loc[here.seed == 1, "step"])

    # Hugging Face directories: the matrices of every layer, ragged runs, no performance.
    bert = pd.read_parquet(res / "bert" / "metrics.parquet")
    assert bert.groupby("seed").size().to_dict() == {0: 3, 1: 3, 2: 2}
    assert bert["hessian_top_eig"].isna().all() and bert["eval_acc"].isna().all()
    transformers = pytest.importorskip("transformers")
    model = transformers.BertForMaskedLM.from_pretrained(tmp_path / "bert" / "seed_1" / "step_50")
    layers = model.bert.encoder.layer
    mats = [lin.weight for lin in _bert_linears(model)]
    row = bert[(bert.seed == 1) & (bert.step == 50)].iloc[0]
    assert row["l2"] == pytest.approx(np.mean([matrix_metrics(m)["l2"] for m in mats]), rel=1e-12)
    biases = [m.bias for layer in layers for m in (layer.intermediate.dense, layer.output.dense)]
    direct = weight_metrics(mats, biases)
    for f in PAPER_FEATURES:
        assert row[f] == pytest.approx(direct[f], rel=1e-12, abs=1e-15), f
    summary = json.loads((res / "bert" / "analysis" / "summary.json").read_text())
    assert summary["r2"] is None and "convergence analyses skipped" in summary["status"]
    assert json.loads((res / "bert" / "hmm" / "model.json").read_text())["covariance"] == "diag"

    # A metrics table from elsewhere: its own features, ragged runs, every analysis.
    logged = pd.read_parquet(res / "logged" / "metrics.parquet")
    assert logged.groupby("seed").size().tolist() == [30 + 4 * r for r in range(6)]
    model = json.loads((res / "logged" / "hmm" / "model.json").read_text())
    assert model["features"] == ["grad_norm", "weight_norm"] and model["k"] == 2
    summary = json.loads((res / "logged" / "analysis" / "summary.json").read_text())
    assert summary["n_runs"] == 6 and summary["r2"] > 0.9  # switch time predicts convergence
    for task in ("parity_theirs", "bert", "logged"):
        for fig in ("model_selection", "training_curves", "transition_graph", "convergence_regression"):
            assert (res / task / "figures" / f"{fig}.png").stat().st_size > 0

    # A truncated file in an import: the job fails naming the file; nothing finished is lost.
    victim = sorted((tmp_path / "theirs" / "run1").iterdir())[2]
    victim.write_bytes(victim.read_bytes()[:100])
    kept = {p: p.stat().st_mtime_ns for p in (res / "parity_theirs" / "runs" / "seed0").iterdir()}
    kept[res / "parity_here" / "metrics.parquet"] = (
        (res / "parity_here" / "metrics.parquet").stat().st_mtime_ns
    )
    proc = snakemake(wd, "--keep-going", check=False)
    assert proc.returncode != 0
    log = (res / "logs" / "import" / "parity_theirs" / "seeds1-1.log").read_text()
    assert f"{victim}: not a readable" in log
    assert {p: p.stat().st_mtime_ns for p in kept} == kept


@pytest.mark.slow
def test_a_table_missing_a_column_fails_naming_file_and_column(make_workdir, tmp_path):
    _ragged_table(tmp_path / "table.csv", n_runs=3)
    config = {
        "hmm": SMALL_HMM,
        "tasks": {
            "logged": {
                "source": "table",
                "path": str(tmp_path / "table.csv"),
                "hmm": {"features": ["grad_norm", "lr"]},
            }
        },
    }
    wd = make_workdir(config)
    proc = snakemake(wd, check=False)
    assert proc.returncode != 0
    log = (wd / "results" / "logs" / "import_table" / "logged.log").read_text()
    assert f"{tmp_path / 'table.csv'}: missing column(s) ['lr']" in log


def test_huggingface_checkpoints_are_found_by_pattern(tmp_path):
    for step in (0, 2000, 500):
        (tmp_path / "seed_3" / f"step_{step}k").mkdir(parents=True)
    (tmp_path / "seed_3" / "step_latest").mkdir()
    found = huggingface_checkpoints(str(tmp_path / "seed_{seed}" / "step_{step}k"), 3)
    assert [s for s, _ in found] == [0, 500, 2000]
    with pytest.raises(FileNotFoundError, match="seed_4"):
        huggingface_checkpoints(str(tmp_path / "seed_{seed}" / "step_{step}k"), 4)


def test_configs_of_every_source_validate():
    # The example configs of the README's "Analyse your own runs" section.
    for name in ("multiberts.yaml", "own_checkpoints.yaml", "own_table.yaml"):
        cfg = load_config(TINY.parents[2] / "configs" / name)
        assert cfg["tasks"]


@pytest.mark.slow
def test_first_n_keeps_exactly_the_first_checkpoints(make_workdir, tmp_path):
    _ragged_table(tmp_path / "table.csv")  # 6 runs of 30 + 4r checkpoints, switching at 8 + 3r
    config = {
        "hmm": SMALL_HMM,
        "forecast": SMALL_FORECAST,
        "tasks": {"logged": {"source": "table", "path": str(tmp_path / "table.csv"), "hmm": {"first_n": 20}}},
    }
    wd = make_workdir(config)
    snakemake(wd)
    res = wd / "results" / "logged"
    assert len(pd.read_parquet(res / "metrics.parquet")) == sum(30 + 4 * r for r in range(6))  # all kept
    states = pd.read_parquet(res / "hmm" / "states.parquet")
    assert all(g["checkpoint"].tolist() == list(range(20)) for _, g in states.groupby("seed"))
    assert json.loads((res / "hmm" / "model.json").read_text())["first_n"] == 20
    runs = pd.read_csv(res / "analysis" / "runs.csv").set_index("seed")
    # Convergence inside the window; runs switching at step 20 or later never converge in it.
    assert runs["convergence_checkpoint"].tolist() == [min(8 + 3 * r, 20) for r in range(6)]
    assert runs["converged"].tolist() == [8 + 3 * r < 20 for r in range(6)]


def test_transformers_directories_in_every_layout(tmp_path):
    """model.safetensors, pytorch_model.bin, and a sharded checkpoint with its index: the same
    state dict from each."""
    transformers = pytest.importorskip("transformers")
    from safetensors.torch import save_file

    cfg = transformers.BertConfig(
        vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24
    )
    torch.manual_seed(0)
    sd = {k: v.clone() for k, v in transformers.BertForMaskedLM(cfg).state_dict().items()}
    single = tmp_path / "single"
    single.mkdir()
    save_file(sd, str(single / "model.safetensors"))
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    torch.save(sd, pickled / "pytorch_model.bin")
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    keys = sorted(sd)
    halves = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for name, part in halves.items():
        save_file({k: sd[k] for k in part}, str(sharded / name))
    index = {"metadata": {}, "weight_map": {k: n for n, part in halves.items() for k in part}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    for d in (single, pickled, sharded):
        got = load_weights(d, "transformers")
        assert set(got) == set(sd) and all(torch.equal(got[k], sd[k]) for k in sd), d
    (sharded / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ValueError, match="model-00002-of-00002.safetensors"):
        load_weights(sharded, "transformers")
