"""One ``apply`` per plan name per state dir.

An ``flock`` on a file under the state dir: the kernel drops it with the process,
however the process ends, so there is never a stale lock to clean by hand. The file
says who holds it, for the message the next ``apply`` gets.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path
from typing import TextIO

from runbook.errors import JournalError, LockedError

__all__ = ["PlanLock"]


class PlanLock:
    """The lock of plan ``plan`` in the state dir ``directory``."""

    def __init__(self, directory: Path, plan: str) -> None:
        digest = hashlib.sha256(plan.encode()).hexdigest()[:16]
        self.path = directory / "locks" / f"{digest}.lock"
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
