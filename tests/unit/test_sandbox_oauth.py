"""The sandbox's OAuth 2.0 token endpoint in-process: both grants, both ways of client
authentication, every RFC 6749 §5.2 error, expiry on the injected clock (RFC 6750 §3),
rotation and reuse detection, the counters."""

from __future__ import annotations

import asyncio
import base64
import math
from urllib.parse import quote

import httpx
import pytest

from runbook.sandbox import SandboxOAuth
from runbook.sandbox.app import POLL, TOKEN, TRIGGER, create_app
from tests.support.clocks import Clock

STATIC = {"Authorization": "Bearer sandbox"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
CC = "grant_type=client_credentials"
EXPIRED = 'Bearer error="invalid_token", error_description="the access token expired"'
REVOKED = 'Bearer error="invalid_token", error_description="the access token was revoked"'


def make(ttl: float = 2.0, **options):
    clock = Clock()
    oauth = SandboxOAuth(ttl, **options)
    return create_app(clock=clock, oauth=oauth, wall=lambda: 1_800_000_000.0), clock


def basic(client_id: str = "sandbox-client", secret: str = "sandbox-secret") -> dict:
    pair = f"{client_id}:{secret}".encode()
    return {**FORM, "Authorization": "Basic " + base64.b64encode(pair).decode()}


def call(app, *requests: tuple[str, str, dict, bytes | str]) -> list[httpx.Response]:
    async def main():
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://sandbox"
        ) as http:
            return [
                await http.request(method, path, headers=headers, content=content)
                for method, path, headers, content in requests
            ]

    return asyncio.run(main())


def token(app, body: str | bytes = CC, headers: dict | None = None) -> httpx.Response:
    return call(app, ("POST", "/oauth/token", basic() if headers is None else headers, body))[0]


def refresh(app, refresh_token: str) -> httpx.Response:
    return token(app, f"grant_type=refresh_token&refresh_token={refresh_token}")


def bearer(access_token: str) -> dict:
    return {"Authorization": f"Bearer {access_token}"}


def trigger(app, headers: dict) -> httpx.Response:
    return call(app, ("POST", "/api/v1/workflows/29/execute", headers, b""))[0]


def poll(app, headers: dict) -> httpx.Response:
    return call(app, ("GET", "/api/v1/workflows/executions/1", headers, b""))[0]


def test_client_credentials_by_basic_and_by_the_body() -> None:
    app, _ = make()
    by_basic = token(app)
    by_body = token(
        app, f"{CC}&client_id=sandbox-client&client_secret=sandbox-secret&scope=any", FORM
    )
    for answer in (by_basic, by_body):
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/json"
        assert answer.headers["cache-control"] == "no-store"
        assert answer.headers["pragma"] == "no-cache"
        body = answer.json()
        assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token"}
        assert body["token_type"] == "Bearer"
        assert body["expires_in"] == 2 and isinstance(body["expires_in"], int)
        assert len(body["access_token"]) >= 32 and len(body["refresh_token"]) >= 32
        assert trigger(app, bearer(body["access_token"])).status_code == 200
    tokens = {by_basic.json()[k] for k in ("access_token", "refresh_token")}
    assert not tokens & {by_body.json()[k] for k in ("access_token", "refresh_token")}
    stats = app.state.sandbox.stats()
    assert stats["token_requests"] == {"client_credentials": 2, "refresh_token": 0}
    assert stats["requests"][TOKEN] == {"200": 2}


def test_a_fractional_ttl_is_sent_as_it_is() -> None:
    app, clock = make(1.5)
    answer = token(app).json()
    assert answer["expires_in"] == 1.5
    clock.now += 1.49
    assert poll(app, bearer(answer["access_token"])).status_code == 404  # authorized
    clock.now += 0.01
    assert poll(app, bearer(answer["access_token"])).status_code == 401


def test_basic_credentials_form_encoded_as_rfc_6749_says_or_raw_as_curl_sends_them() -> None:
    secret = "p+ss:w%rd"
    app, _ = make(client_secret=secret)
    assert token(app, headers=basic("sandbox-client", quote(secret, safe=""))).status_code == 200
    assert token(app, headers=basic("sandbox-client", secret)).status_code == 200
    wrong = token(app, headers=basic("sandbox-client", "p ss:w%rd"))
    assert wrong.json()["error_description"] == "wrong client secret"


def test_the_refresh_grant_rotates_the_refresh_token() -> None:
    app, _ = make()
    current = app.state.sandbox.first_refresh_token
    assert isinstance(current, str) and len(current) >= 32
    seen = {current}
    for _ in range(3):
        answer = refresh(app, current)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["refresh_token"] not in seen and body["access_token"] not in seen
        seen |= {body["refresh_token"], body["access_token"]}
        assert trigger(app, bearer(body["access_token"])).status_code == 200
        current = body["refresh_token"]
    stats = app.state.sandbox.stats()
    assert stats["token_requests"] == {"client_credentials": 0, "refresh_token": 3}
    assert stats["refresh_token_reuse"] == 0


def test_every_sandbox_has_its_own_random_tokens() -> None:
    first = {make()[0].state.sandbox.first_refresh_token for _ in range(5)}
    assert len(first) == 5


@pytest.mark.parametrize(
    ("headers", "body", "status", "error", "description"),
    [
        (basic("someone"), CC, 401, "invalid_client", "unknown client"),
        (basic(secret="guess"), CC, 401, "invalid_client", "wrong client secret"),
        (
            FORM,
            f"{CC}&client_id=sandbox-client&client_secret=guess",
            401,
            "invalid_client",
            "wrong client secret",
        ),
        (
            FORM,
            f"{CC}&client_id=sandbox-client",
            401,
            "invalid_client",
            "client authentication is required: HTTP Basic, or client_id and client_secret "
            "in the body",
        ),
        (
            {**FORM, "Authorization": "Bearer sandbox"},
            CC,
            401,
            "invalid_client",
            "the token endpoint authenticates clients with HTTP Basic",
        ),
        (
            {**FORM, "Authorization": "Basic !!!"},
            CC,
            401,
            "invalid_client",
            "the HTTP Basic credentials are not base64 of UTF-8",
        ),
        (
            {**FORM, "Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
            CC,
            401,
            "invalid_client",
            "the HTTP Basic credentials are not client_id:client_secret",
        ),
        (
            basic(),
            f"{CC}&client_secret=sandbox-secret",
            400,
            "invalid_request",
            "the client authenticated twice, by HTTP Basic and by client_secret in the body: "
            "use one method",
        ),
        (
            basic(),
            f"{CC}&client_id=other",
            400,
            "invalid_request",
            "the body's client_id is not the client authenticated",
        ),
        (basic(), "scope=x", 400, "invalid_request", "the parameter grant_type is missing"),
        (basic(), "grant_type=", 400, "invalid_request", "the parameter grant_type is missing"),
        (
            basic(),
            f"{CC}&{CC}",
            400,
            "invalid_request",
            "the parameter grant_type is given more than once",
        ),
        (
            basic(),
            "grant_type=password&username=a&password=b",
            400,
            "unsupported_grant_type",
            "the sandbox offers the grants client_credentials and refresh_token",
        ),
        (
            basic(),
            "grant_type=refresh_token",
            400,
            "invalid_request",
            "the parameter refresh_token is missing",
        ),
        (
            basic(),
            "grant_type=refresh_token&refresh_token=made-up",
            400,
            "invalid_grant",
            "unknown refresh token",
        ),
        (
            {**basic(), "Content-Type": "application/json"},
            '{"grant_type": "client_credentials"}',
            400,
            "invalid_request",
            "the body must be application/x-www-form-urlencoded",
        ),
        (
            basic(),
            b"grant_type=client_credentials&scope=%ff",
            400,
            "invalid_request",
            "the body is not a application/x-www-form-urlencoded form in UTF-8",
        ),
    ],
)
def test_every_error_answer(
    headers: dict, body: str | bytes, status: int, error: str, description: str
) -> None:
    app, _ = make()
    answer = token(app, body, headers)
    assert answer.status_code == status
    assert answer.json() == {"error": error, "error_description": description}
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["pragma"] == "no-cache"
    if status == 401:
        assert answer.headers["www-authenticate"] == 'Basic realm="sandbox"'
    else:
        assert "www-authenticate" not in answer.headers


def test_an_access_token_is_no_refresh_token() -> None:
    app, _ = make()
    access = token(app).json()["access_token"]
    answer = refresh(app, access)
    assert answer.json() == {"error": "invalid_grant", "error_description": "unknown refresh token"}


def test_access_tokens_expire_on_the_clock_and_the_static_token_does_not() -> None:
    app, clock = make(2.0)
    access = bearer(token(app).json()["access_token"])
    assert trigger(app, access).status_code == 200
    clock.now += 1.99
    assert poll(app, access).status_code == 200
    clock.now += 0.01
    expired = [trigger(app, access), poll(app, access)]
    for answer in expired:
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"] == EXPIRED
        assert answer.json() == {"error": "unauthorized: the access token expired"}
    clock.now += 10_000
    assert trigger(app, STATIC).status_code == 200
    unknown = trigger(app, bearer("made-up"))
    assert unknown.status_code == 401 and "www-authenticate" not in unknown.headers
    assert unknown.json() == {"error": "unauthorized: missing or invalid Bearer token"}
    stats = app.state.sandbox.stats()
    assert stats["expired_token_401s"] == 2 and stats["revoked_token_401s"] == 0
    assert stats["requests"][TRIGGER] == {"200": 2, "401": 2}
    assert stats["requests"][POLL] == {"200": 1, "401": 1}
    assert stats["executions_total"] == 2


def test_a_reused_refresh_token_revokes_every_token_issued_from_it_since() -> None:
    app, _ = make()
    first = app.state.sandbox.first_refresh_token
    chain = [refresh(app, first).json()]  # from the first refresh token
    for _ in range(2):
        chain.append(refresh(app, chain[-1]["refresh_token"]).json())
    other = token(app).json()  # another family: client_credentials
    # a copy of chain[0]'s refresh token, already exchanged, comes back: taken as stolen
    reused = refresh(app, chain[0]["refresh_token"])
    assert reused.status_code == 400
    assert reused.json() == {
        "error": "invalid_grant",
        "error_description": "the refresh token was used before: it and the 4 tokens "
        "issued from it since are revoked",
    }
    assert app.state.sandbox.stats()["refresh_token_reuse"] == 1
    # issued before the reused token was exchanged: still good
    assert trigger(app, bearer(chain[0]["access_token"])).status_code == 200
    for issued in chain[1:]:
        answer = trigger(app, bearer(issued["access_token"]))
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"] == REVOKED
        assert answer.json() == {"error": "unauthorized: the access token was revoked"}
    revoked = refresh(app, chain[-1]["refresh_token"])  # revoked, never used: no reuse
    assert revoked.json()["error_description"] == "the refresh token was revoked"
    assert trigger(app, bearer(other["access_token"])).status_code == 200
    assert refresh(app, other["refresh_token"]).status_code == 200
    assert trigger(app, STATIC).status_code == 200
    stats = app.state.sandbox.stats()
    assert stats["refresh_token_reuse"] == 1 and stats["revoked_token_401s"] == 2
    assert stats["token_requests"] == {"client_credentials": 1, "refresh_token": 6}
    assert stats["requests"][TOKEN] == {"200": 5, "400": 2}


def test_a_client_racing_itself_is_caught() -> None:
    app, _ = make()
    first = app.state.sandbox.first_refresh_token
    winner, loser = refresh(app, first), refresh(app, first)
    assert winner.status_code == 200 and loser.json()["error"] == "invalid_grant"
    assert trigger(app, bearer(winner.json()["access_token"])).status_code == 401
    assert refresh(app, winner.json()["refresh_token"]).status_code == 400
    assert app.state.sandbox.stats()["refresh_token_reuse"] == 1


def test_the_token_endpoint_takes_post_only() -> None:
    app, _ = make()
    (answer,) = call(app, ("GET", "/oauth/token", {}, b""))
    assert answer.status_code == 405 and answer.headers["allow"] == "POST"


def test_private_stats_take_an_access_token_too() -> None:
    clock = Clock()
    app = create_app(clock=clock, oauth=SandboxOAuth(1), private_stats=True)
    access = bearer(token(app).json()["access_token"])
    stats = ("GET", "/__sandbox/stats", access, b"")
    assert call(app, stats)[0].status_code == 200
    clock.now += 1
    expired = call(app, stats)[0]
    assert expired.status_code == 401 and expired.headers["www-authenticate"] == EXPIRED
    assert call(app, ("GET", "/__sandbox/stats", STATIC, b""))[0].status_code == 200


def test_without_oauth_there_is_no_token_endpoint() -> None:
    app = create_app()
    assert app.state.sandbox.first_refresh_token is None
    answer = token(app)
    assert answer.status_code == 404 and answer.json() == {"error": "not found"}
    stats = app.state.sandbox.stats()
    assert stats["token_requests"] == {"client_credentials": 0, "refresh_token": 0}
    assert (stats["refresh_token_reuse"], stats["expired_token_401s"]) == (0, 0)


@pytest.mark.parametrize(
    "options",
    [
        {"token_ttl": 0},
        {"token_ttl": -1},
        {"token_ttl": math.inf},
        {"token_ttl": math.nan},
        {"token_ttl": 1, "client_id": "two words"},
        {"token_ttl": 1, "client_secret": ""},
        {"token_ttl": 1, "client_secret": "caf\u00e9"},
    ],
)
def test_sandbox_oauth_refuses_what_no_client_could_send(options: dict) -> None:
    with pytest.raises(ValueError):
        SandboxOAuth(**options)


def test_sandbox_oauth_keeps_its_secret_out_of_its_repr() -> None:
    oauth = SandboxOAuth(60, client_secret="s3cr3t")
    assert "s3cr3t" not in repr(oauth)
    assert (oauth.expires_in, SandboxOAuth(0.25).expires_in) == (60, 0.25)
