"""Measures beyond the paper's (metrics.extra: stable and effective rank, against numpy) and your
own metrics (metrics.custom: plug-ins found by module or file, checked with the config, through the
workflow)."""

import json
import re
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import snakemake
from latentstates.columns import PAPER_FEATURES
from latentstates.config import ConfigError
from latentstates.measure.custom import Layer, custom_metrics
from latentstates.measure.metrics import (
    EFFECTIVE_RANK_RTOL,
    SINGULAR_VALUE_CUTOFF,
    stacked_matrix_metrics,
    weight_metrics,
)
from latentstates.measure.spectra import GRAM_MIN_SIDE
from latentstates.plugins import PluginError, load_function, plugin_digest

RANKS = ["stable_rank", "effective_rank"]


def numpy_ranks(w: np.ndarray) -> tuple[float, float]:
    """Stable rank and effective rank (Roy and Vetterli 2007) of one matrix, from numpy's SVD."""
    s = np.linalg.svd(w.astype(np.float64), compute_uv=False)
    stable = (s**2).sum() / s.max() ** 2
    s = np.where((s < SINGULAR_VALUE_CUTOFF) | (s < EFFECTIVE_RANK_RTOL * s.max()), 0.0, s)
    p = s[s > 0] / s.sum()
    return stable, float(np.exp(-(p * np.log(p)).sum()))


def test_ranks_by_hand():
    # singular values 4 and 3: stable rank 25/16; p = (4/7, 3/7)
    m = stacked_matrix_metrics(torch.tensor([[[3.0, 0.0], [0.0, -4.0], [0.0, 0.0]]]), extra=RANKS)
    p = np.array([4, 3]) / 7
    assert m["stable_rank"][0] == pytest.approx(25 / 16, rel=1e-15)
    assert m["effective_rank"][0] == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-15)
    # rank one: both ranks are 1; zero: both undefined
    one = stacked_matrix_metrics(torch.outer(torch.arange(1.0, 4), torch.ones(5))[None], extra=RANKS)
    assert one["stable_rank"][0] == pytest.approx(1) and one["effective_rank"][0] == pytest.approx(1)
    zero = stacked_matrix_metrics(torch.zeros(1, 3, 3), extra=RANKS)
    assert np.isnan(zero["stable_rank"][0]) and np.isnan(zero["effective_rank"][0])


def _trained_matrices() -> list[np.ndarray]:
    """The weight matrices of an MLP trained on sklearn's digits (300 full-batch Adam steps): a
    spectrum shaped by training, not by a random draw."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x, y = torch.tensor(x / 16, dtype=torch.float32), torch.tensor(y)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 48), torch.nn.ReLU(), torch.nn.Linear(48, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    assert (model(x).argmax(1) == y).float().mean() > 0.95
    return [layer.weight.detach().double().numpy() for layer in (model[0], model[2])]


@pytest.mark.parametrize("shape", [(7, 5), (40, 90), (GRAM_MIN_SIDE, GRAM_MIN_SIDE + 64)])
def test_stable_and_effective_rank_of_random_matrices_equal_numpys(shape):
    """Random matrices, low-rank ones among them, on both singular-value paths (SVD, and the Gram
    matrix's eigenvalues from GRAM_MIN_SIDE): numpy's SVD to 1e-9 relative."""
    rng = np.random.default_rng(0)
    m, n = shape
    full = rng.standard_normal((3, m, n))
    low = rng.standard_normal((3, m, 3)) @ rng.standard_normal((3, 3, n))  # rank 3
    stack = np.concatenate([full, low * np.array([1.0, 1e-2, 30.0])[:, None, None]])
    got = stacked_matrix_metrics(torch.from_numpy(stack), extra=RANKS)
    for i, w in enumerate(stack):
        stable, effective = numpy_ranks(w)
        assert got["stable_rank"][i] == pytest.approx(stable, rel=1e-9)
        assert got["effective_rank"][i] == pytest.approx(effective, rel=1e-9)
    assert got["stable_rank"][3:].max() <= 3 + 1e-9  # a rank-3 matrix's


def test_ranks_of_trained_matrices_equal_numpys_and_average_over_matrices_after_the_papers():
    mats = _trained_matrices()
    stats = weight_metrics([torch.from_numpy(w) for w in mats], [], extra=RANKS)
    reference = np.array([numpy_ranks(w) for w in mats]).mean(axis=0)
    assert stats["stable_rank"] == pytest.approx(reference[0], rel=1e-10)
    assert stats["effective_rank"] == pytest.approx(reference[1], rel=1e-10)
    assert list(stats)[: len(PAPER_FEATURES)] == PAPER_FEATURES and list(stats)[-2:] == RANKS
    plain = weight_metrics([torch.from_numpy(w) for w in mats], [])
    assert list(plain) == PAPER_FEATURES  # off by default: the paper's columns alone
    np.testing.assert_equal([stats[k] for k in PAPER_FEATURES], list(plain.values()))  # NaN biases too


PLUGIN = '''
"""A user's metrics: a file outside the package."""
import torch


def frobenius(layers):
    norms = [float(torch.linalg.matrix_norm(m.double())) for layer in layers for m in layer.matrices]
    return {"mean_frobenius": sum(norms) / len(norms), "n_matrices": len(norms)}
'''


def write_plugin(directory, text=PLUGIN, name="my_metrics.py"):
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def test_a_plugin_by_file_or_module_gets_the_layers_and_its_columns_are_checked(tmp_path, monkeypatch):
    path = write_plugin(tmp_path)
    layers = [([torch.eye(3) * 2, torch.ones(2, 4)], [torch.zeros(3)], ()), ([torch.eye(2)], [], ())]
    entry = {"function": f"{path}:frobenius", "columns": ["mean_frobenius", "n_matrices"]}
    got = custom_metrics([entry], lambda: iter(layers))
    mean = (np.sqrt(12) + np.sqrt(8) + np.sqrt(2)) / 3
    assert got == pytest.approx({"mean_frobenius": mean, "n_matrices": 3})
    monkeypatch.chdir(tmp_path)  # a module in the working directory, by name
    assert load_function("my_metrics:frobenius")([Layer([torch.eye(4)])]) == {
        "mean_frobenius": 2.0,
        "n_matrices": 1,
    }
    wrong = {**entry, "columns": ["mean_frobenius"]}
    with pytest.raises(PluginError, match=r"metrics.custom.0.*at ckpt3.*returned columns.*declares"):
        custom_metrics([wrong], lambda: iter(layers), where="ckpt3")
    write_plugin(tmp_path, "def f(layers):\n    return [1.0]\n", "bad.py")
    with pytest.raises(PluginError, match="returned list, not a mapping"):
        custom_metrics([{"function": "bad.py:f", "columns": ["x"]}], lambda: iter(layers))
    write_plugin(tmp_path, "def g(layers):\n    return {'x': 'high'}\n", "worse.py")
    with pytest.raises(PluginError, match="column 'x' is 'high', not a number"):
        custom_metrics([{"function": "worse.py:g", "columns": ["x"]}], lambda: iter(layers))


def test_a_plugins_digest_follows_its_code_not_its_comments(tmp_path):
    path = write_plugin(tmp_path)
    spec = [f"{path}:frobenius"]
    before = plugin_digest(spec)
    assert plugin_digest([]) == "" and len(before) == 16
    path.write_text(PLUGIN.replace('"""A user\'s metrics', '# edited\n"""Your metrics'))
    assert plugin_digest(spec) == before
    path.write_text(PLUGIN.replace("sum(norms) / len(norms)", "max(norms)"))
    assert plugin_digest(spec) != before


def test_the_config_check_finds_each_plugin_and_its_columns(config, tmp_path, monkeypatch):
    path = write_plugin(tmp_path)
    write_plugin(tmp_path, "import no_such_package_here\n", "broken.py")
    write_plugin(tmp_path, "frobenius = 3\n", "value.py")
    monkeypatch.chdir(tmp_path)
    good = {"function": "my_metrics:frobenius", "columns": ["mean_frobenius", "n_matrices"]}
    hmm = {"features": ["l2", "mean_frobenius", "stable_rank"]}
    cfg = config(metrics={"extra": ["stable_rank"], "custom": [good]}, hmm=hmm)
    assert cfg["metrics"]["custom"] == [good]
    bad = {
        "my_metrics:nothing": r"metrics.custom.0.function.*defines no 'nothing'",
        "no_module_here:f": r"metrics.custom.0.function.*no module 'no_module_here'",
        "missing.py:f": r"metrics.custom.0.function.*no file .*missing.py",
        "broken.py:f": r"metrics.custom.0.function.*importing .*broken.py failed \(ModuleNotFoundError",
        "value.py:frobenius": r"metrics.custom.0.function.*'frobenius' in .*value.py is not callable",
        f"{path}": r"metrics.custom.0.function.*does not match",
    }
    for function, message in bad.items():
        with pytest.raises(ConfigError, match=message):
            config(metrics={"custom": [{"function": function, "columns": ["x"]}]})
    with pytest.raises(ConfigError, match=r"metrics.custom.0.columns.*'l2' is a column the workflow writes"):
        config(metrics={"custom": [{**good, "columns": ["l2"]}]})
    with pytest.raises(ConfigError, match=r"metrics.custom.1.columns.*'n_matrices' is also metrics.custom.0"):
        config(metrics={"custom": [good, {"function": f"{path}:frobenius", "columns": ["n_matrices"]}]})
    with pytest.raises(ConfigError, match=r"features.*\['stable_rank'\] are measured only where metrics"):
        config(hmm=hmm, metrics={"custom": [good]})
    with pytest.raises(ConfigError, match=r"features.*\['mean_frobenius'\] are not metrics of the workflow"):
        config(hmm={"features": ["l2", "mean_frobenius"]})


def test_a_feature_computed_at_every_stride_th_checkpoint_needs_stride_1(config):
    """The Hessian's columns and the LLC are NaN between their stride's checkpoints, which would
    leave every run out of the HMM: as features they need the measure on, at stride 1."""
    with pytest.raises(ConfigError, match=r"sparse_parity.hmm.features.*\['hessian_top_eig'\].*stride: 1"):
        config(hmm={"features": ["l2", "hessian_top_eig"]})
    with pytest.raises(ConfigError, match=r"\['hessian_trace'\].*stride: 1 \(tasks \['sparse_parity'\]\)"):
        config(
            hmm={"features": ["l2", "hessian_trace"]}, metrics={"hessian": {"stride": 2, "trace_probes": 4}}
        )
    with pytest.raises(ConfigError, match=r"\['llc'\] are computed only where metrics.llc"):
        config(hmm={"features": ["l2", "llc"]})
    every = {"hessian": {"stride": 1, "trace_probes": 4}, "llc": {"enabled": True, "stride": 1}}
    cfg = config(hmm={"features": ["l2", "hessian_top_eig", "hessian_trace", "llc"]}, metrics=every)
    assert cfg["hmm"]["features"][-1] == "llc"


@pytest.mark.slow
def test_a_plugin_and_the_ranks_run_through_the_workflow_as_hmm_features(tiny_run, tmp_path):
    """The tiny run with the ranks and the Hessian's trace switched on and a plug-in from a
    directory outside the package: the metrics stage adds their columns (the plug-in's mean
    Frobenius norm equals the paper's l2, the paper's columns are unchanged), the HMM observes
    them, and editing the plug-in's code (not its comments) reruns the metrics and what follows."""
    user = tmp_path / "elsewhere"
    user.mkdir()
    plugin = write_plugin(user)
    wd = tmp_path / "copy"
    shutil.copytree(tiny_run, wd, symlinks=True)
    cfg = yaml.safe_load((wd / "config.yaml").read_text())
    cfg["metrics"]["extra"] = [*RANKS, "alpha"]
    columns = ["mean_frobenius", "n_matrices"]
    cfg["metrics"]["custom"] = [{"function": f"{plugin}:frobenius", "columns": columns}]
    # per-layer statistics too: each of the MLP's linear layers (dense0, dense1), the
    # transformer's attention and MLP (attn0, mlp0); a pattern selects the MLP's as HMM features
    cfg["metrics"]["per_layer"] = "parts"
    features = ["l2", "spectral", "stable_rank", "mean_frobenius", "l2@dense*"]
    cfg["tasks"]["sparse_parity"]["hmm"] = {"features": features}
    # The Hessian's trace too, batched over modular addition's seed group [0, 1] (as on a GPU)
    cfg["metrics"]["hessian"]["trace_probes"] = 3
    cfg["tasks"]["modular_addition"]["hessian"] = {"batch_runs": True}
    (wd / "config.yaml").write_text(yaml.safe_dump(cfg))
    snakemake(wd, "--until", "hmm")
    assert "together" in (wd / "results/logs/metrics/modular_addition/seeds0-1.log").read_text()
    for task, matrices in [("sparse_parity", 2), ("modular_addition", None)]:
        table = pd.read_parquet(wd / "results" / task / "metrics.parquet")
        before = pd.read_parquet(tiny_run / "results" / task / "metrics.parquet")
        # the trace's probes have their own random stream: the top eigenvalue is as it was
        # (batched: to rounding), every other column exactly
        top = ["hessian_top_eig"]
        pd.testing.assert_frame_equal(table[before.columns].drop(columns=top), before.drop(columns=top))
        pd.testing.assert_series_equal(table["hessian_top_eig"], before["hessian_top_eig"], rtol=1e-4)
        computed = table["hessian_top_eig"].notna()
        assert computed.sum() > 5 and table["hessian_trace"].notna().equals(computed)
        assert (table.loc[computed, "hessian_trace_se"] > 0).all()
        new = [
            "stable_rank",
            "effective_rank",
            "alpha",
            "mean_frobenius",
            "n_matrices",
            "hessian_trace",
            "hessian_trace_se",
        ]
        groups = ["dense0", "dense1"] if task == "sparse_parity" else ["attn0", "mlp0"]
        per_layer = [f"{name}@{group}" for group in groups for name in [*PAPER_FEATURES, *new[:3]]]
        per_layer = [c for c in per_layer if not c.endswith("_b@attn0")]  # the attention has no biases
        assert sorted(c for c in table.columns if c not in before) == sorted([*new, *per_layer])
        np.testing.assert_allclose(table["mean_frobenius"], table["l2"], rtol=1e-12)
        # the model's l2 is the mean over its matrices of each one's: the groups' weighted by theirs
        count = {"dense0": 1, "dense1": 1, "attn0": 3 * 2 + 1, "mlp0": 2}  # the tiny run's 2 heads
        weighted = sum(count[g] * table[f"l2@{g}"] for g in groups) / sum(count[g] for g in groups)
        np.testing.assert_allclose(weighted, table["l2"], rtol=1e-12)
        if matrices:
            assert (table["n_matrices"] == matrices).all()
        assert (table["stable_rank"] >= 1).all() and table["alpha"].between(1, 50).all()
        assert (table["effective_rank"] >= table["stable_rank"] - 1e-9).all()  # Rényi-2 ≤ Shannon
    model = json.loads((wd / "results" / "sparse_parity" / "hmm" / "model.json").read_text())
    assert model["features"] == [*features[:-1], "l2@dense0", "l2@dense1"]  # the pattern's columns

    def planned() -> str:
        """The stages a dry run would run (the seed groups' rules under their stage's name)."""
        out = snakemake(wd, "--until", "hmm", "-n").stdout
        table = out.split("Job stats:")[-1] if "Job stats:" in out else ""
        rules = {re.sub(r"_\w+_seeds\d+_\d+$", "", m) for m in re.findall(r"^(\w+)\s+\d+$", table, re.M)}
        return " ".join(sorted(rules - {"total"}))

    assert planned() == ""
    plugin.write_text(PLUGIN.replace("import torch", "import torch  # a comment changes nothing"))
    assert planned() == ""
    plugin.write_text(PLUGIN.replace("sum(norms) / len(norms)", "max(norms)"))
    assert planned() == "collate hmm metrics"


def _weightwatcher_fixture():
    """The matrices of tests/data/make_weightwatcher_alpha.py and weightwatcher's alpha of each."""
    import importlib.util

    path = Path(__file__).parent / "data" / "make_weightwatcher_alpha.py"
    spec = importlib.util.spec_from_file_location("make_weightwatcher_alpha", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    reference = json.loads(module.OUT.read_text())
    return module.matrices(), reference


def test_alpha_equals_weightwatchers_on_heavy_tailed_gaussian_low_rank_and_small_matrices():
    """weightwatcher 0.7.7's alpha (its power-law fit of the eigenvalues of WᵀW above 1e-5, xmin by
    the smallest KS distance; the bias-corrected estimate below 20 eigenvalues), recorded by
    tests/data/make_weightwatcher_alpha.py on six seeded matrices: ours to 1e-6 relative, from
    the same float32 weights. Averaged over matrices as the other measures, a matrix with fewer
    than 8 eigenvalues (weightwatcher skips it) left out of the mean."""
    matrices, reference = _weightwatcher_fixture()
    assert reference["weightwatcher"] == "0.7.7"
    weights = {name: torch.from_numpy(w).float() for name, w in matrices.items()}
    for name, w in weights.items():
        got = stacked_matrix_metrics(w[None], extra=["alpha"])["alpha"][0]
        assert got == pytest.approx(reference["alpha"][name], rel=1e-6), name
    # alpha does not depend on the other measures switched on beside it: singular values from 1e4
    # down to 1e-2 lie partly below the effective rank's floor (1e-5 of the largest) and above
    # alpha's (eigenvalues above 1e-5)
    rng = np.random.default_rng(1)
    q1, q2 = np.linalg.qr(rng.normal(size=(60, 40)))[0], np.linalg.qr(rng.normal(size=(40, 40)))[0]
    spread = torch.from_numpy(q1 @ np.diag(np.geomspace(1e4, 1e-2, 40)) @ q2.T)
    alone = stacked_matrix_metrics(spread[None], extra=["alpha"])["alpha"][0]
    assert stacked_matrix_metrics(spread[None], extra=["effective_rank", "alpha"])["alpha"][0] == alone
    tiny = torch.from_numpy(np.random.default_rng(0).standard_t(3, size=(5, 3))).float()
    assert np.isnan(stacked_matrix_metrics(tiny[None], extra=["alpha"])["alpha"][0])
    mean = weight_metrics([*weights.values(), tiny], [], extra=["alpha"])["alpha"]
    assert mean == pytest.approx(np.mean(list(reference["alpha"].values())), rel=1e-6)
