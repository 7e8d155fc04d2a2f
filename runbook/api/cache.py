"""The credential cache: the latest refresh token of one OAuth client, shared by every
runbook process of one state dir, and the lock under which it is read, exchanged and
replaced.

A rotating refresh token is good once: the authorization server revokes the whole
token family if a rotated-away one is ever sent again. So the newest one lives in
``STATE_DIR/credentials/<sha256 of token_url and client_id>.json`` (0600, in a 0700
directory, under the state dir's rules of :mod:`runbook.statedir`), and a caller holds
the exclusive ``flock`` of the lock file beside it from reading the cache, through the
token request, to the atomic write of the token that replaces it.

The lock is a file of its own, never replaced nor deleted: a lock on the cache itself
would let a waiter wake on the old inode after the rename and read the rotated-away
token.

The cache holds the refresh token, when it was issued and the sha256 of the
environment's refresh token the chain started from: never an access token, never the
client secret. No message ever shows a cache's content.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import math
import os
import secrets
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runbook.errors import JournalError
from runbook.statedir import check_owned, prepare

__all__ = ["MAX_BYTES", "CachedRefresh", "CredentialCache", "LockTimeout", "sha256_hex"]

VERSION = 1
MAX_BYTES = 64 * 1024
"""A cache is a few hundred bytes; anything past this is damage, and is not read."""
_FIELDS = frozenset({"version", "refresh_token", "issued_at", "env_sha256"})
_HEX = frozenset("0123456789abcdef")
_KEEPS = "refresh tokens"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def sha256_hex(text: str) -> str:
    """The hex sha256 of ``text`` (UTF-8)."""
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class CachedRefresh:
    """The newest refresh token of one client, when it was issued (epoch seconds), and
    the sha256 of the environment's refresh token its chain started from."""

    refresh_token: str
    issued_at: float
    env_sha256: str

    def __repr__(self) -> str:
        return (
            f"CachedRefresh(refresh_token='***', issued_at={self.issued_at!r}, "
            f"env_sha256={self.env_sha256!r})"
        )


class CredentialCache:
    """The credential cache of the client ``client_id`` at ``token_url``, in the state
    dir ``state_dir``."""

    def __init__(self, state_dir: Path, token_url: str, client_id: str) -> None:
        prepare(state_dir)
        self.directory = state_dir / "credentials"
        name = sha256_hex(f"{token_url}\n{client_id}")
        self._name = f"{name}.json"
        self._lock_name = f"{name}.json.lock"
        self.path = self.directory / self._name
        self.lock_path = self.directory / self._lock_name
        try:
            os.mkdir(self.directory, 0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise JournalError(
                f"the credentials directory {self.directory} cannot be created: "
                f"{exc.strerror or exc}; choose another state dir with --state-dir or "
                "RUNBOOK_STATE_DIR"
            ) from None
        os.close(self._open_directory())

    @contextlib.contextmanager
    def lock(
        self, timeout: float | None = None, stop: threading.Event | None = None
    ) -> Iterator[None]:
        """Hold the exclusive lock of this cache for the block, waiting for it while
        another process holds it: at most ``timeout`` seconds (then LockTimeout), and no
        longer once ``stop`` is set (LockTimeout too). Plain blocking code: call it from
        a thread."""
        fd = self._open_file(
            self._lock_name, self.lock_path, "credential cache lock file", os.O_RDWR | os.O_CREAT
        )
        assert fd is not None  # created if missing
        try:
            _wait_for_lock(fd, timeout, stop)
        except BaseException:
            os.close(fd)
            raise
        try:
            yield
        finally:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)  # closing drops the flock too

    def read(self) -> CachedRefresh | None:
        """The cached refresh token; None when there is none yet."""
        fd = self._open_file(self._name, self.path, "credential cache", os.O_RDONLY)
        if fd is None:
            return None
        try:
            with os.fdopen(fd, "rb", closefd=False) as handle:
                data = handle.read(MAX_BYTES + 1)
        except OSError as exc:
            raise JournalError(
                f"the credential cache {self.path} cannot be read: {exc.strerror or exc}"
            ) from None
        finally:
            os.close(fd)
        entry = _parse(data)
        if entry is None:  # raised out here: no exception of the parser, which holds the
            raise self._damaged()  # content, is chained to it
        return entry

    def write(self, entry: CachedRefresh) -> None:
        """Replace the cache with ``entry``, atomically and durably: a temporary file
        beside it, written, synced, renamed over it, and the directory synced."""
        data = json.dumps(
            {
                "version": VERSION,
                "refresh_token": entry.refresh_token,
                "issued_at": float(entry.issued_at),
                "env_sha256": entry.env_sha256,
            },
            allow_nan=False,
        ).encode()
        directory = self._open_directory()
        try:
            self._check_target(directory)
            temporary = self._write_temporary(directory, data)
            with self._or_removed(temporary, directory):
                os.replace(temporary, self._name, src_dir_fd=directory, dst_dir_fd=directory)
            try:
                os.fsync(directory)
            except OSError as exc:
                raise JournalError(
                    f"the credentials directory {self.directory} cannot be synced: "
                    f"{exc.strerror or exc}; the new refresh token in {self.path} may not "
                    "survive a crash of the machine"
                ) from None
        finally:
            os.close(directory)

    def _write_temporary(self, directory: int, data: bytes) -> str:
        """A new 0600 file in the cache's directory holding ``data``, synced; its name.
        It never survives a failure."""
        while True:
            temporary = f".{self._name}.{secrets.token_hex(8)}.tmp"
            try:
                fd = os.open(
                    temporary,
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o600,
                    dir_fd=directory,
                )
            except FileExistsError:
                continue
            except OSError as exc:
                raise self._unwritable(exc) from None
            break
        with self._or_removed(temporary, directory):
            try:
                os.fchmod(fd, 0o600)  # whatever the umask
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
        return temporary

    @contextlib.contextmanager
    def _or_removed(self, temporary: str, directory: int) -> Iterator[None]:
        """The block; if it fails, the temporary file is removed first (and an OSError
        is told as the cache being unwritable)."""
        try:
            yield
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(temporary, dir_fd=directory)
            if isinstance(exc, OSError):
                raise self._unwritable(exc) from None
            raise

    def _open_directory(self) -> int:
        """An fd of the credentials directory, checked: the user's own, writable by
        nobody else, and not a link; made 0700 if others may read it."""
        try:
            fd = os.open(self.directory, _DIR_FLAGS)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise JournalError(
                    f"the credentials directory {self.directory} is not a directory (a "
                    "link?); move it aside, and runbook creates a new one"
                ) from None
            raise JournalError(
                f"the credentials directory {self.directory} cannot be opened: "
                f"{exc.strerror or exc}; choose another state dir with --state-dir or "
                "RUNBOOK_STATE_DIR"
            ) from None
        try:
            info = os.fstat(fd)
            check_owned(self.directory, info, "credentials directory", keeps=_KEEPS)
            if stat.S_IMODE(info.st_mode) & 0o077:
                os.fchmod(fd, 0o700)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _open_file(self, name: str, path: Path, what: str, flags: int) -> int | None:
        """An fd of ``name`` in the checked credentials directory, opened without
        following a link, and checked (:meth:`_check_file`); None when there is none
        (and ``flags`` do not create it)."""
        directory = self._open_directory()
        try:
            fd = os.open(
                name,
                flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                0o600,
                dir_fd=directory,
            )
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._unopenable(path, what, exc) from None
        finally:
            os.close(directory)
        try:
            self._check_file(fd, path, what)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _check_file(self, fd: int, path: Path, what: str) -> None:
        """The open ``fd`` is a regular file of the user's own that nobody else may
        write; made 0600 if others may read it."""
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise JournalError(f"the {what} {path} is not a regular file; move it aside")
        check_owned(path, info, what, keeps=_KEEPS)
        if stat.S_IMODE(info.st_mode) & 0o077:
            os.fchmod(fd, 0o600)

    def _check_target(self, directory: int) -> None:
        """What the write would replace is a cache of the user's own, or nothing: not a
        planted link, nor another user's file."""
        try:
            info = os.stat(self._name, dir_fd=directory, follow_symlinks=False)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self._unwritable(exc) from None
        if not stat.S_ISREG(info.st_mode):
            raise JournalError(
                f"the credential cache {self.path} is not a regular file (a link?); move it aside"
            )
        check_owned(self.path, info, "credential cache", keeps=_KEEPS)

    def _unopenable(self, path: Path, what: str, exc: OSError) -> JournalError:
        if exc.errno == errno.ELOOP:
            return JournalError(
                f"the {what} {path} is a link, which runbook never follows; move it aside"
            )
        return JournalError(f"the {what} {path} cannot be opened: {exc.strerror or exc}")

    def _unwritable(self, exc: OSError) -> JournalError:
        return JournalError(
            f"the credential cache {self.path} cannot be written: {exc.strerror or exc}; the "
            "new refresh token the authorization server just issued could not be kept, and "
            "the one kept before has been rotated away: make room or fix the state dir, and "
            "if the next token request is refused, new credentials are needed"
        )

    def _damaged(self) -> JournalError:
        return JournalError(
            f"the credential cache {self.path} is damaged; move it aside (mv {self.path} "
            f"{self.path}.damaged) and runbook starts again from the environment's refresh "
            "token: if that one has been rotated away since, new credentials are needed"
        )


class LockTimeout(Exception):
    """The cache's lock was not had in time (or the wait was called off)."""


def _wait_for_lock(fd: int, timeout: float | None, stop: threading.Event | None) -> None:
    """``flock(LOCK_EX)``, tried every 20 ms so that a wait can end: a process that
    holds the lock holds it for one token request, 30 s at most."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        if (stop is not None and stop.is_set()) or (
            deadline is not None and time.monotonic() >= deadline
        ):
            raise LockTimeout
        if stop is not None:
            stop.wait(0.02)
        else:
            time.sleep(0.02)


def _parse(data: bytes) -> CachedRefresh | None:
    """The entry ``data`` holds, or None if it is damaged (it is never shown)."""
    if len(data) > MAX_BYTES:
        return None
    try:
        value: Any = json.loads(data)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict) or value.keys() != _FIELDS:
        return None
    token, issued, origin = value["refresh_token"], value["issued_at"], value["env_sha256"]
    if value["version"] != VERSION or type(value["version"]) is not int:
        return None
    if not isinstance(token, str) or not token:
        return None
    if isinstance(issued, bool) or not isinstance(issued, (int, float)):
        return None
    try:
        issued = float(issued)
    except OverflowError:  # an integer past any float
        return None
    if not math.isfinite(issued):
        return None
    if not isinstance(origin, str) or len(origin) != 64 or not set(origin) <= _HEX:
        return None
    return CachedRefresh(token, issued, origin)
