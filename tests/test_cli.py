"""The command lines in one place: `latentstates <command>` runs each of the package's commands."""

import ast
import os
import subprocess
import sys
from pathlib import Path

from latentstates.cli import COMMANDS

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "latentstates"


def test_every_command_line_of_the_package_is_a_command_of_latentstates():
    """A module that parses a command line is reachable as `latentstates <command>`."""
    parsing = set()
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        if any(isinstance(n, ast.Attribute) and n.attr == "ArgumentParser" for n in ast.walk(tree)):
            parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
            parsing.add(".".join(parts))
    assert parsing == set(COMMANDS.values())


def _run(*args):
    env = os.environ | {"PYTHONPATH": str(PACKAGE.parent)}
    return subprocess.run(
        [sys.executable, "-m", "latentstates", *args], capture_output=True, text=True, env=env
    )


def test_latentstates_lists_its_commands_and_runs_each_ones_help():
    out = _run("--help")
    assert out.returncode == 0 and all(c in out.stdout for c in COMMANDS)
    for command in COMMANDS:
        proc = _run(command, "--help")
        assert proc.returncode == 0, proc.stderr
        assert f"usage: latentstates {command}" in proc.stdout


def test_an_unknown_command_is_named_with_the_commands():
    proc = _run("forcast")
    assert proc.returncode == 2 and "'forcast'" in proc.stderr and "forecast" in proc.stderr


def test_the_installed_script_is_the_same_entry_point():
    """`pip install` (make setup) puts a `latentstates` script beside the interpreter."""
    script = Path(sys.executable).parent / "latentstates"
    assert script.exists(), "reinstall the package (pip install -e .) to get the `latentstates` script"
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "llc-calibration" in proc.stdout
