"""The executor's rooms against a fake two-method API — no HTTP, no sandbox — each test
on its own virtual clock: a step's retries, one attempt's endings, a resume's
re-attachment, and the run's reaction to a refused token."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from runbook.api import Execution
from runbook.errors import ApiUnavailable, AuthError, TriggerOutcomeUnknown
from runbook.events import AttemptFinished, AttemptRecord, AttemptTriggering, RunRecord
from runbook.executor import Executor
from runbook.plan import load_plan
from runbook.run.bus import Bus
from runbook.run.planned import planned
from runbook.run.reasons import TIMEOUT_REASON
from runbook.run.shell import Clock
from tests.support.clocks import VirtualClock


class FakeApi:
    """Each trigger of a workflow takes the next of its scripted endings: a final state
    (seen at the second poll), ``"hang"`` (the POST never answers), or an exception to
    raise. Polls can be scripted to fail too."""

    def __init__(self, script: dict[int, list[object]], poll_error: Exception | None = None):
        self.script = {workflow: list(endings) for workflow, endings in script.items()}
        self.poll_error = poll_error
        self.triggered: list[int] = []
        self.polls: Counter[int] = Counter()
        self._ends: dict[int, str] = {}

    async def trigger(self, workflow_id: int) -> Execution:
        self.triggered.append(workflow_id)
        ending = self.script[workflow_id].pop(0)
        if isinstance(ending, Exception):
            raise ending
        if ending == "hang":
            await asyncio.Event().wait()
        ident = len(self.triggered)
        self._ends[ident] = str(ending)
        return Execution.from_record({"id": ident, "state": "created"})

    async def get_execution(self, execution_id: int) -> Execution:
        self.polls[execution_id] += 1
        if self.poll_error is not None:
            raise self.poll_error
        state = self._ends.get(execution_id, "succeeded")
        if self.polls[execution_id] < 2:
            state = "running"
        return Execution.from_record({"id": execution_id, "state": state})


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


def plan_of(tmp_path: Path, body: str):
    path = tmp_path / "plan.yaml"
    path.write_text(
        "version: 1\nname: t\ndefaults: {poll_interval: 1s, max_poll_interval: 1s, "
        f"retry_delay: 5s, timeout: 1m}}\nworkflows:\n{body}"
    )
    return load_plan(path)


def execute(clock: VirtualClock, plan, api: FakeApi, *, prior: RunRecord | None = None):
    events: list = []

    async def main() -> RunRecord:
        executor = Executor(
            planned(plan, prior=prior),
            api,
            Bus(sinks=[events.append]),
            clock=Clock(clock, clock.wall),
        )
        return await executor.execute()

    return clock.run(main()), events


def finished(events: list) -> list[tuple[str, int, str]]:
    return [
        (e.step.name, e.attempt.number, e.outcome) for e in events if isinstance(e, AttemptFinished)
    ]


def test_a_failed_execution_is_retried_until_the_retries_run_out(
    tmp_path: Path, clock: VirtualClock
) -> None:
    plan = plan_of(tmp_path, "  a: {workflow_id: 1, retries: 2}\n")
    run, events = execute(clock, plan, FakeApi({1: ["failed", "failed", "failed"]}))
    assert run.state == "failed"
    assert finished(events) == [("a", 1, "failed"), ("a", 2, "failed"), ("a", 3, "failed")]
    assert run.steps["a"].reason == "execution 3 failed (attempt 3 of 3)"


def test_a_retry_that_succeeds_ends_the_step(tmp_path: Path, clock: VirtualClock) -> None:
    plan = plan_of(tmp_path, "  a: {workflow_id: 1, retries: 3}\n")
    api = FakeApi({1: ["failed", "succeeded"]})
    start = clock.now
    run, _ = execute(clock, plan, api)
    assert run.state == "succeeded" and api.triggered == [1, 1]
    # two polls of 1 s an attempt, and the 5 s retry delay between them (jitter: <= 10 %)
    assert 0.9 * 9 <= clock.now - start <= 9


@pytest.mark.parametrize(
    ("ending", "outcome", "reason"),
    [
        ("hang", "unknown", "the step's timeout (1m) ran out before the API answered"),
        (TriggerOutcomeUnknown("the answer was lost"), "unknown", "the answer was lost"),
        (ApiUnavailable("the API is unavailable"), "error", "the API is unavailable"),
    ],
)
def test_a_trigger_without_an_execution_is_never_retried(
    tmp_path: Path, clock: VirtualClock, ending: object, outcome: str, reason: str
) -> None:
    plan = plan_of(tmp_path, "  a: {workflow_id: 1, retries: 3}\n")
    api = FakeApi({1: [ending, "succeeded"]})
    run, events = execute(clock, plan, api)
    assert api.triggered == [1]
    assert finished(events) == [("a", 1, outcome)]
    assert run.state == "failed" and reason in (run.steps["a"].reason or "")


def test_a_poll_that_fails_ends_the_attempt_without_a_retry(
    tmp_path: Path, clock: VirtualClock
) -> None:
    plan = plan_of(tmp_path, "  a: {workflow_id: 1, retries: 3}\n")
    api = FakeApi({1: ["succeeded"]}, poll_error=ApiUnavailable("polls fail"))
    run, events = execute(clock, plan, api)
    assert api.triggered == [1] and finished(events) == [("a", 1, "error")]
    assert run.steps["a"].reason == "polls fail"


def test_a_step_that_outlives_its_timeout_is_timed_out_once(
    tmp_path: Path, clock: VirtualClock
) -> None:
    plan = plan_of(tmp_path, "  a: {workflow_id: 1, retries: 3, timeout: 3s}\n")
    api = FakeApi({1: ["running-for-ever"]})
    start = clock.now
    run, events = execute(clock, plan, api)
    assert finished(events) == [("a", 1, "timed out")]
    assert run.steps["a"].reason == TIMEOUT_REASON and clock.now - start == pytest.approx(3)


def test_a_refused_token_halts_the_run_and_leaves_the_rest_pending(
    tmp_path: Path, clock: VirtualClock
) -> None:
    plan = plan_of(tmp_path, "  a: {workflow_id: 1}\n  b: {workflow_id: 2, depends_on: a}\n")
    run, events = execute(clock, plan, FakeApi({1: [AuthError("the token was refused")]}))
    assert run.state == "failed" and run.exit_code == 3 and run.auth_failed
    assert finished(events) == [("a", 1, "error")]
    assert run.steps["b"].state == "pending"
    assert run.steps["b"].reason == "not started: the run ended for want of a usable token"


def test_a_resume_polls_an_execution_in_flight_and_triggers_nothing(
    tmp_path: Path, clock: VirtualClock
) -> None:
    plan = plan_of(tmp_path, "  a: {workflow_id: 1}\n")
    first = planned(plan).run  # the record an earlier invocation left
    first.steps["a"].state = "running"
    first.steps["a"].attempts = [AttemptRecord(1, clock.wall(), execution_id=41, state="running")]
    api = FakeApi({})
    run, events = execute(clock, plan, api, prior=first)
    assert run.state == "succeeded" and api.triggered == [] and api.polls[41] == 2
    assert not [e for e in events if isinstance(e, AttemptTriggering)]
