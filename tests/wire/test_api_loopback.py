"""The client's default transport (aiohttp) against real loopback servers."""

from __future__ import annotations

import asyncio
import gzip
import random
import time

import pytest

from runbook.api import NexadataClient, RateBudget, RetryPolicy, Token
from runbook.errors import (
    ApiUnavailable,
    ApiUnreachable,
    AuthError,
    TriggerOutcomeUnknown,
    WorkflowNotFound,
)
from runbook.sandbox import SANDBOX_TOKEN
from runbook.sandbox.app import POLL, TRIGGER
from runbook.sandbox.scenario import Faults, Scenario
from tests.support.servers import closed_port, raw_server


def make_client(url: str, clock, token: str = SANDBOX_TOKEN, **kwargs) -> NexadataClient:
    kwargs.setdefault("budget", RateBudget(rate=None, clock=clock, sleep=clock.sleep))
    return NexadataClient(url, Token(token), sleep=clock.sleep, rng=random.Random(1), **kwargs)


def test_trigger_poll_progression_over_http(sandbox_server, clock) -> None:
    url, app = sandbox_server(Scenario(default={"queue": 1.0, "duration": 2.0}))

    async def main():
        async with make_client(url, clock) as api:
            created = await api.trigger(29)
            states = [created.state]
            for _ in range(3):
                clock.now += 1.01
                states.append((await api.get_execution(created.id)).state)
            return states

    assert asyncio.run(main()) == ["created", "running", "running", "succeeded"]
    stats = app.state.sandbox.stats()
    assert stats["requests"] == {POLL: {"200": 3}, TRIGGER: {"200": 1}}


def test_wrong_token_and_unknown_workflow_over_http(sandbox_server, clock) -> None:
    url, app = sandbox_server(Scenario(workflows={99: {"exists": False}}))

    async def main():
        async with make_client(url, clock, token="nope") as api:
            with pytest.raises(AuthError):
                await api.trigger(1)
        async with make_client(url, clock) as api:
            with pytest.raises(WorkflowNotFound):
                await api.trigger(99)

    asyncio.run(main())
    assert app.state.sandbox.stats()["requests"] == {TRIGGER: {"401": 1, "404": 1}}


def test_poll_errors_are_retried_a_bounded_number_of_times(sandbox_server, clock) -> None:
    url, app = sandbox_server(Scenario(seed=1, faults=Faults(error_rate=1.0)))

    async def main():
        async with make_client(url, clock, retry=RetryPolicy(attempts=4)) as api:
            await api.get_execution(1)

    with pytest.raises(ApiUnavailable) as caught:
        asyncio.run(main())
    assert str(caught.value) == (
        "the API could not be reached for execution 1: HTTP 500 (gave up after 4 tries)"
    )
    assert app.state.sandbox.stats()["requests"] == {POLL: {"500": 4}}


@pytest.mark.parametrize("form", ["seconds", "date"])
def test_rate_limited_requests_wait_then_succeed(sandbox_server, clock, form: str) -> None:
    url, app = sandbox_server(Scenario(faults=Faults(rate_limit=1, retry_after=form)))

    async def main():
        async with make_client(url, clock) as api:
            first = await api.trigger(5)
            second = await api.get_execution(first.id)  # over the limit: 429, wait, retry
            return second

    assert asyncio.run(main()).id == 1
    requests = app.state.sandbox.stats()["requests"]
    assert requests[TRIGGER] == {"200": 1}
    assert requests[POLL]["200"] == 1 and requests[POLL]["429"] >= 1
    assert all(0.1 - 1e-9 <= wait <= 1.0 + 1e-9 for wait in clock.slept), clock.slept  # float sums
    if form == "seconds":
        assert clock.slept == [1.0]


def test_a_lost_trigger_answer_is_never_resent(sandbox_server, clock) -> None:
    url, app = sandbox_server(Scenario(seed=1, faults=Faults(lost_answer_rate=1.0)))

    async def main():
        async with make_client(url, clock) as api:
            await api.trigger(12)

    with pytest.raises(TriggerOutcomeUnknown) as caught:
        asyncio.run(main())
    assert str(caught.value) == (
        "trigger outcome unknown for workflow 12: HTTP 500; an execution may have been "
        "created, so it was not sent again"
    )
    stats = app.state.sandbox.stats()
    assert stats["requests"] == {TRIGGER: {"500": 1}}
    assert stats["executions"] == {"12": 1}


def test_connection_refused_is_retried_for_a_post_too(clock) -> None:
    url = f"http://127.0.0.1:{closed_port()}/api/v1"

    async def main():
        async with make_client(url, clock, retry=RetryPolicy(attempts=3)) as api:
            await api.trigger(1)

    with pytest.raises(ApiUnreachable) as caught:  # never answered: exit 3, not a step failed
        asyncio.run(main())
    assert str(caught.value).startswith(f"the API at {url} could not be reached: ConnectError")
    assert str(caught.value).endswith(
        "(gave up after 3 tries, and no request of this run got an answer); check the URL, "
        "the proxy and the network"
    )
    assert len(clock.slept) == 2

    async def answered_before():
        async with make_client(url, clock, retry=RetryPolicy(attempts=2)) as api:
            api.answered = True  # as after any answer: now the API is down, not misplaced
            await api.trigger(1)

    with pytest.raises(ApiUnavailable) as caught:
        asyncio.run(answered_before())
    assert str(caught.value).startswith("the API could not be reached for workflow 1: ConnectError")
    assert str(caught.value).endswith("(gave up after 2 tries)")


def test_connection_dropped_after_a_post_is_unknown_and_sent_once(clock) -> None:
    with raw_server("drop") as (url, received):

        async def main():
            async with make_client(url, clock) as api:
                await api.trigger(3)

        with pytest.raises(TriggerOutcomeUnknown) as caught:
            asyncio.run(main())
    assert len(received) == 1 and received[0].startswith(b"POST /api/v1/workflows/3/execute ")
    assert "trigger outcome unknown for workflow 3: ReadError" in str(caught.value)


def test_connection_dropped_during_a_poll_is_retried(clock) -> None:
    with raw_server("drop") as (url, received):

        async def main():
            async with make_client(url, clock, retry=RetryPolicy(attempts=3)) as api:
                await api.get_execution(3)

        with pytest.raises(ApiUnavailable):
            asyncio.run(main())
    # 3 tries, each sent twice: aiohttp repeats an idempotent request once when the
    # connection drops (RFC 9112 section 9.3.1); it never does so for a POST (above)
    assert len(received) == 6
    assert all(request.startswith(b"GET /api/v1/workflows/executions/3 ") for request in received)


def test_read_timeout_on_a_post_is_unknown(clock) -> None:
    with raw_server("silent") as (url, received):

        async def main():
            policy = RetryPolicy(read_timeout=0.3)
            async with make_client(url, clock, retry=policy) as api:
                await api.trigger(4)

        with pytest.raises(TriggerOutcomeUnknown) as caught:
            asyncio.run(main())
    assert len(received) == 1
    assert "ReadTimeout" in str(caught.value)


def test_default_client_settings_reach_the_sandbox(sandbox_server, clock) -> None:
    """The defaults a user gets: rate budget, in-flight cap, aiohttp transport."""
    url, app = sandbox_server()

    async def main():
        async with NexadataClient(url, Token(SANDBOX_TOKEN)) as api:
            created = await api.trigger(7)
            results = await asyncio.gather(*(api.get_execution(created.id) for _ in range(50)))
            return results

    assert len(asyncio.run(main())) == 50
    assert app.state.sandbox.stats()["requests"][POLL] == {"200": 50}


def http_answer(body: bytes, *headers: str) -> bytes:
    head = ["HTTP/1.1 200 OK", "Content-Type: application/json", *headers]
    head += [f"Content-Length: {len(body)}", "Connection: close"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


@pytest.mark.parametrize(
    ("body", "headers", "reason"),
    [
        (b"[" * 10 + b" " * (2 << 20), (), "the answer is larger than 1048576 bytes"),
        (
            gzip.compress(b'{"id": 5, "state": "created", "pad": "' + b" " * (64 << 20) + b'"}'),
            ("Content-Encoding: gzip",),
            "the answer decompresses to more than 1048576 bytes",
        ),
        (b"{}", ("Content-Encoding: br",), "unsupported Content-Encoding 'br'"),
        (b"not gzip", ("Content-Encoding: gzip",), "undecodable gzip answer"),
    ],
    ids=["2-MiB", "gzip-bomb", "brotli", "bad-gzip"],
)
def test_an_oversized_or_undecodable_trigger_answer_is_an_unknown_outcome(
    clock, body, headers, reason
) -> None:
    with raw_server("answer", http_answer(body, *headers)) as (url, received):

        async def main():
            async with make_client(url, clock) as api:
                await api.trigger(4)

        with pytest.raises(TriggerOutcomeUnknown) as caught:
            asyncio.run(main())
    assert len(received) == 1  # never re-sent
    assert f"DecodingError: {reason}" in str(caught.value)


def test_an_oversized_poll_answer_is_retried_then_gives_up(clock) -> None:
    with raw_server("answer", http_answer(b" " * (3 << 20))) as (url, received):

        async def main():
            async with make_client(url, clock, retry=RetryPolicy(attempts=2)) as api:
                await api.get_execution(9)

        with pytest.raises(ApiUnavailable, match="larger than 1048576 bytes"):
            asyncio.run(main())
    assert len(received) == 2


def test_a_gzip_answer_within_the_limit_is_read(clock) -> None:
    record = b'{"id": 12, "state": "created", "start_at": null, "end_at": null}'
    answer = http_answer(gzip.compress(record), "Content-Encoding: gzip")
    with raw_server("answer", answer) as (url, _):

        async def main():
            async with make_client(url, clock) as api:
                return await api.trigger(4)

        execution = asyncio.run(main())
    assert (execution.id, execution.state) == (12, "created")


def test_an_answer_dripping_a_byte_at_a_time_is_cut_by_the_request_timeout(clock) -> None:
    answer = http_answer(b'{"id": 1, "state": "created"}' + b" " * 200)
    with raw_server("drip", answer) as (url, received):

        async def main():
            policy = RetryPolicy(read_timeout=5.0, request_timeout=0.8)
            async with make_client(url, clock, retry=policy) as api:
                await api.trigger(4)

        started = time.monotonic()
        with pytest.raises(TriggerOutcomeUnknown):
            asyncio.run(main())
    assert time.monotonic() - started < 5  # the read timeout alone never fired
    assert len(received) == 1
