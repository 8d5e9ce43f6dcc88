"""The package's layout: stages import only the stages before them, the Snakefile stays torch-free,
and no module grows past what a reader can hold."""

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "latentstates"
STAGES = ("tasks", "runs", "measure", "states", "forecast", "report")
# What each stage may import besides the torch-free top-level modules: the pipeline's order, with
# the states stage reading tables only (it never needs torch's models or checkpoints).
ALLOWED = {
    "tasks": {"tasks"},
    "runs": {"tasks", "runs"},
    "measure": {"tasks", "runs", "measure"},
    "states": {"states"},
    "forecast": {"states", "forecast"},
    "report": {"states", "report"},
}
# Modules that compose the stages, not libraries under them: the command lines (and what only
# they use) and the public API a notebook calls; paths in the package without `.py`.
COMMAND_LINES = {"forecast/__main__", "forecast/partial_runs", "api"}
MAX_LINES = 420


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py"))


def _stage(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else "top"


def _imported_stages(path: Path) -> set[str]:
    stages = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("latentstates"):
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("latentstates")]
        for name in names:
            parts = name.split(".")
            if len(parts) > 1 and parts[1] in STAGES:
                stages.add(parts[1])
    return stages


def test_each_stage_imports_only_the_stages_before_it():
    wrong = {}
    for path in _modules():
        stage = _stage(path)
        if path.relative_to(PACKAGE).with_suffix("").as_posix() in COMMAND_LINES:
            continue
        if stage == "top":
            # config reads the image data sets' names (a torch-free module of tasks/).
            allowed = {"tasks"} if path.stem == "config" else set()
        else:
            allowed = ALLOWED[stage]
        extra = _imported_stages(path) - allowed
        if extra:
            wrong[str(path.relative_to(PACKAGE))] = sorted(extra)
    assert not wrong, f"modules importing a later or unrelated stage: {wrong}"


def test_no_module_is_longer_than_a_reader_can_hold():
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in _modules()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_what_the_snakefile_imports_loads_no_torch():
    """Snakemake parses the Snakefile in every job and on the login node: its imports stay light."""
    sources = [ROOT / "Snakefile", *sorted((ROOT / "rules").glob("*.smk"))]
    imports = sorted(
        {
            m.group(0).strip()
            for s in sources
            for m in re.finditer(r"^\s*from latentstates[\w.]* import .+$", s.read_text(), re.M)
        }
    )
    assert imports, "the Snakefile imports the package"
    code = "\n".join(imports) + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
    )
    loaded = set(json.loads(out.stdout))
    heavy = sorted(loaded & {"torch", "pomegranate", "sklearn", "matplotlib", "scipy"})
    assert not heavy, f"the Snakefile's imports {imports} load {heavy}"


def test_each_rule_digests_the_code_of_its_own_stage_only():
    """A rule reruns when the code it runs changes (provenance.code_digest): training's digest
    covers no metric or HMM code, the HMM's no training code, and none covers the config plumbing
    (its values reach the rules as params)."""
    from latentstates.provenance import CONFIG_PLUMBING, reached

    def stages(script: str) -> set[str]:
        files, _ = reached(ROOT / "workflow" / "scripts" / script, CONFIG_PLUMBING)
        assert not CONFIG_PLUMBING & set(files)
        return {_stage(p) for p in files if p.is_relative_to(PACKAGE)}

    assert stages("train.py") == {"top", "tasks", "runs"}
    assert stages("metrics.py") == {"top", "tasks", "runs", "measure"}
    assert stages("hmm.py") == {"top", "states"}
    assert stages("analysis.py") == {"top", "states", "report"}
    assert stages("forecast.py") == {"top", "states", "forecast", "report"}
    assert stages("collate.py") == {"top"}
    assert stages("comparison_hmm.py") == {"top", "states"}
    assert stages("comparison.py") == {"top", "states", "report"}


def test_each_subpackage_docstring_lists_its_modules():
    """A newcomer finds a concept from the subpackage's docstring: every module is named there,
    and nothing that is not a module."""
    wrong = {}
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        modules = {p.stem for p in init.parent.glob("*.py") if p.stem != "__init__"}
        doc = ast.get_docstring(ast.parse(init.read_text()), clean=False) or ""
        listed = set(re.findall(r"^    (\w+)  ", doc, re.M))
        if listed != modules:
            wrong[init.parent.name] = {
                "unlisted": sorted(modules - listed),
                "not modules": sorted(listed - modules),
            }
    assert not wrong, f"subpackage docstrings out of step with their modules: {wrong}"


def test_a_docstring_or_comment_edit_reruns_nothing_a_code_edit_reruns(tmp_path):
    """Rules rerun on code changes (`provenance.code_digest`), not on edits of docs or comments."""
    from latentstates.provenance import code_digest

    script = tmp_path / "job.py"

    def digest(source: str) -> str:
        script.write_text(source)
        return code_digest.__wrapped__(script)  # uncached: one path, three sources

    base = digest('"""A job."""\n\ndef f(x):\n    """Twice x."""\n    return 2 * x  # double\n')
    assert digest('"""A job, reworded."""\n\ndef f(x):\n    """x, twice."""\n    return 2 * x\n') == base
    assert digest('"""A job."""\n\ndef f(x):\n    """Twice x."""\n    return 3 * x\n') != base
    assert digest('"""A job."""\n\ndef f(x):\n    """Twice x."""\n    return "2 * x"\n') != base
    exported = (
        "from latentstates._lazy import exports\n"
        '__all__, __getattr__, __dir__ = exports(__name__, {"f": ".job"})\n'
    )
    assert digest('"""A job."""\n\ndef f(x):\n    return 2 * x\n' + exported) == base
