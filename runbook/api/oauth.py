"""An OAuth 2.0 client as a token source: RFC 6749's token request and its answer.

``client_credentials`` (§4.4) mints a token from the client id and secret alone;
``refresh_token`` (§6) exchanges the latest refresh token, which the server may rotate
with every answer. The latest one is kept in the credential cache
(:mod:`runbook.api.cache`) and exchanged only under its lock, read again inside it: so
processes sharing one client never send a refresh token another has rotated away — the
reuse that makes a real server revoke the whole family.

The request goes through the same kind of transport as every API request (the
environment's proxy for the token URL, the CA, the size cap) and is safe to repeat:
it triggers nothing. Neither authlib nor oauthlib is used: authlib's httpx client
brings its own HTTP stack beside ours, and what oauthlib would give — a form body and
a JSON answer checked — is the sixty lines below, while the rotation under a lock
across processes is ours either way.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from urllib.parse import quote, urlencode

import httpx

from runbook import __version__
from runbook.api.cache import CachedRefresh, CredentialCache, LockTimeout, sha256_hex
from runbook.api.pacing import retry_after
from runbook.api.secrets import Redactor, Secret, Token
from runbook.api.sources import AuthKind, Issued
from runbook.errors import AuthError, ConfigError, CredentialCacheError, JournalError
from runbook.text import printable

__all__ = ["OAuthClient", "OAuthSource", "token_transport"]

Grant = Literal["client_credentials", "refresh_token"]
AuthMethod = Literal["basic", "post"]

TRIES = 3
TOTAL_SECONDS = 30.0
LOCK_WAIT = 60.0
"""How long a refresh waits for another process's: one token request, with room."""
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class OAuthClient:
    """An OAuth client as configured: where its token endpoint is, and its credentials."""

    token_url: str
    client_id: str
    client_secret: Secret
    grant: Grant = "client_credentials"
    auth_method: AuthMethod = "basic"
    scope: str | None = None
    refresh_token: Secret | None = None
    """With ``grant: refresh_token``: the one the environment holds (the first of the
    chain; the cache holds the latest)."""

    def __repr__(self) -> str:
        return f"OAuthClient({self.token_url!r}, {self.client_id!r}, grant={self.grant!r})"


class OAuthSource:
    """Tokens minted by an OAuth 2.0 client's token endpoint."""

    refreshable = True

    def __init__(
        self,
        client: OAuthClient,
        *,
        transport: httpx.AsyncBaseTransport,
        redactor: Redactor,
        cache: CredentialCache | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if client.grant == "refresh_token" and (client.refresh_token is None or cache is None):
            raise ConfigError("grant refresh_token needs a refresh token and a credential cache")
        self.client = client
        self.kind: AuthKind = (
            "oauth refresh_token" if client.grant == "refresh_token" else "oauth client_credentials"
        )
        self.origin = f"the OAuth client {client.client_id!r} ({client.token_url})"
        self._transport = transport
        self._redactor = self.redactor = redactor
        self._cache = cache
        self._rng = rng or random.Random()
        self._sleep, self._clock, self._wall = sleep, clock, wall
        self.requests = 0
        redactor.add(client.client_secret)
        self._basic = Secret(base64.b64encode(_pair(client).encode()).decode())
        redactor.add(self._basic)  # the secret as the Basic header carries it
        if client.refresh_token is not None:
            redactor.add(client.refresh_token)

    async def fetch(self) -> Issued:
        if self._cache is None:
            return await self._request({"grant_type": "client_credentials"})
        return await self._rotate(self._cache)

    async def _rotate(self, cache: CredentialCache) -> Issued:
        """Exchange the newest refresh token, holding the cache's lock from reading it
        to keeping the one that replaces it. The lock is released only once the cache
        is written, even when the refresh is cancelled meanwhile."""
        assert self.client.refresh_token is not None
        origin = sha256_hex(self.client.refresh_token.reveal())
        stop = threading.Event()
        manager = cache.lock(timeout=LOCK_WAIT, stop=stop)
        try:
            await _finish(asyncio.to_thread(manager.__enter__), stop.set, manager)
        except LockTimeout:
            raise AuthError(
                f"the credential cache {cache.path} stayed locked by another process for "
                f"{LOCK_WAIT:g} s (one token request takes {TOTAL_SECONDS:g} s at most): is "
                "a runbook process stopped while it refreshes?"
            ) from None
        try:
            try:
                cached = await _finish(asyncio.to_thread(cache.read))
            except JournalError as exc:
                raise CredentialCacheError(str(exc)) from None
            if cached is not None and cached.env_sha256 == origin:
                current = cached.refresh_token
                self._redactor.add(Secret(current))
            else:  # none yet, or the environment holds a new set of credentials
                current = self.client.refresh_token.reveal()
            answer, rotated = await self._exchange(current)
            if rotated is not None and rotated != current:
                entry = CachedRefresh(rotated, self._wall(), origin)
                try:
                    await _finish(asyncio.to_thread(cache.write, entry))
                except JournalError as exc:
                    raise CredentialCacheError(str(exc)) from None
        finally:
            manager.__exit__(None, None, None)
        return answer

    async def _exchange(self, refresh_token: str) -> tuple[Issued, str | None]:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        holder: list[str | None] = [None]
        issued = await self._request(form, holder)
        return issued, holder[0]

    async def _request(
        self, form: dict[str, str], rotated: list[str | None] | None = None
    ) -> Issued:
        """The token request, tried up to TRIES times within TOTAL_SECONDS."""
        deadline = self._clock() + TOTAL_SECONDS
        reason = "no answer"
        for tried in range(1, TRIES + 1):
            wait: float | None = None
            try:
                left = max(0.1, deadline - self._clock())
                response = await asyncio.wait_for(self._send(form), left)
            except (httpx.HTTPError, asyncio.TimeoutError) as exc:
                reason = self._describe(exc)
            else:
                outcome = self._judge(response, rotated)
                if isinstance(outcome, Issued):
                    return outcome
                reason, wait = outcome
            if tried == TRIES:
                break
            pause = wait if wait is not None else self._rng.uniform(0, 0.5 * 2**tried)
            if self._clock() + pause >= deadline:
                break
            await self._sleep(pause)
        raise AuthError(
            f"the token endpoint {self.client.token_url} could not be used: {reason} "
            f"(gave up after {plural_tries(tried)}); no token, so the run cannot go on"
        )

    async def _send(self, form: dict[str, str]) -> httpx.Response:
        client = self.client
        headers = {
            "Accept": "application/json",
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": f"runbook/{__version__}",
        }
        body = dict(form)
        if client.scope:
            body["scope"] = client.scope
        if client.auth_method == "basic":
            headers["Authorization"] = f"Basic {self._basic.reveal()}"
        else:
            body.update(client_id=client.client_id, client_secret=client.client_secret.reveal())
        request = httpx.Request(
            "POST", client.token_url, headers=headers, content=urlencode(body).encode()
        )
        self.requests += 1
        response = await self._transport.handle_async_request(request)
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response

    def _judge(
        self, response: httpx.Response, rotated: list[str | None] | None
    ) -> Issued | tuple[str, float | None]:
        """The token, or (why, Retry-After) to try again; raises what is final."""
        status = response.status_code
        if status == 429 or status >= 500:
            return f"HTTP {status}", retry_after(response.headers, TOTAL_SECONDS)
        if status != 200:
            raise AuthError(self._refused(response))
        try:
            answer: Any = json.loads(response.content)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise AuthError(
                f"the token endpoint {self.client.token_url} answered HTTP 200 with something "
                "that is not a JSON token answer; check the token URL"
            )
        # every secret it holds is known before anything else is done with it
        for key in ("access_token", "refresh_token"):
            if isinstance(answer.get(key), str) and answer[key]:
                self._redactor.add(Secret(answer[key]))
        return self._token(answer, rotated)

    def _token(self, answer: dict[str, Any], rotated: list[str | None] | None) -> Issued:
        url = self.client.token_url
        kind = answer.get("token_type")
        if not isinstance(kind, str) or kind.lower() != "bearer":
            shown = printable(str(kind))[:40] if kind is not None else "none"
            raise AuthError(
                f"the token endpoint {url} answered a token of type {shown!r}; runbook "
                "sends Bearer tokens only"
            )
        value = answer.get("access_token")
        if not isinstance(value, str):
            raise AuthError(f"the token endpoint {url} answered without an access_token")
        try:
            token = Token(value, where="the access_token the token endpoint answered")
        except ConfigError as exc:
            raise AuthError(str(exc)) from None
        expires_in = answer.get("expires_in")
        seconds: float | None = None
        if isinstance(expires_in, (int, float, str)) and not isinstance(expires_in, bool):
            try:
                seconds = float(expires_in)
            except ValueError:
                seconds = None
            if seconds is not None and not 0 < seconds < 10**10:
                seconds = None
        fresh = answer.get("refresh_token")
        if rotated is not None and isinstance(fresh, str) and fresh:
            rotated[0] = fresh
        return Issued(token, seconds)

    def _refused(self, response: httpx.Response) -> str:
        """What a §5.2 error answer (or any other refusal) says, made safe to show."""
        url = self.client.token_url
        status = response.status_code
        try:
            answer: Any = json.loads(response.content)
        except ValueError:
            answer = None
        error = answer.get("error") if isinstance(answer, dict) else None
        if not isinstance(error, str):
            hint = "; check the token URL" if status not in (400, 401) else ""
            return f"the token endpoint {url} refused the request: HTTP {status}{hint}"
        description = answer.get("error_description")
        said = self._safe(error)
        if isinstance(description, str) and description.strip():
            said += f": {self._safe(description)}"
        advice = {
            "invalid_client": "check the client id and secret",
            "invalid_grant": (
                "the refresh token was refused (expired, revoked, or already used): "
                "new credentials are needed; issue them in Nexadata and set "
                "the refresh token's environment variable"
                if self.client.grant == "refresh_token"
                else "the grant was refused"
            ),
            "unauthorized_client": f"the client may not use the {self.client.grant} grant",
            "unsupported_grant_type": f"the server does not offer the {self.client.grant} grant",
            "invalid_scope": "check the plan's api.oauth.scope",
        }.get(error, "")
        return (
            f"the token endpoint {url} refused the client {self.client.client_id!r} "
            f"(HTTP {status}, {said})" + (f"; {advice}" if advice else "")
        )

    def _safe(self, text: str) -> str:
        return printable(" ".join(self._redactor.redact(text).split()))[:200]

    def _describe(self, exc: BaseException) -> str:
        if isinstance(exc, asyncio.TimeoutError):
            return "no answer in time"
        text = str(exc).strip().splitlines()
        return self._redactor.redact(f"{type(exc).__name__}: {text[0] if text else 'no detail'}")

    async def aclose(self) -> None:
        await self._transport.aclose()

    def __repr__(self) -> str:
        return f"OAuthSource({self.client!r})"


def _pair(client: OAuthClient) -> str:
    """HTTP Basic's ``id:secret``, each part form-encoded first (RFC 6749, 2.3.1)."""
    secret = client.client_secret.reveal()
    return f"{quote(client.client_id, safe='')}:{quote(secret, safe='')}"


def token_transport(proxy: str | None = None) -> httpx.AsyncBaseTransport:
    """The transport of token requests: the API's kind (size cap, CA, proxy rules),
    with the token endpoint's own proxy, a pool of two, and bounds within TOTAL_SECONDS."""
    from runbook.transport import AiohttpTransport

    return AiohttpTransport(
        max_connections=2,
        connect_timeout=10.0,
        read_timeout=15.0,
        request_timeout=TOTAL_SECONDS,
        proxy=proxy,
    )


def plural_tries(count: int) -> str:
    return "1 try" if count == 1 else f"{count} tries"


async def _finish(
    work: Awaitable[T],
    on_cancel: Callable[[], None] | None = None,
    entered: contextlib.AbstractContextManager[None] | None = None,
) -> T:
    """``work`` (a thread's), seen to its end even when the caller is cancelled: a write
    of the cache cannot be taken back, and the lock must not be released under it.
    ``on_cancel`` asks the thread to give up; ``entered``: the thread was entering this
    context manager, to leave at once if it got in after all."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if on_cancel is not None:
            on_cancel()
        with contextlib.suppress(BaseException):
            await task
            if entered is not None:
                entered.__exit__(None, None, None)
        raise
