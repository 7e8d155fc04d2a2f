"""What the apply tests share: the plan and token, the sandbox's count of executions, a
plan file written in place, and a report's steps by name."""

from __future__ import annotations

import json
from pathlib import Path

TOKEN = "durable-token-Xy7-distinct"
PLAN = """\
version: 1
name: night
defaults: {poll_interval: 20ms, max_poll_interval: 50ms, retry_delay: 10ms}
workflows:
  extract: {workflow_id: 1}
  load: {workflow_id: 2, depends_on: extract}
  side: {workflow_id: 3}
  report: {workflow_id: 4, depends_on: [load, side]}
"""


def executions(app) -> dict[str, int]:
    """Executions per workflow id, as the sandbox counted them."""
    return dict(app.state.sandbox.stats()["executions"])


def finish(app) -> None:
    """End every execution the sandbox holds at its next poll, as it would have ended:
    for a test that lets a run go on until it has seen what it waits for (an event,
    not a duration)."""
    from dataclasses import replace

    state = app.state.sandbox
    for execution in state.executions.values():
        elapsed = state.clock() - execution.created
        execution.behaviour = replace(execution.behaviour, queue=0.0, duration=max(0.0, elapsed))


def write(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    """A plan (or any file) of ``text`` in ``tmp_path``."""
    path = tmp_path / name
    path.write_text(text)
    return path


def steps_of(report: Path) -> dict[str, dict]:
    """The steps of a run report (``--report``), by name."""
    return {step["name"]: step for step in json.loads(report.read_text())["steps"]}
