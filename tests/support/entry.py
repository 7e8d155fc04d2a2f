"""The real entry point: the installed console script, run in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Result:
    code: int
    out: str
    err: str


def without_coverage_hook() -> dict[str, str]:
    """This environment minus coverage's subprocess hook: for children whose coverage
    would change what they test (load, or a file-size limit its data file would hit)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_PROCESS")}


def entry_point() -> list[str]:
    """The installed console script, as a user runs it."""
    script = Path(sys.executable).parent / "runbook"
    return [str(script)] if script.exists() else [sys.executable, "-m", "runbook"]


def run_entry(*argv: str, cwd: Path | None = None, timeout: float = 60) -> Result:
    """Run the real ``runbook`` executable in a subprocess."""
    done = subprocess.run(
        [*entry_point(), *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "100"},
    )
    return Result(done.returncode, done.stdout, done.stderr)
