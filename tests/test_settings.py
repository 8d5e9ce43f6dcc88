"""Typed settings: built from the validated config, defaults from the schema only."""

import dataclasses

import pytest

from latentstates.config import ConfigError, load_schema, validate_config
from latentstates.settings import (
    AnalysisSettings,
    ComparisonSettings,
    ForecastSettings,
    HessianSettings,
    HMMSettings,
    TrainSettings,
)


def _schema_defaults(section: dict) -> dict:
    return {name: sub["default"] for name, sub in section["properties"].items() if "default" in sub}


def test_defaults_are_the_schemas():
    schema = load_schema()
    assert HMMSettings.defaults().to_dict() == _schema_defaults(schema["$defs"]["hmm"])
    assert ForecastSettings.defaults().to_dict() == _schema_defaults(schema["properties"]["forecast"])
    assert AnalysisSettings.defaults().to_dict() == _schema_defaults(schema["properties"]["analysis"])
    hessian = schema["properties"]["metrics"]["properties"]["hessian"]
    assert HessianSettings.defaults().to_dict() == _schema_defaults(hessian)


def test_every_schema_key_is_a_field():
    schema = load_schema()
    sections = {
        HMMSettings: schema["$defs"]["hmm"],
        TrainSettings: schema["$defs"]["train"],
        ForecastSettings: schema["properties"]["forecast"],
        AnalysisSettings: schema["properties"]["analysis"],
        HessianSettings: schema["properties"]["metrics"]["properties"]["hessian"],
    }
    for cls, section in sections.items():
        assert {f.name for f in dataclasses.fields(cls)} == set(section["properties"]), cls.__name__
    # A comparison's `hmm` overrides become HMMSettings.of_comparison, the rest its own settings.
    fields = {f.name for f in dataclasses.fields(ComparisonSettings)}
    assert fields | {"hmm"} == set(schema["$defs"]["comparison"]["properties"])


def test_a_task_overrides_the_global_section(tiny_task):
    config = validate_config(
        {"hmm": {"restarts": 3}, "metrics": {"hessian": {"stride": 2}}, "tasks": {"t": tiny_task}}
    )
    config["tasks"]["t"]["hmm"] = {"restarts": 5}
    config["tasks"]["t"]["hessian"] = {"stride": 4}
    assert HMMSettings.of_task(config, "t").restarts == 5
    assert HessianSettings.of_task(config, "t").stride == 4
    assert TrainSettings.of_task(config, "t").epochs == tiny_task["train"]["epochs"]
    assert ForecastSettings.from_config(config) == ForecastSettings.defaults()


def test_settings_are_frozen_and_hashable():
    s = HMMSettings.defaults(restarts=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.restarts = 3
    assert s.replace(restarts=3).restarts == 3 and s.restarts == 2
    assert isinstance(s.features, tuple) and hash(s) == hash(HMMSettings.defaults(restarts=2))
    assert s.to_dict()["features"] == list(s.features)


def test_a_bad_override_names_the_key():
    with pytest.raises(ConfigError, match="'hmm.restarts'"):
        HMMSettings.defaults(restarts=0)
    with pytest.raises(ConfigError, match="lacks"):
        HMMSettings.from_dict({"restarts": 2})


def test_every_field_has_its_gist_beside_it_and_the_schemas_description():
    """Each settings field is documented where it is defined (a comment beside it) and fully in the
    schema, from which docs/configuration.md is generated."""
    import inspect
    import re

    from latentstates import settings
    from latentstates.config import section_schema

    classes = [
        c
        for c in vars(settings).values()
        if isinstance(c, type) and dataclasses.is_dataclass(c) and issubclass(c, settings._Settings)
    ]
    assert len(classes) >= 8
    for cls in classes:
        source = inspect.getsource(cls)
        described = section_schema(cls.SECTION)["properties"]
        for f in dataclasses.fields(cls):
            assert re.search(rf"^    {f.name}: [^\n]+  # \S", source, re.M), (
                f"{cls.__name__}.{f.name}: no comment"
            )
            assert described[f.name].get("description"), f"schema {cls.SECTION}.{f.name}: no description"
