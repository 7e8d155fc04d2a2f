"""What the executor tells the outside world, and the run's record.

The executor awaits every sink for every event before it goes on, so a sink that must
make something durable first (the journal: an attempt *triggering* before its POST, an
execution id as soon as it is known) can do so by awaiting its commit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from runbook.conditions import RunIf
from runbook.schedule import OnFailure

StepState = Literal["pending", "running", "succeeded", "failed", "skipped", "cancelled"]
RunState = Literal["running", "succeeded", "failed", "interrupted", "abandoned"]
"""``abandoned``: a run that ``--new-run`` left behind with executions that may still run
(only the journal's views show it)."""
TERMINAL_STATES = frozenset({"succeeded", "failed"})
"""The execution states that end an attempt; any other is polled on."""

__all__ = [
    "TERMINAL_STATES",
    "AttemptFinished",
    "AttemptRecord",
    "AttemptTriggered",
    "AttemptTriggering",
    "Event",
    "ExecutionSeen",
    "ForecastMade",
    "Forecasted",
    "Notice",
    "NotificationRecord",
    "NotificationSent",
    "RetryScheduled",
    "RunFinished",
    "RunLate",
    "RunRecord",
    "RunStarted",
    "SignalReceived",
    "Sink",
    "StepFinished",
    "StepRecord",
]


@dataclass(slots=True)
class AttemptRecord:
    """One attempt of a step: a trigger and the execution it created, as last seen."""

    number: int
    triggered_at: float  # epoch seconds
    execution_id: int | None = None
    state: str = "triggering"  # then the execution's state, or "unknown"
    start_at: str | None = None
    end_at: str | None = None
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    record: dict[str, Any] | None = None
    ended_at: float | None = None  # epoch seconds, when runbook saw it end


@dataclass(slots=True)
class StepRecord:
    """A selected step's progress and outcome."""

    name: str
    workflow_id: int
    stage: int
    state: StepState = "pending"
    reason: str | None = None
    attempts: list[AttemptRecord] = field(default_factory=list)
    started_at: float | None = None
    ended_at: float | None = None
    run_if: RunIf = "success"
    on_failure: OnFailure = "stop"
    ignored: bool = False
    """It failed under ``on_failure: ignore``: shown failed, but it passed."""
    why: str | None = None
    """Why a clean-up step or a mapping ``run_if`` started (its upstreams' ends)."""
    upstreams: tuple[str, ...] = ()
    """The selected steps it waits for, as the plan says (for the live view)."""

    @property
    def attempt(self) -> AttemptRecord | None:
        return self.attempts[-1] if self.attempts else None


@dataclass(frozen=True, slots=True)
class ForecastMade:
    """The forecast made when the run started (epoch seconds): when it should end, p50
    and p90, and each step's expected start and end in the p50 schedule."""

    at: float
    p50_end: float
    p90_end: float
    steps: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    def dump(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "p50_end": self.p50_end,
            "p90_end": self.p90_end,
            "steps": {name: list(bar) for name, bar in self.steps.items()},
        }

    @classmethod
    def load(cls, value: Any) -> ForecastMade | None:
        """What :meth:`dump` wrote, or None for anything else (a view then draws no
        forecast: it is never worth failing one for)."""
        if not isinstance(value, dict):
            return None
        at, p50_end, p90_end = (_time(value.get(key)) for key in ("at", "p50_end", "p90_end"))
        steps = value.get("steps")
        if at is None or p50_end is None or p90_end is None or not isinstance(steps, dict):
            return None
        bars = {}
        for name, bar in steps.items():
            start, end = bar if isinstance(bar, list) and len(bar) == 2 else (None, None)
            if (start := _time(start)) is not None and (end := _time(end)) is not None:
                bars[str(name)] = (start, end)
        return cls(at, p50_end, p90_end, bars)


def _time(value: object) -> float | None:
    """Epoch seconds between 1970 and 9999 (as the journal keeps its times), or None."""
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 2.5e11:
        return float(value)
    return None


@dataclass(frozen=True, slots=True)
class Died:
    """The invocation that left a run ``running``: its process is gone."""

    pid: int
    host: str


@dataclass(frozen=True, slots=True)
class NotificationRecord:
    """One delivery tried: a webhook's notification or a healthchecks ping. ``target``
    is the receiver's host, never its URL (a URL's path and query are secrets)."""

    kind: Literal["webhook", "healthchecks"]
    event: str
    """A notification's event (succeeded, failed, ..., late), or a ping's: start, or
    the run's end state."""
    target: str
    ok: bool
    error: str | None
    attempts: int
    at: float  # epoch seconds, when the delivery ended


@dataclass(slots=True)
class RunRecord:
    """The whole run: what the report, the JUnit file and the summary are made of."""

    plan: str
    run_id: int | None
    max_parallel: int
    steps: dict[str, StepRecord]
    assumed_done: tuple[str, ...] = ()
    state: RunState = "running"
    started_at: float = 0.0
    ended_at: float | None = None
    reason: str | None = None
    exit_code: int | None = None
    """Set when the run was cut short by an error with an exit code of its own (3)."""
    deadline: float | None = None
    """Seconds after the run's (first invocation's) start by which it should be over."""
    late: bool = False
    """It was still going past its deadline."""
    notifications: list[NotificationRecord] = field(default_factory=list)
    auth: str | None = None
    """The token source's kind (``oauth client_credentials``, ``command``, ``file``,
    ``env``...), never a value."""
    token_refreshes: int = 0
    """Tokens fetched after the first one."""
    auth_failed: bool = False
    """The run ended because no token could be had, or the API refused every one."""
    api_url: str | None = None
    """The API base URL the run went to (the sandbox's, for a sandbox run)."""
    invocations: int = 1
    """How many invocations the run has had, this one included (a resume adds one)."""
    first_started: float | None = None
    """A resumed run: when its first invocation started (``started_at`` is this one's)."""
    died: Died | None = None
    """A resumed run whose last invocation's process died before it ended the run."""
    spans: list[tuple[float, float | None]] = field(default_factory=list)
    """Each invocation's start and end (None: not ended, or its process died), oldest
    first; empty before the run starts."""
    forecast: ForecastMade | None = None
    """The forecast made when the run's first invocation started, if there was one."""

    def count(self, state: str) -> int:
        return sum(1 for step in self.steps.values() if step.state == state)

    def ordered(self) -> list[StepRecord]:
        """The steps in the order every view lists them: by stage, then by name."""
        return sorted(self.steps.values(), key=lambda step: (step.stage, step.name))

    def in_flight(self) -> list[tuple[StepRecord, int]]:
        """The executions this invocation left without seeing them end: each step's
        last attempt with an execution id and no end (they may still be running)."""
        return [
            (step, attempt.execution_id)
            for step in self.ordered()
            if (attempt := step.attempt) is not None
            and attempt.execution_id is not None
            and attempt.ended_at is None
        ]


@dataclass(frozen=True, slots=True)
class RunStarted:
    run: RunRecord
    at: float


@dataclass(frozen=True, slots=True)
class AttemptTriggering:
    """About to POST: nothing is sent before every sink has returned."""

    step: StepRecord
    attempt: AttemptRecord
    at: float


@dataclass(frozen=True, slots=True)
class AttemptTriggered:
    """The POST answered with an execution id: sinks make it durable first."""

    step: StepRecord
    attempt: AttemptRecord
    at: float


@dataclass(frozen=True, slots=True)
class ExecutionSeen:
    """A poll answered something new (a state or any field changed)."""

    step: StepRecord
    attempt: AttemptRecord
    previous_state: str
    at: float


@dataclass(frozen=True, slots=True)
class AttemptFinished:
    step: StepRecord
    attempt: AttemptRecord
    outcome: str  # succeeded, failed, timed out, unknown, error
    at: float


@dataclass(frozen=True, slots=True)
class RetryScheduled:
    step: StepRecord
    delay: float
    at: float


@dataclass(frozen=True, slots=True)
class StepFinished:
    step: StepRecord
    at: float


@dataclass(frozen=True, slots=True)
class Notice:
    """Something a person should know that changes nothing: a signal, an unknown state."""

    message: str
    at: float
    step: StepRecord | None = None
    level: Literal["info", "warning"] = "warning"


@dataclass(frozen=True, slots=True, kw_only=True)
class SignalReceived:
    """A SIGINT or SIGTERM. The first stops the run: no new trigger, and it waits for
    ``triggers_under_way`` (at most ``grace`` seconds) so that no execution id is lost;
    a second one asks to exit at once."""

    name: str
    first: bool
    triggers_under_way: int
    grace: float
    at: float


@dataclass(frozen=True, slots=True)
class RunLate:
    """The run is still going ``run.deadline`` seconds after it started."""

    run: RunRecord
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Forecasted:
    """When the run should end (epoch seconds, p50 and p90), from what is still to
    run; ``first`` at the run's start, ``at_risk`` the first time the p90 end passes
    the deadline."""

    run: RunRecord
    p50_end: float
    p90_end: float
    critical_path: tuple[str, ...]
    first: bool
    at_risk: bool
    at: float
    steps: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    """Each step's expected start and end (epoch seconds) in the p50 schedule."""


@dataclass(frozen=True, slots=True)
class NotificationSent:
    """A delivery ended, delivered or not; it changes nothing of the run."""

    record: NotificationRecord
    at: float


@dataclass(frozen=True, slots=True)
class RunFinished:
    run: RunRecord
    at: float


Event = (
    RunStarted
    | AttemptTriggering
    | AttemptTriggered
    | ExecutionSeen
    | AttemptFinished
    | RetryScheduled
    | StepFinished
    | Notice
    | SignalReceived
    | RunLate
    | NotificationSent
    | Forecasted
    | RunFinished
)
Sink = Callable[[Event], Awaitable[None] | None]
"""A sink is called with each event; an awaitable it returns is awaited (except for a
SignalReceived, told from a signal handler: no sink waits on one)."""
