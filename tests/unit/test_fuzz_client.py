"""Fuzzing the client: an API answering random statuses, headers and bodies. The only
outcomes are the documented ones — an execution with an id and a state, or one of the
client's errors (each with its exit code) — never another exception, never a hang
(retries and waits are bounded; the clock here is fake, so waits cost nothing), and
never the token in a message."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runbook.api import Execution, NexadataClient, RateBudget, Token
from runbook.errors import ApiError, AuthError, ConfigError, RunbookError, TriggerOutcomeUnknown
from tests.support.clocks import Clock

SECRET = "fuzz-secret-token-7d2b"
URL = "http://127.0.0.1/api/v1"
STATES = ["created", "running", "succeeded", "failed", "paused", "", None, 3]

TIMES = st.one_of(
    st.datetimes().map(lambda moment: moment.isoformat() + "Z"),
    st.sampled_from(
        [
            "2027-01-15T08:00Z",
            "2027-01-15T08:05:00+01:00",
            "9999-12-31T23:59:59.999999Z",
            "0001-01-01T00:00:00+23:59",
            "2026-12-31T23:59:60Z",
            "2026-01-01T00:00:00+24:00",
            "1e400",
        ]
    ),
)
"""Timestamps across the whole range a datetime holds, and past it."""

json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**64), 2**64),
        st.floats(),
        st.text(max_size=12),
        st.sampled_from(["\x1b[2J", "line\nbreak", "bell\a", "\u2028"]),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    """Execution records, right or nearly so: every field may be missing or wrong."""
    record: dict[str, Any] = {
        "id": draw(st.one_of(st.integers(-3, 10**20), st.text(max_size=4), st.none())),
        "state": draw(st.sampled_from(STATES)),
        "start_at": draw(st.one_of(st.none(), st.text(max_size=25), TIMES, st.floats())),
        "end_at": draw(st.one_of(st.none(), st.integers(), TIMES, st.floats())),
        "errors": draw(st.one_of(st.none(), json_values)),
        "warnings": draw(st.one_of(st.none(), json_values)),
    }
    for key in draw(st.lists(st.sampled_from(sorted(record)), max_size=3)):
        record.pop(key, None)
    return record


bodies = st.one_of(
    records().map(lambda r: json.dumps(r).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=60),
    st.just(b""),
)
headers = st.dictionaries(
    st.sampled_from(["Retry-After", "Content-Type", "Content-Length", "X-Other"]),
    st.one_of(
        st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30),
        st.sampled_from(["0", "1", "-5", "99999999", "Wed, 21 Oct 2015 07:28:00 GMT", "nan"]),
    ),
    max_size=2,
)
answers = st.lists(
    st.tuples(st.sampled_from([200, 201, 202, 204, 301, 400, 401, 403, 404, 409, 410, 422,
                               429, 500, 502, 503, 504, 599]) | st.integers(200, 599),
              headers, bodies),
    min_size=1,
    max_size=5,
)  # fmt: skip


def transport(script: list[tuple[int, dict[str, str], bytes]]) -> httpx.MockTransport:
    turn = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal turn
        status, head, body = script[min(turn, len(script) - 1)]
        turn += 1
        head = {k: v for k, v in head.items() if k != "Content-Length"}
        return httpx.Response(status, headers=head, content=body)

    return httpx.MockTransport(handler)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(answers, st.sampled_from(["trigger", "poll"]))
def test_random_answers_have_only_documented_outcomes(script: list, op: str) -> None:
    clock = Clock()

    async def main() -> Execution:
        async with NexadataClient(
            URL,
            Token(SECRET),
            transport=transport(script),
            budget=RateBudget(rate=None, clock=clock, sleep=clock.sleep),
            sleep=clock.sleep,
            rng=random.Random(1),
        ) as api:
            if op == "trigger":
                return await api.trigger(7)
            return await api.get_execution(7)

    try:
        execution = asyncio.run(main())
    except (ApiError, ConfigError) as error:
        assert isinstance(error, RunbookError) and error.exit_code in (1, 3)
        assert SECRET not in str(error) and SECRET not in repr(error)
        assert str(error) and str(error).isprintable()  # one line, no escape codes
        if isinstance(error, TriggerOutcomeUnknown):
            assert op == "trigger"
        if isinstance(error, AuthError):
            assert any(status in (401, 403) for status, _, _ in script)
    else:
        assert isinstance(execution.id, int) and 0 < execution.id < 2**63
        assert op == "trigger" or execution.id == 7  # a poll answers for what was asked
        assert isinstance(execution.state, str)  # an unknown one is polled on, with a warning
        assert all(text.isprintable() for text in execution.errors + execution.warnings)
        assert any(200 <= status < 300 for status, _, _ in script)
    assert sum(clock.slept) < 30 * 130  # bounded: every wait is capped, so are the tries
