"""The journal as an executor sink: the group commit of the writes events make.

What each event writes, and whether the executor waits for its commit, is
:func:`~runbook.journal.writes.statements_for`'s; this module decides when the writes
are committed. The executor awaits every sink for every event, so for the events it
waits on (an attempt *triggering* before its POST, its execution id) the commit has
happened when the executor goes on.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable

from runbook.errors import JournalError
from runbook.events import Event
from runbook.journal.schema import Statement
from runbook.journal.store import Store
from runbook.journal.writes import statements_for

__all__ = ["JournalSink"]

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
        statements, awaited = statements_for(event, self.run_id, new=self._new)
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
