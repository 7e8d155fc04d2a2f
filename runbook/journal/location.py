"""Which state dir a command uses, when it does not say: the environment's, or the
user's state home under the XDG convention."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["state_dir"]


def state_dir(explicit: str | None, environ: Mapping[str, str] | None = None) -> Path:
    """``--state-dir`` > ``RUNBOOK_STATE_DIR`` > ``$XDG_STATE_HOME/runbook`` >
    ``~/.local/state/runbook``."""
    env = os.environ if environ is None else environ
    if explicit:
        return Path(explicit)
    if env.get("RUNBOOK_STATE_DIR"):
        return Path(env["RUNBOOK_STATE_DIR"])
    base = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "runbook"
