"""The run journal: every run, step and attempt in SQLite, and the per-plan lock.

The sacred write (shared/DESIGN.md): an attempt is committed as *triggering* before its
POST, and its execution id as soon as the answer arrives, before anything else happens.
The journal is an executor sink, awaited for every event, so the commit has happened
when the executor goes on. WAL with ``synchronous=FULL``: a commit survives a killed
process and a lost machine alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import socket
import sqlite3
import stat
import tempfile
import time
from collections.abc import Awaitable, Iterator, Mapping
from pathlib import Path
from typing import Any

from runbook.errors import LockedError, RunbookError
from runbook.events import (
    TERMINAL_STATES,
    AttemptFinished,
    AttemptRecord,
    AttemptTriggered,
    AttemptTriggering,
    Event,
    ExecutionSeen,
    RetryScheduled,
    RunFinished,
    RunRecord,
    StepFinished,
    StepRecord,
)
from runbook.journal_rows import BadRow, check_row, json_field
from runbook.text import message_texts, printable

__all__ = ["Journal", "JournalError", "PlanLock", "state_dir"]

_AWAITED = (AttemptTriggering, AttemptTriggered, RetryScheduled, RunFinished)
"""The events the executor waits on the journal for: before a POST, after its answer,
before a retry delay (the failed attempt is durable before a wait that may be long),
at the end."""

DB_NAME = "journal.sqlite3"
MIGRATIONS: list[str] = [
    """
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        plan TEXT NOT NULL,
        plan_path TEXT NOT NULL,
        plan_sha256 TEXT NOT NULL,
        pid INTEGER NOT NULL,
        host TEXT NOT NULL,
        state TEXT NOT NULL,
        reason TEXT,
        max_parallel INTEGER NOT NULL,
        assumed_done TEXT NOT NULL,
        options TEXT NOT NULL,
        started_at REAL NOT NULL,
        ended_at REAL
    );
    CREATE INDEX runs_by_plan ON runs (plan, id);
    CREATE TABLE steps (
        run_id INTEGER NOT NULL REFERENCES runs (id),
        name TEXT NOT NULL,
        workflow_id INTEGER NOT NULL,
        stage INTEGER NOT NULL,
        state TEXT NOT NULL,
        reason TEXT,
        started_at REAL,
        ended_at REAL,
        PRIMARY KEY (run_id, name)
    );
    CREATE TABLE attempts (
        run_id INTEGER NOT NULL,
        step TEXT NOT NULL,
        number INTEGER NOT NULL,
        phase TEXT NOT NULL CHECK (phase IN ('triggering', 'in flight', 'terminal')),
        execution_id INTEGER,
        state TEXT NOT NULL,
        record TEXT,
        triggered_at REAL NOT NULL,
        ended_at REAL,
        PRIMARY KEY (run_id, step, number),
        FOREIGN KEY (run_id, step) REFERENCES steps (run_id, name)
    );
    """,
    # run_if, on_failure and whether a failure was ignored: status shows them without
    # the plan file, which may have changed since
    """
    ALTER TABLE steps ADD COLUMN run_if TEXT NOT NULL DEFAULT 'success';
    ALTER TABLE steps ADD COLUMN on_failure TEXT NOT NULL DEFAULT 'stop';
    ALTER TABLE steps ADD COLUMN ignored INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE steps ADD COLUMN why TEXT;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


_INSERT_STEP = (
    "INSERT INTO steps (run_id, name, workflow_id, stage, state, run_if, on_failure) "
    "VALUES (?,?,?,?,?,?,?)"
)


def _step_rows(run_id: int, run: RunRecord) -> list[tuple[Any, ...]]:
    return [
        (run_id, s.name, s.workflow_id, s.stage, s.state, s.run_if, s.on_failure)
        for s in run.steps.values()
    ]


def _text(value: Any) -> str | None:
    return printable(value) if isinstance(value, str) else None


class JournalError(RunbookError):
    """The journal cannot be used; runbook will not run without one."""

    exit_code = 5


def state_dir(explicit: str | None, environ: Mapping[str, str] | None = None) -> Path:
    """``--state-dir`` > ``RUNBOOK_STATE_DIR`` > ``$XDG_STATE_HOME/runbook`` >
    ``~/.local/state/runbook``."""
    env = os.environ if environ is None else environ
    if explicit:
        return Path(explicit)
    if env.get("RUNBOOK_STATE_DIR"):
        return Path(env["RUNBOOK_STATE_DIR"])
    base = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "runbook"


def _prepare(directory: Path) -> None:
    """The state dir exists, is the user's own, is not writable by others, and can be
    written (probed under a unique name, never through a planted link)."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        _check_owned(directory, os.stat(directory), "state dir")
        handle, probe = tempfile.mkstemp(dir=directory, prefix=".write-test-")
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise JournalError(
            f"the state dir {directory} cannot be used: {exc.strerror or exc}; "
            "choose another with --state-dir or RUNBOOK_STATE_DIR"
        ) from None


def _check_owned(path: Path, info: os.stat_result, what: str) -> None:
    """Another user's file, or one others may write, could be read or steered by them:
    a journal holds every run, and its execution ids decide what a resume polls."""
    if info.st_uid != os.getuid():
        raise JournalError(
            f"the {what} {path} belongs to another user (uid {info.st_uid}); runbook keeps "
            "its journal only where you alone own it: choose another with --state-dir or "
            "RUNBOOK_STATE_DIR"
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o022:
        raise JournalError(
            f"the {what} {path} can be written by other users (mode {mode:04o}); "
            f"make it yours alone (chmod go-w {path}) or choose another with --state-dir"
        )


def _open_private(path: Path) -> None:
    """Create the journal file 0600 if it is new; refuse a link, another user's file or
    one others may write; take read access away from others on an existing one."""
    try:
        handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600)
        os.close(handle)
    except FileExistsError:
        pass
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise JournalError(f"the journal {path} cannot be opened: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise JournalError(
            f"the journal {path} is not a regular file (a link?); move it aside to start a new one"
        )
    _check_owned(path, info, "journal")
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(path, 0o600)


class PlanLock:
    """One ``apply`` per plan name per state dir: an flock the kernel drops with the
    process, however it ends (no stale lock to clean by hand)."""

    def __init__(self, directory: Path, plan: str) -> None:
        digest = hashlib.sha256(plan.encode()).hexdigest()[:16]
        self.path = directory / "locks" / f"{digest}.lock"
        self.plan = plan
        self._handle: Any = None

    def acquire(self, run_hint: str = "") -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:  # never through a planted link: it would overwrite the file it points at
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise JournalError(
                f"the lock file {self.path} cannot be opened: {exc.strerror or exc}; move it aside"
            ) from None
        handle = os.fdopen(fd, "r+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise LockedError(
                f"another apply of plan {self.plan!r} is running ({holder}); wait for it to "
                "end, or use another --state-dir"
            ) from None
        self._handle = handle
        self.note(run_hint)

    def note(self, text: str) -> None:
        """Say who holds the lock, for the message the next one gets."""
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.write(f"pid {os.getpid()}{', ' + text if text else ''}")
        self._handle.flush()

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing drops the flock
            self._handle = None


class Journal:
    """The journal database of one state dir; also an executor sink for one run."""

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
        self.run_id: int | None = None
        self._queued: list[tuple[str, Any]] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._failure: JournalError | None = None

    def close(self) -> None:
        if self._queued:  # the loop ended before its last writes were flushed
            self._flush()
        self.db.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
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

    def _version(self) -> int:
        if not self.db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
        ).fetchone():
            return 0
        row = self.db.execute("SELECT max(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    def _migrate(self) -> None:
        """Bring the schema up to date. The version is read again under the write lock,
        so that processes opening the journal together migrate it once."""
        version = self._version()
        if version < SCHEMA_VERSION:
            with self._write() as db:
                db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
                version = self._version()
                for number in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in MIGRATIONS[number - 1].split(";"):
                        if statement.strip():
                            db.execute(statement)
                    db.execute("INSERT INTO schema_version (version) VALUES (?)", (number,))
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
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO runs (plan, plan_path, plan_sha256, pid, host, state, "
                "max_parallel, assumed_done, options, started_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    run.plan,
                    plan_path,
                    plan_sha256,
                    os.getpid(),
                    socket.gethostname(),
                    "running",
                    run.max_parallel,
                    json.dumps(list(run.assumed_done)),
                    json.dumps(dict(options)),
                    started_at,
                ),
            )
            run_id = int(cursor.lastrowid or 0)
            db.executemany(_INSERT_STEP, _step_rows(run_id, run))
        return run_id

    def reopen_run(self, run_id: int, run: RunRecord) -> None:
        """A resumed run: this process now owns it; steps new to the plan are added."""
        with self._write() as db:
            db.execute(
                "UPDATE runs SET pid = ?, host = ?, state = 'running', ended_at = NULL "
                "WHERE id = ?",
                (os.getpid(), socket.gethostname(), run_id),
            )
            db.executemany(
                _INSERT_STEP + " ON CONFLICT (run_id, name) DO UPDATE SET "
                "run_if = excluded.run_if, on_failure = excluded.on_failure",
                _step_rows(run_id, run),
            )

    def resumable(self, plan: str) -> sqlite3.Row | None:
        """The latest run of ``plan`` that did not succeed."""
        row = self._run(
            self.db.execute(
                "SELECT * FROM runs WHERE plan = ? ORDER BY id DESC LIMIT 1", (plan,)
            ).fetchone()
        )
        return row if row is not None and row["state"] != "succeeded" else None

    def run_row(self, run_id: int | None = None) -> sqlite3.Row | None:
        if run_id is None:
            return self._run(
                self.db.execute("SELECT * FROM runs ORDER BY id DESC LIMIT 1").fetchone()
            )
        return self._run(self.db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone())

    def runs(self, plan: str | None, limit: int) -> list[sqlite3.Row]:
        if plan is None:
            rows = self.db.execute("SELECT * FROM runs ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = self.db.execute(
                "SELECT * FROM runs WHERE plan = ? ORDER BY id DESC LIMIT ?", (plan, limit)
            )
        return [row for row in map(self._run, rows) if row is not None]

    def _run(self, row: sqlite3.Row | None) -> sqlite3.Row | None:
        if row is None:
            return None
        try:
            return check_row("runs", row, row["id"])
        except BadRow as exc:
            raise self._damaged(exc) from None

    def _damaged(self, exc: BadRow) -> JournalError:
        return JournalError(
            f"the journal {self.path} has a damaged row ({exc}); move the journal aside to "
            "start a new one (its runs cannot be resumed then), or repair that row"
        )

    def load_run(self, row: sqlite3.Row) -> RunRecord:
        """A run as the journal has it: steps with every attempt of every invocation.
        A row runbook cannot use is the journal's error (exit 5), never a crash."""
        try:
            return self._load_run(row)
        except BadRow as exc:
            raise self._damaged(exc) from None

    def _load_run(self, row: sqlite3.Row) -> RunRecord:
        run_id = row["id"]
        steps: dict[str, StepRecord] = {}
        for step in self.db.execute(
            "SELECT * FROM steps WHERE run_id = ? ORDER BY stage, name", (run_id,)
        ):
            check_row("steps", step, f"{run_id}/{step['name']!r}")
            steps[step["name"]] = StepRecord(
                name=step["name"],
                workflow_id=step["workflow_id"],
                stage=step["stage"],
                state=step["state"],
                reason=_text(step["reason"]),
                started_at=step["started_at"],
                ended_at=step["ended_at"],
                run_if=step["run_if"],
                on_failure=step["on_failure"],
                ignored=bool(step["ignored"]),
                why=_text(step["why"]),
            )
        for attempt in self.db.execute(
            "SELECT * FROM attempts WHERE run_id = ? ORDER BY step, number", (run_id,)
        ):
            where = f"attempts row {run_id}/{attempt['step']!r}/{attempt['number']}"
            check_row("attempts", attempt, where.removeprefix("attempts row "))
            if attempt["step"] not in steps:
                raise BadRow(f"{where}: the attempt of a step the run does not have")
            record = None  # no answer yet: stored as NULL, or JSON null
            if attempt["record"] not in (None, "null"):
                record = json_field(attempt["record"], dict, f"{where}: record")
            steps[attempt["step"]].attempts.append(
                AttemptRecord(
                    number=attempt["number"],
                    triggered_at=attempt["triggered_at"],
                    execution_id=attempt["execution_id"],
                    state=printable(attempt["state"]),
                    start_at=_text((record or {}).get("start_at")),
                    end_at=_text((record or {}).get("end_at")),
                    errors=message_texts((record or {}).get("errors")),
                    warnings=message_texts((record or {}).get("warnings")),
                    record=record,
                    ended_at=attempt["ended_at"],
                )
            )
        assumed = json_field(row["assumed_done"], list, f"runs row {run_id}: assumed_done")
        return RunRecord(
            plan=printable(row["plan"]),
            run_id=run_id,
            max_parallel=row["max_parallel"],
            steps=steps,
            assumed_done=tuple(str(name) for name in assumed),
            state=row["state"],
            started_at=row["started_at"],
            ended_at=row["ended_at"],
            reason=_text(row["reason"]),
        )

    # -- the sink -----------------------------------------------------------------------

    def __call__(self, event: Event) -> Awaitable[None] | None:
        """Record ``event``. For the events the executor must wait on (``_AWAITED``: an
        attempt *triggering*, its execution id, a retry's wait, the run's end) the
        awaitable resolves once it, and everything queued before it, is committed.

        Writes are group-committed: every event of one event-loop iteration goes into one
        transaction, so 500 steps triggered together cost one fsync, not 500. The other
        writes (a state seen, an attempt's or a step's end) are queued without making
        the executor wait: commits keep the order of the events, so the next awaited
        write — at the latest the run's end — is durable only with all of them. A write
        that fails fails every awaited write after it: nothing is triggered past a
        journal that no longer records.
        """
        if self._failure is not None:
            raise self._failure
        statements = self._statements(event)
        awaited = isinstance(event, _AWAITED)
        if not statements and not (awaited and self._queued):
            return None
        loop = asyncio.get_running_loop()
        if not self._queued:
            loop.call_soon(self._flush)  # after every event of this loop iteration
        self._queued.extend(statements)
        if not awaited:
            return None
        future: asyncio.Future[None] = loop.create_future()
        self._waiters.append(future)
        return future

    def _flush(self) -> None:
        """Commit every write queued during one loop iteration in one transaction."""
        statements, self._queued = self._queued, []
        waiters, self._waiters = self._waiters, []
        try:
            with self._write() as db:
                for sql, parameters in statements:
                    db.execute(sql, parameters)
        except (JournalError, sqlite3.Error) as exc:
            self._failure = (
                exc
                if isinstance(exc, JournalError)
                else JournalError(f"the journal {self.path} cannot be written: {exc}")
            )
            for future in waiters:
                if not future.done():
                    future.set_exception(self._failure)
        else:
            for future in waiters:
                if not future.done():
                    future.set_result(None)

    def _statements(self, event: Event) -> list[tuple[str, Any]]:
        run_id = self.run_id
        if isinstance(event, AttemptTriggering):
            a, s = event.attempt, event.step
            return [
                (
                    "INSERT INTO attempts (run_id, step, number, phase, state, triggered_at) "
                    "VALUES (?,?,?,'triggering','triggering',?)",
                    (run_id, s.name, a.number, a.triggered_at),
                ),
                (
                    "UPDATE steps SET state = ?, started_at = ?, why = ? "
                    "WHERE run_id = ? AND name = ?",
                    (s.state, s.started_at, s.why, run_id, s.name),
                ),
            ]
        if isinstance(event, ExecutionSeen) and event.attempt.state in TERMINAL_STATES:
            return []  # the attempt's end follows at once, in the same transaction
        if isinstance(event, (AttemptTriggered, ExecutionSeen, AttemptFinished)):
            a = event.attempt
            phase = "terminal" if isinstance(event, AttemptFinished) else "in flight"
            return [
                (
                    "UPDATE attempts SET phase = ?, execution_id = ?, state = ?, record = ?, "
                    "ended_at = ? WHERE run_id = ? AND step = ? AND number = ?",
                    (
                        phase,
                        a.execution_id,
                        a.state,
                        json.dumps(a.record),
                        a.ended_at,
                        run_id,
                        event.step.name,
                        a.number,
                    ),
                )
            ]
        if isinstance(event, StepFinished):
            s = event.step
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
            ]
        if isinstance(event, RunFinished):
            run = event.run
            pending = [
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
                    "UPDATE runs SET state = ?, reason = ?, ended_at = ? WHERE id = ?",
                    (run.state, run.reason, run.ended_at, run_id),
                ),
            ]
        return []  # RunStarted: the run and its steps were written before; notices: nothing
