"""The state dir's security rules, in one place: what runbook keeps there (the journal,
the credential cache) lives only in a directory and in files the user alone owns and
alone may write, and is never reached through a planted link.

Both :mod:`runbook.journal.store` and :mod:`runbook.api.cache` check through these
functions, so the API client needs nothing of the journal.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from runbook.errors import JournalError

__all__ = ["check_owned", "open_private", "prepare"]


def prepare(directory: Path) -> None:
    """The state dir exists, is the user's own, is not writable by others, and can be
    written (probed under a unique name, never through a planted link)."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        check_owned(directory, os.stat(directory), "state dir")
        handle, probe = tempfile.mkstemp(dir=directory, prefix=".write-test-")
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise JournalError(
            f"the state dir {directory} cannot be used: {exc.strerror or exc}; "
            "choose another with --state-dir or RUNBOOK_STATE_DIR"
        ) from None


def check_owned(path: Path, info: os.stat_result, what: str, *, keeps: str = "its journal") -> None:
    """Another user's file, or one others may write, could be read or steered by them:
    a journal holds every run, and its execution ids decide what a resume polls; a
    credential cache holds a refresh token. ``keeps`` says what, in the message."""
    if info.st_uid != os.getuid():
        raise JournalError(
            f"the {what} {path} belongs to another user (uid {info.st_uid}); runbook keeps "
            f"{keeps} only where you alone own it: choose another with --state-dir or "
            "RUNBOOK_STATE_DIR"
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o022:
        raise JournalError(
            f"the {what} {path} can be written by other users (mode {mode:04o}); "
            f"make it yours alone (chmod go-w {path}) or choose another with --state-dir"
        )


def open_private(path: Path) -> None:
    """Create the journal file 0600 if it is new; refuse a link, another user's file or
    one others may write; take read access away from others on an existing one."""
    try:
        handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600)
        os.close(handle)
    except FileExistsError:
        pass
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise JournalError(f"the journal {path} cannot be opened: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise JournalError(
            f"the journal {path} is not a regular file (a link?); move it aside to start a new one"
        )
    check_owned(path, info, "journal")
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(path, 0o600)
