"""Sandbox scenarios: how the simulated workflows behave, and which faults are injected.

Loaded with the plan loader's machinery (safe line-aware YAML, the JSON Schema in
``runbook/schemas/scenario.schema.json``), so a bad scenario gets the same
``FILE:LINE:COLUMN: message`` problems as a bad plan.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from runbook import yamldoc
from runbook.durations import DurationError, parse_duration
from runbook.errors import Problem, ScenarioError
from runbook.schemacheck import checker, show, where

__all__ = ["Behaviour", "Faults", "Scenario", "default_duration", "load_scenario"]

Outcome = Literal["succeeded", "failed"]
DEFAULT_QUEUE = 0.2


def default_duration(workflow_id: int) -> float:
    """1 to 3 seconds, fixed per workflow id (a multiplicative hash spreads the ids)."""
    return 1.0 + ((workflow_id * 2654435761) % 2001) / 1000


@dataclass(frozen=True, slots=True)
class Behaviour:
    """How one workflow behaves. ``duration`` None means it runs forever."""

    queue: float = DEFAULT_QUEUE
    duration: float | None = 1.0
    outcome: Outcome = "succeeded"
    errors: tuple[Any, ...] = ()
    warnings: tuple[Any, ...] = ()
    fail_first: int = 0
    exists: bool = True
    running_state: str = "running"


@dataclass(frozen=True, slots=True)
class Faults:
    """Faults injected into every ``/api/v1`` request."""

    error_rate: float = 0.0
    errors_on: frozenset[str] = frozenset({"trigger", "poll"})
    unavailable_rate: float = 0.0
    lost_answer_rate: float = 0.0
    rate_limit: float | None = None
    retry_after: Literal["seconds", "date"] = "seconds"
    latency: float = 0.0


@dataclass(frozen=True, slots=True)
class Scenario:
    """A whole scenario; :meth:`behaviour` resolves one workflow's settings."""

    seed: int | None = None
    default: Mapping[str, Any] = field(default_factory=dict)
    workflows: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)
    faults: Faults = Faults()

    def behaviour(self, workflow_id: int) -> Behaviour:
        settings = {**self.default, **self.workflows.get(workflow_id, {})}
        if "duration" not in settings:
            settings["duration"] = default_duration(workflow_id)
        return Behaviour(**settings)


def load_scenario(path: str | os.PathLike[str]) -> Scenario:
    """Load and check a scenario file; raise ScenarioError listing every problem."""
    source = yamldoc.read_source(path)
    if isinstance(source, Problem):
        raise ScenarioError([source])
    doc, problems = yamldoc.load(source)
    if doc is None:
        raise ScenarioError(problems)
    data = doc.data if doc.data is not None else {}
    bad: set[tuple[Any, ...]] = set()
    if doc.data is not None:
        schema_problems, bad = checker("scenario").problems(doc)
        problems += schema_problems
    workflows = data.get("workflows") if isinstance(data, dict) else None
    if isinstance(workflows, dict):
        for key in workflows:
            if isinstance(key, bool) or not isinstance(key, int) or key < 1:
                problems.append(
                    doc.problem(
                        ("workflows", key),
                        f"workflows: {show(key)} is not a workflow id (an integer of 1 or more)",
                        key=True,
                    )
                )
        for key, behaviour in workflows.items():
            problems += _duration_problems(doc, ("workflows", key), behaviour, bad)
    if isinstance(data, dict):
        problems += _duration_problems(doc, ("default",), data.get("default"), bad)
        problems += _duration_problems(doc, ("faults",), data.get("faults"), bad)
    if problems:
        raise ScenarioError(problems)
    return _build(data)


def _duration_problems(
    doc: yamldoc.Document, base: tuple[Any, ...], section: Any, bad: set[tuple[Any, ...]]
) -> list[Problem]:
    """Durations the schema let through but that are no durations (``.inf``)."""
    if not isinstance(section, dict):
        return []
    found = []
    for key in ("queue", "duration", "latency"):
        value = section.get(key)
        path = (*base, key)
        if value is None or value == "forever" or path in bad:
            continue
        try:
            parse_duration(value)
        except DurationError as exc:
            found.append(doc.problem(path, f"{where(path, doc.data)}: {exc}"))
    return found


def _behaviour(raw: Mapping[str, Any]) -> dict[str, Any]:
    settings = dict(raw)
    if "queue" in settings:
        settings["queue"] = parse_duration(settings["queue"])
    if "duration" in settings:
        duration = settings["duration"]
        settings["duration"] = None if duration == "forever" else parse_duration(duration)
    for key in ("errors", "warnings"):
        if key in settings:
            settings[key] = tuple(settings[key])
    return settings


def _build(data: Mapping[str, Any]) -> Scenario:
    faults = dict(data.get("faults", {}))
    if "latency" in faults:
        faults["latency"] = parse_duration(faults["latency"])
    if "errors_on" in faults:
        faults["errors_on"] = frozenset(faults["errors_on"])
    return Scenario(
        seed=data.get("seed"),
        default=MappingProxyType(_behaviour(data.get("default", {}))),
        workflows=MappingProxyType(
            {int(key): _behaviour(value) for key, value in data.get("workflows", {}).items()}
        ),
        faults=Faults(**faults),
    )
