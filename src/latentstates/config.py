"""Config validation against the workflow's JSON schema, with defaults filled in.

Light on purpose (yaml + jsonschema only): the Snakefile imports it in every job process.
"""

from __future__ import annotations

import copy
import fnmatch
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from latentstates.columns import (
    EXTRA_FEATURES,
    KNOWN_FEATURES,
    PAPER_FEATURES,
    PER_LAYER_SEPARATOR,
    RESERVED_COLUMNS,
    TRACE_COLUMNS,
    is_feature_pattern,
)
from latentstates.plugins import PluginError, load_function
from latentstates.tasks.image_data import KIND_DATASETS

# Package data (pyproject.toml), so that an installed copy validates configs too.
SCHEMA = resources.files("latentstates") / "schemas" / "config.schema.yaml"


# Sources whose runs arrive as a table of metrics, straight to the HMM: a CSV or Parquet file,
# or a tracker's logs read as one (latentstates.runs.trackers).
TRACKER_SOURCES = ("tensorboard", "mlflow")
TABLE_SOURCES = ("table", *TRACKER_SOURCES)


class ConfigError(ValueError):
    """A config value is invalid; the message names its key."""


def _with_defaults(validator_class):
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft202012Validator)


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _check(instance: Any, schema: dict, prefix: str = "") -> None:
    # Fill defaults first (a pass that may also find errors), then report the most relevant one.
    errors = list(_Validator(schema).iter_errors(instance))
    if errors:
        err = jsonschema.exceptions.best_match(errors)
        key = _key(list(err.absolute_path))
        key = f"{prefix}.{key}" if prefix and key != "<top level>" else (prefix or key)
        raise ConfigError(f"invalid config key '{key}': {err.message}")


def load_schema(path: str | Path | None = None) -> dict:
    """The config schema as a dict: the package's own, or the one at `path`."""
    source = SCHEMA if path is None else Path(path)
    return yaml.safe_load(source.read_text(encoding="utf-8"))


def task_hmm(config: dict, task: str) -> dict:
    """HMM settings of one task: the global ones updated by the task's overrides."""
    return {**config["hmm"], **config["tasks"][task]["hmm"]}


def task_hessian(config: dict, task: str) -> dict:
    """Hessian settings of one task: metrics.hessian updated by the task's overrides."""
    return {**config["metrics"]["hessian"], **config["tasks"][task]["hessian"]}


def task_llc(config: dict, task: str) -> dict:
    """LLC settings of one task: metrics.llc updated by the task's overrides."""
    return {**config["metrics"]["llc"], **config["tasks"][task]["llc"]}


def comparison_hmm(config: dict, name: str) -> dict:
    """HMM settings of one comparison's shared HMM: the global ones updated by its overrides."""
    return {**config["hmm"], **config["comparisons"][name]["hmm"]}


def section_schema(section: str, schema: dict | None = None) -> dict:
    """The schema of one config section: 'hmm' and 'train' (the shared definitions), or a dotted
    path of top-level properties ('forecast', 'metrics.hessian')."""
    schema = schema or load_schema()
    if section in schema["$defs"]:
        sub = schema["$defs"][section]
    else:
        sub = schema
        for part in section.split("."):
            sub = sub["properties"][part]
    return {**sub, "$defs": schema["$defs"]}


def _check_states(hmm: dict, prefix: str) -> None:
    """What the schema cannot say of an hmm section: a fixed K within the selection's range."""
    if hmm["n_states"] is not None and hmm["n_states"] > hmm["max_states"]:
        raise ConfigError(
            f"invalid config key '{prefix}.n_states': {hmm['n_states']} "
            f"exceeds max_states {hmm['max_states']}"
        )


def section_defaults(section: str, overrides: dict | None = None) -> dict:
    """One section filled in with the schema's defaults, `overrides` applied and validated."""
    values = copy.deepcopy(dict(overrides or {}))
    _check(values, section_schema(section), prefix=section)
    if section == "hmm":
        _check_states(values, section)
    return values


def _check_run_path(name: str, task: dict) -> None:
    """A path of runs from elsewhere names each run's files: with {seed} where there are several
    runs (else every run would read the same files), with {step} for Hugging Face directories."""
    path = task["path"]
    if task["seeds"] > 1 and "{seed}" not in path:
        raise ConfigError(
            f"invalid config key 'tasks.{name}.path': {path!r} has no {{seed}}, so its {task['seeds']} "
            "runs would all read the same files; put {seed} where the run's seed is in the path"
        )
    if task["source"] == "huggingface" and "{step}" not in path:
        raise ConfigError(
            f"invalid config key 'tasks.{name}.path': {path!r} has no {{step}} "
            "(one model directory per checkpoint)"
        )


def _check_hub(name: str, hub: dict) -> None:
    """A Hub series names its revisions one way, `steps` or `revisions`, and each revision by
    name has one step of its own."""
    from latentstates.revisions import named_revisions, step_regex

    prefix = f"tasks.{name}.hub"
    given = [key for key in ("steps", "revisions") if key in hub]
    if len(given) != 1:
        raise ConfigError(
            f"invalid config key '{prefix}': give the revisions one way, `steps` (named by `revision`) "
            f"or `revisions` (by name, their steps read by `step_pattern`); it has "
            f"{' and '.join(given) or 'neither'}"
        )
    if "revisions" not in hub:
        return
    try:
        step_regex(hub["step_pattern"])
    except ValueError as exc:
        raise ConfigError(f"invalid config key '{prefix}.step_pattern': {exc}") from None
    try:
        named_revisions(hub)
    except ValueError as exc:
        raise ConfigError(f"invalid config key '{prefix}.revisions': {exc}") from None


def seed_set_name(task: str, i: int) -> str:
    """The task of seed set i (2, 3, ...) of `task` (set 1 is the task itself)."""
    return f"{task}_set{i}"


def _add_seed_sets(config: dict) -> None:
    """Each task with `replicates: n > 1` gets n − 1 further tasks, `<task>_set<i>`, each the same
    task on the next `seeds` seeds, that the HMM stage chooses K on alone. Idempotent: a config
    validated twice has the same tasks."""
    for name, task in list(config["tasks"].items()):
        if task["replicates"] == 1 or task.get("replicate_of"):
            continue
        if task["source"] != "train":
            raise ConfigError(
                f"invalid config key 'tasks.{name}.replicates': only a task trained here has fresh seeds "
                f"for further seed sets (source {task['source']})"
            )
        features = task_hmm(config, name)["features"]
        for i in range(2, task["replicates"] + 1):
            other = seed_set_name(name, i)
            if other in config["tasks"] and config["tasks"][other].get("replicate_of") != name:
                raise ConfigError(
                    f"invalid config key 'tasks.{other}': the name of seed set {i} of task {name} "
                    f"(tasks.{name}.replicates) is taken"
                )
            copy_ = copy.deepcopy(task)
            copy_.update(
                first_seed=task["first_seed"] + (i - 1) * task["seeds"], replicates=1, replicate_of=name
            )
            if "llc" not in features:
                copy_["llc"] = {**copy_["llc"], "enabled": False}
            if not {"hessian_top_eig", *TRACE_COLUMNS} & set(features):
                copy_["hessian"] = {**copy_["hessian"], "enabled": False}
            config["tasks"][other] = copy_


def _check_custom_metrics(entries: list[dict]) -> None:
    """Each `metrics.custom` function importable and callable, its columns new names."""
    taken: dict[str, str] = {}
    for i, entry in enumerate(entries):
        key = f"metrics.custom.{i}"
        try:
            load_function(entry["function"])
        except PluginError as exc:
            raise ConfigError(f"invalid config key '{key}.function': {exc}") from None
        for column in entry["columns"]:
            if column in RESERVED_COLUMNS:
                raise ConfigError(
                    f"invalid config key '{key}.columns': {column!r} is a column the workflow writes "
                    f"itself; name the plug-in's columns otherwise"
                )
            if column in taken:
                raise ConfigError(f"invalid config key '{key}.columns': {column!r} is also {taken[column]}'s")
            taken[column] = key


def _check_features(config: dict, features: list[str], key: str, tasks: list[str]) -> None:
    """The HMM's `features` (config key `key`) are columns the metrics stage writes for the runs
    of `tasks` (the trace's where their Hessian settings have `trace_probes`), and a column
    computed at every stride-th checkpoint only (the Hessian's, the LLC's) is one at every
    checkpoint: NaN between would leave every run out of the fit."""
    hessians = {t: task_hessian(config, t) for t in tasks}
    traced = all(h["trace_probes"] > 0 for h in hessians.values())
    strided = {
        "metrics.hessian": ({"hessian_top_eig", *TRACE_COLUMNS}, hessians),
        "metrics.llc": ({"llc"}, {t: task_llc(config, t) for t in tasks}),
    }
    for section, (columns, settings) in strided.items():
        sparse = [t for t, v in settings.items() if not (v["enabled"] and v["stride"] == 1)]
        named = sorted(columns & set(features))
        if named and sparse:
            raise ConfigError(
                f"invalid config key '{key}': {named} are computed only where {section} (or the "
                f"task's own) is enabled, at every stride-th checkpoint (NaN between); as HMM "
                f"features they need enabled: true and stride: 1 (tasks {sparse})"
            )
    custom = [c for entry in config["metrics"]["custom"] for c in entry["columns"]]
    known = [*KNOWN_FEATURES, *config["metrics"]["extra"], *custom, *(TRACE_COLUMNS if traced else [])]
    features = _check_per_layer_features(config, features, key, known)
    off = [f for f in features if f in EXTRA_FEATURES and f not in known]
    if off:
        raise ConfigError(
            f"invalid config key '{key}': {off} are measured only where metrics.extra lists them"
        )
    if any(f in TRACE_COLUMNS and f not in known for f in features):
        raise ConfigError(
            f"invalid config key '{key}': the Hessian's trace is measured only where "
            f"metrics.hessian.trace_probes (or the task's hessian.trace_probes) is above 0"
        )
    unknown = sorted(set(features) - set(known))
    if unknown:
        raise ConfigError(
            f"invalid config key '{key}': {unknown} are not metrics of the workflow (known: {known})"
        )


def _check_per_layer_features(config: dict, features: list[str], key: str, known: list[str]) -> list[str]:
    """Per-layer features (`l2@block3`) and patterns (`l2@block*`, `*_b`) checked as far as the
    config tells (a layer group's name only the metrics table does: the HMM stage checks it); the
    other features, for the caller's checks."""
    per_layer = config["metrics"]["per_layer"]
    statistics = [*PAPER_FEATURES, *config["metrics"]["extra"]]
    rest = []
    for feature in features:
        if PER_LAYER_SEPARATOR not in feature:
            if not is_feature_pattern(feature):
                rest.append(feature)
            elif not any(fnmatch.fnmatchcase(c, feature) for c in known):
                raise ConfigError(f"invalid config key '{key}': pattern {feature!r} matches none of {known}")
            continue
        if not per_layer:
            raise ConfigError(
                f"invalid config key '{key}': {feature!r} is a per-layer statistic (statistic"
                f"{PER_LAYER_SEPARATOR}group), measured only where metrics.per_layer is blocks or parts"
            )
        statistic = feature.split(PER_LAYER_SEPARATOR, 1)[0]
        if not any(fnmatch.fnmatchcase(s, statistic) for s in statistics):
            raise ConfigError(
                f"invalid config key '{key}': {feature!r}: {statistic!r} is not a per-layer statistic "
                f"(those of metrics.per_layer: {statistics})"
            )
    return rest


def _check_per_layer_architectures(config: dict) -> None:
    """metrics.per_layer: parts needs every imported series' architecture to name its parts."""
    if config["metrics"]["per_layer"] != "parts":
        return
    for name, task in config["tasks"].items():
        if task.get("architecture") == "auto":
            raise ConfigError(
                f"invalid config key 'tasks.{name}.architecture': auto does not split layers into "
                f"attention and MLP, as metrics.per_layer: parts needs; use metrics.per_layer: blocks, "
                f"or name the architecture (bert, gpt_neox, gpt2, llama)"
            )


def check_task_spec(spec: dict) -> None:
    """A run record's spec of a registered kind (kind, data, model, data_seed) as the config
    schema allows it in a task; raises ConfigError naming the key."""
    task = {"source": "checkpoints", "path": "-", "seeds": 1, **copy.deepcopy(spec)}
    _check(task, section_schema("task"))


def validate_config(config: dict, schema_path: str | Path | None = None) -> dict:
    """Validated copy of `config` with defaults filled in; raises ConfigError naming the key."""
    schema = load_schema(schema_path)
    config = copy.deepcopy(config)
    _check(config, schema)
    _check_custom_metrics(config["metrics"]["custom"])
    _check_per_layer_architectures(config)
    hmm_schema, hessian_schema = section_schema("hmm", schema), section_schema("metrics.hessian", schema)
    llc_schema = section_schema("metrics.llc", schema)
    for name, task in config["tasks"].items():
        if task.get("kind") in KIND_DATASETS and task["source"] not in TABLE_SOURCES:
            task["data"].setdefault("dir", config["data_dir"])
        _check(task_hessian(config, name), hessian_schema, prefix=f"tasks.{name}.hessian")
        _check(task_llc(config, name), llc_schema, prefix=f"tasks.{name}.llc")
        merged = task_hmm(config, name)
        _check(merged, hmm_schema, prefix=f"tasks.{name}.hmm")
        _check_states(merged, f"tasks.{name}.hmm")
        if task["source"] not in TABLE_SOURCES:
            _check_features(config, merged["features"], f"tasks.{name}.hmm.features", [name])
        performance = str(task.get("performance") or "")
        if task.get("lm_eval") and performance.endswith((".csv", ".parquet", ".pq")):
            raise ConfigError(
                f"invalid config key 'tasks.{name}.lm_eval': names metrics of lm-evaluation-harness "
                f"results, but the task's performance {performance} is a table, whose columns "
                "eval_acc and eval_loss are read by name; remove lm_eval or point performance at the "
                "results' directory"
            )
        if task.get("write_states") and task["source"] != "tensorboard":
            raise ConfigError(
                f"invalid config key 'tasks.{name}.write_states': the states are written back to "
                f"TensorBoard for a tensorboard source only (this task's source is {task['source']})"
            )
        if task["source"] in TRACKER_SOURCES and "features" in task["hmm"]:
            unknown = [f for f in task["hmm"]["features"] if f not in task["scalars"]]
            if unknown:
                raise ConfigError(
                    f"invalid config key 'tasks.{name}.hmm.features': {unknown} are not among the "
                    f"task's scalars {list(task['scalars'])}"
                )
        if task["source"] in ("checkpoints", "runs", "huggingface") and "path" in task:
            _check_run_path(name, task)
        if task.get("hub"):
            _check_hub(name, task["hub"])
        if task.get("kind") == "modular_addition" and task["model"]["d_model"] % task["model"]["n_heads"]:
            raise ConfigError(f"invalid config key 'tasks.{name}.model.n_heads': must divide d_model")
    _add_seed_sets(config)
    for name, comparison in config["comparisons"].items():
        prefix = f"comparisons.{name}"
        unknown = [t for t in comparison["tasks"] if t not in config["tasks"]]
        if unknown:
            raise ConfigError(
                f"invalid config key '{prefix}.tasks': {unknown} are not tasks of the config "
                f"(tasks: {sorted(config['tasks'])})"
            )
        merged = comparison_hmm(config, name)
        _check(merged, hmm_schema, prefix=f"{prefix}.hmm")
        _check_states(merged, f"{prefix}.hmm")
        trained = [t for t in comparison["tasks"] if config["tasks"][t]["source"] not in TABLE_SOURCES]
        if trained:
            _check_features(config, merged["features"], f"{prefix}.hmm.features", trained)
    return config


def read_yaml(path: str | Path) -> Any:
    """A YAML file's content; a syntax error names the file, line and column."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config ({exc})") from exc
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = " ".join(p for p in (exc.context, exc.problem) if p)
        raise ConfigError(f"{path}: {where}not valid YAML ({what})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None


def load_config(path: str | Path) -> dict:
    """Read and validate a YAML config file, naming the file on failure."""
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: config must be a mapping")
    return validate_config(raw)
