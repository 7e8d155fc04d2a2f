"""The journal's schema, in one place: its tables, their columns, since which version
each exists and what it holds; the migrations, and the INSERT and UPDATE statements,
are written from them.

The other journal modules name no column of their own: the row checks
(:mod:`~runbook.journal.rows`) check the columns marked ``checked``, the loaders fill a
record's fields from the checked columns of the same names, and the writes
(:mod:`~runbook.journal.writes`) are built by :func:`insert`, :func:`update` and
:func:`insert_rows`, which refuse a column its table does not have. A new column is one line
here, with the version that adds it; the event that sets it says so in ``writes``.

A released version never changes: a column's declaration and ``since`` are history, and
``tests/unit/test_journal_schema.py`` keeps every released version's statements as they
were first written, against which old journals and new ones are checked.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal, get_args

from runbook import conditions
from runbook._compat import assert_never
from runbook.events import RunState, StepState
from runbook.schedule import OnFailure

__all__ = [
    "ATTEMPTS",
    "MIGRATIONS",
    "NOTIFICATIONS",
    "RUNS",
    "SCHEMA_VERSION",
    "STEPS",
    "TABLES",
    "Batch",
    "Column",
    "Statement",
    "Table",
    "insert",
    "insert_rows",
    "update",
    "upgrade",
    "upsert_rows",
    "version",
]

Statement = tuple[str, tuple[Any, ...]]
"""One SQL statement and its parameters."""
Batch = tuple[str, list[tuple[Any, ...]]]
"""One SQL statement and the parameters of each row it writes (``executemany``)."""

Holds = Literal["value", "flag", "names", "json object", "condition", "time pairs"]
"""How a column holds its value: as it is; a bool as 0 or 1; a tuple of names as a JSON
list; a JSON object (``None`` as JSON null, or as NULL where the column may be); a
condition (``run_if``), as its word or its mapping in JSON (:func:`runbook.conditions.stored`);
time pairs, a JSON list of ``[start, end]`` pairs (``end`` null while not ended)."""

_TYPES: Mapping[str, tuple[type, ...]] = {
    "INTEGER": (int,),
    "TEXT": (str,),
    "REAL": (int, float),
}


@dataclass(frozen=True, slots=True)
class Column:
    """One column: ``declared`` is its declaration in CREATE TABLE or ADD COLUMN."""

    name: str
    declared: str
    since: int = 1
    holds: Holds = "value"
    allowed: frozenset[str] | None = None
    """The values runbook can act on, where it is a closed set."""
    checked: bool = True
    """Checked as its row loads (:mod:`~runbook.journal.rows`), and only then readable."""
    widened: int | None = None
    """The version since which it may hold values an older runbook cannot read (that
    version has no statement: it tells older runbooks the journal is newer)."""

    @property
    def types(self) -> tuple[type, ...]:
        """What SQLite may hand back for it that runbook can use."""
        return _TYPES[self.declared.split()[0]]

    @property
    def nullable(self) -> bool:
        return "NOT NULL" not in self.declared and "PRIMARY KEY" not in self.declared

    @property
    def encode(self) -> Callable[[Any], Any] | None:
        """What turns a value into what the column keeps (``None``: it keeps the value)."""
        match self.holds:
            case "flag":
                return int
            case "names":
                return _names
            case "json object":
                return json.dumps
            case "condition":
                return conditions.stored
            case "time pairs":
                return _spans
            case "value":
                return None
            case _:
                assert_never(self.holds)


def _names(value: Any) -> str:
    return json.dumps(list(value))


def _spans(value: Any) -> str:
    return json.dumps([list(span) for span in value])


@dataclass(frozen=True, slots=True)
class Table:
    """One table. ``key``: the columns that name one row, in an UPDATE's WHERE and in
    a damaged row's message; ``constraints``: the table's own, after its columns."""

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    constraints: tuple[str, ...] = ()
    indexes: tuple[tuple[str, tuple[str, ...]], ...] = ()
    since: int = 1
    by_name: Mapping[str, Column] = field(init=False, repr=False, compare=False)
    checked: Mapping[str, Column] = field(init=False, repr=False, compare=False)
    _encode: Mapping[str, Callable[[Any], Any] | None] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        by_name = {column.name: column for column in self.columns}
        object.__setattr__(self, "by_name", by_name)
        object.__setattr__(
            self, "checked", {column.name: column for column in self.columns if column.checked}
        )
        object.__setattr__(self, "_encode", {column.name: column.encode for column in self.columns})
        for name in (*self.key, *(name for _, names in self.indexes for name in names)):
            self.column(name)
        assert all(column.since >= self.since for column in self.columns), self.name

    def column(self, name: str) -> Column:
        try:
            return self.by_name[name]
        except KeyError:
            raise ValueError(f"the journal's {self.name} table has no column {name!r}") from None

    def stored(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """``values`` (column name: value) as this table keeps them."""
        encoders = self._encode
        for name in values.keys() - encoders.keys():
            self.column(name)  # raises
        return {
            name: value if (encode := encoders[name]) is None else encode(value)
            for name, value in values.items()
        }


_RUN_STATES = frozenset(get_args(RunState))
_STEP_STATES = frozenset(get_args(StepState))

# Each table's columns in the order a row's checks go (the first bad one is named); its
# CREATE TABLE, and each version's ADD COLUMNs, take their columns in this order too.
RUNS = Table(
    "runs",
    (
        Column("id", "INTEGER PRIMARY KEY"),
        Column("plan", "TEXT NOT NULL"),
        Column("plan_path", "TEXT NOT NULL"),
        Column("plan_sha256", "TEXT NOT NULL"),
        Column("pid", "INTEGER NOT NULL"),
        Column("host", "TEXT NOT NULL"),
        Column("state", "TEXT NOT NULL", allowed=_RUN_STATES),
        Column("reason", "TEXT"),
        Column("max_parallel", "INTEGER NOT NULL"),
        Column("assumed_done", "TEXT NOT NULL", holds="names"),
        # only ever read by went_to_sandbox, which takes anything it cannot read as "no"
        Column("options", "TEXT NOT NULL", holds="json object", checked=False),
        # 4: which kind of token source a run used (never a value), how many tokens it
        # fetched after the first, and whether it ended for want of one
        Column("auth", "TEXT", since=4),
        Column("token_refreshes", "INTEGER NOT NULL DEFAULT 0", since=4),
        Column("auth_failed", "INTEGER NOT NULL DEFAULT 0", since=4, holds="flag"),
        Column("started_at", "REAL NOT NULL"),
        Column("ended_at", "REAL"),
        # 3: whether the run was late (status shows it; a resume does not send 'late' twice)
        Column("late", "INTEGER NOT NULL DEFAULT 0", since=3, holds="flag"),
        # 5: the API base URL the run went to, where its resume must go (NULL: a run
        # recorded before version 5, which goes where its resume is told)
        Column("api_url", "TEXT", since=5),
        # 5: how many invocations the run has had (a resume is one more)
        Column("invocations", "INTEGER NOT NULL DEFAULT 1", since=5),
        # 7: for the timeline: each invocation's start and end, and the forecast made
        # when the run started (NULL: none, or a run recorded before version 7)
        Column("spans", "TEXT", since=7, holds="time pairs"),
        Column("deadline", "REAL", since=7),  # seconds after the start, as the plan said
        Column("forecast", "TEXT", since=7, holds="json object"),
    ),
    key=("id",),
    indexes=(("runs_by_plan", ("plan", "id")),),
)
STEPS = Table(
    "steps",
    (
        # the query's own key, never read from the row
        Column("run_id", "INTEGER NOT NULL REFERENCES runs (id)", checked=False),
        Column("name", "TEXT NOT NULL"),
        Column("workflow_id", "INTEGER NOT NULL"),
        Column("stage", "INTEGER NOT NULL"),
        Column("state", "TEXT NOT NULL", allowed=_STEP_STATES),
        Column("reason", "TEXT"),
        Column("started_at", "REAL"),
        Column("ended_at", "REAL"),
        # 2: run_if, on_failure and whether a failure was ignored: status shows them
        # without the plan file, which may have changed since
        # 6: a mapping of named upstreams, as JSON
        Column("run_if", "TEXT NOT NULL DEFAULT 'success'", since=2, holds="condition", widened=6),
        Column(
            "on_failure",
            "TEXT NOT NULL DEFAULT 'stop'",
            since=2,
            allowed=frozenset(get_args(OnFailure)),
        ),
        Column("ignored", "INTEGER NOT NULL DEFAULT 0", since=2, holds="flag"),
        Column("why", "TEXT", since=2),
        # 7: the selected steps it waited for, as the plan said (the timeline's
        # critical path walks them without the plan file, which may have changed)
        Column("upstreams", "TEXT NOT NULL DEFAULT '[]'", since=7, holds="names"),
    ),
    key=("run_id", "name"),
    constraints=("PRIMARY KEY (run_id, name)",),
)
ATTEMPTS = Table(
    "attempts",
    (
        Column("run_id", "INTEGER NOT NULL", checked=False),
        Column("step", "TEXT NOT NULL"),
        Column("number", "INTEGER NOT NULL"),
        # written for whoever reads the file; runbook goes by the state and the end
        Column(
            "phase",
            "TEXT NOT NULL CHECK (phase IN ('triggering', 'in flight', 'terminal'))",
            checked=False,
        ),
        Column("execution_id", "INTEGER"),
        Column("state", "TEXT NOT NULL"),
        Column("record", "TEXT", holds="json object"),
        Column("triggered_at", "REAL NOT NULL"),
        Column("ended_at", "REAL"),
    ),
    key=("run_id", "step", "number"),
    constraints=(
        "PRIMARY KEY (run_id, step, number)",
        "FOREIGN KEY (run_id, step) REFERENCES steps (run_id, name)",
    ),
)
# 3: every delivery tried, a webhook's notification or a healthchecks ping
NOTIFICATIONS = Table(
    "notifications",
    (
        Column("id", "INTEGER PRIMARY KEY", since=3),
        Column("run_id", "INTEGER NOT NULL REFERENCES runs (id)", since=3, checked=False),
        Column("kind", "TEXT NOT NULL", since=3, allowed=frozenset({"webhook", "healthchecks"})),
        Column("event", "TEXT NOT NULL", since=3),
        Column("target", "TEXT NOT NULL", since=3),
        Column("ok", "INTEGER NOT NULL", since=3, holds="flag"),
        Column("error", "TEXT", since=3),
        Column("attempts", "INTEGER NOT NULL", since=3),
        Column("at", "REAL NOT NULL", since=3),
    ),
    key=("run_id", "id"),
    indexes=(("notifications_by_run", ("run_id", "id")),),
    since=3,
)
TABLES = (RUNS, STEPS, ATTEMPTS, NOTIFICATIONS)
SCHEMA_VERSION = max(
    max(column.since, column.widened or 0) for table in TABLES for column in table.columns
)


def _create(table: Table) -> list[str]:
    lines = [f"{c.name} {c.declared}" for c in table.columns if c.since == table.since]
    body = ",\n        ".join([*lines, *table.constraints])
    return [
        f"CREATE TABLE {table.name} (\n        {body}\n    )",
        *(f"CREATE INDEX {name} ON {table.name} ({', '.join(on)})" for name, on in table.indexes),
    ]


def _migration(number: int) -> str:
    """The statements that bring a journal from version ``number - 1`` to ``number``."""
    statements: list[str] = []
    for table in TABLES:
        if table.since == number:
            statements += _create(table)
        elif table.since < number:
            statements += [
                f"ALTER TABLE {table.name} ADD COLUMN {c.name} {c.declared}"
                for c in table.columns
                if c.since == number
            ]
    return ";\n".join(statements) + ";\n"


MIGRATIONS: list[str] = [_migration(number) for number in range(1, SCHEMA_VERSION + 1)]
"""Version ``n``'s statements at ``MIGRATIONS[n - 1]``."""


def version(db: sqlite3.Connection) -> int:
    """The schema version of the journal ``db`` (0: a new file)."""
    if not db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone():
        return 0
    row = db.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def upgrade(db: sqlite3.Connection) -> int:
    """Bring ``db`` to :data:`SCHEMA_VERSION`, inside the caller's write transaction
    (the version is read under its lock, so that processes opening a journal together
    migrate it once). Returns the version found, which may be newer than this one."""
    db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    found = version(db)
    for number in range(found + 1, SCHEMA_VERSION + 1):
        for statement in MIGRATIONS[number - 1].split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute("INSERT INTO schema_version (version) VALUES (?)", (number,))
    return found


def insert(table: Table, /, **values: Any) -> Statement:
    """An INSERT into ``table`` of ``values``, column name = value."""
    stored = table.stored(values)
    return _insert_sql(table.name, tuple(stored)), tuple(stored.values())


def update(table: Table, key: tuple[Any, ...], /, **values: Any) -> Statement:
    """An UPDATE of ``values`` in the row of ``table`` whose key columns hold ``key``."""
    assert len(key) == len(table.key), (table.name, key)
    stored = table.stored(values)
    return _update_sql(table.name, table.key, tuple(stored)), (*stored.values(), *key)


def insert_rows(table: Table, rows: Iterable[Mapping[str, Any]], /) -> tuple[Batch, ...]:
    """One INSERT into ``table`` for all ``rows``, each column name = value, every row
    of the same columns in the same order; none when there are no rows."""
    parameters: list[tuple[Any, ...]] = []
    for row in rows:
        if not parameters:
            names = tuple(row)
            encoders = [table.column(name).encode for name in names]
            kept = not any(encoders)  # every value as it is: no encoding row by row
        elif tuple(row) != names:
            raise ValueError(f"rows of one INSERT into {table.name} with other columns")
        values = row.values()
        parameters.append(
            tuple(values)
            if kept
            else tuple(v if e is None else e(v) for v, e in zip(values, encoders, strict=True))
        )
    return ((_insert_sql(table.name, names), parameters),) if parameters else ()


def upsert_rows(
    table: Table, rows: Iterable[tuple[Mapping[str, Any], Mapping[str, Any]]], /
) -> tuple[Batch, ...]:
    """:func:`insert_rows` of rows given as (values, refresh): where ``table`` has a row
    of that key already, only the refresh columns are written to it."""
    pairs = list(rows)
    if not pairs:
        return ()
    ((sql, parameters),) = insert_rows(table, [{**values, **fresh} for values, fresh in pairs])
    sets = ", ".join(f"{name} = excluded.{name}" for name in pairs[0][1])
    return ((f"{sql} ON CONFLICT ({', '.join(table.key)}) DO UPDATE SET {sets}", parameters),)


# the same few statements for every event: written once each
@cache
def _insert_sql(table: str, columns: tuple[str, ...]) -> str:
    places = ",".join("?" * len(columns))
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({places})"


@cache
def _update_sql(table: str, key: tuple[str, ...], columns: tuple[str, ...]) -> str:
    sets = ", ".join(f"{name} = ?" for name in columns)
    where = " AND ".join(f"{name} = ?" for name in key)
    return f"UPDATE {table} SET {sets} WHERE {where}"
