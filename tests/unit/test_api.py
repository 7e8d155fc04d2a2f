"""The API client in-process: the sandbox through httpx.ASGITransport, and a
MockTransport for answers the sandbox never gives."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from email.utils import formatdate
from pathlib import Path

import httpx
import pytest

from runbook.api import (
    Execution,
    NexadataClient,
    RateBudget,
    RetryPolicy,
    Token,
    check_base_url,
)
from runbook.api.secrets import Redactor
from runbook.api.sources import EnvSource, read_token_file
from runbook.errors import (
    ApiError,
    ApiUnavailable,
    AuthError,
    ConfigError,
    ExecutionNotFound,
    TriggerOutcomeUnknown,
    TriggerRefused,
    WorkflowNotFound,
)
from runbook.sandbox.app import POLL, TRIGGER, create_app
from runbook.sandbox.scenario import Faults, Scenario
from runbook.text import parse_timestamp
from tests.support.clocks import Clock

SECRET = "tok-Zq8-very-distinctive-4417"
URL = "http://127.0.0.1/api/v1"


def sandbox(scenario: Scenario | None = None, clock: Clock | None = None, token: str = SECRET):
    return create_app(scenario, token=token, clock=clock or Clock(), wall=lambda: 1_800_000_000.0)


def client(transport: httpx.AsyncBaseTransport, clock: Clock | None = None, **kwargs):
    clock = clock or Clock()
    kwargs.setdefault("budget", RateBudget(rate=None, clock=clock, sleep=clock.sleep))
    return NexadataClient(
        URL, Token(SECRET), transport=transport, sleep=clock.sleep, rng=random.Random(7), **kwargs
    )


def run(coro):
    return asyncio.run(coro)


def stats(app) -> dict:
    return app.state.sandbox.stats()


def test_trigger_and_poll_through_every_state() -> None:
    clock = Clock()
    app = sandbox(Scenario(default={"queue": 0.5, "duration": 2.0}), clock)

    async def main():
        async with client(httpx.ASGITransport(app=app)) as api:
            created = await api.trigger(29)
            seen = [created]
            for step in (0.4, 0.2, 1.0, 1.0):
                clock.now += step
                seen.append(await api.get_execution(created.id))
            return seen

    seen = run(main())
    assert [e.state for e in seen] == ["created", "created", "running", "running", "succeeded"]
    assert seen[0].id == seen[-1].id == 1
    assert seen[0].start_at is None and seen[0].end_at is None
    assert seen[2].start_at == "2027-01-15T08:00:00.500Z" and seen[2].end_at is None
    final = seen[-1]
    assert final.terminal and final.known_state
    assert (final.start_at, final.end_at) == (
        "2027-01-15T08:00:00.500Z",
        "2027-01-15T08:00:02.500Z",
    )
    assert (final.ended - final.started).total_seconds() == 2.0
    assert final.raw["workflow_id"] == 29  # unknown fields are kept
    assert stats(app)["requests"] == {POLL: {"200": 4}, TRIGGER: {"200": 1}}


def test_failed_execution_carries_errors_and_warnings() -> None:
    clock = Clock()
    scenario = Scenario(
        workflows={
            42: {
                "duration": 1.0,
                "outcome": "failed",
                "queue": 0,
                "errors": ("Row count mismatch", {"code": "E1", "message": "late"}),
                "warnings": ({"detail": 3},),
            }
        }
    )
    app = sandbox(scenario, clock)

    async def main():
        async with client(httpx.ASGITransport(app=app)) as api:
            execution = await api.trigger(42)
            clock.now += 5
            return await api.get_execution(execution.id)

    final = run(main())
    assert final.state == "failed"
    assert final.errors == ("Row count mismatch", "E1: late")
    assert final.warnings == ('{"detail": 3}',)


def mock(handler) -> httpx.MockTransport:
    return httpx.MockTransport(handler)


def answers(*responses: httpx.Response):
    """A MockTransport answering these in turn; it records the requests it got."""
    queue = list(responses)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return mock(handler), seen


RECORD = {"id": 170, "state": "created", "start_at": None, "end_at": None}


def test_trigger_request_shape() -> None:
    transport, seen = answers(httpx.Response(200, json=RECORD))

    async def main():
        async with client(transport) as api:
            return await api.trigger(29)

    assert run(main()).id == 170
    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == "http://127.0.0.1/api/v1/workflows/29/execute"
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("runbook/")
    assert request.content == b""


@pytest.mark.parametrize("status", [401, 403])
@pytest.mark.parametrize("op", ["trigger", "poll"])
def test_authentication_failures_are_not_retried(status: int, op: str) -> None:
    transport, seen = answers(httpx.Response(status, json={"error": SECRET}))

    async def main():
        async with client(transport) as api:
            await (api.trigger(1) if op == "trigger" else api.get_execution(1))

    with pytest.raises(AuthError) as caught:
        run(main())
    kind = "unauthorized" if status == 401 else "forbidden"
    assert str(caught.value) == (
        f"authentication failed: the API answered {status} ({kind}); check the token"
    )
    assert caught.value.exit_code == 3
    assert len(seen) == 1


def test_wrong_token_against_the_sandbox() -> None:
    app = sandbox(token="another")

    async def main():
        async with client(httpx.ASGITransport(app=app)) as api:
            await api.get_execution(1)

    with pytest.raises(AuthError):
        run(main())
    assert stats(app)["requests"] == {POLL: {"401": 1}}


def test_404_on_trigger_and_on_poll_are_final() -> None:
    app = sandbox(Scenario(workflows={99: {"exists": False}}))

    async def main():
        async with client(httpx.ASGITransport(app=app)) as api:
            with pytest.raises(WorkflowNotFound) as trigger_error:
                await api.trigger(99)
            with pytest.raises(ExecutionNotFound) as poll_error:
                await api.get_execution(12345)
            return trigger_error.value, poll_error.value

    trigger_error, poll_error = run(main())
    assert str(trigger_error) == "workflow 99 not found, or not in this token's organization"
    assert str(poll_error) == (
        "execution 12345 not found, or not visible to this token (another organization's token?)"
    )
    assert stats(app)["requests"] == {POLL: {"404": 1}, TRIGGER: {"404": 1}}
    assert stats(app)["executions_total"] == 0


def test_retry_after_seconds_on_a_post_then_success() -> None:
    clock = Clock()
    transport, seen = answers(
        httpx.Response(429, headers={"Retry-After": "7"}),
        httpx.Response(503, headers={"Retry-After": "2.5"}),
        httpx.Response(200, json=RECORD),
    )

    async def main():
        budget = RateBudget(rate=None, clock=clock, sleep=clock.sleep)
        async with client(transport, clock, budget=budget) as api:
            return await api.trigger(5)

    assert run(main()).id == 170
    assert len(seen) == 3  # 429 and 503 provably created nothing: re-sent
    assert clock.slept == [7.0, 2.5]


def test_retry_after_http_date_and_cap() -> None:
    clock = Clock()
    future = formatdate(__import__("time").time() + 30, usegmt=True)
    transport, _seen = answers(
        httpx.Response(429, headers={"Retry-After": future}),
        httpx.Response(429, headers={"Retry-After": "99999"}),
        httpx.Response(200, json=RECORD),
    )

    async def main():
        budget = RateBudget(rate=None, clock=clock, sleep=clock.sleep)
        policy = RetryPolicy(retry_after_cap=60)
        async with client(transport, clock, budget=budget, retry=policy) as api:
            return await api.get_execution(170)

    run(main())
    assert 28 <= clock.slept[0] <= 30
    assert clock.slept[1] == 60  # capped


def test_garbage_retry_after_falls_back_to_backoff() -> None:
    clock = Clock()
    transport, _ = answers(
        httpx.Response(429, headers={"Retry-After": "soon"}), httpx.Response(200, json=RECORD)
    )

    async def main():
        budget = RateBudget(rate=None, clock=clock, sleep=clock.sleep)
        async with client(transport, clock, budget=budget) as api:
            return await api.get_execution(170)

    run(main())
    assert 0.5 <= clock.slept[0] <= 1.5


def test_rate_limited_forever_gives_up() -> None:
    clock = Clock()
    transport, seen = answers(httpx.Response(429, headers={"Retry-After": "1"}))

    async def main():
        budget = RateBudget(rate=None, clock=clock, sleep=clock.sleep)
        async with client(
            transport, clock, budget=budget, retry=RetryPolicy(rate_limited_attempts=4)
        ) as api:
            await api.get_execution(3)

    with pytest.raises(ApiUnavailable) as caught:
        run(main())
    assert (
        str(caught.value)
        == "the API kept answering HTTP 429 for execution 3; gave up after 5 tries"
    )
    assert len(seen) == 5


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(500),
        httpx.Response(502),
        httpx.Response(504),
        httpx.Response(200, content=b"<html>oops"),
        httpx.Response(200, json={"id": "x"}),
        httpx.Response(200, json=[1]),
        httpx.Response(301, headers={"Location": "/x"}),
    ],
)
def test_ambiguous_trigger_answers_are_never_resent(answer: httpx.Response) -> None:
    transport, seen = answers(answer, httpx.Response(200, json=RECORD))

    async def main():
        async with client(transport) as api:
            await api.trigger(77)

    with pytest.raises(TriggerOutcomeUnknown) as caught:
        run(main())
    assert str(caught.value).startswith("trigger outcome unknown for workflow 77: ")
    assert str(caught.value).endswith(
        "an execution may have been created, so it was not sent again"
    )
    assert len(seen) == 1


@pytest.mark.parametrize(
    "error",
    [
        httpx.ReadTimeout,
        httpx.ReadError,
        httpx.RemoteProtocolError,
        httpx.WriteError,
        httpx.WriteTimeout,
    ],
)
def test_a_lost_answer_to_a_post_is_unknown(error: type[httpx.HTTPError]) -> None:
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        raise error("connection dropped", request=request)

    async def main():
        async with client(mock(handler)) as api:
            await api.trigger(8)

    with pytest.raises(TriggerOutcomeUnknown) as caught:
        run(main())
    assert f"{error.__name__}: connection dropped" in str(caught.value)
    assert len(seen) == 1


@pytest.mark.parametrize("error", [httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout])
def test_a_post_that_never_left_is_resent(error: type[httpx.HTTPError]) -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) < 3:
            raise error("refused", request=request)
        return httpx.Response(200, json=RECORD)

    async def main():
        async with client(mock(handler)) as api:
            return await api.trigger(8)

    assert run(main()).id == 170
    assert len(calls) == 3


def test_transient_poll_faults_back_off_with_full_jitter_and_are_bounded() -> None:
    clock = Clock()
    _transport, _seen = answers(
        httpx.Response(502),
        httpx.Response(500),
        httpx.Response(200, content=b"{"),
        httpx.Response(503),
    )

    async def main():
        budget = RateBudget(rate=None, clock=clock, sleep=clock.sleep)
        policy = RetryPolicy(attempts=6, backoff_base=1.0, backoff_cap=4.0)
        async with client(
            mock(lambda r: httpx.Response(500)), clock, budget=budget, retry=policy
        ) as api:
            await api.get_execution(9)

    with pytest.raises(ApiUnavailable) as caught:
        run(main())
    assert str(caught.value) == (
        "the API could not be reached for execution 9: HTTP 500 (gave up after 6 tries)"
    )
    assert len(clock.slept) == 5
    for attempt, slept in enumerate(clock.slept, start=1):
        assert 0 <= slept <= min(4.0, 2 ** (attempt - 1))


def test_poll_recovers_after_transient_faults() -> None:
    transport, seen = answers(
        httpx.Response(502),
        httpx.Response(200, content=b"not json"),
        httpx.Response(200, json={**RECORD, "state": "running"}),
    )

    async def main():
        async with client(transport) as api:
            return await api.get_execution(170)

    assert run(main()).state == "running"
    assert len(seen) == 3


@pytest.mark.parametrize(
    ("status", "error", "text"),
    [
        (400, TriggerRefused, "the API answered HTTP 400 for workflow 4 (bad request)"),
        (422, TriggerRefused, "the API answered HTTP 422 for workflow 4 (bad request)"),
    ],
)
def test_other_4xx_on_trigger_are_refusals(status, error, text) -> None:
    transport, seen = answers(httpx.Response(status, text="bad\nrequest"))

    async def main():
        async with client(transport) as api:
            await api.trigger(4)

    with pytest.raises(error) as caught:
        run(main())
    assert str(caught.value) == text
    assert len(seen) == 1


def test_other_4xx_and_redirects_on_poll_fail_at_once() -> None:
    transport, seen = answers(httpx.Response(410), httpx.Response(302))

    async def main():
        async with client(transport) as api:
            with pytest.raises(ApiError) as first:
                await api.get_execution(4)
            with pytest.raises(ApiError) as second:
                await api.get_execution(4)
            return str(first.value), str(second.value)

    assert run(main()) == (
        "the API answered HTTP 410 for execution 4",
        "the API answered HTTP 302 for execution 4; check the API URL",
    )
    assert len(seen) == 2


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://app.nexadata.com/api/v1", True),
        ("https://app.nexadata.com/api/v1/", True),
        ("http://127.0.0.1:8321/api/v1", True),
        ("http://127.9.9.9/api/v1", True),
        ("http://localhost:8000/api/v1", True),
        ("http://[::1]:8000/api/v1", True),
        ("http://app.nexadata.com/api/v1", False),
        ("http://10.0.0.5/api/v1", False),
        ("http://127.0.0.1.example.com/api/v1", False),
        ("ftp://app.nexadata.com/api/v1", False),
        ("https://user:pw@app.nexadata.com/api/v1", False),
        ("nexadata", False),
        ("https://app.nexadata.com:99999/api/v1", False),  # a port no socket has
    ],
)
def test_base_url_must_be_https_unless_loopback(url: str, ok: bool) -> None:
    if ok:
        assert check_base_url(url) == url.rstrip("/")
    else:
        with pytest.raises(ConfigError) as caught:
            check_base_url(url)
        assert caught.value.exit_code == 3


def test_insecure_url_refused_before_any_request() -> None:
    transport, seen = answers(httpx.Response(200, json=RECORD))
    with pytest.raises(ConfigError) as caught:
        NexadataClient("http://api.example.com/api/v1", Token(SECRET), transport=transport)
    assert str(caught.value) == (
        "refusing to send the token to http://api.example.com/api/v1: the API URL must use "
        "https:// (plain http:// is allowed only to a loopback host such as 127.0.0.1)"
    )
    assert seen == []


def test_token_sources(tmp_path: Path) -> None:
    assert EnvSource("MY_TOKEN", {"MY_TOKEN": f"  {SECRET}\n"}).token.reveal() == SECRET
    with pytest.raises(ConfigError) as caught:
        EnvSource("MY_TOKEN", {})
    assert str(caught.value) == (
        "no API token: set the environment variable MY_TOKEN (the plan's api.token_env), "
        "configure the plan's api.oauth client, or pass --token-file or --token-command"
    )
    path = tmp_path / "token"
    path.write_text(SECRET + "\n")
    assert read_token_file(str(path)).reveal() == SECRET
    path.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        read_token_file(str(path))
    with pytest.raises(ConfigError, match="No such file or directory"):
        read_token_file(str(tmp_path / "missing"))
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        read_token_file(str(path))


@pytest.mark.parametrize("bad", [f"{SECRET}\ninjected: 1", f"{SECRET} x", f"{SECRET}é"])
def test_malformed_token_is_refused_without_showing_it(bad: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Token(bad)
    assert SECRET not in str(caught.value)


def test_token_never_shows_itself() -> None:
    token = Token(SECRET)
    assert SECRET not in repr(token) and SECRET not in str(token) and SECRET not in f"{token}"
    assert Redactor([token]).redact(f"x {SECRET} y") == "x *** y"
    with pytest.raises(TypeError):
        __import__("pickle").dumps(token)
    api = NexadataClient(URL, token, transport=httpx.MockTransport(lambda r: httpx.Response(200)))
    assert SECRET not in repr(api) and SECRET not in repr(vars(api).get("_token"))


def test_token_absent_from_every_error_and_log(caplog: pytest.LogCaptureFixture) -> None:
    """Run every failure path at DEBUG logging; the token appears nowhere."""
    caplog.set_level(logging.DEBUG)
    outcomes = [
        httpx.Response(401, text=SECRET),
        httpx.Response(403),
        httpx.Response(404),
        httpx.Response(400, text=f"bad token {SECRET}"),
        httpx.Response(500, text=SECRET),
        httpx.Response(200, text=SECRET),
        httpx.Response(410, text=SECRET),
    ]
    messages = []

    def raising(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadError(f"lost {request.headers['authorization']}", request=request)

    async def main():
        for outcome in outcomes:
            for op in ("trigger", "poll"):
                async with client(
                    mock(lambda r, o=outcome: o), retry=RetryPolicy(attempts=2)
                ) as api:
                    try:
                        await (api.trigger(1) if op == "trigger" else api.get_execution(1))
                    except Exception as exc:
                        messages.append(repr(exc) + str(exc))
        async with client(mock(raising), retry=RetryPolicy(attempts=2)) as api:
            for call in (api.trigger(1), api.get_execution(1)):
                try:
                    await call
                except Exception as exc:
                    messages.append(repr(exc) + str(exc))

    run(main())
    assert len(messages) == 2 * len(outcomes) + 2
    assert all(SECRET not in message for message in messages)
    assert any("***" in message for message in messages)  # the redaction was exercised
    assert SECRET not in caplog.text


def test_execution_record_reading() -> None:
    record = {"id": 3, "state": "paused", "start_at": 17, "extra": {"a": 1}, "errors": "one"}
    execution = Execution.from_record(record)
    assert (execution.state, execution.known_state, execution.terminal) == ("paused", False, False)
    assert execution.start_at == "17" and execution.started is None  # kept raw, not fatal
    assert execution.errors == ("one",) and execution.warnings == ()
    assert execution.raw["extra"] == {"a": 1}
    for bad in ({"state": "created"}, {"id": True, "state": "x"}, {"id": 1}, [], "x"):
        with pytest.raises(ValueError):
            Execution.from_record(bad)


@pytest.mark.parametrize(
    ("text", "iso"),
    [
        ("2026-11-28T02:00:03Z", "2026-11-28T02:00:03+00:00"),
        ("2026-11-28T02:00:03.120z", "2026-11-28T02:00:03.120000+00:00"),
        ("2026-11-28T03:00:03+01:00", "2026-11-28T03:00:03+01:00"),
        ("2026-11-28 02:00:03", "2026-11-28T02:00:03+00:00"),
        ("yesterday", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_timestamp(text, iso) -> None:
    parsed = parse_timestamp(text)
    assert (parsed.isoformat() if parsed else None) == iso


def test_rate_budget_spaces_requests_and_shares_a_pause() -> None:
    clock = Clock()
    budget = RateBudget(rate=10, burst=2, clock=clock, sleep=clock.sleep)

    async def main():
        for _ in range(6):
            await budget.acquire()

    run(main())
    assert clock.now - 1000.0 == pytest.approx(0.4)  # 2 at once, then one per 0.1 s
    budget.defer(5)
    start = clock.now
    run(budget.acquire())
    assert clock.now - start >= 5


def test_a_request_waiting_for_a_slot_honours_a_pause_set_meanwhile() -> None:
    """Two polls, one slot: the first gets 429 while the second waits for the slot; the
    second must not go out when it gets the slot, but when the pause ends."""
    arrivals: list[float] = []
    blocked_until = 0.0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal blocked_until
        now = time.monotonic()
        arrivals.append(now)
        await asyncio.sleep(0)  # on the wire: the other poll queues for the slot meanwhile
        if not blocked_until or now < blocked_until:  # a rate limiter: 429 until it ends
            blocked_until = blocked_until or now + 0.2
            return httpx.Response(429, headers={"Retry-After": "0.2"})
        return httpx.Response(200, json={**RECORD, "state": "running"})

    async def main():
        async with NexadataClient(
            URL, Token(SECRET), transport=httpx.MockTransport(handler), max_in_flight=1
        ) as api:
            await asyncio.gather(api.get_execution(170), api.get_execution(170))

    run(main())
    assert len(arrivals) == 3  # one 429, then both polls after the pause
    assert min(arrivals[1:]) >= blocked_until


def test_default_budget_and_concurrency_cap_hold_under_a_stampede() -> None:
    """2,000 concurrent polls: never more than max_in_flight requests at the server."""
    in_flight = peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0)
        in_flight -= 1
        ident = int(request.url.path.rsplit("/", 1)[1])
        return httpx.Response(200, json={**RECORD, "id": ident, "state": "running"})

    class AsyncMock(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request):
            return await handler(request)

    async def main():
        async with NexadataClient(
            URL, Token(SECRET), transport=AsyncMock(), max_in_flight=8, budget=RateBudget(rate=None)
        ) as api:
            await asyncio.gather(*(api.get_execution(n) for n in range(1, 2001)))
            return api.requests_sent

    assert run(main()) == 2000
    assert peak == 8


def test_json_body_of_the_sandbox_matches_the_openapi_example_keys() -> None:
    app = sandbox()

    async def main():
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://sandbox"
        ) as raw:
            headers = {"Authorization": f"Bearer {SECRET}"}
            created = await raw.post("/api/v1/workflows/29/execute", headers=headers)
            polled = await raw.get(
                f"/api/v1/workflows/executions/{created.json()['id']}", headers=headers
            )
            return created, polled

    created, polled = run(main())
    assert created.status_code == polled.status_code == 200
    assert created.headers["content-type"] == "application/json"
    assert set(json.loads(polled.content)) >= {
        "id",
        "state",
        "start_at",
        "end_at",
        "errors",
        "warnings",
    }
    assert Faults().error_rate == 0.0


@pytest.mark.parametrize("ident", [0, -4, 2**63, 10**30])
def test_a_trigger_answer_with_an_unusable_id_is_an_unknown_outcome(ident: int) -> None:
    transport, seen = answers(httpx.Response(200, json={**RECORD, "id": ident}))

    async def main():
        async with client(transport) as api:
            await api.trigger(5)

    with pytest.raises(TriggerOutcomeUnknown, match="is not a positive 64-bit integer"):
        run(main())
    assert len(seen) == 1  # never re-sent: something may have been created


def test_a_poll_answering_for_another_execution_is_malformed_and_retried() -> None:
    clock = Clock()
    transport, seen = answers(
        httpx.Response(200, json={**RECORD, "id": 171, "state": "failed"}),
        httpx.Response(200, json={**RECORD, "state": "running"}),
    )

    async def main():
        async with client(transport, clock) as api:
            return await api.get_execution(170)

    execution = run(main())
    assert (execution.id, execution.state, len(seen)) == (170, "running", 2)


def test_a_deeply_nested_answer_is_malformed_not_a_crash() -> None:
    nested = b"[" * 5000 + b"]" * 5000  # deeper than json's recursion limit
    transport, seen = answers(httpx.Response(200, content=nested))

    async def trigger():
        async with client(transport) as api:
            await api.trigger(29)

    with pytest.raises(TriggerOutcomeUnknown, match="a malformed answer"):
        run(trigger())
    assert len(seen) == 1
    clock = Clock()
    transport, seen = answers(
        httpx.Response(200, content=nested),
        httpx.Response(200, json={**RECORD, "state": "running"}),
    )

    async def poll():
        async with client(transport, clock) as api:
            return await api.get_execution(170)

    assert run(poll()).state == "running" and len(seen) == 2  # retried like any malformed one


def test_strings_from_the_api_are_made_printable_where_they_enter() -> None:
    execution = Execution.from_record(
        {
            "id": 3,
            "state": "runn\x1b]0;pwned\x07ing" + "x" * 500,
            "start_at": "\x1b[2J2026-12-01T02:00:00Z",
            "errors": ["bad\x1b[31m row"],
        }
    )
    assert execution.state.startswith("runn\\x1b]0;pwned\\x07ing")
    assert len(execution.state) < 120 and "\x1b" not in execution.state
    assert execution.start_at == "\\x1b[2J2026-12-01T02:00:00Z"
    assert execution.errors == ("bad\\x1b[31m row",)
    assert not execution.known_state
