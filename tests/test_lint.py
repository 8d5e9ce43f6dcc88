"""The workflow and the code stay lint-clean (snakemake --lint, snakefmt, ruff)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)


def test_snakemake_lint_is_clean():
    proc = _run(sys.executable, "-m", "snakemake", "--lint", "--cores", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Congratulations" in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "tool, args",
    [
        ("snakefmt", ["--check", "Snakefile", "rules/"]),
        ("ruff", ["check", "src", "tests", "workflow/scripts", "benchmarks"]),
        ("ruff", ["format", "--check", "src", "tests", "workflow/scripts", "benchmarks"]),
    ],
)
def test_formatters_and_linters(tool, args):
    exe = shutil.which(tool, path=str(Path(sys.executable).parent)) or shutil.which(tool)
    assert exe, f"{tool} is not installed (pip install -e '.[test]')"
    proc = _run(exe, *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
