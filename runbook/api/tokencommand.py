"""A token command as a token source: the command run, bounded, and what it printed read.

The command runs without standard input in its own process group, for at most 30 s and
64 KiB of output; whatever it started goes with it when it is cut short. It prints a
token, or a JSON object with an ``access_token`` and its expiry. Only its first word is
ever shown: its arguments may hold secrets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
import time
from collections.abc import Callable
from typing import Any

from runbook.api.secrets import Redactor, Token
from runbook.api.sources import AuthKind, Issued
from runbook.errors import AuthError, ConfigError
from runbook.text import parse_timestamp, printable

__all__ = ["COMMAND_TIMEOUT", "MAX_COMMAND_OUTPUT", "PIPE_GRACE", "CommandSource"]

COMMAND_TIMEOUT = 30.0
MAX_COMMAND_OUTPUT = 64 * 1024
PIPE_GRACE = 1.0
"""How long a token command's pipes may stay open after it exited."""


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
