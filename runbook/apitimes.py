"""What runbook believes of the times the API reports.

An execution's ``start_at`` and ``end_at`` are the API's claim, not a fact: a clock that
is wrong, a bug, or a hostile answer can say that an execution ended in year 9999, or
started before it was triggered. A claim is believed only when it lies within what
runbook itself saw — started no earlier than the trigger was sent, ended no later than
runbook saw the end, each with :data:`SKEW` of allowance for the two clocks — and only
then does it feed a workflow's history, a forecast, a step's duration shown or exported.
Otherwise runbook's own trigger-to-end time stands in for it. The raw strings are kept
and shown as the API sent them (escaped), never interpreted further.
"""

from __future__ import annotations

import math

from runbook.text import parse_timestamp

__all__ = ["SKEW", "believed_span", "believed_within", "seen_span"]

SKEW = 300.0
"""How far the API's clock may be from this host's (seconds, either way) for its times
to be believed."""


def seen_span(triggered_at: object, ended_at: object) -> tuple[float, float] | None:
    """Runbook's own (trigger sent, end seen), epoch seconds, if both are finite and in
    order; None for a damaged or unfinished record."""
    if not _finite(triggered_at) or not _finite(ended_at):
        return None
    start, end = float(triggered_at), float(ended_at)  # type: ignore[arg-type]
    return (start, end) if start <= end else None


def believed_span(
    start_at: object, end_at: object, triggered_at: object, ended_at: object
) -> tuple[float, float] | None:
    """The API's (start, end) of an execution as epoch seconds, when both can be read
    and lie within what runbook saw from ``triggered_at`` to ``ended_at`` (with
    :data:`SKEW` either side) and start is not after end; None otherwise."""
    seen = seen_span(triggered_at, ended_at)
    return None if seen is None else believed_within(start_at, end_at, seen)


def believed_within(
    start_at: object, end_at: object, seen: tuple[float, float]
) -> tuple[float, float] | None:
    """:func:`believed_span` for a ``seen`` span already read (:func:`seen_span`)."""
    if not isinstance(start_at, str) or not isinstance(end_at, str):
        return None
    start, end = parse_timestamp(start_at), parse_timestamp(end_at)
    if start is None or end is None:
        return None
    try:
        begun, ended = start.timestamp(), end.timestamp()
    except (OverflowError, OSError, ValueError):  # pragma: no cover - platform limits
        return None
    if not seen[0] - SKEW <= begun <= ended <= seen[1] + SKEW:
        return None
    return begun, ended


def _finite(value: object) -> bool:
    if type(value) is float:  # the journal's REAL columns: the common case, first
        return math.isfinite(value)
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
