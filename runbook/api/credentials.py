"""Where the Bearer token comes from, and when a new one is fetched.

A :class:`TokenSource` does one thing: fetch a token (:meth:`~TokenSource.fetch`), with
its expiry when it knows one. There is one per kind — the environment, a token file, a
token command (here), an OAuth 2.0 client (:mod:`runbook.api.oauth`). Everything about
*when* — before expiry, after a ``401``, one refresh at a time however many requests
wait — lives in :class:`Credentials`, which the client asks before every request and
tells when the API refused a token. httpx's ``Auth`` flow and authlib's
``ensure_active_token`` have the same split: the source knows how, the flow knows when.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from runbook.api.secrets import Redactor, Token
from runbook.errors import AuthError, ConfigError
from runbook.text import parse_timestamp, printable

__all__ = [
    "MAX_TOKEN_FILE",
    "AuthKind",
    "CommandSource",
    "Credentials",
    "EnvSource",
    "FileSource",
    "Issued",
    "StaticSource",
    "TokenSource",
    "margin",
    "read_token_file",
    "token_file_warning",
]

AuthKind = Literal["oauth client_credentials", "oauth refresh_token", "command", "file", "env"]
MAX_TOKEN_FILE = 64 * 1024
COMMAND_TIMEOUT = 30.0
MAX_COMMAND_OUTPUT = 64 * 1024
PIPE_GRACE = 1.0
"""How long a token command's pipes may stay open after it exited."""


@dataclass(frozen=True, slots=True)
class Issued:
    """A token, and how many seconds it was said to live (None: not said)."""

    token: Token
    expires_in: float | None = None


class TokenSource(Protocol):
    """One way of getting a token."""

    kind: AuthKind
    refreshable: bool
    """Whether fetching again can give another token (the environment cannot)."""
    origin: str
    """Where the token comes from, for messages: ``the token file /run/token``."""

    async def fetch(self) -> Issued:
        """A token now; an AuthError (exit 3) when none can be had."""
        ...


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


# -- the environment ------------------------------------------------------------------


class StaticSource:
    """A token given as it is (the sandbox's, a caller's own): never refreshed."""

    kind: AuthKind = "env"
    refreshable = False

    def __init__(self, token: Token, origin: str = "the token") -> None:
        self.token = token
        self.origin = origin

    async def fetch(self) -> Issued:
        return Issued(self.token)


class EnvSource:
    """The token in an environment variable: read once, never refreshed."""

    kind: AuthKind = "env"
    refreshable = False

    def __init__(self, name: str, environ: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.origin = f"the environment variable {name}"
        value = (os.environ if environ is None else environ).get(name, "")
        if not value.strip():
            raise ConfigError(
                f"no API token: set the environment variable {name} (the plan's "
                "api.token_env), configure the plan's api.oauth client, or pass "
                "--token-file or --token-command"
            )
        self.token = Token(value)

    async def fetch(self) -> Issued:
        return Issued(self.token)


# -- a token file ---------------------------------------------------------------------


class FileSource:
    """A token file: read now, and read again whenever the API refuses the token (a
    token rotated into it by another program is picked up mid-run)."""

    kind: AuthKind = "file"
    refreshable = True

    def __init__(self, path: str) -> None:
        self.path = path
        self.origin = f"the token file {path}"
        self.token = read_token_file(path)

    async def fetch(self) -> Issued:
        try:
            return Issued(read_token_file(self.path))
        except ConfigError as exc:
            raise AuthError(f"authentication failed: {exc}") from None


def read_token_file(path: str) -> Token:
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
    return Token(value, where=f"the token in {path}")


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


# -- a token command ------------------------------------------------------------------


class CommandSource:
    """A command that prints a token: run at the start, and again whenever the token
    must be replaced (before its expiry, when it printed one; after a ``401``)."""

    kind: AuthKind = "command"
    refreshable = True

    def __init__(
        self,
        command: str,
        redactor: Redactor,
        *,
        timeout: float = COMMAND_TIMEOUT,
        wall: Callable[[], float] = time.time,
    ) -> None:
        try:
            self.argv = shlex.split(command)
        except ValueError as exc:
            raise ConfigError(f"the token command cannot be read: {exc}") from None
        if not self.argv:
            raise ConfigError("the token command is empty")
        self.name = self.argv[0]
        """Its first word: the only part ever shown (its arguments may hold secrets)."""
        self.origin = f"the token command {self.name!r}"
        self._redactor = redactor
        self._timeout = timeout
        self._wall = wall
        self.runs = 0

    async def fetch(self) -> Issued:
        self.runs += 1
        out, err, code = await self._run()
        if code != 0:
            raise self._failed(f"exited with status {code}", err)
        try:
            text = out.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise self._failed("printed something that is not UTF-8 text", err) from None
        if not text:
            raise self._failed("printed nothing", err)
        if text.startswith("{"):
            return self._json(text, err)
        if "\n" in text:
            raise self._failed("printed more than one line (a token, or a JSON object)", err)
        try:
            return Issued(Token(text, where="the token the command printed"))
        except ConfigError as exc:
            why = str(exc).removeprefix("the token the command printed ")
            raise self._failed(why, err) from None

    async def _run(self) -> tuple[bytes, bytes, int]:
        try:
            process = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # its own process group: a timeout ends it all
            )
        except OSError as exc:
            raise AuthError(
                f"the token command {self.name!r} cannot be started: {exc.strerror or exc}"
            ) from None
        try:
            return await asyncio.wait_for(_communicate(process), self._timeout)
        except asyncio.TimeoutError:
            why = f"ran longer than {self._timeout:g} s"
        except _TooLong:
            why = f"printed more than {MAX_COMMAND_OUTPUT // 1024} KiB"
        finally:
            if process.returncode is None:  # cut short: never left running
                _kill(process)
                await asyncio.shield(process.wait())
        raise AuthError(f"the token command {self.name!r} {why}; it was stopped")

    def _json(self, text: str, err: bytes) -> Issued:
        try:
            answer: Any = json.loads(text)
        except ValueError:
            raise self._failed("printed JSON that cannot be read", err) from None
        if not isinstance(answer, dict) or not isinstance(answer.get("access_token"), str):
            raise self._failed('printed JSON without an "access_token" string', err)
        try:
            token = Token(answer["access_token"], where="the command's access_token")
        except ConfigError as exc:
            raise self._failed(str(exc), err) from None
        self._redactor.add(token)
        return Issued(token, self._expiry(answer, err))

    def _expiry(self, answer: dict[str, Any], err: bytes) -> float | None:
        expires_in, expires_at = answer.get("expires_in"), answer.get("expires_at")
        if expires_in is not None:
            seconds = _seconds(expires_in)
            if seconds is None:
                raise self._failed('printed an "expires_in" that is not a positive number', err)
            return seconds
        if expires_at is not None:
            when = parse_timestamp(expires_at) if isinstance(expires_at, str) else None
            if when is None:
                raise self._failed('printed an "expires_at" that is not an RFC 3339 time', err)
            left = when.timestamp() - self._wall()
            if left <= 0:
                raise self._failed('printed an "expires_at" already past', err)
            return left
        return None

    def _failed(self, why: str, err: bytes) -> AuthError:
        first = err.decode("utf-8", "replace").strip().splitlines()
        detail = ""
        if first:
            line = printable(self._redactor.redact(first[0]))[:200]
            detail = f" (its standard error: {line})"
        return AuthError(f"the token command {self.name!r} {why}{detail}")

    def __repr__(self) -> str:
        return f"CommandSource({self.name!r})"


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, (int, float)) and 0 < value < 10**10:
        return float(value)
    return None


class _TooLong(Exception):
    """A token command printed more than MAX_COMMAND_OUTPUT."""


async def _communicate(process: asyncio.subprocess.Process) -> tuple[bytes, bytes, int]:
    """Its output and exit status. A command that exits while something it started
    still holds its pipes (``... &``) gets a moment for them, then the group is ended:
    the output it printed stands."""
    assert process.stdout is not None and process.stderr is not None
    readers = asyncio.ensure_future(
        asyncio.gather(
            _read_capped(process.stdout, MAX_COMMAND_OUTPUT),
            _read_capped(process.stderr, MAX_COMMAND_OUTPUT),
        )
    )
    try:
        # (Process.wait() waits for the pipes too: the exit is seen in returncode)
        exited_at = None
        while not readers.done():
            await asyncio.wait({readers}, timeout=0.05)
            if process.returncode is not None and not readers.done():
                loop = asyncio.get_running_loop()
                exited_at = exited_at if exited_at is not None else loop.time()
                if loop.time() - exited_at >= PIPE_GRACE:
                    _kill(process)  # its children hold the pipes: they go with the group
                    break
        out, err = await readers
        return out, err, await process.wait()
    finally:
        if not readers.done():
            readers.cancel()
            with contextlib.suppress(BaseException):
                await readers


async def _read_capped(stream: asyncio.StreamReader, limit: int) -> bytes:
    data = bytearray()
    while chunk := await stream.read(65536):
        data += chunk
        if len(data) > limit:
            raise _TooLong
    return bytes(data)


def _kill(process: asyncio.subprocess.Process) -> None:
    """The command and whatever it started (a shell's children hold its pipes too)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):  # it ended meanwhile
        os.killpg(process.pid, signal.SIGKILL)
