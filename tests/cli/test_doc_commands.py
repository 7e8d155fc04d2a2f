"""Every shell command the README and the docs show runs as written, offline, on a
clone — or its block says why it is not run here (``<!-- not run: why -->`` just
before it: an install, a real Nexadata account, a benchmark).

A block's commands are its lines (``sh``) or its ``$`` lines (``console``); each runs in
bash from a scratch directory holding a copy of ``examples/``, with this environment's
``runbook`` first on PATH and a home of its own, and must exit 0 — or the code its
comment states (``# exits 1``: a scenario that shows a failing run)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.paths import ROOT

DOCS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "examples" / "README.md",
    ROOT / "benchmarks" / "README.md",
]
BLOCK = re.compile(
    r"(?:<!-- not run: (?P<why>[^\n]*?) -->\n)?```(?P<lang>sh|bash|shell|console)\n"
    r"(?P<body>.*?)^```",
    re.S | re.M,
)


@dataclass(frozen=True)
class Block:
    where: str
    lang: str
    body: str
    why: str | None

    def commands(self) -> list[str]:
        lines = self.body.splitlines()
        if self.lang == "console":
            return [line[2:] for line in lines if line.startswith("$ ")]
        return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _blocks() -> list[Block]:
    found = []
    for doc in DOCS:
        text = doc.read_text()
        for match in BLOCK.finditer(text):
            line = text.count("\n", 0, match.start("lang")) + 1
            where = f"{doc.relative_to(ROOT)}:{line}"
            found.append(Block(where, match["lang"], match["body"], match["why"]))
    return found


BLOCKS = _blocks()
RUN = [block for block in BLOCKS if block.why is None]


def test_every_block_is_run_or_says_why_not() -> None:
    assert len(BLOCKS) >= 20  # the pattern finds the blocks
    for block in BLOCKS:
        assert block.why is None or len(block.why) > 10, block.where
    assert len(RUN) >= 6


def _expected(command: str) -> int:
    stated = re.search(r"#\s*exits (\d+)", command)
    return int(stated[1]) if stated else 0


@pytest.mark.parametrize("block", RUN, ids=[block.where for block in RUN])
def test_the_command_runs_as_written(block: Block, tmp_path: Path) -> None:
    work = tmp_path / "clone"
    work.mkdir()
    shutil.copytree(ROOT / "examples", work / "examples")
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("NEXADATA_", "RUNBOOK_", "COVERAGE_PROCESS"))
    }
    running: list[tuple[str, subprocess.Popen[str]]] = []
    # the lines of a block run side by side (they mostly wait on their sandbox's
    # executions), each with a state dir of its own: typed one after the other they
    # would share one, but no line here needs another's journal
    for number, command in enumerate(block.commands()):
        home = tmp_path / f"home{number}"
        home.mkdir()
        env = {**base, "PATH": path, "HOME": str(home), "COLUMNS": "100"}
        env["XDG_STATE_HOME"] = str(home / ".local" / "state")
        process = subprocess.Popen(
            ["bash", "-c", command],
            cwd=work,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        running.append((command, process))
    for command, process in running:
        _ended(block, command, process)


def _ended(block: Block, command: str, process: subprocess.Popen[str]) -> None:
    out, _ = process.communicate(timeout=300)
    assert process.returncode == _expected(command), f"{block.where}: {command}\n{out[-2000:]}"
