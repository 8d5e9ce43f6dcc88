"""The configuration reference (docs/configuration.md), generated from the config schema.

Run `python -m latentstates.config_reference > docs/configuration.md` after changing the schema;
tests/test_docs.py fails while the two differ.
"""

from __future__ import annotations

import json
from typing import Any

from latentstates.config import load_schema

HEADER = """\
# Configuration reference

<!-- Generated from the config schema by `python -m latentstates.config_reference >
docs/configuration.md`; do not edit by hand (tests/test_docs.py checks that it is current). -->

A config file (the default is `config.yaml`; the paper's experiments are `configs/paper.yaml`) is
validated against the package's schema (`latentstates.config.load_schema()`) before any job runs.
Missing keys get the defaults below; a bad value stops the workflow with one line naming the key,
e.g. `invalid config key 'tasks.sparse_parity.seeds': -2 is less than the minimum of 1`. No keys
other than those listed are accepted.

Columns: **key** is the path of the key (`<name>` stands for any task name); **type** the YAML
type; **default** what is filled in when the key is missing ("required" where it must be given,
"—" where it is optional and has no default); **allowed** the values or range accepted.
"""

TASK = "tasks.<name>"
COMPARISON = "comparisons.<name>"


def _ref(schema: dict, defs: dict) -> dict:
    """`schema` with a `$ref` into `$defs` resolved (its own keys take precedence)."""
    if "$ref" not in schema:
        return schema
    target = defs[schema["$ref"].rsplit("/", 1)[-1]]
    return {**target, **{k: v for k, v in schema.items() if k != "$ref"}}


def _code(value: Any) -> str:
    return f"`{json.dumps(value)}`" if not isinstance(value, str) else f"`{value}`"


def _type(schema: dict) -> str:
    kinds = schema.get("type")
    if kinds is None and "enum" in schema:
        names = {"bool": "boolean", "str": "string", "int": "integer", "float": "number"}
        kinds = sorted({names[type(v).__name__] for v in schema["enum"]})
    if kinds is None:
        return "any"
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    if "array" in kinds and "items" in schema:
        item = schema["items"].get("type", "any")
        kinds = [f"array of {item}" if k == "array" else k for k in kinds]
    return " or ".join(kinds)


def _allowed(schema: dict) -> str:
    parts = []
    if "enum" in schema:
        parts.append(", ".join(_code(v) for v in schema["enum"]))
    bounds = [
        ("minimum", "≥"),
        ("exclusiveMinimum", ">"),
        ("maximum", "≤"),
        ("exclusiveMaximum", "<"),
    ]
    parts += [f"{sign} {schema[key]:g}" for key, sign in bounds if key in schema]
    items = schema.get("items", {})
    parts += [f"each {sign} {items[key]:g}" for key, sign in bounds if key in items]
    if schema.get("minItems") is not None and schema.get("minItems") == schema.get("maxItems"):
        parts.append(f"exactly {schema['minItems']} items")
    else:
        if "minItems" in schema:
            parts.append(f"at least {schema['minItems']} item{'s' * (schema['minItems'] != 1)}")
        if "maxItems" in schema:
            parts.append(f"at most {schema['maxItems']} items")
    if schema.get("uniqueItems"):
        parts.append("no duplicates")
    if "pattern" in schema:
        parts.append(f"matches `{schema['pattern']}`")
    return "; ".join(parts) or "—"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _row(key: str, schema: dict, required: bool) -> str:
    if "default" in schema:
        default = _code(schema["default"])
    else:
        default = "required" if required else "—"
    description = _cell(schema.get("description", ""))
    return f"| `{key}` | {_type(schema)} | {default} | {_cell(_allowed(schema))} | {description} |"


def _rows(schema: dict, prefix: str, defs: dict, required: tuple[str, ...] = ()) -> list[str]:
    """One row per key of an object schema, nested objects' keys under their dotted path."""
    out = []
    required = tuple(schema.get("required", ())) + required
    for name, sub in schema.get("properties", {}).items():
        sub = _ref(sub, defs)
        key = f"{prefix}.{name}" if prefix else name
        if sub.get("properties"):
            out += _rows(sub, key, defs)
        else:
            out.append(_row(key, sub, name in required))
    return out


def _table(rows: list[str]) -> str:
    head = "| key | type | default | allowed | description |\n|---|---|---|---|---|\n"
    return head + "\n".join(rows) + "\n"


def _conditions(task: dict) -> tuple[dict[str, list[str]], dict[str, dict]]:
    """The task's if/then rules: required keys per source, data/model schemas per kind."""
    required: dict[str, list[str]] = {}
    per_kind: dict[str, dict] = {}
    for rule in task.get("allOf", []):
        (field, cond), *_ = rule["if"]["properties"].items()
        value = cond["const"]
        if field == "source" and "required" in rule["then"]:
            either = [r["required"][0] for r in rule["then"].get("oneOf", [])]
            required[value] = rule["then"]["required"] + (["|".join(either)] if either else [])
        elif field == "kind":
            per_kind[value] = rule["then"]["properties"]
    return required, per_kind


def render(schema: dict | None = None) -> str:
    """The Markdown configuration reference of `schema` (default: the package's)."""
    schema = schema or load_schema()
    defs = schema["$defs"]
    top = schema["properties"]
    sections = [HEADER]

    scalars = {
        k: v
        for k, v in top.items()
        if not _ref(v, defs).get("properties") and k not in ("tasks", "comparisons")
    }
    sections.append(
        "## Top-level keys\n\n"
        + _table(_rows({"properties": scalars}, "", defs, tuple(schema.get("required", ()))))
        + "\n`tasks` (required, at least one entry) maps task names to task definitions "
        + f"([below](#tasks)); a name {_allowed(top['tasks']['propertyNames'])}.\n"
    )
    for name, sub in top.items():
        sub = _ref(sub, defs)
        if name == "tasks" or not sub.get("properties"):
            continue
        text = f"## `{name}`\n\n"
        if sub.get("description"):
            text += _cell(sub["description"]) + "\n\n"
        if name == "hmm":
            text += f"Global HMM settings; a task's `{TASK}.hmm` overrides any of them.\n\n"
        sections.append(text + _table(_rows(sub, name, defs)))

    task = defs["task"]
    required, per_kind = _conditions(task)
    own = {k: v for k, v in task["properties"].items() if k not in ("train", "data", "model")}

    def keys_text(keys: list[str]) -> str:  # "a|b" is one of a or b
        return ", ".join(" or ".join(f"`{a}`" for a in k.split("|")) for k in keys)

    by_source = "\n".join(
        f"- `source: {source}` requires {keys_text(keys)}." for source, keys in required.items()
    )
    sections.append(
        "## `tasks`\n\n"
        f"Each entry `{TASK}` defines one group of runs. Which keys are required depends on its "
        f"`source`:\n\n{by_source}\n\n"
        + _table(_rows({"properties": own}, TASK, defs))
        + f"\n`{TASK}.data` and `{TASK}.model` depend on the task's `kind` (below).\n"
    )
    hessian = ", ".join(f"`{k}`" for k in top["metrics"]["properties"]["hessian"]["properties"])
    hmm = ", ".join(f"`{k}`" for k in defs["hmm"]["properties"])
    sections.append(
        "### Per-task overrides\n\n"
        f"- `{TASK}.hmm`: any key of [`hmm`](#hmm) ({hmm}); the task's value replaces the global "
        "one and the merged settings are validated as `hmm` is.\n"
        f"- `{TASK}.hessian`: any key of [`metrics.hessian`](#metrics) ({hessian}), validated the "
        "same way.\n"
        f"- `{TASK}.seeds_per_job`: replaces the global `seeds_per_job`.\n"
    )
    sections.append(
        f"### `{TASK}.train`\n\nThe training recipe of a task with `source: train`.\n\n"
        + _table(_rows(_ref(task["properties"]["train"], defs), f"{TASK}.train", defs))
    )
    kinds = task["properties"]["kind"]["enum"]
    for kind in kinds:
        props = per_kind.get(kind, {})
        rows = []
        for part in ("data", "model"):
            if part in props:
                rows += _rows(props[part], f"{TASK}.{part}", defs)
        text = f"### `kind: {kind}`: `data` and `model`\n\n"
        sections.append(text + (_table(rows) if rows else "No settings.\n"))
    comparison = defs["comparison"]
    sections.append(
        f"## `comparisons`\n\n{_cell(top['comparisons']['description'])}\n\n"
        f"Each entry `{COMPARISON}` (a name {_allowed(top['comparisons']['propertyNames'])}) "
        "compares the runs of two or more tasks; none by default.\n\n"
        + _table(_rows(comparison, COMPARISON, defs))
    )
    return "\n".join(sections)


def main(argv: list[str] | None = None) -> int:
    """Print the configuration reference (`latentstates config-reference > docs/configuration.md`)."""
    import argparse

    argparse.ArgumentParser(prog="latentstates config-reference", description=__doc__).parse_args(argv)
    print(render(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
