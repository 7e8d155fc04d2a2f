"""What a journal row must hold before runbook acts on it.

The journal is a file on disk: another version, a crash of the filesystem or a person
with sqlite3 may have left a row that SQLite accepts and runbook cannot use (text in a
number column, a record that is not JSON, an attempt of a step that does not exist).
Every row is checked as it is loaded, so that such a journal is the journal's error
(exit 5) with the row named, never a crash in ``status``, ``history`` or ``--resume``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Any, get_args

from runbook.events import RunState, StepState
from runbook.schedule import OnFailure, RunIf

__all__ = ["BadRow", "check_row", "json_field"]

_NUMBER = (int, float)
_TEXT = (str,)
_INT = (int,)
RUN_STATES: frozenset[str] = frozenset(get_args(RunState))
STEP_STATES: frozenset[str] = frozenset(get_args(StepState))

# column -> (types, nullable, allowed values or None)
_COLUMNS: Mapping[str, Mapping[str, tuple[tuple[type, ...], bool, frozenset[str] | None]]] = {
    "runs": {
        "id": (_INT, False, None),
        "plan": (_TEXT, False, None),
        "plan_path": (_TEXT, False, None),
        "plan_sha256": (_TEXT, False, None),
        "pid": (_INT, False, None),
        "host": (_TEXT, False, None),
        "state": (_TEXT, False, RUN_STATES),
        "reason": (_TEXT, True, None),
        "max_parallel": (_INT, False, None),
        "assumed_done": (_TEXT, False, None),
        "auth": (_TEXT, True, None),
        "token_refreshes": (_INT, False, None),
        "auth_failed": (_INT, False, None),
        "started_at": (_NUMBER, False, None),
        "ended_at": (_NUMBER, True, None),
        "late": (_INT, False, None),
    },
    "notifications": {
        "id": (_INT, False, None),
        "kind": (_TEXT, False, frozenset({"webhook", "healthchecks"})),
        "event": (_TEXT, False, None),
        "target": (_TEXT, False, None),
        "ok": (_INT, False, None),
        "error": (_TEXT, True, None),
        "attempts": (_INT, False, None),
        "at": (_NUMBER, False, None),
    },
    "steps": {
        "name": (_TEXT, False, None),
        "workflow_id": (_INT, False, None),
        "stage": (_INT, False, None),
        "state": (_TEXT, False, STEP_STATES),
        "reason": (_TEXT, True, None),
        "started_at": (_NUMBER, True, None),
        "ended_at": (_NUMBER, True, None),
        "run_if": (_TEXT, False, frozenset(get_args(RunIf))),
        "on_failure": (_TEXT, False, frozenset(get_args(OnFailure))),
        "ignored": (_INT, False, None),
        "why": (_TEXT, True, None),
    },
    "attempts": {
        "step": (_TEXT, False, None),
        "number": (_INT, False, None),
        "execution_id": (_INT, True, None),
        "state": (_TEXT, False, None),
        "record": (_TEXT, True, None),
        "triggered_at": (_NUMBER, False, None),
        "ended_at": (_NUMBER, True, None),
    },
}


class BadRow(ValueError):
    """A row runbook cannot use; the message names the table, the row and the column."""


def check_row(table: str, row: sqlite3.Row, ident: object) -> sqlite3.Row:
    """``row`` if every column runbook reads has the type (and value) it must."""
    for column, (types, nullable, allowed) in _COLUMNS[table].items():
        value = row[column]
        if value is None and nullable:
            continue
        if isinstance(value, bool) or not isinstance(value, types):
            raise BadRow(f"{table} row {ident}: {column} holds {_shown(value)}")
        if allowed is not None and value not in allowed:
            raise BadRow(f"{table} row {ident}: {column} holds {_shown(value)}")
    return row


def json_field(text: str, kind: type, where: str) -> Any:
    """``text`` decoded as JSON of ``kind`` (list or dict)."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise BadRow(f"{where} is not JSON") from None
    if not isinstance(value, kind):
        raise BadRow(f"{where} is not a JSON {kind.__name__}")
    return value


def _shown(value: object) -> str:
    if value is None:
        return "nothing"
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"
