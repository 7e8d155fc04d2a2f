"""The plan's rules as Airflow task states can carry them: no Airflow import here.

Airflow decides when a task may start from its trigger rule, and ends a DAG run by the
states of its last tasks. Neither is the plan format's rule: an ignored failure passes,
a clean-up step skipped with nothing to clean up passes, a mapping ``run_if`` names the
outcome of each upstream it needs, a stop cancels every step not started that is no
clean-up step, and the run fails when a step failed that counts. The
operator completes each rule at run time from the task states of its DAG run, with the
functions here, so that the same failures give the same step outcomes as ``apply``.

Airflow states, read as the plan's::

    success          succeeded
    failed           failed            (retries exhausted, or not retried)
    upstream_failed  skipped           (Airflow's all_success under a failed upstream)
    skipped          skipped, or cancelled by a stop (the task log says which)
    anything else    not ended yet

The state-store record (:class:`Record`) is what a new try of a task reads to learn
what the tries before it did: Airflow clears a task's XComs at every new try, so the
execution id lives in the task state store, written before anything else.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from runbook.conditions import (
    KEYWORDS,
    NAMES_SHOWN,
    NOT_SELECTED,
    NOTHING_FAILED,
    Condition,
    RunIf,
    Seen,
    held,
    is_cleanup,
    shown_names,
    unmet,
)
from runbook.errors import ConfigError
from runbook.schedule import OnFailure

__all__ = [
    "KEY",
    "Policy",
    "Record",
    "Verdict",
    "base_url",
    "failures",
    "judge",
    "passed",
    "plan_state",
    "run_if",
    "stopped_by",
    "trigger_rule",
]

KEY = "runbook"
"""The task state store key of a step task's :class:`Record`."""

ENDED = frozenset({"success", "failed", "upstream_failed", "skipped", "removed"})


@dataclass(frozen=True, slots=True)
class Policy:
    """What the rules need to know of a step: when it may start, what its failure does."""

    run_if: RunIf = "success"
    on_failure: OnFailure = "stop"


def run_if(value: object) -> RunIf:
    """An operator's ``run_if`` argument as the rules read it: a word, or a mapping of
    upstream names to outcomes. Anything else is a mistake in the DAG file: ValueError,
    which Airflow shows as the DAG's import error."""
    if value in KEYWORDS:
        return value  # type: ignore[return-value]
    condition = Condition.parse(dict(value) if isinstance(value, Mapping) else value)
    if condition is None:
        raise ValueError(
            f"run_if {value!r} is neither success, failure nor always, nor a mapping of "
            "upstream names to outcomes (succeeded, failed, skipped, passed, or a list)"
        )
    return condition


def passed(state: str | None, policy: Policy) -> bool:
    """Whether an upstream in Airflow ``state`` passed (plan format, Failure policies)."""
    match state:
        case "success":
            return True
        case "failed":
            return policy.on_failure == "ignore"
        case "skipped":
            # only the operator skips a clean-up step (its trigger rule is all_done), and
            # only when there was nothing to clean up: so it passed
            return is_cleanup(policy.run_if)
        case _:
            return False


def trigger_rule(policy: Policy, upstreams: Iterable[Policy]) -> str:
    """The Airflow trigger rule for a step: ``all_success`` where Airflow's success is
    exactly the plan's "passed" for every upstream, else ``all_done`` (the operator
    judges the rest at run time)."""
    if policy.run_if != "success":  # a mapping is judged at run time too
        return "all_done"  # one_failed would fire at the first failure, not at the end
    for up in upstreams:
        if up.on_failure == "ignore" or (is_cleanup(up.run_if) and up.run_if != "always"):
            return "all_done"  # it may pass without Airflow's success (skipped)
    return "all_success"


@dataclass(frozen=True, slots=True)
class Verdict:
    """A step that must not start: it ends ``skipped`` (in Airflow) for this reason."""

    state: Literal["skipped", "cancelled"]
    reason: str


def stopped_by(policies: Mapping[str, Policy], states: Mapping[str, str | None]) -> str | None:
    """The stop in force, as ``apply`` words it, or None: a step under
    ``on_failure: stop`` whose task failed (its retries over)."""
    for name in sorted(policies):
        if policies[name].on_failure == "stop" and states.get(name) == "failed":
            return f"step {name} failed (on_failure: stop)"
    return None


def judge(
    policy: Policy,
    upstreams: Mapping[str, Policy],
    states: Mapping[str, str | None],
    stop: str | None,
) -> Verdict | None:
    """Whether a step whose upstreams have all ended may start now (None: it may), or
    why it ends without starting. ``stop``: the stop in force (:func:`stopped_by`)."""
    if isinstance(policy.run_if, Condition):
        reason = unmet(policy.run_if, _seen(upstreams, states))
        if reason is not None:
            return Verdict("skipped", reason)
        if stop is not None and not policy.run_if.cleanup:
            return Verdict("cancelled", f"not started: {stop}")
        return None
    not_passed = [name for name in upstreams if not passed(states.get(name), upstreams[name])]
    match policy.run_if:
        case "success":
            if not_passed:
                return Verdict("skipped", f"upstream {shown_names(not_passed)} did not succeed")
            if stop is not None:
                return Verdict("cancelled", f"not started: {stop}")
            return None
        case "failure":
            return None if not_passed else Verdict("skipped", NOTHING_FAILED)
        case "always":
            return None


def start_reason(policy: Policy, upstreams: Mapping[str, Policy], states: Mapping[str, Any]) -> str:
    """Why a clean-up step starts, for its log: ``upstream load_warehouse failed``."""
    if isinstance(policy.run_if, Condition):
        return held(policy.run_if, _seen(upstreams, states))
    not_passed = [name for name in upstreams if not passed(states.get(name), upstreams[name])]
    if not not_passed:
        return f"run_if {policy.run_if}: every upstream has ended"
    shown = ", ".join(f"{up} {plan_state(states.get(up))}" for up in not_passed[:NAMES_SHOWN])
    more = len(not_passed) - NAMES_SHOWN
    return f"run_if {policy.run_if}: upstream {shown}" + (f" and {more} more" if more > 0 else "")


def _seen(upstreams: Mapping[str, Policy], states: Mapping[str, Any]) -> Callable[[str], Seen]:
    """How each upstream ended, as a condition reads it (every upstream has ended when
    a step is judged; a name the DAG has no task for was not exported: done)."""

    def seen(name: str) -> Seen:
        if name not in upstreams:
            return NOT_SELECTED
        return Seen(plan_state(states.get(name)), passed(states.get(name), upstreams[name]))

    return seen


def failures(
    policies: Mapping[str, Policy], states: Mapping[str, str | None]
) -> tuple[list[str], list[str]]:
    """The steps that failed the run, and those whose failure was ignored."""
    failed = [name for name in policies if states.get(name) == "failed"]
    counted = [name for name in failed if policies[name].on_failure != "ignore"]
    return counted, [name for name in failed if name not in counted]


def plan_state(state: str | None) -> str:
    """An Airflow task state in the plan's words: ``success`` is ``succeeded``."""
    return {"success": "succeeded", "upstream_failed": "skipped"}.get(str(state), str(state))


RecordState = Literal[
    "triggering", "created", "running", "succeeded", "failed", "timed out", "unknown", "error"
]
LIVE = frozenset({"created", "running"})


@dataclass(frozen=True, slots=True)
class Record:
    """What the tries of one step task did, kept in the task state store under
    :data:`KEY`: the last attempt's state, its execution id and trigger time, and every
    execution triggered so far (oldest first)."""

    state: RecordState
    execution_id: int | None = None
    triggered_at: float | None = None
    """Unix time of the attempt's trigger: its timeout counts from there."""
    executions: tuple[int, ...] = ()

    @property
    def live(self) -> bool:
        """An execution was triggered and not seen to end: a new try polls it again."""
        return self.state in LIVE and self.execution_id is not None

    @property
    def ambiguous(self) -> bool:
        """A try died between its POST and the answer: the outcome is unknown."""
        return self.state == "triggering"

    def triggering(self, now: float | None = None) -> Record:
        return Record("triggering", None, now if now is not None else time.time(), self.executions)

    def triggered(self, execution_id: int, state: str) -> Record:
        return Record(
            "created" if state == "created" else "running",
            execution_id,
            self.triggered_at,
            (*self.executions, execution_id),
        )

    def ended(self, state: RecordState) -> Record:
        return Record(state, self.execution_id, self.triggered_at, self.executions)

    def dump(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "execution_id": self.execution_id,
            "triggered_at": self.triggered_at,
            "executions": list(self.executions),
        }

    @classmethod
    def load(cls, value: Any) -> Record | None:
        """The record a store holds, or None (nothing recorded, or not a record of ours)."""
        if not isinstance(value, dict) or value.get("state") not in _RECORD_STATES:
            return None
        ident = value.get("execution_id")
        at = value.get("triggered_at")
        executions = value.get("executions") or ()
        return cls(
            state=value["state"],
            execution_id=ident if isinstance(ident, int) and not isinstance(ident, bool) else None,
            triggered_at=float(at) if isinstance(at, int | float) else None,
            executions=tuple(e for e in executions if isinstance(e, int)),
        )


_RECORD_STATES: frozenset[str] = frozenset(get_args(RecordState))


def base_url(host: str | None, schema: str | None, port: int | None, default: str | None) -> str:
    """The API's base URL from an Airflow connection's fields: ``host`` as a whole URL
    (``https://app.nexadata.com/api/v1``), or a host name with ``schema`` (default
    https) and ``port``; without a host, ``default`` (the plan's ``api.base_url``)."""
    host = (host or "").strip()
    if not host:
        if default:
            return default
        raise ConfigError(
            "the Airflow connection has no host: set it to the API's base URL "
            "(e.g. https://app.nexadata.com/api/v1)"
        )
    if "://" in host:
        return host
    scheme = (schema or "https").strip() or "https"
    netloc = f"{host}:{port}" if port and ":" not in host.split("/", 1)[0] else host
    return f"{scheme}://{netloc}"
