"""The pinned environment (requirements/constraints.txt) against pyproject.toml, the conda
environments and the installed venv; the conda environments against what each rule imports.

The conda environments cannot be built here (no conda channel is reachable); these tests check what
can be checked without building them: every rule names an env file that parses, every third-party
module its script reaches (following imports into src/latentstates) is a dependency of that env,
and every package an env names is pinned to the constraints file's version, which satisfies
pyproject.toml's range. The venv the tests run in must hold the constraints file's versions.
"""

from __future__ import annotations

import re
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from latentstates.provenance import reached

REPO = Path(__file__).resolve().parents[1]
CONSTRAINTS = REPO / "requirements" / "constraints.txt"

# Import name → distribution name, where they differ (conda-forge and PyPI agree on these).
DISTRIBUTION = {
    "torch": "pytorch",
    "sklearn": "scikit-learn",
    "yaml": "pyyaml",
    "PIL": "pillow",
    "mlflow": "mlflow-skinny",
}
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


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def constraints() -> dict[str, str]:
    """Distribution (canonical name) → exact version, from requirements/constraints.txt."""
    pins: dict[str, str] = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            # No local label (+cpu): one pin covers the CPU and CUDA builds of a version.
            m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([0-9][A-Za-z0-9.]*)", line.strip())
            assert m, f"constraints.txt: {line!r} is not an exact `name==version` pin"
            assert _canonical(m[1]) not in pins, f"constraints.txt pins {m[1]} twice"
            pins[_canonical(m[1])] = m[2]
    return pins


def locked_python() -> str:
    """The Python (major.minor) of the pinned environment, from the constraints file's header."""
    return re.search(r"^# Python: (\d+\.\d+)$", CONSTRAINTS.read_text(), re.M)[1]


def pyproject_requirements() -> dict[str, str]:
    """Distribution (canonical name) → version spec of pyproject.toml's dependencies and extras
    (tomllib is not in Python 3.10's standard library)."""
    text = (REPO / "pyproject.toml").read_text()
    block = re.search(r"^dependencies = \[(.*?)^\]", text, re.M | re.S)[1]
    extras = re.search(r"^\[project\.optional-dependencies\]\n(.*?)^\[", text, re.M | re.S)[1]
    specs = re.findall(r"\"([^\"]+)\"", block) + re.findall(r"\"([^\"]+)\"", extras)
    return {_canonical(name): spec for name, spec in map(_requirement, specs)}


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
        'group_rule("fetch"',
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


def test_constraints_pin_every_pyproject_requirement_within_its_range():
    pins, required = constraints(), pyproject_requirements()
    assert {"torch", "pomegranate", "numpy", "pytest", "snakemake"} <= set(required)
    assert "latentstates" not in pins, "the package itself is installed editable, not pinned"
    unpinned = sorted(set(required) - set(pins))
    assert not unpinned, f"constraints.txt does not pin {unpinned}"
    outside = {
        name: (pins[name], spec) for name, spec in required.items() if pins[name] not in SpecifierSet(spec)
    }
    assert not outside, f"pins outside pyproject.toml's ranges (pin, range): {outside}"
    header = "".join(line for line in CONSTRAINTS.read_text().splitlines(True) if line.startswith("#"))
    assert f"torch {pins['torch']}" in header, "the header names another torch than the pin"


def test_torchvision_pin_is_the_release_for_the_torch_pin():
    # Each torch 2.N has torchvision 0.(N + 15) (2.13 ↔ 0.28), which requires that torch exactly.
    pins = constraints()
    torch_minor, vision = Version(pins["torch"]).minor, Version(pins["torchvision"])
    assert (vision.major, vision.minor) == (0, torch_minor + 15), pins["torchvision"]


def test_env_versions_equal_constraints():
    pins = constraints()
    pypi_name = {conda: pypi for pypi, conda in CONDA_NAME.items()}
    for env_file in sorted((REPO / "envs").glob("*.yaml")):
        for name, spec in env_dependencies(env_file).items():
            if name == "python":
                assert spec == f"=={locked_python()}", f"{env_file.name}: python{spec}"
                continue
            name = _canonical(pypi_name.get(name, name))
            assert name in pins, f"{env_file.name}: {name} is not in requirements/constraints.txt"
            assert spec == f"=={pins[name]}", f"{env_file.name}: {name}{spec}, constraints: {pins[name]}"


def test_installed_venv_equals_constraints():
    # A local label (2.13.0+cpu) satisfies its pin (==2.13.0); packages not installed are skipped
    # (torchvision, pinned for the conda env only).
    drifted = {}
    for name, pin in constraints().items():
        try:
            have = version(name)
        except PackageNotFoundError:
            continue
        if have not in SpecifierSet(f"=={pin}"):
            drifted[name] = (have, pin)
    assert not drifted, f"the venv drifted from requirements/constraints.txt (installed, pinned): {drifted}"
    python = "{}.{}".format(*sys.version_info[:2])
    assert python == locked_python(), f"Python {python}, not the pinned environment's {locked_python()}"
