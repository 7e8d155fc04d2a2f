"""Hermetic tests: no real home or state dir, no token in the environment, loopback only."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).parent.parent
REAL_STATE = Path(os.path.expanduser("~")) / ".local" / "state" / "runbook"


@pytest.fixture(autouse=True)
def hermetic(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """A fresh HOME and state dir for every test; fail a test that touches the real one."""
    existed = REAL_STATE.exists()
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / ".local" / "state"))
    for name in ("NEXADATA_TOKEN", "NEXADATA_API_URL", "RUNBOOK_STATE_DIR"):
        monkeypatch.delenv(name, raising=False)
    yield
    assert REAL_STATE.exists() == existed, "a test touched the real runbook state dir"


class Clock:
    """A clock that moves only when told; sleeping on it moves it (and is recorded)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """Run the command line in-process through ``runbook.cli.main``."""
    from runbook.cli import main

    def run(*argv: str) -> Result:
        code = main(list(argv))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


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
