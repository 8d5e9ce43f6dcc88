"""Conda environments against what each rule imports, and against pyproject.toml's versions.

The environments cannot be built here (no conda channel is reachable); these tests check what can
be checked without building them: every rule names an env file that parses, every third-party
module its script reaches (following imports into src/latentstates) is a dependency of that env,
and every version pin agrees with pyproject.toml.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from latentstates.provenance import reached

REPO = Path(__file__).resolve().parents[1]

# Import name → distribution name, where they differ (conda-forge and PyPI agree on these).
DISTRIBUTION = {"torch": "pytorch", "sklearn": "scikit-learn", "yaml": "pyyaml", "PIL": "pillow"}
# pyproject (PyPI) name → conda-forge name.
CONDA_NAME = {"torch": "pytorch"}


def rule_blocks() -> list[tuple[str, str, str]]:
    """(rule, conda env, script) of every rule with a script, from the rule files' text."""
    out = []
    for smk in sorted((REPO / "rules").glob("*.smk")):
        text = smk.read_text()
        starts = [m.start() for m in re.finditer(r"^\s*rule\b[^:\n]*:", text, re.M)]
        for begin, end in zip(starts, [*starts[1:], len(text)]):
            block = text[begin:end]
            name = re.search(r"rule\s*(\w*)\s*:", block)[1] or re.search(r"name:\s*\n\s*(.+)", block)[1]
            conda = re.search(r"conda:\s*\n\s*\"([^\"]+)\"", block)
            script = re.search(r"script:\s*\n\s*\"([^\"]+)\"", block)
            assert script, f"{smk.name}: rule {name} has no script"
            assert conda, f"{smk.name}: rule {name} has no conda env"
            out.append((f"{smk.name}:{name.strip()}", conda[1], script[1]))
    return out


def third_party_imports(script: Path) -> dict[str, set[str]]:
    """Top-level third-party modules reached from `script` → the files that import them (the
    same import walk that gives each rule its code digest)."""
    return reached(script)[1]


def _requirement(spec: str) -> tuple[str, str]:
    m = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*(.*)", spec)
    return m[1].lower(), m[2].replace(" ", "")


def env_dependencies(env_file: Path) -> dict[str, str]:
    """Package → version spec of a conda env file (conda and pip dependencies)."""
    env = yaml.safe_load(env_file.read_text())
    assert "conda-forge" in env["channels"], f"{env_file.name}: conda-forge must be a channel"
    deps: dict[str, str] = {}
    for dep in env["dependencies"]:
        items = dep["pip"] if isinstance(dep, dict) else [dep]
        for item in items:
            conda_pin = re.search(r"[^=<>!]=[^=]", item)  # conda's `pkg=1.2` is pip's `pkg==1.2`
            name, spec = _requirement(item.replace("=", "==", 1) if conda_pin else item)
            deps[name] = spec
    return deps


RULES = rule_blocks()


def test_every_rule_block_was_found():
    names = {r.split(":")[1] for r, _, _ in RULES}
    expected = {
        "analysis",
        "summary_table",
        "forecast",
        "plot_forecast",
        "hmm",
        "collate",
        "plot_model_selection",
        "plot_training_curves",
        "plot_analysis",
        "interactive",
        "import_table",
        "prepare_mnist",
        "prepare_cifar100",
    }
    assert expected <= names
    # The seed-group rules, defined in a loop: named by group_rule("train" | ..., ...).
    assert {n.split(",")[0] for n in names if n.startswith("group_rule(")} == {
        'group_rule("train"',
        'group_rule("import"',
        'group_rule("metrics"',
    }


@pytest.mark.parametrize("rule,env,script", RULES, ids=[r for r, _, _ in RULES])
def test_rule_env_provides_every_module_its_script_imports(rule, env, script):
    env_file = (REPO / "rules" / env).resolve()
    assert env_file.is_file(), f"{rule}: conda env {env} does not exist"
    deps = env_dependencies(env_file)
    imports = third_party_imports((REPO / "rules" / script).resolve())
    assert imports, f"{rule}: found no imports in {script}"
    missing = {
        module: sorted(files)
        for module, files in imports.items()
        if DISTRIBUTION.get(module, module).lower() not in deps
    }
    assert not missing, f"{rule}: {env_file.name} lacks {missing} (module: files importing it)"


def test_env_versions_agree_with_pyproject():
    # The [project] dependencies array (tomllib is not in Python 3.10's standard library).
    block = re.search(r"^dependencies = \[(.*?)^\]", (REPO / "pyproject.toml").read_text(), re.M | re.S)[1]
    pinned = dict(_requirement(d) for d in re.findall(r"\"([^\"]+)\"", block))
    assert {"torch", "pomegranate", "numpy"} <= set(pinned)
    pinned = {CONDA_NAME.get(name, name): spec for name, spec in pinned.items()}
    for env_file in sorted((REPO / "envs").glob("*.yaml")):
        for name, spec in env_dependencies(env_file).items():
            if name in pinned:
                assert spec == pinned[name], f"{env_file.name}: {name}{spec}, pyproject: {name}{pinned[name]}"
