"""The journal as an executor sink: events become group-committed writes.

The sacred write: an attempt is committed as *triggering* before its POST, and its
execution id as soon as the answer arrives, before anything else happens. The executor
awaits every sink for every event, so for those events the commit has happened when
the executor goes on.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Awaitable
from typing import Any

from runbook._compat import assert_never
from runbook.errors import JournalError
from runbook.events import (
    TERMINAL_STATES,
    AttemptFinished,
    AttemptRecord,
    AttemptTriggered,
    AttemptTriggering,
    Event,
    ExecutionSeen,
    Forecasted,
    Notice,
    NotificationSent,
    RetryScheduled,
    RunFinished,
    RunLate,
    RunStarted,
    SignalReceived,
    StepFinished,
)
from runbook.journal.store import Store

__all__ = ["JournalSink"]

Statement = tuple[str, tuple[Any, ...]]

LINGER = 0.25
"""How long a write the executor does not wait for may stay queued, in seconds: an
awaited write, or this delay, commits it. 500 executions polled every 0.5 s end in a
stream of loop iterations; committing each one was a fifth of ``apply``'s CPU."""


class JournalSink:
    """Records the events of run ``run_id`` in ``store``. ``new``: the run's row was just
    written for this invocation, whose start (the executor's clock) it then takes."""

    def __init__(self, store: Store, run_id: int, *, new: bool = False) -> None:
        self.store = store
        self.run_id = run_id
        self._new = new
        self._queued: list[Statement] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._failure: JournalError | None = None
        self._soon = False  # a flush is scheduled for this loop iteration
        self._later: asyncio.TimerHandle | None = None  # a flush in LINGER seconds

    def close(self) -> None:
        """Commit what is still queued (the loop ended before its last flush)."""
        if self._queued:
            self._flush()

    def __call__(self, event: Event) -> Awaitable[None] | None:
        """Record ``event``. For the events the executor must wait on (an attempt
        *triggering*, its execution id, a retry's wait, the run's end) the awaitable
        resolves once it, and everything queued before it, is committed.

        Writes are group-committed: an awaited write is committed at the end of its
        event-loop iteration, together with every write queued until then, so 500 steps
        triggered together cost one fsync, not 500. The other writes (a state seen, an
        attempt's or a step's end) are queued without making the executor wait, and
        committed with the next awaited write or after LINGER seconds, whichever comes
        first: commits keep the order of the events, so the next awaited write — a
        dependent's trigger, at the latest the run's end — is durable only with all of
        them. A write that fails fails every awaited write after it: nothing is
        triggered past a journal that no longer records.
        """
        if self._failure is not None:
            raise self._failure
        statements, awaited = self._statements(event)
        if not statements and not (awaited and self._queued):
            return None
        loop = asyncio.get_running_loop()
        self._queued.extend(statements)
        if not awaited:
            if self._later is None and not self._soon:
                self._later = loop.call_later(LINGER, self._flush)
            return None
        if not self._soon:
            self._soon = True
            loop.call_soon(self._flush)  # after every event of this loop iteration
        future: asyncio.Future[None] = loop.create_future()
        self._waiters.append(future)
        return future

    def _flush(self) -> None:
        """Commit every queued write in one transaction."""
        self._soon = False
        if self._later is not None:
            self._later.cancel()
            self._later = None
        if not self._queued and not self._waiters:
            return
        statements, self._queued = self._queued, []
        waiters, self._waiters = self._waiters, []
        try:
            with self.store.write() as db:
                for sql, parameters in statements:
                    db.execute(sql, parameters)
        except (JournalError, sqlite3.Error) as exc:
            self._failure = (
                exc
                if isinstance(exc, JournalError)
                else JournalError(f"the journal {self.store.path} cannot be written: {exc}")
            )
            for future in waiters:
                if not future.done():
                    future.set_exception(self._failure)
        else:
            for future in waiters:
                if not future.done():
                    future.set_result(None)

    def _statements(self, event: Event) -> tuple[list[Statement], bool]:
        """The writes ``event`` makes, and whether the executor waits for their commit:
        before a POST, after its answer, before a retry delay (the failed attempt is
        durable before a wait that may be long), at the end."""
        run_id = self.run_id
        match event:
            case AttemptTriggering(step=s, attempt=a):
                return [
                    (
                        "INSERT INTO attempts (run_id, step, number, phase, state, "
                        "triggered_at) VALUES (?,?,?,'triggering','triggering',?)",
                        (run_id, s.name, a.number, a.triggered_at),
                    ),
                    (
                        "UPDATE steps SET state = ?, started_at = ?, why = ? "
                        "WHERE run_id = ? AND name = ?",
                        (s.state, s.started_at, s.why, run_id, s.name),
                    ),
                ], True
            case AttemptTriggered(step=s, attempt=a):
                return [self._attempt(s.name, a, "in flight")], True
            case ExecutionSeen(step=s, attempt=a):
                if a.state in TERMINAL_STATES:
                    return [], False  # the attempt's end follows at once, in one transaction
                return [self._attempt(s.name, a, "in flight")], False
            case AttemptFinished(step=s, attempt=a):
                return [self._attempt(s.name, a, "terminal")], False
            case RetryScheduled():
                return [], True
            case StepFinished(step=s):
                return [
                    (
                        "UPDATE steps SET state = ?, reason = ?, started_at = ?, ended_at = ?, "
                        "ignored = ?, why = ? WHERE run_id = ? AND name = ?",
                        (
                            s.state,
                            s.reason,
                            s.started_at,
                            s.ended_at,
                            int(s.ignored),
                            s.why,
                            run_id,
                            s.name,
                        ),
                    )
                ], False
            case RunFinished(run=run):
                pending: list[Statement] = [
                    (
                        "UPDATE steps SET state = ?, reason = ? WHERE run_id = ? AND name = ?",
                        (s.state, s.reason, run_id, s.name),
                    )
                    for s in run.steps.values()
                    if s.state == "pending"
                ]
                return [
                    *pending,
                    (
                        "UPDATE runs SET state = ?, reason = ?, ended_at = ?, "
                        "token_refreshes = ?, auth_failed = ? WHERE id = ?",
                        (
                            run.state,
                            run.reason,
                            run.ended_at,
                            run.token_refreshes,
                            int(run.auth_failed),
                            run_id,
                        ),
                    ),
                ], True
            case RunLate():
                return [("UPDATE runs SET late = 1 WHERE id = ?", (run_id,))], False
            case NotificationSent(record=n):
                return [
                    (
                        "INSERT INTO notifications (run_id, kind, event, target, ok, error, "
                        "attempts, at) VALUES (?,?,?,?,?,?,?,?)",
                        (run_id, n.kind, n.event, n.target, int(n.ok), n.error, n.attempts, n.at),
                    )
                ], False
            case RunStarted(run=run) if self._new:
                # one start for the run: the one its events, metrics and report show
                return [
                    ("UPDATE runs SET started_at = ? WHERE id = ?", (run.started_at, run_id))
                ], False
            case RunStarted() | Notice() | SignalReceived() | Forecasted():
                # the run and its steps were written before it started; notices and
                # signals change nothing (the run's end says how it ended)
                return [], False
            case _:
                assert_never(event)

    def _attempt(self, step: str, a: AttemptRecord, phase: str) -> Statement:
        return (
            "UPDATE attempts SET phase = ?, execution_id = ?, state = ?, record = ?, "
            "ended_at = ? WHERE run_id = ? AND step = ? AND number = ?",
            (
                phase,
                a.execution_id,
                a.state,
                json.dumps(a.record),
                a.ended_at,
                self.run_id,
                step,
                a.number,
            ),
        )
