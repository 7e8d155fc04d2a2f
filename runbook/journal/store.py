"""The journal database of one state dir: its connection, and the typed queries.

WAL with ``synchronous=FULL``: a commit survives a killed process and a lost machine
alike. Opening it checks the state dir and the file (:mod:`runbook.statedir`) and brings
the schema up to date (:mod:`~runbook.journal.schema`). Queries return typed records
(:class:`RunRow`, :class:`~runbook.events.RunRecord`), every row checked as it loads
(:mod:`~runbook.journal.rows`). What it writes, :mod:`~runbook.journal.writes` builds.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runbook.apitimes import believed_within, seen_span
from runbook.errors import JournalError
from runbook.events import (
    AttemptRecord,
    ForecastMade,
    NotificationRecord,
    RunRecord,
    RunState,
    StepRecord,
)
from runbook.journal import writes
from runbook.journal.rows import BadRow, check_row, is_time, record_of
from runbook.journal.schema import ATTEMPTS, NOTIFICATIONS, RUNS, SCHEMA_VERSION, STEPS
from runbook.journal.schema import upgrade as _upgrade
from runbook.journal.schema import version as _version
from runbook.statedir import open_private as _open_private
from runbook.statedir import prepare as _prepare
from runbook.text import message_texts, printable

__all__ = ["DB_NAME", "RunRow", "Store"]

DB_NAME = "journal.sqlite3"


def _text(value: Any) -> str | None:
    return printable(value) if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class RunRow:
    """A run's own row: who ran it, where, and how it ended."""

    id: int
    plan: str
    plan_path: str
    plan_sha256: str
    pid: int
    host: str
    state: RunState
    reason: str | None
    max_parallel: int
    assumed_done: tuple[str, ...]
    started_at: float
    ended_at: float | None
    late: bool = False
    auth: str | None = None
    token_refreshes: int = 0
    auth_failed: bool = False
    api_url: str | None = None
    invocations: int = 1
    spans: list[tuple[float, float | None]] = field(default_factory=list)
    deadline: float | None = None
    forecast: dict[str, Any] | None = None


class Store:
    """The journal database of one state dir, open until :meth:`close`."""

    def __init__(self, directory: Path) -> None:
        _prepare(directory)
        self.path = directory / DB_NAME
        _open_private(self.path)
        try:
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self.db.row_factory = sqlite3.Row
            self._wal()
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise JournalError(
                f"the journal {self.path} cannot be opened: {exc}; move it aside to start a "
                "new one (its runs cannot be resumed then)"
            ) from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; a failure is a JournalError."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            raise JournalError(f"the journal {self.path} cannot be written: {exc}") from None

    def _wal(self) -> None:
        """WAL mode. Switching a new database to it takes a lock that SQLite does not wait
        for: two processes opening a new journal together retry instead of failing."""
        for attempt in range(50):
            try:
                self.db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == 49:
                    raise
                time.sleep(0.02)

    def _migrate(self) -> None:
        """Bring the schema up to date, under the write lock (the version is read again
        there, so that processes opening the journal together migrate it once)."""
        version = _version(self.db)
        if version < SCHEMA_VERSION:
            with self.write() as db:
                version = _upgrade(db)
        if version > SCHEMA_VERSION:
            raise JournalError(
                f"the journal {self.path} was written by a newer runbook (schema {version}, "
                f"this one knows {SCHEMA_VERSION}); upgrade runbook or use another --state-dir"
            )

    # -- runs ---------------------------------------------------------------------------

    def create_run(
        self,
        run: RunRecord,
        *,
        plan_path: str,
        plan_sha256: str,
        options: Mapping[str, Any],
        started_at: float,
    ) -> int:
        with self.write() as db:
            cursor = db.execute(
                *writes.new_run(
                    run,
                    plan_path=printable(plan_path),  # SQLite's TEXT is UTF-8: no stray bytes
                    plan_sha256=plan_sha256,
                    options=options,
                    started_at=started_at,
                    pid=os.getpid(),
                    host=socket.gethostname(),
                )
            )
            run_id = int(cursor.lastrowid or 0)
            for sql, rows in writes.new_steps(run_id, run):
                db.executemany(sql, rows)
        return run_id

    def reopen_run(self, run_id: int, run: RunRecord) -> None:
        """A resumed run: this process now owns it; steps new to the plan are added."""
        owner, steps = writes.reopened_run(run_id, run, pid=os.getpid(), host=socket.gethostname())
        with self.write() as db:
            db.execute(*owner)
            for sql, rows in steps:
                db.executemany(sql, rows)

    def latest(self, plan: str) -> RunRow | None:
        """The latest run of ``plan``, however it went."""
        return self._run(
            self.db.execute(
                "SELECT * FROM runs WHERE plan = ? ORDER BY id DESC LIMIT 1", (plan,)
            ).fetchone()
        )

    def last_finished(self, plan: str) -> RunRow | None:
        """The latest run of ``plan`` whose last invocation ended (not one that is
        running, or whose process died)."""
        return self._run(
            self.db.execute(
                "SELECT * FROM runs WHERE plan = ? AND state NOT IN ('running', 'abandoned') "
                "AND ended_at IS NOT NULL ORDER BY id DESC LIMIT 1",
                (plan,),
            ).fetchone()
        )

    def last_success_end(self, plan: str) -> float | None:
        """When the latest run of ``plan`` that succeeded ended."""
        row = self.db.execute(
            "SELECT max(ended_at) FROM runs WHERE plan = ? AND state = 'succeeded'", (plan,)
        ).fetchone()
        value = row[0] if row is not None else None
        return float(value) if is_time(value) else None

    def late_notified(self, run_id: int) -> bool:
        """Whether an invocation of run ``run_id`` already tried its 'late' notifications."""
        return (
            self.db.execute(
                "SELECT 1 FROM notifications WHERE run_id = ? AND kind = 'webhook' "
                "AND event = 'late' LIMIT 1",
                (run_id,),
            ).fetchone()
            is not None
        )

    def workflow_history(
        self, workflow_ids: Iterable[int], limit: int = 30
    ) -> dict[int, list[float]]:
        """Per workflow id of ``workflow_ids``, the times of its last ``limit`` executions
        that succeeded, in any run of any plan, newest first: the wait in ``created``
        plus the running time, from the API's ``start_at``/``end_at`` when they are
        believed (runbook.apitimes), else runbook's own trigger-to-end time; a negative
        wait, from clock skew, is 0. A damaged row gives no figure, rather than a wrong
        one."""
        plain = self.db.cursor()  # hundreds of thousands of rows: tuples, not Row objects
        plain.row_factory = None
        rows = plain.execute(
            "SELECT workflow_id, triggered_at, ended_at, start_at, end_at FROM ("
            " SELECT s.workflow_id, a.triggered_at, a.ended_at,"
            "  CASE WHEN json_valid(a.record) THEN json_extract(a.record, '$.start_at') END"
            "   AS start_at,"
            "  CASE WHEN json_valid(a.record) THEN json_extract(a.record, '$.end_at') END"
            "   AS end_at,"
            "  ROW_NUMBER() OVER (PARTITION BY s.workflow_id ORDER BY a.triggered_at DESC)"
            "   AS n"
            " FROM attempts a JOIN steps s ON s.run_id = a.run_id AND s.name = a.step"
            " WHERE a.state = 'succeeded' AND a.ended_at IS NOT NULL"
            "  AND s.workflow_id IN (SELECT value FROM json_each(?))"
            ") WHERE n <= ? ORDER BY workflow_id, triggered_at DESC",
            (json.dumps(sorted(set(workflow_ids))), limit),
        )
        history: dict[int, list[float]] = {}
        for workflow_id, triggered, ended, start_at, end_at in rows:
            if not isinstance(workflow_id, int) or not isinstance(triggered, (int, float)):
                continue  # a damaged row: no figure, rather than a wrong one
            seen = seen_span(triggered, ended)
            if seen is None:
                continue
            claimed = believed_within(start_at, end_at, seen)
            if claimed is not None:  # the API's times, when they fit what runbook saw
                took = max(0.0, claimed[0] - triggered) + claimed[1] - claimed[0]
            else:
                took = seen[1] - seen[0]
            history.setdefault(workflow_id, []).append(took)
        return history

    def resumable(self, plan: str) -> RunRow | None:
        """The latest run of ``plan`` that did not succeed (nor was abandoned)."""
        row = self.latest(plan)
        return row if row is not None and row.state not in ("succeeded", "abandoned") else None

    def went_to_sandbox(self, run_id: int) -> bool:
        """Whether run ``run_id`` ran against ``--sandbox``'s simulator (gone with it)."""
        row = self.db.execute("SELECT options FROM runs WHERE id = ?", (run_id,)).fetchone()
        try:
            options = json.loads(row[0]) if row is not None else {}
        except (TypeError, ValueError):
            return False
        return isinstance(options, dict) and options.get("sandbox") is True

    def abandon(self, run_id: int) -> None:
        """``--new-run`` over run ``run_id``: its executions are left to finish alone."""
        with self.write() as db:
            db.execute(*writes.abandoned(run_id))

    def run_row(self, run_id: int | None = None) -> RunRow | None:
        """Run ``run_id``, or the latest run."""
        if run_id is None:
            return self._run(
                self.db.execute("SELECT * FROM runs ORDER BY id DESC LIMIT 1").fetchone()
            )
        return self._run(self.db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone())

    def runs(self, plan: str | None, limit: int) -> list[RunRow]:
        """The latest ``limit`` runs (of ``plan``), newest first."""
        if plan is None:
            rows = self.db.execute("SELECT * FROM runs ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = self.db.execute(
                "SELECT * FROM runs WHERE plan = ? ORDER BY id DESC LIMIT ?", (plan, limit)
            )
        return [row for row in map(self._run, rows) if row is not None]

    def _run(self, row: sqlite3.Row | None) -> RunRow | None:
        if row is None:
            return None
        try:
            return record_of(RunRow, check_row(RUNS, row))
        except BadRow as exc:
            raise self._damaged(exc) from None

    def _damaged(self, exc: BadRow) -> JournalError:
        return JournalError(
            f"the journal {self.path} has a damaged row ({exc}); move the journal aside to "
            "start a new one (its runs cannot be resumed then), or repair that row"
        )

    def load_run(self, row: RunRow) -> RunRecord:
        """A run as the journal has it: steps with every attempt of every invocation.
        A row runbook cannot use is the journal's error (exit 5), never a crash."""
        try:
            return self._load_run(row)
        except BadRow as exc:
            raise self._damaged(exc) from None

    def _load_run(self, row: RunRow) -> RunRecord:
        run_id = row.id
        steps: dict[str, StepRecord] = {}
        for found in self.db.execute(
            "SELECT * FROM steps WHERE run_id = ? ORDER BY stage, name", (run_id,)
        ):
            step = check_row(STEPS, found)
            steps[step.name] = record_of(
                StepRecord,
                step,
                reason=_text(step.reason),
                why=_text(step.why),
                attempts=[],
            )
        for found in self.db.execute(
            "SELECT * FROM attempts WHERE run_id = ? ORDER BY step, number", (run_id,)
        ):
            attempt = check_row(ATTEMPTS, found)
            if attempt.step not in steps:
                raise BadRow(f"{attempt.where}: the attempt of a step the run does not have")
            recorded = attempt.record  # None: no answer yet
            answer = recorded or {}
            steps[attempt.step].attempts.append(
                record_of(
                    AttemptRecord,
                    attempt,
                    state=printable(attempt.state),
                    start_at=_text(answer.get("start_at")),
                    end_at=_text(answer.get("end_at")),
                    errors=message_texts(answer.get("errors")),
                    warnings=message_texts(answer.get("warnings")),
                    record=recorded,
                )
            )
        notifications = []
        for found in self.db.execute(
            "SELECT * FROM notifications WHERE run_id = ? ORDER BY id", (run_id,)
        ):
            note = check_row(NOTIFICATIONS, found)
            notifications.append(
                record_of(
                    NotificationRecord,
                    note,
                    event=printable(note.event),
                    target=printable(note.target),
                    error=_text(note.error),
                )
            )
        return RunRecord(
            plan=printable(row.plan),
            run_id=run_id,
            max_parallel=row.max_parallel,
            steps=steps,
            assumed_done=row.assumed_done,
            state=row.state,
            started_at=row.started_at,
            ended_at=row.ended_at,
            reason=_text(row.reason),
            late=row.late,
            notifications=notifications,
            auth=row.auth,
            token_refreshes=row.token_refreshes,
            auth_failed=row.auth_failed,
            api_url=_text(row.api_url),
            invocations=row.invocations,
            spans=row.spans,
            deadline=row.deadline,
            forecast=ForecastMade.load(row.forecast),
        )
