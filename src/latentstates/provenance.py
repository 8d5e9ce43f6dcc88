"""Which code a rule runs: the package modules its script reaches, and a digest of them.

Snakemake reruns a job when its rule's params change. A rule that passes `code=code_digest(script)`
as a param is rerun when the science it runs changes: the digest covers the script and every
`latentstates` module it imports, directly or through other modules (function-level imports
included), as parsed code, so comments and formatting do not count. Light on purpose (standard
library only): the Snakefile calls it when it is parsed.

The config plumbing (`config`: validation and defaults; `settings`: the typed sections) is left out
of the digest, with what only it imports: what it computes reaches every rule as the rule's params
(the validated config), so a change of a default reruns what it changes through the params, and
an edit of a settings class does not retrain every run.
"""

from __future__ import annotations

import ast
import copy
import functools
import hashlib
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
REPO = PACKAGE.parents[1]
SCRIPTS = REPO / "workflow" / "scripts"
CONFIG_PLUMBING = frozenset({PACKAGE / "config.py", PACKAGE / "settings.py"})
# Import machinery of the packages' public names (`_lazy.exports`): it computes nothing.
EXPORTS = PACKAGE / "_lazy.py"


def _module_file(name: str) -> Path | None:
    parts = name.split(".")
    if parts[0] != "latentstates":
        return None
    path = PACKAGE.joinpath(*parts[1:])
    if path.is_dir():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").exists() else None


def _package_of(path: Path) -> str:
    """The dotted package a file's relative imports start from ('' outside the package)."""
    if not path.is_relative_to(PACKAGE):
        return ""
    parts = ["latentstates", *path.relative_to(PACKAGE).parent.parts]
    return ".".join(parts)


def _imported_names(tree: ast.AST, package: str = "") -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the importing file's package, `level - 1` packages up
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
                names += [base] + [f"{base}.{alias.name}" for alias in node.names]
            elif node.module:
                names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    # Importing a submodule runs every package above it: latentstates.a.b reaches a/__init__.py.
    return names + [".".join(n.split(".")[:i]) for n in names for i in range(2, n.count(".") + 1)]


def reached(
    script: str | Path, skip: frozenset[Path] = frozenset()
) -> tuple[dict[Path, ast.AST], dict[str, set[str]]]:
    """(parsed files the script reaches: itself, `_bootstrap`, package modules; third-party
    top-level modules → the files that import them). Files in `skip` are neither counted nor
    followed."""
    files: dict[Path, ast.AST] = {}
    third_party: dict[str, set[str]] = {}
    todo = [Path(script).resolve()]
    while todo:
        path = todo.pop()
        if path in files or path in skip or not path.exists():
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        files[path] = tree
        for name in _imported_names(tree, _package_of(path)):
            top = name.split(".")[0]
            if top == "latentstates":
                file = _module_file(name)
                if file is not None:
                    todo.append(file)
            elif top == "_bootstrap":
                todo.append(SCRIPTS / "_bootstrap.py")
            elif top not in sys.stdlib_module_names and top != "__future__":
                third_party.setdefault(top, set()).add(str(path))
    return files, third_party


@functools.cache
def code_digest(script: str | Path) -> str:
    """A short digest of the code `script` runs (itself and the package modules it reaches): their
    syntax trees without docstrings and export tables, so comments, formatting, docs and public
    names change nothing."""
    files, _ = reached(script, skip=CONFIG_PLUMBING | {EXPORTS})
    h = hashlib.sha256()
    for path in sorted(files):
        name = path.relative_to(REPO) if path.is_relative_to(REPO) else path
        h.update(name.as_posix().encode())
        h.update(ast.dump(without_docstrings(files[path])).encode())
    return h.hexdigest()[:16]


def without_docstrings(tree: ast.AST) -> ast.AST:
    """A copy of `tree` without the docstrings of its module, classes and functions, and without a
    package's table of public names (`__all__, __getattr__, __dir__ = exports(...)`: what a name
    is imported as changes nothing computed)."""
    tree = copy.deepcopy(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                if isinstance(body[0].value.value, str):
                    body = body[1:]
            node.body = [b for b in body if not _exports(b)] or [ast.Pass()]
    return tree


def _exports(node: ast.AST) -> bool:
    """The statement `__all__, __getattr__, __dir__ = exports(...)` or its import (`_lazy`)."""
    if isinstance(node, ast.ImportFrom) and node.module == "latentstates._lazy":
        return True
    if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
        return False
    target = node.targets[0]
    names = [e.id for e in target.elts if isinstance(e, ast.Name)] if isinstance(target, ast.Tuple) else []
    return names == ["__all__", "__getattr__", "__dir__"]
