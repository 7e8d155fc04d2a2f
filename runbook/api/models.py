"""What the API answers, read: an execution record, every string made safe where it enters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from runbook.events import TERMINAL_STATES
from runbook.text import message_texts, parse_timestamp, printable

__all__ = ["KNOWN_STATES", "TERMINAL_STATES", "Execution"]

KNOWN_STATES = frozenset({"created", "running", "succeeded", "failed"})
_MAX_ID = 2**63 - 1  # what the journal (SQLite INTEGER) can hold


@dataclass(frozen=True, slots=True)
class Execution:
    """An execution record. Unknown fields are kept in ``raw``, never rejected."""

    id: int
    state: str
    start_at: str | None
    end_at: str | None
    errors: tuple[str, ...]
    warnings: tuple[str, ...]
    raw: Mapping[str, Any] = field(compare=False, repr=False)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def known_state(self) -> bool:
        return self.state in KNOWN_STATES

    @property
    def started(self) -> datetime | None:
        """``start_at`` as an aware datetime, or None when absent or unreadable."""
        return parse_timestamp(self.start_at)

    @property
    def ended(self) -> datetime | None:
        """``end_at`` as an aware datetime, or None when absent or unreadable."""
        return parse_timestamp(self.end_at)

    @classmethod
    def from_record(cls, record: Any) -> Execution:
        """Read an answer's body; ValueError if it lacks an integer id or a string state."""
        if not isinstance(record, dict):
            raise ValueError("the answer is not a JSON object")
        ident, state = record.get("id"), record.get("state")
        if isinstance(ident, bool) or not isinstance(ident, int):
            raise ValueError("the answer has no integer 'id'")
        if not 1 <= ident <= _MAX_ID:
            raise ValueError(f"the answer's 'id' {ident} is not a positive 64-bit integer")
        if not isinstance(state, str):
            raise ValueError("the answer has no string 'state'")
        return cls(  # every string made safe to print where it enters
            id=ident,
            state=printable(state[:MAX_STATE]),
            start_at=_text_or_none(record.get("start_at")),
            end_at=_text_or_none(record.get("end_at")),
            errors=message_texts(record.get("errors")),
            warnings=message_texts(record.get("warnings")),
            raw=record,
        )


MAX_STATE = 100
"""A state longer than this is cut: it is shown on every line about its execution."""


def _text_or_none(value: Any) -> str | None:
    return None if value is None else printable(str(value)[:MAX_STATE])
