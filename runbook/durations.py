"""Durations as plans write them (``90``, ``1.5``, ``"500ms"``, ``"1h30m"``) and back.

A duration is a number of seconds (integer or decimal) or a string of one or more
``<number><unit>`` groups, unit one of ``ms``, ``s``, ``m``, ``h``, ``d``.
"""

from __future__ import annotations

import functools
import math
import re

__all__ = ["DURATION_HELP", "DurationError", "format_duration", "parse_duration"]

UNITS: dict[str, float] = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

_NUMBER = r"(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)"
_GROUP = re.compile(rf"({_NUMBER})(ms|s|m|h|d)")
_WHOLE = re.compile(rf"(?:{_NUMBER}(?:ms|s|m|h|d))+|{_NUMBER}")

DURATION_HELP = (
    "a number of seconds or <number><unit> groups with units ms, s, m, h, d (e.g. 90s, 1h30m)"
)


class DurationError(ValueError):
    """A value that is not a duration; the message names the value."""


def parse_duration(value: object) -> float:
    """Return ``value`` in seconds, or raise :class:`DurationError` saying why not."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise DurationError(f"{value!r} is not a duration: expected {DURATION_HELP}")
    return _parse(value)


@functools.lru_cache(maxsize=4096, typed=True)  # plans repeat a handful of values
def _parse(value: float | str) -> float:
    if isinstance(value, str):
        if not _WHOLE.fullmatch(value):
            raise DurationError(f"{value!r} is not a duration: expected {DURATION_HELP}")
        if value[-1].isdigit():
            seconds = float(value)
        else:
            seconds = sum(float(n) * UNITS[u] for n, u in _GROUP.findall(value))
    else:
        seconds = float(value)
    if not math.isfinite(seconds):
        raise DurationError(f"{value!r} is not a finite duration")
    if seconds < 0:
        raise DurationError(f"{value!r} is negative: a duration is 0 or more")
    return seconds


MAX_SHOWN = 100 * 365.25 * 86400
"""Beyond a century, a duration is said to be so rather than counted in days."""


def format_duration(seconds: float) -> str:
    """Render seconds compactly for people: ``0.5s``, ``90s`` -> ``1m30s``, ``2h``; any
    value (a negative one as 0, one that is not finite or beyond a century said so)."""
    if not math.isfinite(seconds) or seconds > MAX_SHOWN:
        return "more than 100 years" if seconds > 0 else "an unknown time"
    seconds = max(0.0, seconds)
    if seconds < 1:
        ms = round(seconds * 1000)
        return f"{ms}ms" if ms < 1000 else "1s"
    if seconds < 60:
        text = f"{seconds:.1f}".rstrip("0").rstrip(".")
        return f"{text}s"
    whole = round(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, whole = divmod(whole, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
