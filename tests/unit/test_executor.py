"""The executor against the in-process sandbox (httpx.ASGITransport), on a virtual
clock: executions last tens of milliseconds and steps poll every 10-30 ms of a time
that jumps whenever every task waits on a timer. A run takes what its CPU takes, a
loaded machine changes no outcome, and how long something took on that clock is an
exact figure to assert.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from runbook.api import NexadataClient, RateBudget, RetryPolicy, Token
from runbook.events import (
    AttemptTriggered,
    AttemptTriggering,
    ExecutionSeen,
    Notice,
    RunFinished,
    StepFinished,
)
from runbook.executor import Executor
from runbook.plan import load_plan
from runbook.run.attempt import poll_delay
from runbook.run.bus import Bus
from runbook.run.planned import planned
from runbook.run.reasons import TIMEOUT_REASON
from runbook.run.shell import Clock
from runbook.sandbox.app import TRIGGER, create_app
from runbook.sandbox.scenario import Faults, Scenario
from tests.support.clocks import VirtualClock

CLOCK = VirtualClock()  # each test's own: see the fixture below
FAST = "defaults: {poll_interval: 10ms, max_poll_interval: 30ms, retry_delay: 10ms}\n"
QUICK = {"queue": 0.0, "duration": 0.05}


@pytest.fixture(autouse=True)
def clock(monkeypatch: pytest.MonkeyPatch) -> VirtualClock:
    """Each test on a clock of its own, starting at the same time: no test sees where
    another left the time."""
    fresh = VirtualClock()
    monkeypatch.setitem(globals(), "CLOCK", fresh)
    return fresh


def sandbox_app(scenario: Scenario | None = None):
    """The in-process sandbox, on the tests' virtual clock."""
    return create_app(scenario or Scenario(default=QUICK), token="t", clock=CLOCK, wall=CLOCK.wall)


def plan_of(tmp_path: Path, body: str, max_parallel: int = 4):
    path = tmp_path / "plan.yaml"
    path.write_text(f"version: 1\nname: t\nmax_parallel: {max_parallel}\n{FAST}workflows:\n{body}")
    return load_plan(path)


class Recorder:
    """A sink that keeps every event and can act on one (stop the run, inspect)."""

    def __init__(self) -> None:
        self.events: list = []
        self.in_flight = 0
        self.peak = 0
        self.hook = None

    async def __call__(self, event) -> None:
        await asyncio.sleep(0)  # an awaiting sink, like the journal's
        self.events.append(event)
        if isinstance(event, AttemptTriggering):
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        elif type(event).__name__ == "AttemptFinished":
            self.in_flight -= 1
        if self.hook:
            self.hook(event)

    def names(self, kind) -> list[str]:
        return [e.step.name for e in self.events if isinstance(e, kind)]

    def finished(self) -> dict[str, str]:
        return {e.step.name: e.step.state for e in self.events if isinstance(e, StepFinished)}


def execute(
    plan,
    scenario=None,
    *,
    selects=(),
    excludes=(),
    transport=None,
    app=None,
    recorder=None,
    max_parallel=None,
    retry=None,
    executor_hook=None,
    wall=None,
    prior=None,
):
    app = app or sandbox_app(scenario)
    recorder = recorder or Recorder()
    selection = plan.dag.select(selects, excludes)

    async def main():
        async with NexadataClient(
            "http://127.0.0.1/api/v1",
            Token("t"),
            transport=transport or httpx.ASGITransport(app=app),
            budget=RateBudget(rate=None, clock=CLOCK),
            retry=retry or RetryPolicy(backoff_base=0.005),
        ) as api:
            executor = Executor(
                planned(
                    plan,
                    steps=selection.steps,
                    assumed_done=selection.assumed_done,
                    max_parallel=max_parallel,
                    prior=prior,
                ),
                api,
                Bus(sinks=[recorder]),
                clock=Clock(CLOCK, wall or CLOCK.wall),
            )
            if executor_hook:
                executor_hook(executor, recorder)
            return await executor.execute()

    run = CLOCK.run(main())
    return run, recorder, app.state.sandbox.stats()


def test_chain_runs_in_order(tmp_path: Path) -> None:
    plan = plan_of(
        tmp_path,
        "  c: {workflow_id: 3, depends_on: b}\n  a: {workflow_id: 1}\n"
        "  b: {workflow_id: 2, depends_on: a}\n",
    )
    run, rec, stats = execute(plan)
    assert run.state == "succeeded"
    order = [
        (type(e).__name__, e.step.name)
        for e in rec.events
        if isinstance(e, (AttemptTriggering, StepFinished))
    ]
    assert order == [
        ("AttemptTriggering", "a"),
        ("StepFinished", "a"),
        ("AttemptTriggering", "b"),
        ("StepFinished", "b"),
        ("AttemptTriggering", "c"),
        ("StepFinished", "c"),
    ]
    assert stats["executions"] == {"1": 1, "2": 1, "3": 1}
    assert isinstance(rec.events[-1], RunFinished)


def test_diamond_and_fan_out_fan_in(tmp_path: Path) -> None:
    body = "".join(f"  x{i}: {{workflow_id: {10 + i}, depends_on: root}}\n" for i in range(6))
    body += "  root: {workflow_id: 1}\n"
    body += "  join: {workflow_id: 2, depends_on: [x0, x1, x2, x3, x4, x5]}\n"
    run, rec, _ = execute(plan_of(tmp_path, body, max_parallel=6))
    assert run.state == "succeeded"
    triggered = rec.names(AttemptTriggering)
    finished = rec.names(StepFinished)
    assert triggered[0] == "root" and triggered[-1] == "join"
    assert sorted(triggered[1:7]) == [f"x{i}" for i in range(6)]
    assert all(finished.index(f"x{i}") < triggered.index("join") for i in range(6))


def test_max_parallel_is_never_exceeded(tmp_path: Path) -> None:
    body = "".join(f"  s{i:02d}: {{workflow_id: {i + 1}}}\n" for i in range(12))
    scenario = Scenario(default={"queue": 0.0, "duration": 0.08})
    run, rec, stats = execute(plan_of(tmp_path, body, max_parallel=3), scenario)
    assert run.state == "succeeded"
    assert rec.peak == 3
    assert stats["peak_in_flight"] <= 3
    # slots are granted in (stage, name) order
    assert rec.names(AttemptTriggering) == [f"s{i:02d}" for i in range(12)]


def test_max_parallel_flag_overrides_the_plan(tmp_path: Path) -> None:
    body = "".join(f"  s{i}: {{workflow_id: {i + 1}}}\n" for i in range(5))
    run, rec, _ = execute(plan_of(tmp_path, body, max_parallel=5), max_parallel=1)
    assert run.max_parallel == 1 and rec.peak == 1


def test_stop_policy(tmp_path: Path) -> None:
    body = (
        "  bad: {workflow_id: 42}\n"
        "  slow: {workflow_id: 7}\n"
        "  after_bad: {workflow_id: 8, depends_on: bad}\n"
        "  after_slow: {workflow_id: 9, depends_on: slow}\n"
        "  later: {workflow_id: 10, depends_on: after_slow}\n"
    )
    scenario = Scenario(
        default=QUICK,
        workflows={
            42: {"outcome": "failed", "duration": 0.01, "errors": ("boom",)},
            7: {"duration": 0.3},
        },
    )
    run, _rec, stats = execute(plan_of(tmp_path, body), scenario)
    states = {name: step.state for name, step in run.steps.items()}
    assert states == {
        "bad": "failed",
        "slow": "succeeded",
        "after_bad": "skipped",
        "after_slow": "cancelled",
        "later": "cancelled",
    }
    assert run.state == "failed"
    assert run.steps["bad"].reason == "execution 1 failed"
    assert run.steps["bad"].attempts[0].errors == ("boom",)
    assert run.steps["after_bad"].reason == "upstream bad did not succeed"
    assert run.steps["after_slow"].reason == "not started: step bad failed (on_failure: stop)"
    assert stats["executions"] == {"42": 1, "7": 1}  # nothing new started after the failure


def test_continue_policy(tmp_path: Path) -> None:
    body = (
        "  bad: {workflow_id: 42, on_failure: continue}\n"
        "  after_bad: {workflow_id: 8, depends_on: bad}\n"
        "  deeper: {workflow_id: 11, depends_on: [after_bad, good]}\n"
        "  good: {workflow_id: 7}\n"
        "  after_good: {workflow_id: 9, depends_on: good}\n"
    )
    scenario = Scenario(default=QUICK, workflows={42: {"outcome": "failed", "duration": 0.01}})
    run, _, stats = execute(plan_of(tmp_path, body), scenario)
    states = {name: step.state for name, step in run.steps.items()}
    assert states == {
        "bad": "failed",
        "after_bad": "skipped",
        "deeper": "skipped",
        "good": "succeeded",
        "after_good": "succeeded",
    }
    assert run.state == "failed"
    assert run.steps["deeper"].reason == "upstream after_bad did not succeed"
    assert stats["executions"] == {"42": 1, "7": 1, "9": 1}


def test_retries_recover(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, "  a: {workflow_id: 5, retries: 2}\n")
    scenario = Scenario(default=QUICK, workflows={5: {"fail_first": 2}})
    run, rec, stats = execute(plan, scenario)
    step = run.steps["a"]
    assert step.state == "succeeded"
    assert [a.state for a in step.attempts] == ["failed", "failed", "succeeded"]
    assert [a.execution_id for a in step.attempts] == [1, 2, 3]
    assert stats["executions"] == {"5": 3}
    assert len([e for e in rec.events if type(e).__name__ == "RetryScheduled"]) == 2


def test_retries_exhausted(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, "  a: {workflow_id: 5, retries: 1}\n")
    run, _, stats = execute(plan, Scenario(default=QUICK, workflows={5: {"fail_first": 5}}))
    assert run.steps["a"].state == "failed"
    assert run.steps["a"].reason == "execution 2 failed (attempt 2 of 2)"
    assert stats["executions"] == {"5": 2}


def test_timeout_is_not_retried(tmp_path: Path) -> None:
    plan = plan_of(
        tmp_path,
        "  a: {workflow_id: 5, retries: 3, timeout: 150ms}\n  b: {workflow_id: 6, depends_on: a}\n",
    )
    run, _, stats = execute(plan, Scenario(default=QUICK, workflows={5: {"duration": None}}))
    assert run.steps["a"].state == "failed"
    assert run.steps["a"].reason == TIMEOUT_REASON
    assert run.steps["a"].attempts[0].state == "running"
    assert run.steps["b"].state == "skipped"
    assert stats["executions"] == {"5": 1}


def test_unknown_state_is_tolerated_and_warned_once(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, "  a: {workflow_id: 5}\n")
    scenario = Scenario(default=QUICK, workflows={5: {"duration": 0.15, "running_state": "paused"}})
    run, rec, _ = execute(plan, scenario)
    assert run.steps["a"].state == "succeeded"
    notices = [e.message for e in rec.events if isinstance(e, Notice)]
    assert notices == [
        "execution 1 reports an unknown state 'paused'; polling on until the step's timeout"
    ]


def test_404_on_trigger_fails_the_step_without_retry(tmp_path: Path) -> None:
    plan = plan_of(
        tmp_path,
        "  a: {workflow_id: 99, retries: 3, on_failure: continue}\n  b: {workflow_id: 6}\n",
    )
    run, _, stats = execute(plan, Scenario(default=QUICK, workflows={99: {"exists": False}}))
    assert run.steps["a"].state == "failed"
    assert run.steps["a"].reason == "workflow 99 not found, or not in this token's organization"
    assert len(run.steps["a"].attempts) == 1
    assert run.steps["b"].state == "succeeded"
    assert stats["requests"][TRIGGER] == {"200": 1, "404": 1}


def test_lost_trigger_answers_fail_the_step_and_are_never_resent(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, "  a: {workflow_id: 5, retries: 2}\n")
    scenario = Scenario(seed=1, default=QUICK, faults=Faults(lost_answer_rate=1.0))
    run, _, stats = execute(plan, scenario)
    step = run.steps["a"]
    assert step.state == "failed"
    assert step.reason.startswith("trigger outcome unknown for workflow 5")
    assert [a.state for a in step.attempts] == ["unknown"]
    assert stats["requests"][TRIGGER] == {"500": 1} and stats["executions"] == {"5": 1}


def test_faults_are_absorbed_with_one_execution_per_step(tmp_path: Path) -> None:
    body = "".join(f"  s{i:02d}: {{workflow_id: {i + 1}}}\n" for i in range(20))
    body += "  last: {workflow_id: 99, depends_on: [s00, s19]}\n"
    scenario = Scenario(
        seed=7,
        default=QUICK,
        faults=Faults(
            error_rate=0.2, errors_on=frozenset({"poll"}), unavailable_rate=0.02, rate_limit=400
        ),
    )
    run, _, stats = execute(plan_of(tmp_path, body, max_parallel=8), scenario)
    assert run.state == "succeeded", {n: s.reason for n, s in run.steps.items() if s.reason}
    assert set(stats["executions"].values()) == {1}
    assert len(stats["executions"]) == 21
    codes = {code for route in stats["requests"].values() for code in route}
    assert "500" in codes  # the faults really happened (503 is rarer: test_api covers it)


def test_selection_runs_only_selected_steps(tmp_path: Path) -> None:
    plan = plan_of(
        tmp_path,
        "  a: {workflow_id: 1}\n  b: {workflow_id: 2, depends_on: a}\n"
        "  c: {workflow_id: 3, depends_on: b}\n",
    )
    run, _, stats = execute(plan, selects=("b+",))
    assert set(run.steps) == {"b", "c"} and run.assumed_done == ("a",)
    assert run.state == "succeeded"
    assert stats["executions"] == {"2": 1, "3": 1}


def test_authentication_failure_mid_run_stops_everything(tmp_path: Path) -> None:
    body = "".join(f"  s{i}: {{workflow_id: {i + 1}}}\n" for i in range(4))
    body += "  after: {workflow_id: 9, depends_on: [s0, s1]}\n"
    app = sandbox_app(Scenario(default={"queue": 0.0, "duration": 0.2}))
    inner = httpx.ASGITransport(app=app)
    seen = {"count": 0}

    class RevokedAfter(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request):
            seen["count"] += 1
            if seen["count"] > 6:
                return httpx.Response(401, request=request)
            return await inner.handle_async_request(request)

    run, _, stats = execute(plan_of(tmp_path, body), app=app, transport=RevokedAfter())
    assert run.state == "failed" and run.exit_code == 3
    assert run.reason.startswith("authentication failed")
    assert {s.state for s in run.steps.values()} == {"pending"}
    assert "after" not in {k for k, v in stats["executions"].items()}
    assert stats["executions_total"] == 4


def test_interrupt_leaves_in_flight_steps_pending_and_triggers_nothing_new(tmp_path: Path) -> None:
    body = "  a: {workflow_id: 1}\n  b: {workflow_id: 2}\n  c: {workflow_id: 3, depends_on: a}\n"
    scenario = Scenario(default={"queue": 0.0, "duration": 0.2})

    def hook(executor, recorder):
        def on_event(event):
            if isinstance(event, AttemptTriggered) and event.step.name == "b":
                executor.interrupt("interrupted by SIGINT")

        recorder.hook = on_event

    run, rec, stats = execute(plan_of(tmp_path, body), scenario, executor_hook=hook)
    assert run.state == "interrupted" and run.reason == "interrupted by SIGINT"
    assert run.steps["a"].state == "pending" and run.steps["b"].state == "pending"
    assert run.steps["a"].reason == (
        "interrupted while execution 1 was running; it may still be running"
    )
    assert run.steps["c"].reason == "not started: the run was interrupted"
    assert stats["executions"] == {"1": 1, "2": 1}
    assert isinstance(rec.events[-1], RunFinished)


def test_sinks_see_triggering_before_the_post_and_the_id_before_any_poll(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, "  a: {workflow_id: 5}\n")
    app = sandbox_app()
    posts_when_triggering = []

    def hook(executor, recorder):
        def on_event(event):
            if isinstance(event, AttemptTriggering):
                posts_when_triggering.append(app.state.sandbox.stats()["executions_total"])

        recorder.hook = on_event

    _run, rec, _ = execute(plan, app=app, executor_hook=hook)
    assert posts_when_triggering == [0]
    kinds = [type(e) for e in rec.events]
    assert kinds.index(AttemptTriggered) < kinds.index(ExecutionSeen)


def test_poll_delay_curve() -> None:
    import random

    from runbook.plan import Step

    step = Step("s", 1, (), None, "stop", 0, 30.0, 3600.0, 5.0, 60.0)
    rng = random.Random(1)
    assert 4.5 <= poll_delay(step, 0, rng) <= 5.0
    assert 9.0 <= poll_delay(step, 100, rng) <= 10.0  # a tenth of the running time
    assert 54.0 <= poll_delay(step, 10_000, rng) <= 60.0  # capped


def test_plan_order_is_kept_when_no_stages_are_given(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, "  b: {workflow_id: 2}\n  a: {workflow_id: 1, depends_on: b}\n")

    async def main():
        async with NexadataClient(
            "http://127.0.0.1/api/v1",
            Token("t"),
            transport=httpx.ASGITransport(app=sandbox_app()),
        ) as api:
            return await Executor(
                planned(plan), api, Bus(), clock=Clock(CLOCK, CLOCK.wall)
            ).execute()

    run = CLOCK.run(main())
    assert [s.stage for s in run.steps.values()] == [1, 2]
    assert run.state == "succeeded"


@pytest.mark.parametrize("count", [0])
def test_empty_selection_succeeds_at_once(tmp_path: Path, count: int) -> None:
    plan = plan_of(tmp_path, "  a: {workflow_id: 1}\n")
    run, _rec, stats = execute(plan, selects=("a",), excludes=("a",))
    assert run.state == "succeeded" and run.steps == {}
    assert stats["requests_total"] == count


def test_a_stop_ends_a_retry_delay_at_once(tmp_path: Path) -> None:
    body = (
        "  flaky: {workflow_id: 5, retries: 3, retry_delay: 1h, on_failure: continue}\n"
        "  fatal: {workflow_id: 6}\n"
    )
    scenario = Scenario(
        default=QUICK,
        workflows={
            5: {"fail_first": 9, "duration": 0.01},
            6: {"outcome": "failed", "duration": 0.15},
        },
    )
    run, _, stats = execute(plan_of(tmp_path, body), scenario)
    assert run.steps["flaky"].state == "failed"
    assert run.steps["flaky"].reason == "execution 2 failed (not retried: the run is stopping)"
    assert stats["executions"] == {"5": 1, "6": 1}


def test_an_interrupt_during_a_retry_delay_leaves_the_step_pending(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, "  flaky: {workflow_id: 5, retries: 3, retry_delay: 1h}\n")
    scenario = Scenario(default=QUICK, workflows={5: {"fail_first": 9, "duration": 0.01}})

    def hook(executor, recorder):
        def on_event(event):
            if type(event).__name__ == "RetryScheduled":
                asyncio.get_running_loop().call_soon(executor.interrupt, "interrupted by SIGTERM")

        recorder.hook = on_event

    run, _, _ = execute(plan, scenario, executor_hook=hook)
    assert run.state == "interrupted"
    assert run.steps["flaky"].state == "pending"
    assert run.steps["flaky"].reason == "interrupted before a retry; execution 1 failed"


def test_a_poll_answering_404_fails_the_step(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, "  a: {workflow_id: 5, retries: 2}\n")
    app = sandbox_app(Scenario(default={"queue": 0.0, "duration": 0.2}))
    inner = httpx.ASGITransport(app=app)

    class Forgetful(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request):
            if request.method == "GET":
                return httpx.Response(404, request=request)
            return await inner.handle_async_request(request)

    run, _, _ = execute(plan, app=app, transport=Forgetful())
    assert run.steps["a"].state == "failed"
    assert run.steps["a"].reason.startswith("execution 1 not found, or not visible to this token")
    assert len(run.steps["a"].attempts) == 1


def test_a_bug_in_a_step_is_surfaced_not_swallowed(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, "  a: {workflow_id: 5}\n  b: {workflow_id: 6}\n")

    class Broken(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request):
            raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):
        execute(plan, transport=Broken())


def test_wall_clock_jumps_change_no_timeout_poll_or_retry(tmp_path: Path) -> None:
    """Timeouts, polls and retry delays run on the monotonic clock: the wall clock
    leaping a day ahead, then a day back, times nothing out and delays nothing."""
    plan = plan_of(
        tmp_path,
        "  a: {workflow_id: 1, timeout: 2s, retries: 1}\n"
        "  b: {workflow_id: 2, timeout: 2s, depends_on: a}\n",
    )
    offset = 0.0

    def wall() -> float:
        return CLOCK.wall() + offset

    def leap(event) -> None:
        nonlocal offset
        if isinstance(event, AttemptTriggered):
            offset = 86400.0 if offset <= 0 else -86400.0

    recorder = Recorder()
    recorder.hook = leap
    run, _, stats = execute(
        plan,
        Scenario(default=QUICK, workflows={1: {"fail_first": 1}}),
        recorder=recorder,
        wall=wall,
    )
    assert {name: step.state for name, step in run.steps.items()} == {
        "a": "succeeded",
        "b": "succeeded",
    }
    assert stats["executions"] == {"1": 2, "2": 1}  # a's retry was due, nothing timed out


def test_a_trigger_refused_for_the_token_is_not_ambiguous_on_resume(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, "  a: {workflow_id: 1}\n")
    app = sandbox_app()
    refused = httpx.MockTransport(lambda request: httpx.Response(401, request=request))
    first, _, _ = execute(plan, app=app, transport=refused)
    assert first.exit_code == 3
    (attempt,) = first.steps["a"].attempts
    assert attempt.state == "not created" and attempt.ended_at is not None
    assert first.steps["a"].reason == "not started: its trigger was refused, and the run halted"

    again, _, stats = execute(plan, app=app, prior=first)
    assert again.steps["a"].state == "succeeded"  # triggered again: nothing was created
    assert stats["executions"] == {"1": 1}


def test_a_stop_withdraws_a_step_waiting_for_a_slot_and_gives_it_to_the_clean_up(
    tmp_path: Path,
) -> None:
    body = (
        "  bad: {workflow_id: 1}\n"
        "  waiting: {workflow_id: 2}\n"
        "  clean: {workflow_id: 3, depends_on: bad, run_if: always}\n"
    )
    scenario = Scenario(default=QUICK, workflows={1: {"outcome": "failed", "duration": 0.05}})
    run, rec, stats = execute(plan_of(tmp_path, body, max_parallel=1), scenario)
    assert {name: step.state for name, step in run.steps.items()} == {
        "bad": "failed",
        "waiting": "cancelled",
        "clean": "succeeded",
    }
    assert run.steps["clean"].why == "run_if always: every upstream has ended (upstream bad failed)"
    assert stats["executions"] == {"1": 1, "3": 1}
    assert rec.names(AttemptTriggering) == ["bad", "clean"]


def test_a_retry_waiting_for_a_slot_when_the_run_stops_is_not_sent(tmp_path: Path) -> None:
    body = "  a: {workflow_id: 1, retries: 2, on_failure: continue}\n  b: {workflow_id: 2}\n"
    scenario = Scenario(
        default=QUICK,
        workflows={
            1: {"fail_first": 5, "duration": 0.01},
            2: {"outcome": "failed", "duration": 0.3},
        },
    )
    run, _, stats = execute(plan_of(tmp_path, body, max_parallel=1), scenario)
    assert run.steps["a"].state == "failed"
    assert run.steps["a"].reason == "execution 1 failed (not retried: the run is stopping)"
    assert stats["executions"] == {"1": 1, "2": 1}


def slow_app(trigger_delay: float = 0.0, poll_delay_: float = 0.0, retry_after: str = ""):
    """An API whose answers take their time, or that keeps asking to wait."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def trigger(request):
        await asyncio.sleep(trigger_delay)
        return JSONResponse({"id": 1, "state": "running"})

    async def poll(request):
        if retry_after:
            return JSONResponse({}, status_code=503, headers={"Retry-After": retry_after})
        await asyncio.sleep(poll_delay_)
        return JSONResponse({"id": 1, "state": "succeeded"})

    app = Starlette(
        routes=[
            Route("/api/v1/workflows/{workflow_id:int}/execute", trigger, methods=["POST"]),
            Route("/api/v1/workflows/executions/{execution_id:int}", poll, methods=["GET"]),
        ]
    )
    app.state.sandbox = SimpleNamespace(stats=dict)  # what execute() reads of a sandbox
    return app


@pytest.mark.parametrize(
    ("app_options", "state", "reason"),
    [
        ({"trigger_delay": 60}, "unknown", "trigger outcome unknown for workflow 5: the step's"),
        ({"poll_delay_": 60}, "running", TIMEOUT_REASON),
        ({"retry_after": "120"}, "running", TIMEOUT_REASON),
    ],
    ids=["slow-trigger", "slow-poll", "retry-after-120"],
)
def test_a_steps_timeout_bounds_its_requests_and_their_waits(
    tmp_path: Path, app_options, state, reason
) -> None:
    plan = plan_of(tmp_path, "  a: {workflow_id: 5, timeout: 300ms, retries: 2}\n")
    app = slow_app(**app_options)
    started = CLOCK()
    run, _, _ = execute(plan, app=app, transport=httpx.ASGITransport(app=app))
    assert CLOCK() - started == pytest.approx(0.3, abs=0.005)  # its 300 ms: not 60 s, not 120 s
    step = run.steps["a"]
    assert step.state == "failed" and step.reason.startswith(reason)
    assert [a.state for a in step.attempts] == [state]  # never retried


def test_an_interrupt_waits_for_a_trigger_under_way_only_so_long(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, "  a: {workflow_id: 5}\n")
    app = slow_app(trigger_delay=60)

    def hook(executor, recorder):
        executor.interrupt_grace = 0.2

        def on_event(event):
            if isinstance(event, AttemptTriggering):
                asyncio.get_running_loop().call_later(0.05, executor.interrupt, "SIGTERM")

        recorder.hook = on_event

    started = CLOCK()
    run, _, _ = execute(plan, app=app, transport=httpx.ASGITransport(app=app), executor_hook=hook)
    assert CLOCK() - started == pytest.approx(0.25, abs=0.005)  # 50 ms, then a 200 ms grace
    assert run.state == "interrupted"
    step = run.steps["a"]
    assert (step.state, step.reason) == ("pending", "interrupted while triggering")
    assert step.attempts[0].execution_id is None  # a resume treats it as ambiguous


def test_every_ambiguous_step_of_a_resume_is_reported_none_cancelled(tmp_path: Path) -> None:
    from runbook.events import AttemptRecord, RunRecord, StepRecord

    plan = plan_of(
        tmp_path,
        "  a: {workflow_id: 1}\n  b: {workflow_id: 2}\n  c: {workflow_id: 3}\n"
        "  after: {workflow_id: 4, depends_on: [a, b, c]}\n",
    )
    steps = {name: StepRecord(name, wid, 1) for name, wid in (("a", 1), ("b", 2), ("c", 3))}
    for name in ("a", "b"):  # killed while triggering: an execution may exist
        steps[name].state = "running"
        steps[name].attempts.append(AttemptRecord(1, 1.0))
    steps["after"] = StepRecord("after", 4, 2)
    prior = RunRecord(plan="t", run_id=1, max_parallel=4, steps=steps)
    run, _, stats = execute(plan, prior=prior)
    for name in ("a", "b"):
        assert run.steps[name].state == "failed"
        assert "not triggered again" in run.steps[name].reason
    assert run.steps["after"].state == "skipped"
    assert "1" not in stats["executions"] and "2" not in stats["executions"]
