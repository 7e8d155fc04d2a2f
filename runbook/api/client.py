"""The Nexadata API client: trigger a workflow, poll an execution.

One connection pool per client, used as ``async with``: an httpx transport, by default
:class:`runbook.transport.AiohttpTransport`, injectable (``httpx.ASGITransport`` runs
the sandbox in-process in tests). Requests go straight to the transport as
``httpx.Request`` objects with prebuilt headers: ``httpx.AsyncClient``'s per-request
machinery (a urllib cookie jar, auth and redirect flows, header merging) was a third of
the client's CPU, and none of it is wanted here: no cookies, no redirects followed, one
Authorization header per token.

Every gap the API leaves (docs/nexadata-api.md) is decided here, at one boundary: foreign
errors become :mod:`runbook.errors` classes and nothing else escapes. A request is
layers: :meth:`NexadataClient._send` retries what may be retried, :meth:`_authorized`
sends one request with a valid token (and once more with a new one after a ``401``),
:meth:`_judge` reads the answer. What differs between a trigger and a poll is said once,
in its :class:`Call`.

The rule that matters most: a ``POST`` is re-sent only when it provably created
nothing — the connection was never made (nothing was sent), or the server refused it
with ``401``, ``429`` or ``503``. Any other lost or unreadable answer raises
:class:`~runbook.errors.TriggerOutcomeUnknown`: an execution may exist, and a second
``POST`` could run the workflow twice.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal
from urllib.parse import urlsplit

import httpx

from runbook import __version__
from runbook.api.credentials import Credentials
from runbook.api.models import Execution
from runbook.api.pacing import RateBudget, RetryPolicy, retry_after
from runbook.api.secrets import Token
from runbook.api.urls import check_base_url
from runbook.errors import (
    ApiError,
    ApiUnavailable,
    ApiUnreachable,
    AuthError,
    ExecutionNotFound,
    TriggerOutcomeUnknown,
    TriggerRefused,
    WorkflowNotFound,
)
from runbook.text import printable

__all__ = ["Call", "NexadataClient"]

USER_AGENT = f"runbook/{__version__}"


@dataclass(frozen=True, slots=True)
class Call:
    """One kind of request, and how its answers are judged."""

    method: Literal["GET", "POST"]
    path: str
    what: str
    """``workflow 29``, ``execution 1002``: what messages name."""
    creates: bool
    """A lost or unreadable answer may hide a new execution: never sent again then."""
    expect_id: int | None = None
    """The execution id the answer must carry (a poll's)."""

    @classmethod
    def trigger(cls, workflow_id: int) -> Call:
        return cls("POST", f"workflows/{workflow_id}/execute", f"workflow {workflow_id}", True)

    @classmethod
    def poll(cls, execution_id: int) -> Call:
        return cls(
            "GET",
            f"workflows/executions/{execution_id}",
            f"execution {execution_id}",
            False,
            execution_id,
        )


@dataclass(frozen=True, slots=True)
class _Retry:
    """A transient outcome: why, and the server's Retry-After (None: back off instead)."""

    reason: str
    wait: float | None = None
    unreached: bool = False
    """The request never reached the API (no connection): safe to repeat."""


API_PATH_HINT = "is the base URL right? It usually ends in /api/v1"
"""Said where an answer suggests the base URL is not the API's."""


def _refused(response: httpx.Response) -> bool:
    """The token was refused: ``401``, or ``403`` with RFC 6750's ``invalid_token``."""
    if response.status_code == 401:
        return True
    challenge = response.headers.get("WWW-Authenticate", "")
    return response.status_code == 403 and "invalid_token" in challenge


class NexadataClient:
    """Async client for the two endpoints runbook drives.

    ``async with NexadataClient(url, credentials) as api: execution = await api.trigger(29)``
    (a plain :class:`Token` is a static credential).
    """

    def __init__(
        self,
        base_url: str,
        credentials: Credentials | Token,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        retry: RetryPolicy | None = None,
        budget: RateBudget | None = None,
        max_in_flight: int = 16,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        proxy: str | None = None,
    ) -> None:
        """``proxy``: with the default transport, the proxy URL requests go through."""
        self.base_url = check_base_url(base_url)
        self._api_path = urlsplit(self.base_url).path.rstrip("/").endswith("/api/v1")
        if isinstance(credentials, Token):
            credentials = Credentials.static(credentials)
        self.credentials = credentials
        self._redactor = credentials.redactor
        self.retry = retry or RetryPolicy()
        # The default budget is the in-flight cap below and the shared Retry-After pause:
        # polls are paced by their intervals already, and a fixed requests/s cap tuned for
        # one API would starve a wide plan on another (it made 2,000 steps take 3x longer).
        self.budget = budget or RateBudget(rate=None, sleep=sleep)
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._rng = rng or random.Random()
        self._sleep = sleep
        if transport is None:
            from runbook.transport import AiohttpTransport

            transport = AiohttpTransport(
                max_connections=max_in_flight,
                connect_timeout=self.retry.connect_timeout,
                read_timeout=self.retry.read_timeout,
                request_timeout=self.retry.request_timeout,
                proxy=proxy,
            )
        self._transport = transport
        self.requests_sent = 0
        self.answered = False
        """Whether any request got an answer, whatever it was."""
        self.last_content_type = ""
        """The media type of the last answer (``runbook check`` tells an API's 404 from a
        web page's)."""
        # a poll repeats one request: built once per execution and token (a URL parse
        # and a header copy, about a tenth of a request's CPU), sent every time
        self._requests: dict[str, httpx.Request] = {}
        self._headers_of: Token | None = None
        self._get_headers = self._post_headers = httpx.Headers()

    def __repr__(self) -> str:
        return f"NexadataClient({self.base_url!r}, {self.credentials!r})"

    async def __aenter__(self) -> NexadataClient:
        await self._transport.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._transport.__aexit__(exc_type, exc, tb)

    async def trigger(self, workflow_id: int) -> Execution:
        """``POST /workflows/{id}/execute``: a new execution (normally ``created``)."""
        execution = await self._send(Call.trigger(workflow_id))
        if execution is None:
            hint = "" if self._api_path else f"; or {API_PATH_HINT}"
            raise WorkflowNotFound(
                f"workflow {workflow_id} not found, or not in this token's organization{hint}"
            )
        return execution

    async def get_execution(self, execution_id: int) -> Execution:
        """``GET /workflows/executions/{id}``: the execution's current record."""
        execution = await self._send(Call.poll(execution_id))
        if execution is None:
            raise ExecutionNotFound(
                f"execution {execution_id} not found, or not visible to this token "
                "(another organization's token?)"
            )
        return execution

    async def _send(self, call: Call) -> Execution | None:
        """The execution an answer carries, or None for a 404; retries what may be retried."""
        failures = rate_limited = 0
        while True:
            async with self._in_flight:
                # the budget is asked with a slot in hand: a request queued for a slot
                # while a 429 paused the client must not go out the moment it gets one
                await self.budget.acquire()
                try:
                    response = await self._authorized(call)
                except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                    retry = _Retry(self._describe(exc), unreached=True)  # it never left
                except httpx.HTTPError as exc:
                    if call.creates:
                        raise self._unknown(call, self._describe(exc)) from None
                    retry = _Retry(self._describe(exc))
                else:
                    outcome = self._judge(response, call)
                    if not isinstance(outcome, _Retry):
                        return outcome
                    retry = outcome
            if retry.wait is not None:
                rate_limited += 1
                if rate_limited > self.retry.rate_limited_attempts:
                    raise ApiUnavailable(
                        f"the API kept answering {retry.reason} for {call.what}; "
                        f"gave up after {rate_limited} tries"
                    )
                self.budget.defer(retry.wait)
                continue
            failures += 1
            if failures >= self.retry.attempts:
                if retry.unreached and not self.answered:
                    raise ApiUnreachable(
                        f"the API at {self.base_url} could not be reached: {retry.reason} "
                        f"(gave up after {failures} tries, and no request of this run "
                        "got an answer); check the URL, the proxy and the network"
                    )
                raise ApiUnavailable(
                    f"the API could not be reached for {call.what}: {retry.reason} "
                    f"(gave up after {failures} tries)"
                )
            await self._sleep(self.retry.backoff(failures, self._rng))

    async def _authorized(self, call: Call) -> httpx.Response:
        """One request with a valid token; after a ``401``, once more with a new one (a
        refused request created nothing, a trigger's included)."""
        credentials = self.credentials
        token = credentials.current() or await credentials.token()
        response = await self._exchange(call, token)
        if not _refused(response):
            return response
        fresh = await credentials.refused(token)
        if fresh is None:
            raise AuthError(self._auth_failed(response, after_refresh=False))
        response = await self._exchange(call, fresh)
        if _refused(response):
            raise AuthError(self._auth_failed(response, after_refresh=True))
        return response

    async def _exchange(self, call: Call, token: Token) -> httpx.Response:
        """One request through the transport, its answer read in full."""
        self.requests_sent += 1
        response = await self._transport.handle_async_request(self._request(call, token))
        self.answered = True
        self.last_content_type = response.headers.get("content-type", "")
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response

    def _request(self, call: Call, token: Token) -> httpx.Request:
        if token is not self._headers_of:
            self._headers_of = token
            common = {
                "Authorization": f"Bearer {token.reveal()}",
                "User-Agent": USER_AGENT,
                "Accept": "application/json",
            }
            self._get_headers = httpx.Headers(common)
            self._post_headers = httpx.Headers({**common, "Content-Type": "application/json"})
            self._requests.clear()
        if call.method == "POST":  # the article's curl sends the two headers and no body
            url = f"{self.base_url}/{call.path}"
            return httpx.Request("POST", url, headers=self._post_headers, content=b"")
        request = self._requests.get(call.path)
        if request is None:
            if len(self._requests) >= 4096:
                self._requests.clear()
            url = f"{self.base_url}/{call.path}"
            request = self._requests[call.path] = httpx.Request(
                "GET", url, headers=self._get_headers
            )
        return request

    def _auth_failed(self, response: httpx.Response, *, after_refresh: bool) -> str:
        status = response.status_code
        kind = "unauthorized" if status == 401 else "forbidden"
        origin = self.credentials.origin
        if after_refresh:
            return (
                f"authentication failed: the API answered {status} ({kind}) to a new token "
                f"from {origin} too; check that it is a token for this API"
            )
        if self.credentials.source.refreshable:
            return (
                f"authentication failed: the API answered {status} ({kind}), and {origin} "
                "gave no other token; check the token"
            )
        return f"authentication failed: the API answered {status} ({kind}); check {origin}"

    def _judge(self, response: httpx.Response, call: Call) -> Execution | _Retry | None:
        """The answer's execution, None for a 404, or what to retry; raises what is final."""
        status = response.status_code
        if status == 403:  # a refused token (401) was answered in _authorized
            raise AuthError(
                f"authentication failed: the API answered 403 (forbidden); check "
                f"{self.credentials.origin}"
            )
        if status == 404:
            return None
        if status in (429, 503):  # refused, provably: nothing was created
            wait = retry_after(response.headers, self.retry.retry_after_cap)
            return _Retry(f"HTTP {status}", wait if wait is not None else self._backoff_wait())
        if call.creates and (status >= 500 or 300 <= status < 400):
            raise self._unknown(call, f"HTTP {status}")
        if status >= 500:
            return _Retry(f"HTTP {status}")
        if status >= 300:
            error = TriggerRefused if call.creates else ApiError
            raise error(
                f"the API answered HTTP {status} for {call.what}{self._detail(response)}"
                + ("; check the API URL" if status < 400 else "")
            )
        try:
            execution = Execution.from_record(self._redactor.scrub(response.json()))
            if call.expect_id is not None and execution.id != call.expect_id:
                # never let it replace the id we hold
                raise ValueError(f"it is the record of execution {execution.id}")
            return execution
        except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
            # (RecursionError: JSON nested a few thousand levels deep)
            reason = f"a malformed answer ({_first_line(exc)})"
            if call.creates:
                raise self._unknown(call, reason) from None
            return _Retry(reason)

    def _backoff_wait(self) -> float:
        """A 429/503 without a readable Retry-After: a backoff's wait."""
        return self.retry.backoff(2, self._rng) + 0.5

    def _unknown(self, call: Call, reason: str) -> TriggerOutcomeUnknown:
        return TriggerOutcomeUnknown(
            f"trigger outcome unknown for {call.what}: {reason}; an execution "
            "may have been created, so it was not sent again"
        )

    def _describe(self, exc: BaseException) -> str:
        text = _first_line(exc) or "no detail"
        return self._redactor.redact(f"{type(exc).__name__}: {text}")

    def _detail(self, response: httpx.Response) -> str:
        # redacted before it is cut: a secret across the cut would leave its start
        text = self._redactor.redact(response.text)[:200].strip()
        return f" ({printable(' '.join(text.split()))})" if text else ""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""
