"""How hard the client tries, and how fast it may go: the retry policy, the shared
request budget, and the reading of ``Retry-After``."""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone

import httpx

__all__ = ["RateBudget", "RetryPolicy", "retry_after"]

MIN_RETRY_AFTER = 0.1
"""Even "Retry-After: 0" (or a date already past) waits this long: never a busy loop."""


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


def retry_after(
    headers: httpx.Headers, cap: float, *, now: Callable[[], float] = time.time
) -> float | None:
    """Seconds to wait per a ``Retry-After`` header (seconds or an HTTP date), at least
    MIN_RETRY_AFTER and at most ``cap``; None when there is none that can be read."""
    header = headers.get("Retry-After", "").strip()
    if not header:
        return None
    try:
        seconds = float(header)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(header)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - datetime.fromtimestamp(now(), timezone.utc)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(cap, max(MIN_RETRY_AFTER, seconds))
