"""The OAuth 2.0 client source in-process: RFC 6749's requests as a server sees them,
every answer a token endpoint can give (good, §5.2 errors, slow, 503, dropped, garbage),
and refresh-token rotation through the credential cache."""

from __future__ import annotations

import asyncio
import base64
import json
import random
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest

import runbook.api.oauth
from runbook.api.cache import CredentialCache, sha256_hex
from runbook.api.credentials import Credentials
from runbook.api.oauth import OAuthClient, OAuthSource
from runbook.api.secrets import Redactor, Secret
from runbook.errors import AuthError
from tests.support.clocks import Clock

TOKEN_URL = "http://127.0.0.1:9/oauth/token"
CLIENT_SECRET = "client-secret-Qx7-distinctive"
REFRESH = "refresh-from-env-0000-distinctive"


def run(coro):
    return asyncio.run(coro)


def good(access: str = "access-token-0001-abcdef", **extra) -> httpx.Response:
    return httpx.Response(
        200,
        json={"access_token": access, "token_type": "bearer", "expires_in": 3600, **extra},
    )


def source(
    handler,
    *,
    grant="client_credentials",
    auth_method="basic",
    scope=None,
    cache=None,
    redactor=None,
    clock=None,
):
    seen: list[httpx.Request] = []

    async def wrapped(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = handler(request)
        return await answer if asyncio.iscoroutine(answer) else answer

    client = OAuthClient(
        token_url=TOKEN_URL,
        client_id="runbook-client",
        client_secret=Secret(CLIENT_SECRET),
        grant=grant,
        auth_method=auth_method,
        scope=scope,
        refresh_token=Secret(REFRESH) if grant == "refresh_token" else None,
    )
    clock = clock or Clock()
    made = OAuthSource(
        client,
        transport=httpx.MockTransport(wrapped),
        redactor=redactor or Redactor(),
        cache=cache,
        rng=random.Random(3),
        sleep=clock.sleep,
        clock=clock,
    )
    return made, seen


def form(request: httpx.Request) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(request.content.decode()).items()}


def test_client_credentials_with_http_basic_as_rfc_6749_says() -> None:
    made, seen = source(lambda request: good(), scope="workflows:run")
    issued = run(made.fetch())
    assert issued.token.reveal() == "access-token-0001-abcdef" and issued.expires_in == 3600
    (request,) = seen
    assert request.method == "POST" and str(request.url) == TOKEN_URL
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.headers["accept"] == "application/json"
    scheme, encoded = request.headers["authorization"].split()
    assert scheme == "Basic"
    assert base64.b64decode(encoded).decode() == f"runbook-client:{CLIENT_SECRET}"
    assert form(request) == {"grant_type": "client_credentials", "scope": "workflows:run"}


def test_client_secret_post_puts_the_credentials_in_the_body() -> None:
    made, seen = source(lambda request: good(), auth_method="post")
    run(made.fetch())
    (request,) = seen
    assert "authorization" not in request.headers
    assert form(request) == {
        "grant_type": "client_credentials",
        "client_id": "runbook-client",
        "client_secret": CLIENT_SECRET,
    }


def test_basic_credentials_are_form_encoded_first() -> None:
    client = OAuthClient(TOKEN_URL, "id:with space", Secret("s&cr+t/é"))
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return good()

    made = OAuthSource(client, transport=httpx.MockTransport(handler), redactor=Redactor())
    run(made.fetch())
    decoded = base64.b64decode(seen[0].headers["authorization"].split()[1]).decode()
    assert decoded == "id%3Awith%20space:s%26cr%2Bt%2F%C3%A9"


@pytest.mark.parametrize(
    ("status", "error", "advice"),
    [
        (401, "invalid_client", "check the client id and secret"),
        (400, "invalid_grant", "the grant was refused"),
        (400, "unauthorized_client", "the client may not use the client_credentials grant"),
        (400, "unsupported_grant_type", "the server does not offer the client_credentials grant"),
        (400, "invalid_scope", "check the plan's api.oauth.scope"),
    ],
)
def test_every_rfc_6749_error_is_final_and_shown_made_safe(status, error, advice) -> None:
    description = f"bad \x1b[31m{CLIENT_SECRET} " + "x" * 300
    made, seen = source(
        lambda request: httpx.Response(
            status, json={"error": error, "error_description": description}
        )
    )
    with pytest.raises(AuthError) as caught:
        run(made.fetch())
    text = str(caught.value)
    assert text.startswith(
        f"the token endpoint {TOKEN_URL} refused the client 'runbook-client' "
        f"(HTTP {status}, {error}: bad \\x1b[31m*** xxx"
    )
    assert text.endswith(f"; {advice}")
    assert CLIENT_SECRET not in text and "\x1b" not in text
    assert len(text) < 200 + 250
    assert len(seen) == 1  # never retried
    assert caught.value.exit_code == 3


def test_invalid_grant_on_a_refresh_token_says_new_credentials_are_needed(tmp_path) -> None:
    cache = CredentialCache(tmp_path, TOKEN_URL, "runbook-client")
    made, _ = source(
        lambda request: httpx.Response(400, json={"error": "invalid_grant"}),
        grant="refresh_token",
        cache=cache,
    )
    with pytest.raises(AuthError, match="new credentials are needed"):
        run(made.fetch())


def test_a_503_then_a_token_honours_retry_after() -> None:
    answers = iter([httpx.Response(503, headers={"Retry-After": "4"}), good()])
    clock = Clock()
    made, seen = source(lambda request: next(answers), clock=clock)
    assert run(made.fetch()).token.reveal() == "access-token-0001-abcdef"
    assert len(seen) == 2 and clock.slept == [4.0]


@pytest.mark.parametrize(
    "failure",
    [
        lambda request: httpx.Response(503),
        lambda request: httpx.Response(429),
        lambda request: (_ for _ in ()).throw(httpx.ReadError("connection reset by peer")),
        lambda request: (_ for _ in ()).throw(httpx.ConnectError("connection refused")),
    ],
    ids=["503", "429", "dropped", "refused"],
)
def test_transient_failures_are_tried_three_times_then_end_the_run(failure) -> None:
    made, seen = source(failure)
    with pytest.raises(AuthError) as caught:
        run(made.fetch())
    assert str(caught.value).startswith(f"the token endpoint {TOKEN_URL} could not be used: ")
    assert str(caught.value).endswith("(gave up after 3 tries); no token, so the run cannot go on")
    assert len(seen) == 3


def test_a_slow_token_endpoint_is_bounded_by_30_seconds(monkeypatch) -> None:
    monkeypatch.setattr(runbook.api.oauth, "TOTAL_SECONDS", 0.2)

    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(60)
        return good()  # pragma: no cover - cut off first

    import time

    client = OAuthClient(TOKEN_URL, "runbook-client", Secret(CLIENT_SECRET))
    made = OAuthSource(client, transport=httpx.MockTransport(slow), redactor=Redactor())
    started = time.monotonic()
    with pytest.raises(AuthError, match="could not be used: no answer in time"):
        run(made.fetch())
    assert time.monotonic() - started < 30  # the bound, not the answer's 60 s


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (httpx.Response(200, text="<html>login</html>"), "not a JSON token answer"),
        (httpx.Response(200, json=[1, 2]), "not a JSON token answer"),
        (httpx.Response(200, json={"token_type": "bearer"}), "answered without an access_token"),
        (
            httpx.Response(200, json={"access_token": "abcdefabcdef", "token_type": "mac"}),
            "a token of type 'mac'",
        ),
        (
            httpx.Response(200, json={"access_token": "has space", "token_type": "Bearer"}),
            "contains spaces",
        ),
        (httpx.Response(302, headers={"Location": "/login"}), "HTTP 302; check the token URL"),
        (httpx.Response(404), "HTTP 404; check the token URL"),
    ],
)
def test_garbage_and_wrong_answers_are_final(answer, message) -> None:
    made, seen = source(lambda request: answer)
    with pytest.raises(AuthError, match=message):
        run(made.fetch())
    assert len(seen) == 1


def test_every_secret_of_an_answer_is_redacted_before_anything_is_done_with_it() -> None:
    redactor = Redactor()
    made, _ = source(
        lambda request: good("minted-access-abcdef", refresh_token="new-refresh-xyz123"),
        redactor=redactor,
    )
    run(made.fetch())
    echoed = f"{CLIENT_SECRET} minted-access-abcdef new-refresh-xyz123 {REFRESH}"
    assert redactor.redact(echoed) == "*** *** *** " + REFRESH  # not a refresh grant
    assert "distinctive" not in repr(made) and "distinctive" not in repr(made.client)


# -- refresh tokens rotated through the credential cache ------------------------------


def rotating_server():
    """A token endpoint that rotates the refresh token at every refresh and, like a
    real one, revokes the family when a rotated-away refresh token comes back."""
    state = {"valid": {REFRESH}, "used": set(), "issued": 0, "reuse": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        sent = form(request)["refresh_token"]
        if sent in state["used"]:
            state["reuse"] += 1
            state["valid"].clear()
            return httpx.Response(400, json={"error": "invalid_grant"})
        if sent not in state["valid"]:
            return httpx.Response(400, json={"error": "invalid_grant"})
        state["valid"].discard(sent)
        state["used"].add(sent)
        state["issued"] += 1
        fresh = f"refresh-{state['issued']:04d}-rotated"
        state["valid"].add(fresh)
        return good(f"access-{state['issued']:04d}-abcdef", refresh_token=fresh)

    return state, handler


def test_two_processes_sharing_one_client_never_send_a_rotated_away_token(tmp_path) -> None:
    state, handler = rotating_server()
    first, _ = source(
        handler, grant="refresh_token", cache=CredentialCache(tmp_path, TOKEN_URL, "runbook-client")
    )
    second, _ = source(
        handler, grant="refresh_token", cache=CredentialCache(tmp_path, TOKEN_URL, "runbook-client")
    )

    async def main():
        for made in (first, second, first, first, second):
            await made.fetch()
        # and both at once: the lock serializes them
        await asyncio.gather(first.fetch(), second.fetch(), first.fetch())

    run(main())
    assert state["reuse"] == 0 and state["issued"] == 8
    cached = CredentialCache(tmp_path, TOKEN_URL, "runbook-client").read()
    assert cached is not None and cached.refresh_token == "refresh-0008-rotated"
    assert cached.env_sha256 == sha256_hex(REFRESH)
    text = (Path(cached_path(tmp_path))).read_text()
    assert "access-" not in text and CLIENT_SECRET not in text


def cached_path(state_dir: Path) -> Path:
    return CredentialCache(state_dir, TOKEN_URL, "runbook-client").path


def test_a_new_refresh_token_in_the_environment_starts_a_new_chain(tmp_path) -> None:
    cache = CredentialCache(tmp_path, TOKEN_URL, "runbook-client")
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(form(request)["refresh_token"])
        return good(refresh_token=f"rotated-{len(sent)}")

    made, _ = source(handler, grant="refresh_token", cache=cache)
    run(made.fetch())
    run(made.fetch())
    client = OAuthClient(
        TOKEN_URL,
        "runbook-client",
        Secret(CLIENT_SECRET),
        grant="refresh_token",
        refresh_token=Secret("a-new-set-of-credentials"),
    )
    renewed = OAuthSource(
        client, transport=httpx.MockTransport(handler), redactor=Redactor(), cache=cache
    )
    run(renewed.fetch())
    assert sent == [REFRESH, "rotated-1", "a-new-set-of-credentials"]


def test_an_answer_without_a_new_refresh_token_keeps_the_one_in_use(tmp_path) -> None:
    cache = CredentialCache(tmp_path, TOKEN_URL, "runbook-client")
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(form(request)["refresh_token"])
        return good()

    made, _ = source(handler, grant="refresh_token", cache=cache)
    run(made.fetch())
    run(made.fetch())
    assert sent == [REFRESH, REFRESH] and cache.read() is None


def test_the_cached_refresh_token_is_redacted_once_read(tmp_path) -> None:
    _, handler = rotating_server()
    cache = CredentialCache(tmp_path, TOKEN_URL, "runbook-client")
    run(source(handler, grant="refresh_token", cache=cache)[0].fetch())
    redactor = Redactor()
    later, _ = source(handler, grant="refresh_token", cache=cache, redactor=redactor)
    run(later.fetch())
    assert redactor.redact("refresh-0001-rotated refresh-0002-rotated") == "*** ***"


def test_credentials_over_an_oauth_source_refresh_before_expiry() -> None:
    issued = iter(range(1, 100))

    def handler(request: httpx.Request) -> httpx.Response:
        n = next(issued)
        return httpx.Response(
            200,
            json={"access_token": f"short-{n:04d}-abcd", "token_type": "Bearer", "expires_in": 2},
        )

    clock = Clock(0.0)
    made, seen = source(handler)
    credentials = Credentials(made, made_redactor(made), clock=clock)

    async def main():
        shown = []
        for moment in (0.0, 0.9, 1.0, 1.9, 2.0):
            clock.now = moment
            shown.append((await credentials.token()).reveal())
        return shown

    assert run(main()) == ["short-0001-abcd"] * 2 + ["short-0002-abcd"] * 2 + ["short-0003-abcd"]
    assert len(seen) == 3 and credentials.refreshes == 2
    assert json.dumps(credentials.kind) == '"oauth client_credentials"'


def made_redactor(made: OAuthSource) -> Redactor:
    return made._redactor


def held_lock(tmp_path):
    """Another process's refresh holding the cache's lock, until released."""
    import fcntl

    cache = CredentialCache(tmp_path, TOKEN_URL, "runbook-client")
    handle = open(cache.lock_path, "a")  # noqa: SIM115
    fcntl.flock(handle, fcntl.LOCK_EX)
    return cache, handle


def test_a_lock_held_too_long_by_another_process_is_an_authentication_failure(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(runbook.api.oauth, "LOCK_WAIT", 0.2)
    cache, handle = held_lock(tmp_path)
    _state, handler = rotating_server()
    made, seen = source(handler, grant="refresh_token", cache=cache)
    with pytest.raises(AuthError, match=r"stayed locked by another process for 0\.2 s"):
        run(made.fetch())
    assert seen == []  # nothing was exchanged without the lock
    handle.close()


def test_a_refresh_cancelled_while_it_waits_for_the_lock_leaves_it_at_once(tmp_path) -> None:
    import threading

    cache, handle = held_lock(tmp_path)
    _state, handler = rotating_server()
    made, seen = source(handler, grant="refresh_token", cache=cache)
    before = threading.active_count()

    async def main():
        task = asyncio.ensure_future(made.fetch())
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main())  # would hang at the loop's end if the waiting thread went on waiting
    handle.close()
    assert seen == [] and threading.active_count() <= before
    assert run(made.fetch()).token  # the lock is free: nobody kept it


def test_a_refresh_cancelled_during_its_cache_write_keeps_the_lock_until_written(
    tmp_path, monkeypatch
) -> None:
    import time

    state, handler = rotating_server()
    cache = CredentialCache(tmp_path, TOKEN_URL, "runbook-client")
    made, _ = source(handler, grant="refresh_token", cache=cache)
    real_write = CredentialCache.write
    started = asyncio.Event()

    def slow_write(self, entry):
        loop.call_soon_threadsafe(started.set)
        time.sleep(0.3)
        real_write(self, entry)

    monkeypatch.setattr(CredentialCache, "write", slow_write)

    async def main():
        task = asyncio.ensure_future(made.fetch())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # cancelled, and yet the new refresh token is kept before the lock is free
        cached = cache.read()
        assert cached is not None and cached.refresh_token == "refresh-0001-rotated"

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    assert state["reuse"] == 0


def test_a_cache_that_cannot_be_written_mid_run_is_exit_5(tmp_path, monkeypatch) -> None:
    from runbook.errors import CredentialCacheError, JournalError

    _state, handler = rotating_server()
    cache = CredentialCache(tmp_path, TOKEN_URL, "runbook-client")
    made, _ = source(handler, grant="refresh_token", cache=cache)

    def full(self, entry):
        raise JournalError("the credential cache cannot be written: No space left on device")

    monkeypatch.setattr(CredentialCache, "write", full)
    with pytest.raises(CredentialCacheError, match="No space left") as caught:
        run(made.fetch())
    assert caught.value.exit_code == 5 and isinstance(caught.value, AuthError)
