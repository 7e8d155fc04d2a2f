"""The Nexadata API client: trigger a workflow, poll an execution.

One connection pool per client, used as ``async with``: an httpx transport, by default
:class:`runbook.transport.AiohttpTransport`, injectable (``httpx.ASGITransport`` runs
the sandbox in-process in tests). Requests go straight to the transport as
``httpx.Request`` objects with prebuilt headers: ``httpx.AsyncClient``'s per-request
machinery (a urllib cookie jar, auth and redirect flows, header merging) was a third of
the client's CPU, and none of it is wanted here: no cookies, no redirects followed, one
fixed Authorization header.

Every gap the API leaves (docs/nexadata-api.md) is decided here, at one boundary: foreign
errors become :mod:`runbook.errors` classes and nothing else escapes.

The rule that matters most: a ``POST`` is re-sent only when it provably created
nothing — the connection was never made (nothing was sent), or the server refused it
with ``429`` or ``503``. Any other lost or unreadable answer raises
:class:`~runbook.errors.TriggerOutcomeUnknown`: an execution may exist, and a second
``POST`` could run the workflow twice.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import os
import random
import stat
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, Literal
from urllib.parse import quote

import httpx

from runbook import __version__
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
from runbook.events import TERMINAL_STATES
from runbook.netenv import url_fault
from runbook.text import is_token_text, message_texts, parse_timestamp, printable

__all__ = [
    "TERMINAL_STATES",
    "Execution",
    "NexadataClient",
    "RateBudget",
    "RetryPolicy",
    "Token",
    "check_base_url",
]

KNOWN_STATES = frozenset({"created", "running", "succeeded", "failed"})
USER_AGENT = f"runbook/{__version__}"
_MAX_ID = 2**63 - 1  # what the journal (SQLite INTEGER) can hold
_MIN_RETRY_AFTER = 0.1
"""Even "Retry-After: 0" (or a date already past) waits this long: never a busy loop."""


MIN_SCRUBBED = 12


class Token:
    """A Bearer token that never shows itself: not in repr, str, logs or messages."""

    __slots__ = ("_forms", "_secret")

    def __init__(self, secret: str) -> None:
        secret = secret.strip()
        if not secret:
            raise ConfigError("the API token is empty")
        if not is_token_text(secret):
            # httpx would refuse the header and quote it in the error: say it here instead
            raise ConfigError(
                "the API token contains spaces, line breaks or non-ASCII characters; "
                "a Bearer token is one line of printable ASCII"
            )
        self._secret = secret
        # the forms it can take in an answer: as it is, JSON-escaped ("\/" for "/"),
        # percent-encoded (in an echoed URL or query)
        forms = {secret, secret.replace("/", "\\/"), quote(secret, safe=""), quote(secret)}
        self._forms = sorted(forms, key=len, reverse=True)

    def reveal(self) -> str:
        """The secret itself, for the Authorization header and nothing else."""
        return self._secret

    def redact(self, text: str) -> str:
        """``text`` with every occurrence of the secret, in any of its forms, replaced
        by ``***``."""
        for form in self._forms:
            if form in text:
                text = text.replace(form, "***")
        return text

    def scrub(self, value: Any) -> Any:
        """A decoded JSON answer with the secret redacted from every string, keys
        included: what the API sends back is printed, reported and journaled. (Nesting
        too deep to walk raises RecursionError: a malformed answer.)

        A secret shorter than MIN_SCRUBBED characters (the sandbox's ``sandbox``, a test
        token) is left alone here: it would mangle ordinary words and field names.
        """
        if len(self._secret) < MIN_SCRUBBED:
            return value
        return self._scrub(value)

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, list):
            return [self._scrub(item) for item in value]
        if isinstance(value, dict):
            return {self.redact(str(k)): self._scrub(v) for k, v in value.items()}
        return value

    def __repr__(self) -> str:
        return "Token('***')"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("a Token cannot be pickled")

    @classmethod
    def from_env(cls, name: str, environ: Mapping[str, str] | None = None) -> Token:
        """The token in environment variable ``name``; a ConfigError saying so if unset."""
        value = (os.environ if environ is None else environ).get(name, "")
        if not value.strip():
            raise ConfigError(
                f"no API token: set the environment variable {name} "
                "(the plan's api.token_env) or pass --token-file"
            )
        return cls(value)

    @classmethod
    def from_file(cls, path: str) -> Token:
        """The token in a file (surrounding whitespace and the final newline ignored).

        Only a regular file of at most 64 KiB: a FIFO with no writer would hang the run,
        and a longer file is no token.
        """
        try:
            info = os.stat(path)
            if not stat.S_ISREG(info.st_mode):
                raise ConfigError(
                    f"the token file {path} is not a regular file (a directory, FIFO or "
                    "device): write the token to a file"
                )
            if info.st_size > MAX_TOKEN_FILE:
                raise ConfigError(
                    f"the token file {path} is larger than {MAX_TOKEN_FILE // 1024} KiB: "
                    "it should hold the token alone"
                )
            with open(path, encoding="utf-8") as handle:
                value = handle.read(MAX_TOKEN_FILE)
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError(f"cannot read the token file {path}: {reason}") from None
        if not value.strip():
            raise ConfigError(f"the token file {path} is empty")
        return cls(value)


def token_file_warning(path: str) -> str | None:
    """A warning when users other than the owner may read or change the token file."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return None
    if mode & 0o077:
        return (
            f"the token file {path} can be read or changed by other users (mode {mode:04o}); "
            f"make it yours alone: chmod 600 {path}"
        )
    return None


def check_base_url(url: str) -> str:
    """The base URL, if the token may be sent there; otherwise a ConfigError (exit 3).

    HTTPS always, except to a loopback host (127.0.0.0/8, ::1, localhost), where plain
    HTTP is the sandbox's.
    """
    match url_fault(url.strip()):
        case None:
            return url.strip().rstrip("/")
        case "unreadable":
            raise ConfigError(f"the API URL {url!r} cannot be read (check its port)")
        case "not http":
            raise ConfigError(f"the API URL {url!r} is not an http(s) URL with a host")
        case "credentials":
            raise ConfigError("the API URL must not contain a user name or password")
        case "insecure":
            raise ConfigError(
                f"refusing to send the token to {url}: the API URL must use https:// "
                "(plain http:// is allowed only to a loopback host such as 127.0.0.1)"
            )


MAX_TOKEN_FILE = 64 * 1024


@dataclass(frozen=True, slots=True)
class Execution:
    """An execution record. Unknown fields are kept in ``raw``, never rejected."""

    id: int
    state: str
    start_at: str | None
    end_at: str | None
    errors: tuple[str, ...]
    warnings: tuple[str, ...]
    raw: Mapping[str, Any] = field(compare=False, repr=False)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def known_state(self) -> bool:
        return self.state in KNOWN_STATES

    @property
    def started(self) -> datetime | None:
        """``start_at`` as an aware datetime, or None when absent or unreadable."""
        return parse_timestamp(self.start_at)

    @property
    def ended(self) -> datetime | None:
        """``end_at`` as an aware datetime, or None when absent or unreadable."""
        return parse_timestamp(self.end_at)

    @classmethod
    def from_record(cls, record: Any) -> Execution:
        """Read an answer's body; ValueError if it lacks an integer id or a string state."""
        if not isinstance(record, dict):
            raise ValueError("the answer is not a JSON object")
        ident, state = record.get("id"), record.get("state")
        if isinstance(ident, bool) or not isinstance(ident, int):
            raise ValueError("the answer has no integer 'id'")
        if not 1 <= ident <= _MAX_ID:
            raise ValueError(f"the answer's 'id' {ident} is not a positive 64-bit integer")
        if not isinstance(state, str):
            raise ValueError("the answer has no string 'state'")
        return cls(  # every string made safe to print where it enters
            id=ident,
            state=printable(state[:MAX_STATE]),
            start_at=_text_or_none(record.get("start_at")),
            end_at=_text_or_none(record.get("end_at")),
            errors=message_texts(record.get("errors")),
            warnings=message_texts(record.get("warnings")),
            raw=record,
        )


MAX_STATE = 100
"""A state longer than this is cut: it is shown on every line about its execution."""


def _text_or_none(value: Any) -> str | None:
    return None if value is None else printable(str(value)[:MAX_STATE])


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard the client tries before a transient fault fails a step.

    Transient faults (5xx on a GET, connection errors, timeouts, malformed answers) are
    retried up to ``attempts`` times in all, waiting with exponential backoff and full
    jitter. ``429``/``503`` wait as ``Retry-After`` says (capped), up to
    ``rate_limited_attempts`` times: the server is answering, just not yet.
    """

    attempts: int = 8
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    retry_after_cap: float = 120.0
    rate_limited_attempts: int = 30
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    request_timeout: float = 120.0
    """The whole of one request, answer included: an answer dripping a byte at a time
    resets no clock. (A step's own timeout bounds its requests and waits as well.)"""

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**(attempt-1))]."""
        return rng.uniform(0, min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1)))


class RateBudget:
    """One budget of requests for a whole client: a token bucket plus a shared pause.

    ``rate`` requests a second on average, ``burst`` at once. A ``429`` or ``503``
    pauses every request of the client (:meth:`defer`), not just the one that got it,
    so thousands of pollers back off together instead of stampeding.
    """

    def __init__(
        self,
        rate: float | None,
        burst: int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rate = rate
        self.burst = float(burst if burst is not None else max(1, int(rate or 1)))
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._updated = clock()
        self._paused_until = 0.0

    def defer(self, seconds: float) -> None:
        """Hold every request until ``seconds`` from now (a Retry-After)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    async def acquire(self) -> None:
        """Wait for this request's turn."""
        while (pause := self._paused_until - self._clock()) > 0:
            await self._sleep(pause)
        if self.rate is None:
            return
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        self._tokens -= 1  # reserve a turn; a negative balance is the queue ahead of us
        if self._tokens < 0:
            await self._sleep(-self._tokens / self.rate)


Op = Literal["trigger", "poll"]


@dataclass(frozen=True, slots=True)
class _Retry:
    """A transient outcome: why, and the server's Retry-After (None: back off instead)."""

    reason: str
    wait: float | None = None


class NexadataClient:
    """Async client for the two endpoints runbook drives.

    ``async with NexadataClient(url, token) as api: execution = await api.trigger(29)``
    """

    def __init__(
        self,
        base_url: str,
        token: Token,
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
        self._token = token
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
        common = {"Authorization": f"Bearer {token.reveal()}", "User-Agent": USER_AGENT}
        self._get_headers = httpx.Headers({**common, "Accept": "application/json"})
        self._post_headers = httpx.Headers(
            {**common, "Accept": "application/json", "Content-Type": "application/json"}
        )
        self.requests_sent = 0
        # a poll repeats one request: built once per execution (a URL parse and a
        # header copy, about a tenth of a request's CPU), sent every time
        self._polls: dict[str, httpx.Request] = {}

    def __repr__(self) -> str:
        return f"NexadataClient({self.base_url!r}, token=Token('***'))"

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
        execution = await self._send("trigger", f"workflows/{workflow_id}/execute", workflow_id)
        if execution is None:
            raise WorkflowNotFound(
                f"workflow {workflow_id} not found, or not in this token's organization"
            )
        return execution

    async def get_execution(self, execution_id: int) -> Execution:
        """``GET /workflows/executions/{id}``: the execution's current record."""
        execution = await self._send("poll", f"workflows/executions/{execution_id}", execution_id)
        if execution is None:
            raise ExecutionNotFound(
                f"execution {execution_id} not found, or not visible to this token "
                "(another organization's token?)"
            )
        return execution

    async def _send(self, op: Op, path: str, ident: int) -> Execution | None:
        """The execution an answer carries, or None for a 404; retries what may be retried."""
        what = f"workflow {ident}" if op == "trigger" else f"execution {ident}"
        failures = rate_limited = 0
        while True:
            async with self._in_flight:
                # the budget is asked with a slot in hand: a request queued for a slot
                # while a 429 paused the client must not go out the moment it gets one
                await self.budget.acquire()
                try:
                    self.requests_sent += 1
                    response = await self._exchange(op, path)
                except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                    retry = _Retry(self._describe(exc))  # it never left: safe to repeat
                except httpx.HTTPError as exc:
                    if op == "trigger":
                        raise self._unknown(ident, self._describe(exc)) from None
                    retry = _Retry(self._describe(exc))
                else:
                    outcome = self._judge(response, op, ident)
                    if not isinstance(outcome, _Retry):
                        return outcome
                    retry = outcome
            if retry.wait is not None:
                rate_limited += 1
                if rate_limited > self.retry.rate_limited_attempts:
                    raise ApiUnavailable(
                        f"the API kept answering {retry.reason} for {what}; "
                        f"gave up after {rate_limited} tries"
                    )
                self.budget.defer(retry.wait)
                continue
            failures += 1
            if failures >= self.retry.attempts:
                raise ApiUnavailable(
                    f"the API could not be reached for {what}: {retry.reason} "
                    f"(gave up after {failures} tries)"
                )
            await self._sleep(self.retry.backoff(failures, self._rng))

    async def _exchange(self, op: Op, path: str) -> httpx.Response:
        """One request through the transport, its answer read in full."""
        if op == "trigger":  # the article's curl sends the two headers and no body
            url = f"{self.base_url}/{path}"
            request = httpx.Request("POST", url, headers=self._post_headers, content=b"")
        else:
            request = self._poll_request(path)
        response = await self._transport.handle_async_request(request)
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response

    def _poll_request(self, path: str) -> httpx.Request:
        request = self._polls.get(path)
        if request is None:
            if len(self._polls) >= 4096:
                self._polls.clear()
            url = f"{self.base_url}/{path}"
            request = self._polls[path] = httpx.Request("GET", url, headers=self._get_headers)
        return request

    def _judge(self, response: httpx.Response, op: Op, ident: int) -> Execution | _Retry | None:
        """The answer's execution, None for a 404, or what to retry; raises what is final."""
        status = response.status_code
        if status in (401, 403):
            kind = "unauthorized" if status == 401 else "forbidden"
            raise AuthError(
                f"authentication failed: the API answered {status} ({kind}); check the token"
            )
        if status == 404:
            return None
        if status in (429, 503):  # refused, provably: nothing was created
            return _Retry(f"HTTP {status}", self._retry_after(response))
        if op == "trigger" and (status >= 500 or 300 <= status < 400):
            raise self._unknown(ident, f"HTTP {status}")
        if status >= 500:
            return _Retry(f"HTTP {status}")
        if status >= 300:
            where = f"execution {ident}" if op == "poll" else f"workflow {ident}"
            error = TriggerRefused if op == "trigger" else ApiError
            raise error(
                f"the API answered HTTP {status} for {where}{self._detail(response)}"
                + ("; check the API URL" if status < 400 else "")
            )
        try:
            execution = Execution.from_record(self._token.scrub(response.json()))
            if op == "poll" and execution.id != ident:  # never let it replace the id we hold
                raise ValueError(f"it is the record of execution {execution.id}")
            return execution
        except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
            # (RecursionError: JSON nested a few thousand levels deep)
            reason = f"a malformed answer ({_first_line(exc)})"
            if op == "trigger":
                raise self._unknown(ident, reason) from None
            return _Retry(reason)

    def _retry_after(self, response: httpx.Response) -> float:
        """Seconds to wait per ``Retry-After`` (seconds or HTTP date), capped; else backoff."""
        cap = self.retry.retry_after_cap
        header = response.headers.get("Retry-After", "").strip()
        if header:
            try:
                seconds = float(header)
            except ValueError:
                try:
                    when = email.utils.parsedate_to_datetime(header)
                except (TypeError, ValueError, IndexError):
                    when = None
                if when is not None:
                    if when.tzinfo is None:
                        when = when.replace(tzinfo=timezone.utc)
                    seconds = (when - datetime.now(timezone.utc)).total_seconds()
                    return min(cap, max(_MIN_RETRY_AFTER, seconds))
            else:
                if math.isfinite(seconds):
                    return min(cap, max(_MIN_RETRY_AFTER, seconds))
        return self.retry.backoff(2, self._rng) + 0.5

    def _unknown(self, workflow_id: int, reason: str) -> TriggerOutcomeUnknown:
        return TriggerOutcomeUnknown(
            f"trigger outcome unknown for workflow {workflow_id}: {reason}; an execution "
            "may have been created, so it was not sent again"
        )

    def _describe(self, exc: BaseException) -> str:
        text = _first_line(exc) or "no detail"
        return self._token.redact(f"{type(exc).__name__}: {text}")

    def _detail(self, response: httpx.Response) -> str:
        # redacted before it is cut: a secret across the cut would leave its start
        text = self._token.redact(response.text)[:200].strip()
        return f" ({printable(' '.join(text.split()))})" if text else ""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""
