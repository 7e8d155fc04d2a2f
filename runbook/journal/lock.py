"""One ``apply`` per plan name per state dir.

An ``flock`` on a file under the state dir: the kernel drops it with the process,
however the process ends, so there is never a stale lock to clean by hand. The file
says who holds it, for the message the next ``apply`` gets.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
from pathlib import Path
from typing import TextIO

from runbook.errors import JournalError, LockedError

__all__ = ["PlanLock", "holder_gone", "lock_held"]


class PlanLock:
    """The lock of plan ``plan`` in the state dir ``directory``."""

    def __init__(self, directory: Path, plan: str) -> None:
        self.path = lock_path(directory, plan)
        self.plan = plan
        self._handle: TextIO | None = None

    def acquire(self, run_hint: str = "") -> None:
        """Take the lock, or raise LockedError (exit 4) naming who holds it."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:  # never through a planted link: it would overwrite the file it points at
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise JournalError(
                f"the lock file {self.path} cannot be opened: {exc.strerror or exc}; move it aside"
            ) from None
        handle = os.fdopen(fd, "r+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise LockedError(
                f"another apply of plan {self.plan!r} is running ({holder}); wait for it to "
                "end, or use another --state-dir"
            ) from None
        self._handle = handle
        self.note(run_hint)

    def note(self, text: str) -> None:
        """Say who holds the lock, for the message the next one gets."""
        if self._handle is None:
            return
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.write(f"pid {os.getpid()}{', ' + text if text else ''}")
        self._handle.flush()

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing drops the flock
            self._handle = None


def lock_path(directory: Path, plan: str) -> Path:
    digest = hashlib.sha256(plan.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return directory / "locks" / f"{digest}.lock"


def holder_gone(directory: Path, plan: str, pid: int, host: str) -> bool:
    """Whether the process that ran plan ``plan`` (``pid`` on ``host``, as its run's row
    says) is known to be gone: it ran on this host, nobody holds the plan's lock as the
    kernel's list of locks says, and no process has its pid. Nothing takes the lock to
    find out: a test lock, however brief, could make an ``apply`` starting that instant
    think another one runs. Both must agree because the list misses some locks (btrfs
    and overlay show another device number, NFS lists flocks as POSIX); a pid reused
    since leaves the run shown ``running``, the safe side."""
    if host != socket.gethostname():
        return False  # another host's process: nothing here can tell
    return not lock_held(directory, plan) and _pid_gone(pid)


def lock_held(directory: Path, plan: str) -> bool | None:
    """Whether a process holds plan ``plan``'s lock, as the kernel's list of locks says,
    without taking it (None: that list cannot be read here). True is sure; False may
    miss a lock on some file systems (see :func:`holder_gone`)."""
    try:
        info = lock_path(directory, plan).stat()
    except FileNotFoundError:
        return False  # never taken in this state dir
    except OSError:
        return None
    return _flock_holders(os.major(info.st_dev), os.minor(info.st_dev), info.st_ino)


def _flock_holders(major: int, minor: int, inode: int) -> bool | None:
    """Whether /proc/locks lists a flock on that file (None: it cannot be read)."""
    try:
        text = Path("/proc/locks").read_text()
    except OSError:
        return None
    wanted = f"{major:02x}:{minor:02x}:{inode}"
    return any(
        len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == wanted
        for fields in (line.split() for line in text.splitlines())
    )


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # it exists, and is another user's
    return False
