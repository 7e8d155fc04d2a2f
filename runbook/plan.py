"""Plan files: YAML -> JSON Schema -> semantic checks -> frozen dataclasses.

Every rule of docs/plan-format.md is checked and every violation collected in one pass;
:func:`load_plan` raises :class:`~runbook.errors.PlanError` with all of them, each at
``FILE:LINE:COLUMN``. A plan that loads has every default resolved.
"""

from __future__ import annotations

import gc
import os
from collections import Counter
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import PurePath
from types import MappingProxyType
from typing import Any, Literal, cast

from runbook import graph, polling, yamldoc
from runbook.durations import DurationError, format_duration, parse_duration
from runbook.errors import PlanError, Problem
from runbook.schedule import OnFailure, RunIf
from runbook.schemacheck import checker, show, where
from runbook.text import did_you_mean
from runbook.yamldoc import Document, YamlPath

__all__ = [
    "BUILTIN_DEFAULTS",
    "ApiSettings",
    "HealthchecksSettings",
    "NotifyEvent",
    "NotifyTarget",
    "OAuthSettings",
    "Plan",
    "Step",
    "load_plan",
]

NotifyEvent = Literal["succeeded", "failed", "interrupted", "recovered", "late", "at_risk"]


DEFAULT_BASE_URL = "https://app.nexadata.com/api/v1"
DEFAULT_TOKEN_ENV = "NEXADATA_TOKEN"
DEFAULT_MAX_PARALLEL = 4
DURATION_KEYS = ("retry_delay", "timeout", "poll_interval", "max_poll_interval", "estimate")
BUILTIN_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        "on_failure": "stop",
        "retries": 0,
        "retry_delay": 30.0,
        "timeout": 6 * 3600.0,
        "poll_interval": 5.0,
        "max_poll_interval": 60.0,
    }
)


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
    """Effective: a ``finally`` step's default is ``always``."""
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


def load_plan(path: str | os.PathLike[str]) -> Plan:
    """Load, check and resolve the plan at ``path``; raise PlanError listing every problem."""
    source = yamldoc.read_source(path)
    if isinstance(source, Problem):
        raise PlanError([source])
    # Loading builds many small acyclic objects: the cycle collector only slows it down
    # (about 3x on a 10,000-step plan). Nothing built here can form a cycle.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _load(source)
    finally:
        if was_enabled:
            gc.enable()


def _load(source: yamldoc.Source) -> Plan:
    doc, problems = yamldoc.load(source)
    if doc is None:
        raise PlanError(problems)
    if doc.data is None:
        raise PlanError(
            [doc.problem((), "the plan is empty: it needs 'version: 1' and 'workflows:'")]
        )
    schema_problems, bad = checker("plan").problems(doc)
    semantics = _Semantics(doc, bad)
    # a node the YAML layer refused (a tag, a recursive alias) is not explained twice
    refused = {(problem.line, problem.column) for problem in problems}
    problems += [
        problem
        for problem in schema_problems + semantics.check()
        if (problem.line, problem.column) not in refused
    ]
    if problems:
        raise PlanError(problems)
    return _build(doc, semantics.edges, semantics.stages)


class _Semantics:
    """The rules JSON Schema cannot say: names that exist, no cycles, durations."""

    def __init__(self, doc: Document, bad: set[YamlPath]) -> None:
        self.doc = doc
        self.bad = bad
        self.problems: dict[Problem, None] = {}
        data = doc.data if isinstance(doc.data, dict) else {}
        self.data: dict[Any, Any] = data
        workflows = data.get("workflows")
        self.workflows: dict[Any, Any] = workflows if isinstance(workflows, dict) else {}
        defaults = data.get("defaults")
        self.defaults: dict[Any, Any] = defaults if isinstance(defaults, dict) else {}
        self.edges: list[tuple[str, str]] = []
        self.stages: list[list[str]] = []
        self.finally_steps: dict[str, None] = {}

    def report(self, path: YamlPath, message: str) -> None:
        self.problems[self.doc.problem(path, f"{where(path, self.doc.data)}: {message}")] = None

    def check(self) -> list[Problem]:
        self._finally()
        edges = self._dependencies()
        self._cycles(edges)
        self._conditions()
        self._durations()
        return list(self.problems)

    def _finally(self) -> None:
        """Rule 5, first half: every name in ``finally`` exists and is listed once."""
        listed = self.data.get("finally")
        if not isinstance(listed, list):
            return
        names = [name for name in self.workflows if isinstance(name, str)]
        times = Counter(name for name in listed if isinstance(name, str))
        for index, name in enumerate(listed):
            if not isinstance(name, str) or ("finally", index) in self.bad:
                continue
            if name in self.finally_steps:
                if times[name]:  # once, at the first repeat, with the count
                    count = "twice" if times[name] == 2 else f"{times[name]} times"
                    self.report(("finally", index), f"{show(name)} is listed {count}")
                    times[name] = 0
            elif name not in self.workflows:
                hint = did_you_mean(name, names)
                self.report(("finally", index), f"unknown step {show(name)}{hint}")
            else:
                self.finally_steps[name] = None

    def _conditions(self) -> None:
        """Rule 6: a ``failure`` or ``always`` step has an upstream to judge."""
        has_others = any(
            name not in self.finally_steps for name in self.workflows if isinstance(name, str)
        )
        for name, step in self.workflows.items():
            if not isinstance(step, dict) or ("workflows", name, "run_if") in self.bad:
                continue
            last = name in self.finally_steps
            run_if = step.get("run_if", "always" if last else "success")
            if run_if not in ("failure", "always") or step.get("depends_on"):
                continue
            if last and not has_others:
                index = list(self.data["finally"]).index(name)
                self.report(
                    ("finally", index),
                    f"{show(name)} would run after every other step, but every step is in "
                    f"finally: with run_if {run_if} it needs depends_on to judge",
                )
            elif not last:
                self.report(
                    ("workflows", name, "run_if"),
                    f"run_if {run_if} needs an upstream to judge, and the step has none: "
                    "give it depends_on, or list it in finally",
                )

    def _dependencies(self) -> dict[tuple[str, str], YamlPath]:
        names = [name for name in self.workflows if isinstance(name, str)]
        known = set(names)
        edges: dict[tuple[str, str], YamlPath] = {}
        for name, step in self.workflows.items():
            if not isinstance(step, dict) or not isinstance(name, str):
                continue
            listed = list(_upstreams(name, step.get("depends_on")))
            times = Counter(upstream for _, upstream in listed)
            seen: set[str] = set()
            for path, upstream in listed:
                if upstream == name:
                    self.report(path, "a step cannot depend on itself")
                elif upstream in seen:
                    if times[upstream]:  # once, at the first repeat, with the count
                        count = "twice" if times[upstream] == 2 else f"{times[upstream]} times"
                        self.report(path, f"{show(upstream)} is listed {count}")
                        times[upstream] = 0
                elif upstream not in known:
                    hint = did_you_mean(upstream, names)
                    self.report(path, f"unknown step {show(upstream)}{hint}")
                else:
                    if upstream in self.finally_steps and name not in self.finally_steps:
                        self.report(
                            path,
                            f"{show(upstream)} is in finally: it runs after every other step, "
                            "so only steps in finally may depend on it",
                        )
                    edges[(upstream, name)] = path
                seen.add(upstream)
        return edges

    def _cycles(self, edges: dict[tuple[str, str], YamlPath]) -> None:
        names = [name for name in self.workflows if isinstance(name, str)]
        self.edges = list(edges)
        self.stages, cycles = graph.stages_or_cycles(names, self.edges)
        for cycle in cycles:
            # cycle[0] depends on cycle[-1]: point at that entry of its depends_on
            path = edges[(cycle[-1], cycle[0])]
            shown = " -> ".join([*cycle, cycle[0]])
            self.problems[self.doc.problem(path, f"dependency cycle: {shown}")] = None

    def _durations(self) -> None:
        parsed: dict[YamlPath, float] = {}
        if "deadline" in self.data and ("deadline",) not in self.bad:
            try:
                parse_duration(self.data["deadline"])
            except DurationError as exc:
                self.report(("deadline",), str(exc))
        for base, settings in self._settings():
            for key in DURATION_KEYS:
                path = (*base, key)
                if key in settings and path not in self.bad:
                    try:
                        parsed[path] = parse_duration(settings[key])
                    except DurationError as exc:
                        self.report(path, str(exc))
        for name, step in self.workflows.items():
            if isinstance(step, dict):
                self._poll_bounds(("workflows", name), parsed)

    def _settings(self) -> Iterator[tuple[YamlPath, dict[Any, Any]]]:
        yield ("defaults",), self.defaults
        for name, step in self.workflows.items():
            if isinstance(step, dict):
                yield ("workflows", name), step

    def _poll_bounds(self, base: YamlPath, parsed: dict[YamlPath, float]) -> None:
        def setting(key: str) -> YamlPath | None:
            for path in ((*base, key), ("defaults", key)):
                if path in parsed:
                    return path
            return None

        low, high = setting("poll_interval"), setting("max_poll_interval")
        if high is None:
            return
        low_value = parsed[low] if low else BUILTIN_DEFAULTS["poll_interval"]
        if parsed[high] < low_value:
            # point at the setting this step gives itself, the one to change
            high_text, low_text = format_duration(parsed[high]), format_duration(low_value)
            if high[0] == "defaults" and low is not None and low[0] != "defaults":
                self.report(low, f"{low_text} is more than max_poll_interval ({high_text})")
            else:
                self.report(high, f"{high_text} is less than poll_interval ({low_text})")


def _upstreams(name: str, depends_on: Any) -> Iterator[tuple[YamlPath, Any]]:
    base: YamlPath = ("workflows", name, "depends_on")
    if isinstance(depends_on, str):
        yield base, depends_on
    elif isinstance(depends_on, list):
        for index, upstream in enumerate(depends_on):
            if isinstance(upstream, str):
                yield (*base, index), upstream


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
            run_if=raw.get("run_if", "always" if name in finally_steps else "success"),
            estimate=parse_duration(raw["estimate"]) if "estimate" in raw else None,
        )
    api = data.get("api", {})
    source = doc.source
    checks = data.get("healthchecks")
    return Plan(
        path=source.name,
        name=data.get("name") or PurePath(source.name).stem,
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
    )


def _target(entry: dict[str, Any]) -> NotifyTarget:
    on = entry.get("on", ["failed"])  # the schema allowed only events here
    events = cast("tuple[NotifyEvent, ...]", (on,) if isinstance(on, str) else tuple(on))
    return NotifyTarget(
        webhook_env=entry["webhook_env"],
        on=events,
        format=entry.get("format", "json"),
    )
