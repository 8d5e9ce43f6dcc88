"""The public API: the notebook example of docs/api.md runs, `__all__` resolves everywhere, and
importing the package stays light."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import latentstates
from latentstates.states.simulate import Scenario, simulate

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ["tasks", "runs", "measure", "states", "forecast", "report"]


def docs_example() -> str:
    text = (ROOT / "docs" / "api.md").read_text()
    return re.search(r"```python\n(.*?)```", text, re.S).group(1)


def test_the_notebook_example_of_the_docs_runs_on_a_table_of_ones_own(tmp_path, monkeypatch, capsys):
    """Simulated runs of 3 phases, written as a user's CSV (a text run label, eval accuracy that
    rises with the phase), through the docs' example as written."""
    table, paths = simulate(Scenario(k=3, runs=10, length=60, features=6, detour=False), seed=3)
    table["run"] = [f"run-{s}" for s in table["seed"]]
    table["eval_acc"] = np.concatenate([np.minimum(1.0, 0.3 + 0.35 * p) for p in paths])
    table.drop(columns=["seed", "checkpoint"]).to_csv(tmp_path / "my_runs.csv", index=False)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(docs_example(), "docs/api.md", "exec"), namespace)
    fit, found, metrics = namespace["fit"], namespace["found"], namespace["metrics"]
    assert len(fit.states) == len(table) and set(fit.states["state"]) == set(range(fit.model.k))
    assert fit.model.features == [f"f{i}" for i in range(6)]
    assert found.summary["k"] == fit.model.k >= 2
    assert found.summary["n_converged"] == metrics["run"].nunique()  # every run reaches 0.95
    assert (tmp_path / "states.png").stat().st_size > 10_000
    assert (tmp_path / "transitions.png").stat().st_size > 10_000
    assert f"K = {fit.model.k}" in capsys.readouterr().out


def test_read_metrics_names_the_cell_of_a_bad_table(tmp_path):
    (tmp_path / "bad.csv").write_text("run,step,l2\na,0,1.0\na,1,oops\n")
    with pytest.raises(Exception, match=r"bad\.csv.*(line 3|oops)"):
        latentstates.read_metrics(tmp_path / "bad.csv")


def _collated(runs: int = 2, length: int = 6) -> pd.DataFrame:
    table = pd.DataFrame(
        {
            "seed": np.repeat(np.arange(runs), length),
            "checkpoint": np.tile(np.arange(length), runs),
            "step": np.tile(np.arange(0, 10 * length, 10), runs),
        }
    )
    table["task"] = "mine"
    table["l2"] = np.linspace(1, 2, len(table))
    table["diverged"] = False
    return table


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda t: t.assign(l2=t["l2"].map(lambda v: f"{v:.2f}")), r"'l2', row 0: '1.00' is not a number"),
        (
            lambda t: t.assign(checkpoint=t["checkpoint"] + 0.5),
            r"'checkpoint', row 0: 0\.5 is not a whole number",
        ),
        (
            lambda t: pd.concat([t, t.iloc[[3]]], ignore_index=True),
            r"row 12: more than one row for seed 0, checkpoint 3",
        ),
        (lambda t: t.assign(seed=t["seed"].astype(float).where(t.index != 2, np.nan)), r"'seed', row 2"),
    ],
)
def test_read_metrics_checks_a_table_in_the_collated_layout_too(tmp_path, change, match):
    """A hand-made Parquet with the workflow's key columns goes through cell checks, as a user's
    own table does (a text cell would otherwise reach the fit)."""
    table = _collated()
    table.to_parquet(tmp_path / "good.parquet")
    good = latentstates.read_metrics(tmp_path / "good.parquet")
    pd.testing.assert_frame_equal(good, table)
    change(table).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match=rf"bad\.parquet.*{match}"):
        latentstates.read_metrics(tmp_path / "bad.parquet")


def test_a_non_finite_value_of_a_collated_table_leaves_its_run_out_of_the_fit(tmp_path):
    """As in the workflow: the HMM leaves the run out and says why."""
    table = _collated(runs=3, length=20)
    table["l2"] = np.where(table["checkpoint"] < 10, 0.0, 1.0) + np.random.default_rng(0).normal(
        0, 0.1, len(table)
    )
    table.loc[25, "l2"] = np.inf
    table.to_parquet(tmp_path / "inf.parquet")
    fit = latentstates.fit_states(
        latentstates.read_metrics(tmp_path / "inf.parquet"), n_states=2, features=["l2"]
    )
    assert list(fit.model.excluded_runs) == ["1"] and fit.model.zscore.runs == [0, 2]


@pytest.mark.parametrize("name", ["latentstates", *[f"latentstates.{p}" for p in SUBPACKAGES]])
def test_every_package_exports_what_its_all_names(name):
    module = __import__(name, fromlist=["__all__"])
    assert module.__all__, f"{name} has no __all__"
    missing = [n for n in module.__all__ if getattr(module, n, None) is None]
    assert not missing, f"{name}.__all__ names what it lacks: {missing}"
    assert set(module.__all__) <= set(dir(module))


def test_importing_the_package_and_its_subpackages_loads_no_heavy_library():
    code = (
        "import json, sys, latentstates\n"
        + "".join(f"import latentstates.{p}\n" for p in SUBPACKAGES)
        + "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    heavy = sorted(set(json.loads(out.stdout)) & {"torch", "pomegranate", "sklearn", "matplotlib", "scipy"})
    assert not heavy, f"import latentstates loads {heavy}"
