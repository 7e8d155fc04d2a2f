"""One delivery: a POST to a webhook or a ping URL, with bounded retries.

At most ``timeout`` seconds an attempt (connecting, sending and reading the answer),
up to ``attempts`` attempts, with a backoff between them, when the receiver could not
be reached, did not answer in time, or answered ``429`` or ``5xx``. Any other answer
but ``2xx`` is final: a redirect is not followed (the body is the run's report, and the
new location is nobody runbook was told of), a ``4xx`` will not change by asking again.

Nothing here raises: the outcome is a :class:`Delivery`, whose error names what
happened in a few words, never the URL (its path and query are secrets).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from runbook import __version__
from runbook.errors import ConfigError
from runbook.notify.urls import SecretUrl
from runbook.transport import AiohttpTransport

__all__ = ["ATTEMPTS", "ATTEMPT_TIMEOUT", "Delivery", "post"]

ATTEMPT_TIMEOUT = 10.0
ATTEMPTS = 3
MAX_ANSWER_BYTES = 64 * 1024
"""A receiver's answer is read only to be thrown away: a little is plenty."""


@dataclass(frozen=True, slots=True)
class Delivery:
    ok: bool
    attempts: int
    error: str | None = None


async def post(
    url: SecretUrl,
    body: bytes,
    content_type: str,
    *,
    attempts: int = ATTEMPTS,
    timeout: float = ATTEMPT_TIMEOUT,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rng: random.Random | None = None,
    tried: list[int] | None = None,
) -> Delivery:
    """POST ``body`` to ``url``; retried as the module says. ``tried`` gets a number
    appended as each attempt starts (for a caller that may cut the delivery short)."""
    rng = rng or random.Random()
    transport = AiohttpTransport(
        max_connections=1,
        connect_timeout=timeout,
        read_timeout=timeout,
        request_timeout=timeout,
        max_answer_bytes=MAX_ANSWER_BYTES,
        proxy=url.proxy,
    )
    headers = {"Content-Type": content_type, "User-Agent": f"runbook/{__version__}"}
    error: str | None = "not sent"
    number = 0
    async with transport:
        for number in range(1, attempts + 1):
            if tried is not None:
                tried.append(number)
            retry, error = await _attempt(transport, url, body, headers, timeout)
            if error is None:
                return Delivery(True, number)
            if not retry or number == attempts:
                break
            await sleep(rng.uniform(0.5, 1.0) * 2 ** (number - 1))
    return Delivery(False, number, url.redact(error or "not sent"))


async def _attempt(
    transport: AiohttpTransport,
    url: SecretUrl,
    body: bytes,
    headers: dict[str, str],
    timeout: float,
) -> tuple[bool, str | None]:
    """``(worth retrying, error)``; the error is None for a delivery."""
    request = httpx.Request("POST", url.reveal(), headers=headers, content=body)
    try:  # the transport bounds the whole request by ``timeout``
        response = await transport.handle_async_request(request)
    except ConfigError as exc:  # a certificate refused, a proxy that refuses for good
        return False, str(exc)
    except (TimeoutError, httpx.TimeoutException):
        return True, f"no answer within {timeout:g}s"
    except httpx.ConnectError as exc:
        return True, f"cannot connect ({_short(exc)})"
    except httpx.DecodingError:
        return False, "an answer too large or undecodable"
    except httpx.HTTPError as exc:
        if isinstance(exc.__cause__, TimeoutError):
            return True, f"no answer within {timeout:g}s"
        return True, f"the connection failed ({_short(exc)})"
    status = response.status_code
    if 200 <= status < 300:
        return False, None
    if 300 <= status < 400:
        return False, f"HTTP {status}: a redirect, not followed"
    return status == 429 or status >= 500, f"HTTP {status}"


def _short(exc: BaseException) -> str:
    """The gist of a transport error: the OS's reason when there is one, else its
    kind; never the whole message, which may quote the URL."""
    cause = exc.__cause__
    os_error = getattr(cause, "os_error", None)
    if isinstance(os_error, OSError) and os_error.strerror:
        return os_error.strerror
    text = str(exc)
    for known in ("Connection refused", "Connection reset by peer", "Server disconnected"):
        if known.lower() in text.lower():
            return known
    return type(cause or exc).__name__
