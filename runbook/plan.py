"""Plan files: YAML -> JSON Schema -> semantic checks -> frozen dataclasses.

Every rule of docs/plan-format.md is checked and every violation collected in one pass;
:func:`load_plan` raises :class:`~runbook.errors.PlanError` with all of them, each at
``FILE:LINE:COLUMN``. A plan that loads has every default resolved.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import PurePath
from types import MappingProxyType
from typing import Any, Literal, cast

from runbook import graph, polling, yamldoc
from runbook.conditions import Condition, RunIf
from runbook.durations import parse_duration
from runbook.errors import PlanError, Problem
from runbook.plancheck import BUILTIN_DEFAULTS, Semantics
from runbook.schedule import OnFailure, Rule
from runbook.schemacheck import checker
from runbook.text import printable
from runbook.yamldoc import Document

__all__ = [
    "BUILTIN_DEFAULTS",
    "ApiSettings",
    "HealthchecksSettings",
    "NotifyEvent",
    "NotifyTarget",
    "OAuthSettings",
    "Plan",
    "StartOrder",
    "Step",
    "load_plan",
]

NotifyEvent = Literal["succeeded", "failed", "interrupted", "recovered", "late", "at_risk"]


DEFAULT_BASE_URL = "https://app.nexadata.com/api/v1"
DEFAULT_TOKEN_ENV = "NEXADATA_TOKEN"
DEFAULT_MAX_PARALLEL = 4


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a plan, every setting resolved (durations in seconds)."""

    name: str
    workflow_id: int
    depends_on: tuple[str, ...]
    description: str | None
    on_failure: OnFailure
    retries: int
    retry_delay: float
    timeout: float
    poll_interval: float
    max_poll_interval: float
    run_if: RunIf = "success"
    """Effective: a ``finally`` step's default is ``always``; a mapping is a
    :class:`~runbook.conditions.Condition`."""
    estimate: float | None = None
    """Expected running time (seconds), for the forecast when there is no history."""

    def poll_wait(self, elapsed: float) -> float:
        """The wait before the next poll of an execution running for ``elapsed``
        seconds: ``poll_interval``, growing with the running time (POLL_FRACTION) up
        to ``max_poll_interval`` (:mod:`runbook.polling`; the executor adds the jitter)."""
        return polling.poll_wait(elapsed, self.poll_interval, self.max_poll_interval)

    def noticed(self, took: float) -> float:
        """When runbook sees the end of an execution that took ``took`` seconds from
        its trigger (:func:`runbook.polling.noticed`)."""
        return polling.noticed(took, self.poll_interval, self.max_poll_interval)


@dataclass(frozen=True, slots=True)
class OAuthSettings:
    """``api.oauth``: the OAuth 2.0 client's token endpoint, grant, and the environment
    variables that hold its credentials (never the credentials themselves)."""

    token_url: str | None = None
    grant: Literal["client_credentials", "refresh_token"] = "client_credentials"
    client_id_env: str = "NEXADATA_CLIENT_ID"
    client_secret_env: str = "NEXADATA_CLIENT_SECRET"
    refresh_token_env: str = "NEXADATA_REFRESH_TOKEN"
    auth_method: Literal["basic", "post"] = "basic"
    scope: str | None = None


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """Where the API is, per the plan (the environment and flags may override)."""

    base_url: str
    token_env: str
    oauth: OAuthSettings | None = None


@dataclass(frozen=True, slots=True)
class NotifyTarget:
    """One ``notify`` entry: the variable that holds a webhook's URL, the events it is
    told of, and the payload's format."""

    webhook_env: str
    on: tuple[NotifyEvent, ...] = ("failed",)
    format: Literal["json", "slack"] = "json"


@dataclass(frozen=True, slots=True)
class HealthchecksSettings:
    """The ``healthchecks`` entry: the variable that holds the check's ping URL."""

    ping_url_env: str


@dataclass(frozen=True, slots=True)
class Plan:
    """A valid plan. ``steps`` keeps the file's order; ``sha256`` is of the file's bytes."""

    path: str
    name: str
    description: str | None
    api: ApiSettings
    max_parallel: int
    steps: Mapping[str, Step]
    sha256: str
    dag: graph.Dag = field(compare=False, repr=False)
    """The steps' graph, with the implicit edges of the ``finally`` steps, and its stages."""
    finally_steps: tuple[str, ...] = ()
    """The steps listed in ``finally``, in the file's order."""
    deadline: float | None = None
    """Seconds after the run's start by which it should be over."""
    notify: tuple[NotifyTarget, ...] = ()
    healthchecks: HealthchecksSettings | None = None
    airflow_conn_id: str | None = None
    """``airflow.conn_id``: the Airflow connection an exported DAG reads (None: the
    default, ``nexadata_default``)."""
    airflow_dag_id: str | None = None
    """``airflow.dag_id``: the exported DAG's id (None: the plan's name)."""
    warnings: tuple[Problem, ...] = field(default=(), compare=False)
    """What ``validate`` warns of in a valid plan, each at its node."""

    @property
    def stages(self) -> tuple[tuple[str, ...], ...]:
        """Topological generations, names sorted in each: the order steps start in."""
        return self.dag.generations

    @property
    def edge_count(self) -> int:
        """How many dependency edges the plan's ``depends_on`` lists write."""
        return sum(len(step.depends_on) for step in self.steps.values())

    def upstreams(self, name: str, selected: Collection[str]) -> tuple[str, ...]:
        """The upstreams of ``name`` within ``selected``: its ``depends_on``, and for a
        ``finally`` step every selected step outside ``finally`` (unselected upstreams
        count as done, so they are left out)."""
        explicit = tuple(up for up in self.steps[name].depends_on if up in selected)
        if name not in self.finally_steps:
            return explicit
        apart = set(self.finally_steps).union(explicit)
        return explicit + tuple(sorted(other for other in selected if other not in apart))

    def start_order(self, selected: Collection[str] | None = None) -> StartOrder:
        """The order ``selected`` steps (default: all) start in: by stage of the
        selection, then by name. The executor grants its slots in this order and the
        forecast simulates it."""
        stages = tuple(tuple(stage) for stage in self.dag.stages(selected))
        return StartOrder(stages, {name: n for n, stage in enumerate(stages) for name in stage})

    def rules(self, order: StartOrder) -> tuple[Rule, ...]:
        """What the scheduler core needs of each step of ``order``, in that order: its
        upstreams within the selection (a ``finally`` step's implicit ones included)
        and its two policies."""
        steps, selected = self.steps, order.stage
        return tuple(
            Rule(name, self.upstreams(name, selected), steps[name].run_if, steps[name].on_failure)
            for name in order
        )


@dataclass(frozen=True, slots=True)
class StartOrder:
    """Selected steps in the order they start: stage by stage (the selection's own
    topological generations), by name within a stage."""

    stages: tuple[tuple[str, ...], ...]
    stage: Mapping[str, int]
    """Each step's stage, from 0."""

    def key(self, name: str) -> tuple[int, str]:
        """``name``'s place in the order (the scheduler core's ``order``)."""
        return self.stage[name], name

    def __iter__(self) -> Iterator[str]:
        return (name for stage in self.stages for name in stage)

    def __len__(self) -> int:
        return len(self.stage)


def load_plan(path: str | os.PathLike[str]) -> Plan:
    """Load, check and resolve the plan at ``path``; raise PlanError listing every problem."""
    source = yamldoc.read_source(path)
    if isinstance(source, Problem):
        raise PlanError([source])
    doc, problems = yamldoc.load(source)
    if doc is None:
        raise PlanError(problems)
    if doc.data is None:
        raise PlanError(
            [doc.problem((), "the plan is empty: it needs 'version: 1' and 'workflows:'")]
        )
    schema_problems, bad = checker("plan").problems(doc)
    semantics = Semantics(doc, bad)
    # a node the YAML layer refused (a tag, a recursive alias) is not explained twice
    refused = {(problem.line, problem.column) for problem in problems}
    problems += [
        problem
        for problem in schema_problems + semantics.check()
        if (problem.line, problem.column) not in refused
    ]
    if problems:
        raise PlanError(problems)
    plan = _build(doc, semantics.edges, semantics.stages)
    warnings = semantics.warnings(plan)
    return dataclasses.replace(plan, warnings=warnings) if warnings else plan


def _build(doc: Document, edges: list[tuple[str, str]], stages: list[list[str]]) -> Plan:
    data: dict[str, Any] = doc.data
    defaults = {**BUILTIN_DEFAULTS, **data.get("defaults", {})}
    finally_steps = tuple(data.get("finally", ()))
    if finally_steps:
        # each finally step waits for every other step: edges like the written ones,
        # for the stages and for selections (+name, name+)
        last = set(finally_steps)
        names = data["workflows"]
        edges = edges + [
            (name, after) for after in finally_steps for name in names if name not in last
        ]
        ordered = graph.generations(names, edges)
        assert ordered is not None  # finally steps depend only on finally steps
        stages = ordered
    steps: dict[str, Step] = {}
    for name, raw in data["workflows"].items():
        settings = {**defaults, **raw}
        depends_on = raw.get("depends_on", [])
        poll = parse_duration(settings["poll_interval"])
        explicit_max = "max_poll_interval" in raw or "max_poll_interval" in data.get("defaults", {})
        max_poll = parse_duration(settings["max_poll_interval"])
        steps[name] = Step(
            name=name,
            workflow_id=int(raw["workflow_id"]),
            depends_on=(depends_on,) if isinstance(depends_on, str) else tuple(depends_on),
            description=raw.get("description"),
            on_failure=settings["on_failure"],
            retries=int(settings["retries"]),
            retry_delay=parse_duration(settings["retry_delay"]),
            timeout=parse_duration(settings["timeout"]),
            poll_interval=poll,
            max_poll_interval=max_poll if explicit_max else max(max_poll, poll),
            run_if=_run_if(raw.get("run_if", "always" if name in finally_steps else "success")),
            estimate=parse_duration(raw["estimate"]) if "estimate" in raw else None,
        )
    api = data.get("api", {})
    source = doc.source
    checks = data.get("healthchecks")
    return Plan(
        path=source.name,
        name=data.get("name") or printable(PurePath(source.name).stem),
        description=data.get("description"),
        api=ApiSettings(
            base_url=api.get("base_url", DEFAULT_BASE_URL),
            token_env=api.get("token_env", DEFAULT_TOKEN_ENV),
            oauth=OAuthSettings(**api["oauth"]) if "oauth" in api else None,
        ),
        max_parallel=int(data.get("max_parallel", DEFAULT_MAX_PARALLEL)),
        steps=MappingProxyType(steps),
        sha256=source.sha256,
        dag=graph.Dag(
            edges,
            stages,
            depends_on={name: step.depends_on for name, step in steps.items()},
            finally_steps=finally_steps,
        ),
        finally_steps=finally_steps,
        deadline=parse_duration(data["deadline"]) if "deadline" in data else None,
        notify=tuple(_target(entry) for entry in data.get("notify", ())),
        healthchecks=HealthchecksSettings(checks["ping_url_env"]) if checks else None,
        airflow_conn_id=data.get("airflow", {}).get("conn_id"),
        airflow_dag_id=data.get("airflow", {}).get("dag_id"),
    )


def _run_if(value: str | dict[str, Any]) -> RunIf:
    return Condition.of(value) if isinstance(value, dict) else cast("RunIf", value)


def _target(entry: dict[str, Any]) -> NotifyTarget:
    on = entry.get("on", ["failed"])  # the schema allowed only events here
    events = cast("tuple[NotifyEvent, ...]", (on,) if isinstance(on, str) else tuple(on))
    return NotifyTarget(
        webhook_env=entry["webhook_env"],
        on=events,
        format=entry.get("format", "json"),
    )
