"""Metric plug-ins (`metrics.custom`): a user's function, found by `module:function` or
`path/to/file.py:function`, and a digest of its file (standard library only: the config check and
the Snakefile import it).

The function receives one checkpoint's weights as an iterable of layers, each with `matrices`,
`biases` and `kernels` (sequences of tensors, as the built-in statistics read them: a registered
task's model as one layer, a language model block by block, never held whole) and returns a
mapping of its declared column names to numbers.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path

from latentstates.provenance import without_docstrings


class PluginError(ValueError):
    """A plug-in that cannot be found, loaded or called as declared."""


def split_spec(spec: str) -> tuple[str, str]:
    """(`module or file`, `function`) of a `metrics.custom[].function` entry."""
    target, sep, name = spec.rpartition(":")
    if not sep or not target or not name.isidentifier():
        raise PluginError(f"{spec!r} is not module:function or path/to/file.py:function")
    return target, name


def _is_file(target: str) -> bool:
    return target.endswith(".py") or os.sep in target or "/" in target


def source_file(spec: str, base: str | Path | None = None) -> Path:
    """The file that defines `spec`'s function's module (found, not run, where it is a top-level
    module; a dotted module's packages are imported to find it)."""
    target, _ = split_spec(spec)
    base = Path(base or os.getcwd())
    if _is_file(target):
        path = Path(target) if Path(target).is_absolute() else base / target
        if not path.is_file():
            raise PluginError(f"{spec!r}: no file {path}")
        return path.resolve()
    _importable_from(base)
    try:
        found = importlib.util.find_spec(target)
    except (ImportError, ValueError) as exc:
        raise PluginError(f"{spec!r}: cannot find module {target!r} ({exc})") from None
    if found is None or not found.origin or not Path(found.origin).is_file():
        raise PluginError(
            f"{spec!r}: no module {target!r} in the working directory {base} or the environment"
        )
    return Path(found.origin).resolve()


def load_function(spec: str, base: str | Path | None = None) -> Callable:
    """The function `spec` names, its module imported (a file by path, a module from the working
    directory or the environment); PluginError says what is missing."""
    target, name = split_spec(spec)
    path = source_file(spec, base)
    try:
        if _is_file(target):
            module_name = "latentstates_plugin_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
            module = sys.modules.get(module_name)
            if module is None:
                loader_spec = importlib.util.spec_from_file_location(module_name, path)
                module = importlib.util.module_from_spec(loader_spec)
                sys.modules[module_name] = module
                try:
                    loader_spec.loader.exec_module(module)
                except BaseException:
                    del sys.modules[module_name]
                    raise
        else:
            module = importlib.import_module(target)
    except Exception as exc:  # the user's module failed while importing: say where
        raise PluginError(f"{spec!r}: importing {path} failed ({type(exc).__name__}: {exc})") from exc
    fn = getattr(module, name, None)
    if fn is None:
        raise PluginError(f"{spec!r}: {path} defines no {name!r}")
    if not callable(fn):
        raise PluginError(f"{spec!r}: {name!r} in {path} is not callable")
    return fn


def plugin_digest(specs: list[str], base: str | Path | None = None) -> str:
    """A short digest of the plug-ins' files (their syntax trees without docstrings, so comments,
    formatting and docs change nothing): the metrics rule's code param, so that editing a
    plug-in reruns the metrics and what follows. Empty without plug-ins."""
    if not specs:
        return ""
    h = hashlib.sha256()
    for spec in specs:
        path = source_file(spec, base)
        h.update(spec.encode())
        h.update(ast.dump(without_docstrings(ast.parse(path.read_text(encoding="utf-8")))).encode())
    return h.hexdigest()[:16]


def _importable_from(base: Path) -> None:
    """Modules in the working directory importable (after the environment's: a plug-in named
    like an installed package does not shadow it)."""
    if str(base) not in sys.path:
        sys.path.append(str(base))
