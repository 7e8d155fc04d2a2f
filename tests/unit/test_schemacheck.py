"""The shipped JSON Schema is itself valid, and its two validators always agree."""

from __future__ import annotations

import importlib
import json
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from runbook.schemacheck import SCHEMAS, checker
from tests.support.paths import ROOT


def test_schema_is_valid_against_the_2020_12_metaschema() -> None:
    schema = json.loads((ROOT / "schemas" / "plan.schema.json").read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


def test_repo_schema_is_the_packaged_schema() -> None:
    packaged = resources.files("runbook").joinpath("schemas/plan.schema.json").read_text()
    assert (ROOT / "schemas" / "plan.schema.json").read_text() == packaged


def test_every_property_has_editor_help() -> None:
    schema = json.loads((ROOT / "schemas" / "plan.schema.json").read_text())
    defs = schema["$defs"]

    def check(properties: dict) -> None:
        for name, prop in properties.items():
            target = defs[prop["$ref"].split("/")[-1]] if "$ref" in prop else prop
            assert target.get("title") and target.get("description"), name

    check(schema["properties"])
    check(schema["properties"]["api"]["properties"])
    check(schema["properties"]["defaults"]["properties"])
    check(defs["step"]["properties"])
    check(defs["notify_target"]["properties"])
    check(schema["properties"]["healthchecks"]["properties"])


def test_examples_carry_the_schema_comment() -> None:
    for path in (ROOT / "examples").glob("*.yaml"):
        first = path.read_text().splitlines()[0]
        assert first == "# yaml-language-server: $schema=../schemas/plan.schema.json", path
        assert (path.parent / "../schemas/plan.schema.json").resolve().is_file()


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 200),
    st.floats(allow_nan=False),
    st.sampled_from(
        [
            "",
            "x",
            "1",
            "0s",
            "5s",
            "1h30m",
            "stop",
            "continue",
            "a",
            "b",
            "https://h/api",
            "ftp://h",
            "BAD NAME",
            "A_B",
            "1.5",
            ".5s",
            "0.0s",
        ]
    ),
)
keys = st.sampled_from(
    [
        "version",
        "name",
        "description",
        "api",
        "max_parallel",
        "defaults",
        "workflows",
        "workflow_id",
        "depends_on",
        "on_failure",
        "retries",
        "retry_delay",
        "timeout",
        "poll_interval",
        "max_poll_interval",
        "base_url",
        "token_env",
        "a",
        "b",
        "1st",
        "token",
    ]
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)
steps = st.fixed_dictionaries(
    {"workflow_id": st.one_of(st.integers(-1, 3), scalars)},
    optional={
        key: values
        for key in (
            "depends_on",
            "on_failure",
            "retries",
            "retry_delay",
            "timeout",
            "poll_interval",
            "max_poll_interval",
        )
    },
)
plans = st.fixed_dictionaries(
    {
        "version": st.one_of(st.just(1), scalars),
        "workflows": st.one_of(
            st.dictionaries(st.sampled_from(["a", "b", "c.d", "1st", "e f"]), steps, max_size=3),
            values,
        ),
    },
    optional={
        "name": values,
        "api": st.dictionaries(keys, scalars, max_size=2),
        "max_parallel": values,
        "defaults": st.dictionaries(keys, scalars, max_size=3),
        "nmae": scalars,
    },
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plans)
def test_fast_and_full_validators_agree(data: dict) -> None:
    plan_checker = checker("plan")
    full = Draft202012Validator(plan_checker.schema)
    assert plan_checker.is_valid(data) == full.is_valid(data)


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=str)
def test_examples_pass_both_validators(path: Path) -> None:
    import yaml

    data = yaml.safe_load(path.read_text())
    assert checker("plan").is_valid(data)
    assert Draft202012Validator(checker("plan").schema).is_valid(data)


@pytest.mark.parametrize("name", SCHEMAS)
def test_each_schema_s_validator_is_compiled_ahead_from_the_schema_as_shipped(name: str) -> None:
    from runbook.schemacheck import _digest, schema_text

    module = importlib.import_module(f"runbook.schemas.{name}_check")
    assert _digest(schema_text(name)) == module.SCHEMA_SHA256, (
        f"runbook/schemas/{name}_check.py was made from another {name}.schema.json: "
        "run python -m runbook.schemacheck"
    )
    assert checker(name)._fast is module.validate  # the run uses it, compiling nothing


def test_a_validator_made_from_another_schema_is_not_used() -> None:
    from runbook.schemacheck import SchemaChecker, compiled_validator, schema_text

    text = schema_text("plan")
    assert compiled_validator("plan", text) is not None
    assert compiled_validator("plan", text.replace("max_parallel", "max_paralel")) is None
    assert compiled_validator("no-such-schema", text) is None
    compiled_now = SchemaChecker(json.loads(text))  # compiled as the run starts, as before
    assert compiled_now.is_valid({"version": 1, "workflows": {"a": {"workflow_id": 1}}})
    assert not compiled_now.is_valid({"version": 1, "workflows": {"a": {"workflow_id": "1"}}})


def test_the_generated_source_is_a_working_validator() -> None:
    from runbook.schemacheck import compiled_source

    source = compiled_source("scenario")
    assert source.splitlines()[0].startswith('"""The validator of ``scenario.schema.json``')
    space: dict = {}
    exec(compile(source, "scenario_check.py", "exec"), space)
    import fastjsonschema

    space["validate"]({"seed": 1})
    with pytest.raises(fastjsonschema.JsonSchemaException):
        space["validate"]({"seed": "one"})
