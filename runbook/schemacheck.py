"""JSON Schema checks of a YAML document, with every violation placed on its node.

jsonschema is the reference: it finds every violation and its path. It costs about
0.1 ms a step, so a compiled validator (fastjsonschema) answers first, and only a
document it rejects is walked by jsonschema for the full list. The two must agree;
``tests/unit/test_schemacheck.py`` checks that they do.

Compiling a validator costs some 30 ms, every run, for a plan of any size: each shipped
schema's validator is therefore compiled ahead, into ``runbook/schemas/<name>_check.py``
(``python -m runbook.schemacheck`` writes them), headed by the digest of the schema it
was made from. A module whose digest is not the schema's is not used: the validator is
then compiled as the run starts, as before.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from importlib import resources
from typing import Any

from runbook.errors import Problem
from runbook.text import did_you_mean, quoted_list
from runbook.yamldoc import Document, YamlPath

__all__ = ["SchemaChecker", "checker", "describe", "show", "where"]

_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}

# Keys whose misplacement deserves more than "unknown key".
_KEY_HINTS = {
    "token": "a plan never holds a token: put it in an environment variable and name "
    "that variable with api.token_env",
    "depends_on": "depends_on belongs to each step, not to defaults",
    "workflow_id": "workflow_id belongs to each step, not to defaults",
    "run_if": "run_if belongs to each step, not to defaults: say on each clean-up, rollback "
    "or alert step when it runs",
    "schedule": "a plan has no schedule of its own: run apply from cron (0 3 * * * runbook "
    "apply plan.yaml --quiet), or give the schedule to runbook export airflow --schedule",
}
_URL_HINT = (
    "a plan never holds a {what} URL (it is a secret): put it in an environment variable "
    "and name that variable with {key}"
)
for _key in ("url", "webhook", "webhook_url"):
    _KEY_HINTS[_key] = _URL_HINT.format(what="webhook", key="webhook_env")
for _key in ("ping_url",):
    _KEY_HINTS[_key] = _URL_HINT.format(what="ping", key="ping_url_env")


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.-]{1,60}")


def where(path: YamlPath, data: Any = None) -> str:
    """``workflows.transform.depends_on[1]`` for a path of keys and indices.

    With the document's ``data``, an integer is shown as a list index only where the
    path goes through a list (``workflows.42`` is a mapping key in a scenario).
    """
    text = ""
    node = data
    for part in path:
        index = isinstance(node, list) if data is not None else isinstance(part, int)
        if not index and isinstance(part, str) and not _PLAIN_KEY.fullmatch(part):
            part = show(part)  # quoted, escaped, shortened: never raw control characters
        text += f"[{part}]" if index else (f".{part}" if text else str(part))
        try:
            node = node[part] if node is not None else None
        except (KeyError, IndexError, TypeError):
            node = None
    return text


def show(value: Any) -> str:
    """A value as a message quotes it: ``'abc'``, ``3``, ``true``, ``null``, ``a list``."""
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return "a list" if isinstance(value, list) else "a mapping"


def describe(value: Any) -> str:
    """What a value is, for "expected X, got Y": ``the string '3'``, ``a list``."""
    if isinstance(value, str):
        return f"the string {show(value)}"
    if isinstance(value, bool) or value is None:
        return show(value)
    if isinstance(value, (int, float)):
        return f"the number {show(value)}"
    return show(value)


class SchemaChecker:
    """Checks documents against one JSON Schema and explains what is wrong, in place."""

    def __init__(
        self, schema: Mapping[str, Any], compiled: Callable[[Any], Any] | None = None
    ) -> None:
        self.schema = schema
        self._fast = compiled
        self._full: Any = None

    def is_valid(self, data: Any) -> bool:
        """The compiled validator's answer: fast, no explanation."""
        import fastjsonschema

        if self._fast is None:
            self._fast = fastjsonschema.compile(dict(self.schema))
        try:
            self._fast(data)
        except fastjsonschema.JsonSchemaException:
            return False
        return True

    def problems(self, doc: Document) -> tuple[list[Problem], set[YamlPath]]:
        """Every violation as a placed problem, and the paths of the values at fault."""
        if self.is_valid(doc.data):
            return [], set()
        return self.full_problems(doc)

    def full_problems(self, doc: Document) -> tuple[list[Problem], set[YamlPath]]:
        """Like :meth:`problems`, asking jsonschema alone."""
        if self._full is None:
            from jsonschema import Draft202012Validator

            self._full = Draft202012Validator(self.schema)
        problems: dict[tuple[int, int, str], Problem] = {}
        bad: set[YamlPath] = set()
        for error in self._full.iter_errors(doc.data):
            path = tuple(error.absolute_path)
            bad.add(path)
            for problem in self._explain(doc, error, path):
                problems.setdefault((problem.line, problem.column, problem.message), problem)
        return list(problems.values()), bad

    def _explain(self, doc: Document, error: Any, path: YamlPath) -> Iterator[Problem]:
        schema, validator, instance = error.schema, error.validator, error.instance
        prefix = f"{where(path, doc.data)}: " if path else ""
        fitting = _fitting_branch(error) if validator in ("anyOf", "oneOf") else None
        if fitting:
            # the value is of the one branch's kind (a mapping, a list): explain what is
            # wrong inside it (an item, an empty list), not that it matches no branch
            for sub in fitting:
                yield from self._explain(doc, sub, tuple(sub.absolute_path))
        elif "propertyNames" in error.schema_path:
            message = schema.get("patternErrorMessage", "is not a valid name")
            if validator == "type":
                message = "is not a valid name: names must be text"
            yield doc.problem((*path, instance), f"{prefix}{show(instance)} {message}", key=True)
        elif validator == "additionalProperties" and schema.get("additionalProperties") is False:
            known = list(schema.get("properties", {}))
            for key in instance:
                if key not in known:
                    message = prefix + _unknown_key(key, known, instance[key])
                    yield doc.problem((*path, key), message, key=True)
        elif validator == "required":
            for key in error.validator_value:
                if key not in instance:
                    yield doc.problem(path, f"{prefix}missing required key '{key}'")
        elif validator == "pattern" and "patternErrorMessage" in schema:
            yield doc.problem(path, f"{prefix}{show(instance)} {schema['patternErrorMessage']}")
        elif "errorMessage" in schema:
            hint = self._hint(schema, instance)
            yield doc.problem(path, f"{prefix}{show(instance)} {schema['errorMessage']}{hint}")
        else:
            yield doc.problem(
                path, prefix + _message(validator, error.validator_value, instance, error.message)
            )

    def _hint(self, schema: Mapping[str, Any], instance: Any) -> str:
        """``; did you mean 'x'?`` for a value close to one the schema takes: one of its
        choices (``failure`` for ``failed``), or a duration written in capitals (``2H``)."""
        if not isinstance(instance, str):
            return ""
        choices = list(schema.get("enum", ()))
        for option in [*schema.get("anyOf", ()), *schema.get("oneOf", ())]:
            ref = option.get("$ref", "") if isinstance(option, Mapping) else ""
            if ref.startswith("#/$defs/"):
                choices += self.schema["$defs"][ref.removeprefix("#/$defs/")].get("enum", ())
        if choices:
            return did_you_mean(instance, [str(choice) for choice in choices])
        if "duration" in str(schema.get("errorMessage")) and instance != instance.lower():
            from runbook.durations import parse_duration

            try:
                seconds = parse_duration(instance.lower())
            except ValueError:
                return ""
            if seconds <= 0 and "greater than 0" in str(schema.get("errorMessage")):
                return ""
            return f"; did you mean {instance.lower()!r}?"
        return ""


def _fitting_branch(error: Any) -> list[Any] | None:
    """The errors of the one ``anyOf``/``oneOf`` branch whose kind the value has (no
    type or choice mismatch at the value itself), or None when no one branch fits."""
    if not isinstance(error.instance, dict | list):
        return None  # a scalar has no insides: the schema's own message says it
    branches: dict[Any, list[Any]] = {}
    for sub in error.context or ():
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    fitting = [
        subs
        for subs in branches.values()
        if not any(sub.validator in ("type", "enum") and not sub.relative_path for sub in subs)
    ]
    return fitting[0] if len(fitting) == 1 else None


def _unknown_key(key: Any, known: list[str], value: Any) -> str:
    message = f"unknown key {show(key)}"
    if key in _KEY_HINTS and key not in known:
        return f"{message}: {_KEY_HINTS[key]}"
    if not known:
        return message
    if isinstance(value, dict) and "workflow_id" in value and "workflows" in known:
        return f"{message}: it looks like a step; steps go under 'workflows:'"
    hint = did_you_mean(key, known)
    return message + (hint or f" (expected one of {quoted_list(known)})")


def _message(validator: str, limit: Any, instance: Any, fallback: str) -> str:
    if validator == "type":
        kinds = [limit] if isinstance(limit, str) else list(limit)
        expected = " or ".join(_TYPE_NAMES.get(kind, kind) for kind in kinds)
        return f"expected {expected}, got {describe(instance)}"
    if validator == "enum":
        hint = did_you_mean(instance, [str(choice) for choice in limit])
        return f"{show(instance)} is not one of {quoted_list(limit)}{hint}"
    if validator == "const":
        return f"must be {show(limit)}, got {show(instance)}"
    if validator == "minimum":
        return f"{show(instance)} is less than the minimum, {limit}"
    if validator == "maximum":
        return f"{show(instance)} is greater than the maximum, {limit}"
    if validator == "exclusiveMinimum":
        return f"must be greater than {limit}, got {show(instance)}"
    if validator == "minLength":
        return "must not be empty" if limit == 1 else f"must be at least {limit} characters long"
    if validator == "maxLength":
        return f"is longer than {limit} characters"
    if validator in ("minItems", "minProperties") and limit == 1:
        return "must not be empty"
    if validator == "uniqueItems":
        twice = next(item for n, item in enumerate(instance) if item in instance[:n])
        return f"lists {show(twice)} twice"
    return fallback  # pragma: no cover - every keyword of runbook's schemas is handled above


def schema_text(name: str) -> str:
    """The JSON Schema ``runbook/schemas/<name>.schema.json`` as shipped (``plan`` or
    ``scenario``)."""
    return resources.files("runbook").joinpath(f"schemas/{name}.schema.json").read_text()


@functools.cache
def checker(name: str) -> SchemaChecker:
    """The checker of the schema ``runbook/schemas/<name>.schema.json``, built once."""
    text = schema_text(name)
    return SchemaChecker(json.loads(text), compiled_validator(name, text))


SCHEMAS = ("plan", "scenario")
"""The schemas runbook ships, each with its validator compiled ahead."""


def compiled_validator(name: str, text: str) -> Callable[[Any], Any] | None:
    """The validator compiled ahead for the schema ``name`` (its ``text``), or None when
    there is none or it was made from another text."""
    try:
        module = importlib.import_module(f"runbook.schemas.{name}_check")
    except ImportError:
        return None
    if getattr(module, "SCHEMA_SHA256", None) != _digest(text):
        return None
    validate: Callable[[Any], Any] = module.validate
    return validate


def compiled_source(name: str) -> str:
    """The source of ``runbook/schemas/<name>_check.py``: fastjsonschema's validator of
    the schema, headed by the schema's digest."""
    import fastjsonschema

    text = schema_text(name)
    code = fastjsonschema.compile_to_code(json.loads(text))
    entry = re.search(r"^def (\w+)\(", code, re.MULTILINE)  # the schema's own: first
    assert entry is not None, "fastjsonschema generated no function"
    return (
        f'"""The validator of ``{name}.schema.json``, generated by fastjsonschema '
        f"{fastjsonschema.VERSION}: do not edit.\n\n"
        'Regenerate with ``python -m runbook.schemacheck`` after changing the schema."""\n'
        "# ruff: noqa\n"
        "# fmt: off\n"
        f'SCHEMA_SHA256 = "{_digest(text)}"\n'
        f"{code.rstrip()}\n\n\n"
        f"validate = {entry[1]}\n"
    )


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _write_compiled() -> None:
    """``python -m runbook.schemacheck``: write every ``runbook/schemas/<name>_check.py``."""
    folder = resources.files("runbook").joinpath("schemas")
    for name in SCHEMAS:
        target = folder.joinpath(f"{name}_check.py")
        with resources.as_file(target) as path:
            path.write_text(compiled_source(name))
        sys.stdout.write(f"wrote {target}\n")


if __name__ == "__main__":
    _write_compiled()
