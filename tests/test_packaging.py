"""The package stands on its own: its wheel carries the config schema, and an installed
(non-editable) copy validates a config without the repository around it. Offline: pip builds and
installs from the source tree with the environment's setuptools, and never reads an index."""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from conftest import REPO

SCHEMA_IN_WHEEL = "latentstates/schemas/config.schema.yaml"


def _pip(*args: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", *args, "--no-deps", "--no-index", "--quiet"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the source tree (the build leaves build/ and egg-info behind)."""
    tmp = tmp_path_factory.mktemp("packaging")
    tree = tmp / "tree"
    tree.mkdir()
    shutil.copy(REPO / "pyproject.toml", tree)
    shutil.copy(REPO / "LICENSE", tree)
    shutil.copytree(REPO / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    _pip("wheel", "--no-build-isolation", "-w", str(tmp / "dist"), str(tree))
    (built,) = (tmp / "dist").glob("latentstates-*.whl")
    return built


def test_wheel_carries_the_config_schema(wheel):
    with zipfile.ZipFile(wheel) as zf:
        shipped = yaml.safe_load(zf.read(SCHEMA_IN_WHEEL))
    repo_schema = REPO / "src" / SCHEMA_IN_WHEEL
    assert shipped == yaml.safe_load(repo_schema.read_text())


def test_installed_copy_validates_a_config_with_its_own_schema(wheel, tmp_path):
    site = tmp_path / "site"
    _pip("install", "--target", str(site), str(wheel))
    script = (
        "import json, sys, latentstates\n"
        "from latentstates.config import SCHEMA, load_config, load_schema\n"
        "cfg = load_config(sys.argv[1])\n"
        "print(json.dumps({'module': latentstates.__file__, 'schema': str(SCHEMA),\n"
        "                  'keys': sorted(load_schema()['properties']), 'tasks': sorted(cfg['tasks'])}))\n"
    )
    # The installed copy comes first on the path (before the editable install of the repository),
    # and runs away from the repository, so that no path of the source tree can be reached.
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run(
        [sys.executable, "-c", script, str(REPO / "config.yaml")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    assert Path(out["module"]).is_relative_to(site)
    assert Path(out["schema"]) == site / SCHEMA_IN_WHEEL
    assert "tasks" in out["keys"]
    assert out["tasks"] == sorted(yaml.safe_load((REPO / "config.yaml").read_text())["tasks"])


def test_wheel_carries_the_license_and_the_citation_names_the_paper(wheel):
    """MIT in the package's metadata and the LICENSE file in the wheel; CITATION.cff cites the
    workflow with the paper as the preferred citation, as the README's BibTeX does."""
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        metadata = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: MIT" in metadata
    assert any(n.endswith("licenses/LICENSE") for n in names)
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "MIT"
    title = cff["preferred-citation"]["title"]
    assert title in (REPO / "README.md").read_text()


def test_rule_scripts_import_their_own_checkouts_package_first(tmp_path):
    """Snakemake's script preamble puts the workflow's src/ after the environment's paths, where an
    editable install of another checkout (its src/ from a .pth file) would be found first: the
    scripts' bootstrap moves their own src/ to the front."""
    import subprocess
    import sys

    scripts = Path(__file__).resolve().parents[1] / "workflow" / "scripts"
    own = str(scripts.parents[1] / "src")
    other = tmp_path / "other" / "src" / "latentstates"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("WHICH = 'another checkout'\n")
    code = (
        f"import sys; sys.path[:0] = [{str(other.parent)!r}]; sys.path.append({own!r}); "
        f"sys.path.insert(0, {str(scripts)!r}); import _bootstrap, latentstates; print(latentstates.__file__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(Path(own) / "latentstates" / "__init__.py")
