"""benchmarks/compare_results.py: the script that proves a change moved no result."""

import importlib.util
import json
from pathlib import Path

import pandas as pd

_spec = importlib.util.spec_from_file_location(
    "compare_results", Path(__file__).resolve().parents[1] / "benchmarks" / "compare_results.py"
)
compare_results = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare_results)


def _results(root: Path, value: float, state: int = 2, extra: bool = False) -> Path:
    (root / "task" / "hmm").mkdir(parents=True)
    (root / "logs").mkdir()
    pd.DataFrame({"run": ["a", "b"], "x": [1.0, value]}).to_parquet(root / "task" / "metrics.parquet")
    pd.DataFrame({"state": [0, state], "r2": [0.5, value]}).to_csv(root / "task" / "summary.csv", index=False)
    (root / "task" / "hmm" / "model.json").write_text(json.dumps({"k": 3, "means": [[value, 1.0]]}))
    (root / "logs" / "job.log").write_text(f"took {value} s")  # logs are not compared
    if extra:
        (root / "task" / "more.csv").write_text("a\n1\n")
    return root


def test_identical_and_within_tolerance_pass(tmp_path, capsys):
    a = _results(tmp_path / "a", 0.25)
    assert compare_results.main([str(a), str(_results(tmp_path / "b", 0.25))]) == 0
    assert "3 identical" in capsys.readouterr().out
    assert compare_results.main([str(a), str(_results(tmp_path / "c", 0.25 + 1e-12))]) == 0
    assert "3 equal within" in capsys.readouterr().out


def test_a_moved_number_a_changed_state_or_a_missing_file_fails(tmp_path, capsys):
    a = _results(tmp_path / "a", 0.25)
    assert compare_results.main([str(a), str(_results(tmp_path / "b", 0.25 + 1e-6))]) == 1
    out = capsys.readouterr().out
    assert "different task/metrics.parquet" in out and "different task/hmm/model.json" in out
    assert compare_results.main([str(a), str(_results(tmp_path / "c", 0.25, state=3))]) == 1
    assert "column 'state'" in capsys.readouterr().out
    assert compare_results.main([str(a), str(_results(tmp_path / "d", 0.25, extra=True))]) == 1
    assert "missing   task/more.csv" in capsys.readouterr().out
