"""Where a Bearer token comes from: what a token source is, and the simple kinds.

A :class:`TokenSource` does one thing: fetch a token (:meth:`~TokenSource.fetch`), with
its expiry when it knows one. The kinds that read a token someone else wrote are here:
one given as it is, the environment, a token file. A token command is
:mod:`runbook.api.tokencommand`, an OAuth 2.0 client :mod:`runbook.api.oauth`; *when* a
source is asked again is :class:`~runbook.api.credentials.Credentials`' business.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from runbook.api.secrets import Token
from runbook.errors import AuthError, ConfigError

__all__ = [
    "MAX_TOKEN_FILE",
    "AuthKind",
    "EnvSource",
    "FileSource",
    "Issued",
    "StaticSource",
    "TokenSource",
    "read_token_file",
    "token_file_warning",
]

AuthKind = Literal["oauth client_credentials", "oauth refresh_token", "command", "file", "env"]
MAX_TOKEN_FILE = 64 * 1024


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


# -- a token given, the environment ---------------------------------------------------


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
