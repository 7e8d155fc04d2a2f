"""What each event writes to the journal, and whether the executor waits for its commit:
``statements_for`` on events alone, no SQLite (test_journal.py runs them on files)."""

from __future__ import annotations

import ast
from typing import get_args

import pytest

from runbook.events import (
    AttemptFinished,
    AttemptRecord,
    AttemptTriggered,
    AttemptTriggering,
    Event,
    ExecutionSeen,
    Forecasted,
    Notice,
    NotificationRecord,
    NotificationSent,
    RetryScheduled,
    RunFinished,
    RunLate,
    RunRecord,
    RunStarted,
    SignalReceived,
    StepFinished,
    StepRecord,
)
from runbook.journal.writes import (
    Writes,
    abandoned,
    new_run,
    new_steps,
    reopened_run,
    statements_for,
)
from tests.support.paths import ROOT

RUN_ID = 7
UPDATE_ATTEMPT = (
    "UPDATE attempts SET phase = ?, execution_id = ?, state = ?, record = ?, ended_at = ? "
    "WHERE run_id = ? AND step = ? AND number = ?"
)


def a_step() -> StepRecord:
    return StepRecord("a", 11, 1, state="running", started_at=10.0, why="b failed")


def a_run() -> RunRecord:
    steps = {
        "a": a_step(),
        "b": StepRecord("b", 12, 2, reason="a failed"),
        "c": StepRecord("c", 13, 2, state="skipped", reason="a failed"),
        "d": StepRecord("d", 14, 3),
    }
    return RunRecord(
        plan="p",
        run_id=RUN_ID,
        max_parallel=2,
        steps=steps,
        assumed_done=("z",),
        started_at=5.0,
        auth="env",
    )


def test_a_trigger_is_written_triggering_and_waited_for_before_its_post() -> None:
    step, attempt = a_step(), AttemptRecord(2, 10.0)
    assert statements_for(AttemptTriggering(step, attempt, 0), RUN_ID) == Writes(
        (
            (
                "INSERT INTO attempts (run_id, step, number, phase, state, triggered_at) "
                "VALUES (?,?,?,?,?,?)",
                (7, "a", 2, "triggering", "triggering", 10.0),
            ),
            (
                "UPDATE steps SET state = ?, started_at = ?, why = ? WHERE run_id = ? AND name = ?",
                ("running", 10.0, "b failed", 7, "a"),
            ),
        ),
        awaited=True,
    )


def test_the_execution_id_is_written_and_waited_for() -> None:
    attempt = AttemptRecord(2, 10.0, execution_id=77, state="created", record={"id": 77})
    assert statements_for(AttemptTriggered(a_step(), attempt, 0), RUN_ID) == Writes(
        ((UPDATE_ATTEMPT, ("in flight", 77, "created", '{"id": 77}', None, 7, "a", 2)),),
        awaited=True,
    )


def test_a_state_seen_is_queued_and_a_terminal_one_left_to_the_attempts_end() -> None:
    attempt = AttemptRecord(2, 10.0, execution_id=77, state="running")
    seen = ExecutionSeen(a_step(), attempt, "created", 0)
    assert statements_for(seen, RUN_ID) == Writes(
        ((UPDATE_ATTEMPT, ("in flight", 77, "running", "null", None, 7, "a", 2)),),
        awaited=False,
    )
    for state in ("succeeded", "failed"):
        attempt.state = state
        assert statements_for(seen, RUN_ID) == Writes((), awaited=False)


def test_an_attempts_end_is_queued() -> None:
    attempt = AttemptRecord(
        2, 10.0, execution_id=77, state="failed", record={"errors": ["x"]}, ended_at=20.0
    )
    ended = AttemptFinished(a_step(), attempt, "failed", 0)
    assert statements_for(ended, RUN_ID) == Writes(
        ((UPDATE_ATTEMPT, ("terminal", 77, "failed", '{"errors": ["x"]}', 20.0, 7, "a", 2)),),
        awaited=False,
    )


def test_a_retrys_wait_writes_nothing_and_is_waited_for() -> None:
    # what was queued before it is durable before a wait that may be long
    assert statements_for(RetryScheduled(a_step(), 60.0, 0), RUN_ID) == Writes((), awaited=True)


def test_a_steps_end_is_queued() -> None:
    step = a_step()
    step.state, step.reason, step.ended_at, step.ignored = (
        "failed",
        "execution 77 failed",
        20.0,
        True,
    )
    assert statements_for(StepFinished(step, 0), RUN_ID) == Writes(
        (
            (
                "UPDATE steps SET state = ?, reason = ?, started_at = ?, ended_at = ?, "
                "ignored = ?, why = ? WHERE run_id = ? AND name = ?",
                ("failed", "execution 77 failed", 10.0, 20.0, 1, "b failed", 7, "a"),
            ),
        ),
        awaited=False,
    )


def test_the_runs_end_writes_the_steps_never_started_and_is_waited_for() -> None:
    run = a_run()
    run.state, run.reason, run.ended_at = "failed", "a failed", 30.0
    run.token_refreshes, run.auth_failed = 2, True
    assert statements_for(RunFinished(run, 0), RUN_ID) == Writes(
        (
            (
                "UPDATE steps SET state = ?, reason = ? WHERE run_id = ? AND name = ?",
                ("pending", "a failed", 7, "b"),
            ),
            (
                "UPDATE steps SET state = ?, reason = ? WHERE run_id = ? AND name = ?",
                ("pending", None, 7, "d"),
            ),
            (
                "UPDATE runs SET state = ?, reason = ?, ended_at = ?, token_refreshes = ?, "
                "auth_failed = ?, spans = ? WHERE id = ?",
                ("failed", "a failed", 30.0, 2, 1, "[]", 7),
            ),
        ),
        awaited=True,
    )


def test_lateness_and_a_delivery_are_queued() -> None:
    assert statements_for(RunLate(a_run(), 0), RUN_ID) == Writes(
        (("UPDATE runs SET late = ? WHERE id = ?", (1, 7)),), awaited=False
    )
    note = NotificationRecord("webhook", "late", "hooks.example", False, "HTTP 500", 3, 40.0)
    assert statements_for(NotificationSent(note, 0), RUN_ID) == Writes(
        (
            (
                "INSERT INTO notifications (run_id, kind, event, target, ok, error, attempts, "
                "at) VALUES (?,?,?,?,?,?,?,?)",
                (7, "webhook", "late", "hooks.example", 0, "HTTP 500", 3, 40.0),
            ),
        ),
        awaited=False,
    )


def test_a_new_runs_start_takes_the_executors_clock_and_a_resumed_one_keeps_its_own() -> None:
    run = a_run()
    run.spans = [(1.0, 2.0), (5.0, None)]
    started = RunStarted(run, 0)
    spans = "[[1.0, 2.0], [5.0, null]]"
    assert statements_for(started, RUN_ID, new=True) == Writes(
        (("UPDATE runs SET started_at = ?, spans = ? WHERE id = ?", (5.0, spans, 7)),),
        awaited=False,
    )
    # a resumed run keeps its start; its invocations are one more
    assert statements_for(started, RUN_ID) == Writes(
        (("UPDATE runs SET spans = ? WHERE id = ?", (spans, 7)),), awaited=False
    )


def examples() -> list[Event]:
    run, step, attempt = a_run(), a_step(), AttemptRecord(1, 10.0, state="running")
    note = NotificationRecord("healthchecks", "start", "hc.example", True, None, 1, 1.0)
    return [
        RunStarted(run, 0),
        AttemptTriggering(step, attempt, 0),
        AttemptTriggered(step, attempt, 0),
        ExecutionSeen(step, attempt, "created", 0),
        AttemptFinished(step, attempt, "failed", 0),
        RetryScheduled(step, 1.0, 0),
        StepFinished(step, 0),
        Notice("hello", 0),
        SignalReceived(name="SIGTERM", first=True, triggers_under_way=1, grace=30.0, at=0),
        RunLate(run, 0),
        NotificationSent(note, 0),
        Forecasted(
            run=run,
            p50_end=1.0,
            p90_end=2.0,
            critical_path=("a",),
            first=True,
            at_risk=False,
            at=0,
        ),
        RunFinished(run, 0),
    ]


def test_the_executor_waits_for_a_trigger_its_execution_id_a_retrys_wait_and_the_end() -> None:
    events = examples()
    assert {type(event) for event in events} == set(get_args(Event)), "an event untested"
    awaited = {
        type(e) for e in events for new in (False, True) if statements_for(e, 1, new=new).awaited
    }
    assert awaited == {AttemptTriggering, AttemptTriggered, RetryScheduled, RunFinished}


@pytest.mark.parametrize("kind", [Notice, SignalReceived, Forecasted])
def test_notices_signals_and_forecasts_write_nothing(kind: type) -> None:
    event = next(event for event in examples() if isinstance(event, kind))
    assert statements_for(event, RUN_ID, new=True) == Writes((), awaited=False)


def test_a_runs_rows_and_its_resume() -> None:
    run = a_run()
    options = {"sandbox": True}
    assert new_run(
        run,
        plan_path="p.yaml",
        plan_sha256="abc",
        options=options,
        started_at=5.0,
        pid=42,
        host="h",
    ) == (
        "INSERT INTO runs (plan, plan_path, plan_sha256, pid, host, state, max_parallel, "
        "assumed_done, options, started_at, auth, api_url, deadline) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            "p",
            "p.yaml",
            "abc",
            42,
            "h",
            "running",
            2,
            '["z"]',
            '{"sandbox": true}',
            5.0,
            "env",
            None,
            None,
        ),
    )
    insert_step = (
        "INSERT INTO steps (run_id, name, workflow_id, stage, state, run_if, on_failure, "
        "upstreams) VALUES (?,?,?,?,?,?,?,?)"
    )
    ((sql, rows),) = new_steps(7, run)
    assert sql == insert_step
    assert rows[:2] == [
        (7, "a", 11, 1, "running", "success", "stop", "[]"),
        (7, "b", 12, 2, "pending", "success", "stop", "[]"),
    ]
    assert len(rows) == 4
    run.steps["b"].run_if = "always"
    reopened, ((sql, rows),) = reopened_run(7, run, pid=43, host="k")
    assert reopened == (
        "UPDATE runs SET pid = ?, host = ?, state = ?, ended_at = ?, auth = ?, auth_failed = ?, "
        "invocations = ?, api_url = ? WHERE id = ?",
        (43, "k", "running", None, "env", 0, 1, None, 7),
    )
    assert sql == (
        insert_step + " ON CONFLICT (run_id, name) DO UPDATE SET "
        "run_if = excluded.run_if, on_failure = excluded.on_failure, "
        "upstreams = excluded.upstreams"
    )
    assert rows[1] == (7, "b", 12, 2, "pending", "always", "stop", "[]")
    empty = RunRecord(plan="p", run_id=7, max_parallel=1, steps={})
    assert new_steps(7, empty) == () and reopened_run(7, empty, pid=1, host="h")[1] == ()
    assert abandoned(7) == ("UPDATE runs SET state = ? WHERE id = ?", ("abandoned", 7))


def test_the_writes_are_pure() -> None:
    """No connection, no clock, no process: what is written follows from the event."""
    tree = ast.parse((ROOT / "runbook" / "journal" / "writes.py").read_text())
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not imported & {"sqlite3", "time", "os", "socket", "asyncio", "runbook.journal.store"}
