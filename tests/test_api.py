"""The public API: the notebook example of docs/api.md runs, `__all__` resolves everywhere, and
importing the package stays light."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
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
