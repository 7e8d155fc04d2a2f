from __future__ import annotations

import math

import pytest

from runbook.durations import DurationError, format_duration, parse_duration


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0.0),
        (90, 90.0),
        (1.5, 1.5),
        ("90", 90.0),
        ("0.25", 0.25),
        ("500ms", 0.5),
        ("90s", 90.0),
        ("2m", 120.0),
        ("1h30m", 5400.0),
        ("1d", 86400.0),
        ("1.5h", 5400.0),
        (".5s", 0.5),
        ("1h1m1s1ms", 3661.001),
        ("0s", 0.0),
    ],
)
def test_parses_every_documented_form(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1x", "'1x' is not a duration: expected a number of seconds or <number><unit> groups"),
        ("1 h", "'1 h' is not a duration"),
        ("h", "'h' is not a duration"),
        ("", "'' is not a duration"),
        ("-5s", "'-5s' is not a duration"),
        ("1.s", "'1.s' is not a duration"),
        (True, "True is not a duration"),
        (None, "None is not a duration"),
        ([1], "[1] is not a duration"),
        (-1, "-1 is negative: a duration is 0 or more"),
        (math.inf, "inf is not a finite duration"),
        (math.nan, "nan is not a finite duration"),
        ("99999999999999999999" * 20 + "d", "is not a finite duration"),
    ],
)
def test_refuses_with_the_bad_value_shown(value: object, message: str) -> None:
    with pytest.raises(DurationError) as caught:
        parse_duration(value)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.25, "250ms"),
        (0.9996, "1s"),
        (1, "1s"),
        (1.5, "1.5s"),
        (90, "1m30s"),
        (7200, "2h"),
        (86400 + 61, "1d1m1s"),
    ],
)
def test_formats_for_people(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_format_round_trips_through_parse() -> None:
    for seconds in (1, 59, 61, 3600, 5400, 86400 * 3 + 7):
        assert parse_duration(format_duration(seconds)) == seconds
