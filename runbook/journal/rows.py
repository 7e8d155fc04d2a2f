"""What a journal row must hold before runbook acts on it, and the records made of it.

The journal is a file on disk: another version, a crash of the filesystem or a person
with sqlite3 may have left a row that SQLite accepts and runbook cannot use (text in a
number column, a record that is not JSON, an attempt of a step that does not exist).
Every row is checked as it is loaded, against the columns :mod:`~runbook.journal.schema`
marks checked, so that such a journal is the journal's error (exit 5) with the row
named, never a crash in ``status``, ``history`` or ``--resume``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import fields
from functools import cache
from typing import Any, TypeGuard, TypeVar

from runbook import conditions
from runbook._compat import assert_never
from runbook.journal.schema import Column, Table

__all__ = ["BadRow", "Checked", "check_row", "is_time", "json_field", "record_of"]

LAST_SECOND = 253402300799.999  # 9999-12-31T23:59:59.999Z
"""A REAL column holds a time, in epoch seconds: one outside 1970..9999 (or infinite,
or NaN) cannot have been written by runbook, and no date or duration can be made of it."""


def is_time(value: object) -> TypeGuard[float]:
    """Whether ``value`` is a time runbook can have written: epoch seconds, 1970..9999."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and 0 <= value <= LAST_SECOND
    )


T = TypeVar("T")


class BadRow(ValueError):
    """A row runbook cannot use; the message names the table, the row and the column."""


class Checked:
    """A row whose checked columns hold what they must: they, and only they, are read
    as attributes, as their column holds them (a flag as a bool, JSON decoded, a
    column's bad JSON a :class:`BadRow` when it is read). ``where``: ``table row key``,
    for messages."""

    __slots__ = ("_row", "_table", "where")

    def __init__(self, table: Table, row: sqlite3.Row) -> None:
        self._table = table
        self._row = row
        key = "/".join(_key_part(table.column(name), row[name]) for name in table.key)
        self.where = f"{table.name} row {key}"

    def __contains__(self, name: object) -> bool:
        return name in self._table.checked

    def __getattr__(self, name: str) -> Any:
        column = None if name.startswith("_") else self._table.checked.get(name)
        if column is None:
            raise AttributeError(f"{self._table.name}.{name} is not a column runbook checks")
        return _read(column, self._row[name], self.where)


def check_row(table: Table, row: sqlite3.Row) -> Checked:
    """``row`` of ``table`` if every column runbook reads has the type (and value) it
    must."""
    checked = Checked(table, row)
    for column in table.checked.values():
        value = row[column.name]
        if value is None and column.nullable:
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, column.types)
            or (column.allowed is not None and value not in column.allowed)
            or (column.holds == "condition" and conditions.loaded(value) is None)
        ):
            raise BadRow(f"{checked.where}: {column.name} holds {_shown(value)}")
        if column.declared.startswith("REAL") and not is_time(value):
            raise BadRow(
                f"{checked.where}: {column.name} holds {_shown(value)}, "
                "not a time between 1970 and 9999"
            )
    return checked


def record_of(make: Callable[..., T], row: Checked, /, **given: Any) -> T:
    """A ``make`` (a dataclass) whose fields take the row's checked columns of the same
    names, but for those ``given``; a field that is neither is a TypeError."""
    names = [name for name in _fields(make) if name not in given]
    if missing := [name for name in names if name not in row]:
        raise TypeError(f"{make}: {missing} are neither given nor columns runbook checks")
    return make(**{name: getattr(row, name) for name in names}, **given)


@cache
def _fields(make: Callable[..., Any]) -> tuple[str, ...]:
    return tuple(f.name for f in fields(make) if f.init)  # type: ignore[arg-type]


def json_field(text: str, kind: type, where: str) -> Any:
    """``text`` decoded as JSON of ``kind`` (list or dict)."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise BadRow(f"{where} is not JSON") from None
    if not isinstance(value, kind):
        raise BadRow(f"{where} is not a JSON {kind.__name__}")
    return value


def _read(column: Column, value: Any, where: str) -> Any:
    match column.holds:
        case "value":
            return value
        case "flag":
            return bool(value)
        case "names":
            return tuple(str(name) for name in json_field(value, list, f"{where}: {column.name}"))
        case "json object":
            if value is None or (column.nullable and value == "null"):
                return None  # NULL, or JSON null where the column may be empty
            return json_field(value, dict, f"{where}: {column.name}")
        case "condition":
            return conditions.loaded(value)  # checked as the row loaded
        case "time pairs":
            return _spans(value, f"{where}: {column.name}")
        case _:
            assert_never(column.holds)


def _spans(value: str | None, where: str) -> list[tuple[float, float | None]]:
    """``[[start, end], ...]``: each a time, the end null while not ended."""
    if value is None:
        return []
    spans = []
    for span in json_field(value, list, where):
        if (
            not isinstance(span, list)
            or len(span) != 2
            or not is_time(span[0])
            or not (span[1] is None or is_time(span[1]))
        ):
            raise BadRow(f"{where} holds a span that is not two times: {_shown(span)}")
        spans.append((float(span[0]), None if span[1] is None else float(span[1])))
    return spans


def _key_part(column: Column, value: object) -> str:
    return repr(value) if column.types == (str,) else f"{value}"


def _shown(value: object) -> str:
    if value is None:
        return "nothing"
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"
