"""When a new Bearer token is fetched: :class:`Credentials`, the run's refresh policy.

A :class:`~runbook.api.sources.TokenSource` knows *how* to fetch a token (the
environment, a token file: :mod:`runbook.api.sources`; a token command:
:mod:`runbook.api.tokencommand`; an OAuth 2.0 client: :mod:`runbook.api.oauth`).
Everything about *when* — before expiry, after a ``401``, one refresh at a time however
many requests wait — lives in :class:`Credentials`, which the client asks before every
request and tells when the API refused a token. httpx's ``Auth`` flow and authlib's
``ensure_active_token`` have the same split: the source knows how, the flow knows when.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from runbook.api.secrets import Redactor, Token
from runbook.api.sources import AuthKind, Issued, StaticSource, TokenSource
from runbook.errors import AuthError

__all__ = ["Credentials", "margin"]


def margin(lifetime: float) -> float:
    """How long before its expiry a token is replaced: 10 % of its lifetime, at least a
    minute, at most half of it (6 minutes of an hour; 0.75 s of 1.5 s)."""
    return min(max(60.0, 0.1 * lifetime), lifetime / 2)


class Credentials:
    """The run's token: fetched once, fetched again before it expires or when the API
    refuses it, one fetch at a time for the whole process."""

    def __init__(
        self,
        source: TokenSource,
        redactor: Redactor | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        first: Token | None = None,
    ) -> None:
        """``first``: a token already read (a static one), used until refused."""
        self.source = source
        self.redactor = redactor or Redactor()
        self._clock = clock
        self._token: Token | None = None
        self._refresh_at: float | None = None  # when to fetch anew (None: only if refused)
        self._expires_at: float | None = None
        self._flight: asyncio.Future[Token] | None = None
        self.refreshes = 0
        """Tokens fetched after the first one."""
        if first is not None:
            self.redactor.add(first)
            self._use(Issued(first))

    @classmethod
    def static(cls, token: Token, origin: str = "the token") -> Credentials:
        """Credentials that hold ``token`` and nothing else."""
        return cls(StaticSource(token, origin), first=token)

    @property
    def kind(self) -> AuthKind:
        return self.source.kind

    @property
    def origin(self) -> str:
        return self.source.origin

    def current(self) -> Token | None:
        """The token to send now, or None when one must be fetched first (no await: the
        path every request takes)."""
        token = self._token
        if token is None or (self._refresh_at is not None and self._clock() >= self._refresh_at):
            return None
        return token

    async def token(self) -> Token:
        """A token to send: the one held, or a new one when it is inside its margin."""
        token = self.current()
        if token is not None:
            return token
        held = self._token
        try:
            return await self._fetch()
        except AuthError:
            # a refresh before expiry that failed: the token held still works until it
            # expires; try again a little later rather than at every request
            if held is None or self._expires_at is None or self._clock() >= self._expires_at:
                raise
            left = self._expires_at - self._clock()
            self._refresh_at = self._clock() + min(5.0, left / 4)
            return held

    async def refused(self, token: Token) -> Token | None:
        """The API refused ``token`` (a ``401``): the token to send the request again
        with, or None when there is no other (the source cannot refresh, or gave the
        same one again). A source that fails raises its AuthError."""
        if self._token is not None and self._token is not token:
            return self._token  # another request already had it replaced
        if not self.source.refreshable:
            return None
        new = await self._fetch()
        return None if new == token else new

    async def aclose(self, timeout: float = 35.0) -> None:
        """The end of a run: wait for a refresh still under way (cut short, a rotated
        refresh token's answer would be lost, and the next run would send the one it
        replaced), then close what the source holds open (the token endpoint's
        connections)."""
        flight = self._flight
        if flight is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(flight), timeout)
        closer = getattr(self.source, "aclose", None)
        if closer is not None:
            await closer()

    async def _fetch(self) -> Token:
        """Fetch from the source; requests that need a token meanwhile wait for this one."""
        if self._flight is None:
            flight = self._flight = asyncio.ensure_future(self._fetch_once())
            flight.add_done_callback(self._landed)
        return await asyncio.shield(self._flight)

    def _landed(self, flight: asyncio.Future[Token]) -> None:
        self._flight = None
        if not flight.cancelled():
            flight.exception()  # retrieved: each waiter raises it itself

    async def _fetch_once(self) -> Token:
        issued = await self.source.fetch()
        self.redactor.add(issued.token)
        if self._token is not None:
            self.refreshes += 1
        self._use(issued)
        return issued.token

    def _use(self, issued: Issued) -> None:
        self._token = issued.token
        lifetime = issued.expires_in
        if lifetime is None or lifetime <= 0:
            self._refresh_at = self._expires_at = None
            return
        now = self._clock()
        self._expires_at = now + lifetime
        self._refresh_at = now + lifetime - margin(lifetime)

    def __repr__(self) -> str:
        return f"Credentials({self.kind!r}, refreshes={self.refreshes})"
