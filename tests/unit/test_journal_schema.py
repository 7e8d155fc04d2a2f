"""The journal's schema has one home, runbook/journal/schema.py: the released versions
are written from it as they were, journals of every earlier version migrate through
real SQLite files, and no other module keeps a copy of a table's columns."""

from __future__ import annotations

import ast
import asyncio
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from runbook.conditions import Condition
from runbook.events import (
    AttemptRecord,
    AttemptTriggering,
    NotificationRecord,
    NotificationSent,
    RunRecord,
    StepRecord,
)
from runbook.journal import JournalSink, Store
from runbook.journal.rows import BadRow, Checked, check_row, record_of
from runbook.journal.schema import (
    MIGRATIONS,
    NOTIFICATIONS,
    RUNS,
    SCHEMA_VERSION,
    TABLES,
    insert,
    insert_rows,
    update,
    upsert_rows,
)
from tests.support.paths import ROOT

RELEASED = [
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
    """
    ALTER TABLE steps ADD COLUMN run_if TEXT NOT NULL DEFAULT 'success';
    ALTER TABLE steps ADD COLUMN on_failure TEXT NOT NULL DEFAULT 'stop';
    ALTER TABLE steps ADD COLUMN ignored INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE steps ADD COLUMN why TEXT;
    """,
    """
    ALTER TABLE runs ADD COLUMN late INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE notifications (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL REFERENCES runs (id),
        kind TEXT NOT NULL,
        event TEXT NOT NULL,
        target TEXT NOT NULL,
        ok INTEGER NOT NULL,
        error TEXT,
        attempts INTEGER NOT NULL,
        at REAL NOT NULL
    );
    CREATE INDEX notifications_by_run ON notifications (run_id, id);
    """,
    """
    ALTER TABLE runs ADD COLUMN auth TEXT;
    ALTER TABLE runs ADD COLUMN token_refreshes INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN auth_failed INTEGER NOT NULL DEFAULT 0;
    """,
    """
    ALTER TABLE runs ADD COLUMN api_url TEXT;
    ALTER TABLE runs ADD COLUMN invocations INTEGER NOT NULL DEFAULT 1;
    """,
    # 6: steps.run_if may hold a mapping, as JSON: no statement, only the version
    "",
    """
    ALTER TABLE runs ADD COLUMN spans TEXT;
    ALTER TABLE runs ADD COLUMN deadline REAL;
    ALTER TABLE runs ADD COLUMN forecast TEXT;
    ALTER TABLE steps ADD COLUMN upstreams TEXT NOT NULL DEFAULT '[]';
    """,
]
"""Every released version's statements, as runbook first wrote them (append a version
here when it is released): old journals hold exactly these."""

# a row of each table, as a runbook of that version wrote it
OLD_ROWS = {
    1: [
        "INSERT INTO runs VALUES (1, 'p', 'p.yaml', 'x', 1, 'h', 'failed', NULL, 4, '[\"z\"]', "
        "'{}', 1.0, 2.0)",
        "INSERT INTO steps VALUES (1, 'a', 7, 1, 'failed', 'execution 5 failed', 1.0, 2.0)",
        "INSERT INTO attempts VALUES (1, 'a', 1, 'terminal', 5, 'failed', "
        '\'{"errors": ["bad rows"]}\', 1.0, 2.0)',
    ],
    2: ["UPDATE steps SET run_if = 'always', why = 'b failed'"],
    3: [
        "UPDATE runs SET late = 1",
        "INSERT INTO notifications VALUES (1, 1, 'webhook', 'late', 'hooks.example', 1, NULL, "
        "1, 3.0)",
    ],
    4: ["UPDATE runs SET auth = 'env', token_refreshes = 2"],
    5: ["UPDATE runs SET api_url = 'https://api.example/api/v1', invocations = 2"],
    6: ["""UPDATE steps SET run_if = '{"b":["failed","skipped"]}'"""],
    7: [
        "UPDATE runs SET spans = '[[1.0, 1.5], [1.75, 2.0]]', "
        """forecast = '{"at": 1.0, "p50_end": 1.9, "p90_end": 2.5, "steps": {"a": [1.0, 1.9]}}'"""
    ],
}


def master(db: sqlite3.Connection) -> list[tuple[str, str, str | None]]:
    """What a journal's schema is, to the letter of its statements."""
    return db.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()


def executed(scripts: list[str]) -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    for script in scripts:
        db.executescript(script)
    return db


@pytest.mark.parametrize("version", range(1, len(RELEASED) + 1))
def test_each_released_version_is_written_as_it_was(version: int) -> None:
    assert len(MIGRATIONS) == SCHEMA_VERSION >= len(RELEASED)
    assert master(executed(MIGRATIONS[:version])) == master(executed(RELEASED[:version]))


def old_journal(directory: Path, version: int) -> None:
    """A journal file of ``version``, as the runbook of that version left it."""
    directory.mkdir()
    db = sqlite3.connect(directory / "journal.sqlite3")
    db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for number in range(1, version + 1):
        db.executescript(RELEASED[number - 1])
        db.execute("INSERT INTO schema_version VALUES (?)", (number,))
        for statement in OLD_ROWS[number]:
            db.execute(statement)
    db.commit()
    db.close()


@pytest.mark.parametrize("version", range(1, SCHEMA_VERSION + 1))
def test_a_journal_of_each_version_migrates_to_the_schema_of_a_new_one(
    tmp_path: Path, version: int
) -> None:
    old_journal(tmp_path / "old", version)
    journal, new = Store(tmp_path / "old"), Store(tmp_path / "new")
    assert master(journal.db) == master(new.db)
    versions = journal.db.execute("SELECT version FROM schema_version ORDER BY version")
    assert [row[0] for row in versions] == list(range(1, SCHEMA_VERSION + 1))
    row = journal.run_row(1)
    run = journal.load_run(row)
    assert (row.late, row.auth, row.token_refreshes, row.auth_failed) == (
        (version >= 3, "env" if version >= 4 else None, 2 if version >= 4 else 0, False)
    )
    assert (run.state, run.assumed_done, run.started_at, run.ended_at) == (
        "failed",
        ("z",),
        1.0,
        2.0,
    )
    step = run.steps["a"]
    written = Condition.of({"b": ["failed", "skipped"]})
    assert (step.state, step.reason, step.run_if, step.on_failure, step.ignored, step.why) == (
        "failed",
        "execution 5 failed",
        written if version >= 6 else "always" if version >= 2 else "success",
        "stop",
        False,
        "b failed" if version >= 2 else None,
    )
    (attempt,) = step.attempts
    assert (attempt.execution_id, attempt.state, attempt.errors) == (5, "failed", ("bad rows",))
    notes = [(n.kind, n.event, n.target, n.ok, n.attempts) for n in run.notifications]
    assert notes == ([("webhook", "late", "hooks.example", True, 1)] if version >= 3 else [])
    journal.close()
    new.close()


# -- one copy -------------------------------------------------------------------------

PACKAGE = ROOT / "runbook"
SCHEMA = PACKAGE / "journal" / "schema.py"
NAMES = {table.name for table in TABLES} | {c.name for table in TABLES for c in table.columns}
WRITING_SQL = re.compile(
    r"\b(INSERT\s+(OR\s+\w+\s+)?INTO|REPLACE\s+INTO|UPDATE\s+\w+\s+SET"
    r"|(CREATE|ALTER|DROP)\s+(TABLE|INDEX)|ADD\s+COLUMN)\b",
    re.IGNORECASE,
)


NOT_COLUMNS = {("location.py", "state")}  # ~/.local/state, the user's state home


def strings(path: Path) -> Iterator[tuple[int, str]]:
    """Every string literal in ``path``; an f-string's with ``x`` for what it formats."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value
        elif isinstance(node, ast.JoinedStr):
            parts = (v.value if isinstance(v, ast.Constant) else "x" for v in node.values)
            yield node.lineno, "".join(str(part) for part in parts)


@pytest.mark.parametrize(
    "path",
    [p for p in sorted((PACKAGE / "journal").glob("*.py")) if p != SCHEMA],
    ids=lambda p: p.name,
)
def test_no_other_journal_module_names_a_table_or_a_column_of_its_own(path: Path) -> None:
    """A table's or a column's name as a string of its own is a second list of them
    (a row check's, a loader's ``row["plan"]``, a write's): they are schema.py's. Queries
    name the columns they filter and sort on inside their SQL, which this leaves them."""
    found = [
        (line, text)
        for line, text in strings(path)
        if text in NAMES and (path.name, text) not in NOT_COLUMNS
    ]
    assert not found, f"{path.name} names the journal's columns itself: {found}"


@pytest.mark.parametrize(
    "path", [p for p in sorted(PACKAGE.rglob("*.py")) if p != SCHEMA], ids=lambda p: p.name
)
def test_the_statements_that_create_or_write_columns_are_schema_pys(path: Path) -> None:
    """CREATE and ALTER come from the column table; INSERT and UPDATE from
    schema.insert/update/insert_rows, which refuse a column the table lacks."""
    found = [(line, text[:60]) for line, text in strings(path) if WRITING_SQL.search(text)]
    assert not found, f"{path.name} writes its own SQL for the journal's columns: {found}"


def test_the_writes_keep_each_value_as_its_column_holds_it() -> None:
    assert insert(RUNS, late=True, assumed_done=("a", "b"), options={"x": None}) == (
        "INSERT INTO runs (late, assumed_done, options) VALUES (?,?,?)",
        (1, '["a", "b"]', '{"x": null}'),
    )
    assert insert_rows(
        TABLES[1], [{"name": "a", "ignored": False}, {"name": "b", "ignored": 1}]
    ) == (("INSERT INTO steps (name, ignored) VALUES (?,?)", [("a", 0), ("b", 1)]),)
    assert update(TABLES[2], (1, "a", 2), record=None) == (
        "UPDATE attempts SET record = ? WHERE run_id = ? AND step = ? AND number = ?",
        ("null", 1, "a", 2),
    )


def test_a_write_of_a_column_the_table_lacks_is_refused() -> None:
    with pytest.raises(ValueError, match="the journal's runs table has no column 'stat'"):
        insert(RUNS, stat="running")
    with pytest.raises(ValueError, match="steps table has no column 'ignore'"):
        update(TABLES[1], (1, "a"), ignore=True)
    with pytest.raises(ValueError, match="steps table has no column 'runif'"):
        upsert_rows(TABLES[1], [({"run_id": 1, "name": "a"}, {"runif": "always"})])
    with pytest.raises(ValueError, match="rows of one INSERT into steps with other columns"):
        insert_rows(TABLES[1], [{"run_id": 1, "name": "a"}, {"name": "b", "run_id": 1}])


def a_journal(directory: Path) -> Store:
    """A journal with a row in every table."""
    journal = Store(directory)
    steps = {"a": StepRecord("a", 1, 1)}
    run = RunRecord(plan="p", run_id=None, max_parallel=1, steps=steps, assumed_done=("z",))
    run.run_id = journal.create_run(
        run, plan_path="p.yaml", plan_sha256="x", options={}, started_at=1.0
    )
    sink = JournalSink(journal, run.run_id)
    note = NotificationRecord("webhook", "late", "hooks.example", True, None, 1, 3.0)

    async def record() -> None:
        await sink(AttemptTriggering(steps["a"], AttemptRecord(1, 1.0), 0))
        assert sink(NotificationSent(note, 0)) is None
        sink.close()

    asyncio.run(record())
    return journal


@pytest.mark.parametrize(
    ("table", "column"),
    [(t, c) for t in TABLES for c in t.columns if "PRIMARY KEY" not in c.declared],
    ids=lambda x: x.name,
)
def test_a_row_is_checked_on_the_columns_schema_py_marks_and_on_them_alone(
    tmp_path: Path, table, column
) -> None:
    journal = a_journal(tmp_path)
    journal.db.execute("PRAGMA foreign_keys=OFF")
    journal.db.execute("PRAGMA ignore_check_constraints=ON")
    journal.db.execute(f"UPDATE {table.name} SET {column.name} = x'00'")
    (row,) = journal.db.execute(f"SELECT * FROM {table.name}")
    if column.checked:
        with pytest.raises(BadRow, match=rf"^{table.name} row .*: {column.name} holds bytes"):
            check_row(table, row)
    else:
        checked = check_row(table, row)
        with pytest.raises(AttributeError, match=f"{column.name} is not a column runbook checks"):
            getattr(checked, column.name)
    journal.close()


def test_a_record_field_that_is_no_checked_column_must_be_given(tmp_path: Path) -> None:
    @dataclass
    class Run:
        plan: str
        started: float = 0.0

    journal = a_journal(tmp_path)
    (row,) = journal.db.execute("SELECT * FROM runs")
    checked = check_row(RUNS, row)
    assert record_of(Run, checked, started=2.0) == Run("p", 2.0)
    with pytest.raises(TypeError, match=r"\['started'\] are neither given nor columns"):
        record_of(Run, checked)
    journal.close()


def test_the_columns_checked_are_the_columns_the_loaders_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loader reads a column only through its row's check, and every column checked
    is read, by a loader or in the name of a row: the checks and the loading are one
    list."""
    journal = a_journal(tmp_path)
    read: set[tuple[str, str]] = set()
    unspied = Checked.__getattr__

    def spied(self: Checked, name: str) -> object:
        read.add((self._table.name, name))  # type: ignore[attr-defined]
        return unspied(self, name)

    monkeypatch.setattr(Checked, "__getattr__", spied)
    journal.load_run(journal.run_row(1))
    naming = {(t.name, name) for t in TABLES for name in t.key if name in t.checked}
    assert read | naming == {(t.name, name) for t in TABLES for name in t.checked}
    assert NOTIFICATIONS.name in {table for table, _ in read}
    journal.close()
