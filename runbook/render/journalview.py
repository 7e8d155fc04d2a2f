"""What ``status`` and ``history`` print from the journal, as text or JSON."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence, Set
from typing import TYPE_CHECKING, Any, TextIO

from runbook.durations import format_duration
from runbook.events import RunRecord
from runbook.render.report import report_document
from runbook.render.wording import stamp, step_duration
from runbook.text import plural, printable

if TYPE_CHECKING:
    from runbook.journal.store import RunRow

__all__ = ["write_history", "write_status"]


def _took(started: float, ended: float | None) -> str:
    return format_duration(ended - started) if ended is not None else "-"


def _status_json(out: TextIO, row: RunRow, run: RunRecord, resume: str | None) -> None:
    """The report's document, with where and by whom the run was made."""
    document = report_document(run)
    if resume is not None:
        document.update(state="died", resume_command=resume)
    document.update(
        plan_path=row.plan_path,
        plan_sha256=row.plan_sha256,
        pid=row.pid,
        host=row.host,
        reason=run.reason,
    )
    json.dump(document, out, indent=2)
    out.write("\n")


def _status_text(out: TextIO, row: RunRow, run: RunRecord, resume: str | None) -> None:
    """One run: its header, then each step with every attempt of every invocation."""
    out.write(
        f"Run {run.run_id} of {run.plan}: {'died' if resume else run.state} "
        f"(started {stamp(run.started_at)}, {_took(run.started_at, run.ended_at)})\n"
    )
    where = f"plan file {printable(row.plan_path)}, pid {row.pid} on {printable(row.host)}"
    out.write(f"  {where}\n")
    if resume is not None:
        out.write(
            f"  its process (pid {row.pid}) ended without ending the run: its executions "
            f"may still be running; resume with: {resume}\n"
        )
    if run.auth:
        refreshed = f", {plural(run.token_refreshes, 'token refresh', 'token refreshes')}"
        failed = "; it ended on an authentication failure" if run.auth_failed else ""
        out.write(f"  token source: {run.auth}{refreshed}{failed}\n")
    if run.reason:
        out.write(f"  {run.reason}\n")
    if run.late:
        out.write("  late: it passed its deadline\n")
    for step in run.ordered():
        duration = step_duration(step)
        took = f" in {format_duration(duration)}" if duration is not None else ""
        reason = f": {step.reason}" if step.reason else ""
        label = "ignored" if step.ignored else step.state
        policies = "".join(
            f", {text}"
            for text, shown in (
                (f"run_if {step.run_if}", step.run_if != "success"),
                ("on_failure ignore", step.ignored),
            )
            if shown
        )
        out.write(
            f"  {label.upper():<9} {step.name} (workflow {step.workflow_id}{policies})"
            f"{took}{reason}\n"
        )
        if step.why:
            out.write(f"            started because {step.why}\n")
        for attempt in step.attempts:
            execution = (
                f"execution {attempt.execution_id}" if attempt.execution_id else "no execution id"
            )
            out.write(
                f"            attempt {attempt.number}: {execution}, {attempt.state}"
                f", triggered {stamp(attempt.triggered_at)}\n"
            )
            for error in attempt.errors:
                out.write(f"              error: {error}\n")
    for record in run.notifications:
        outcome = "delivered" if record.ok else f"not delivered: {record.error}"
        what = "notification" if record.kind == "webhook" else "healthchecks ping"
        tries = f" ({plural(record.attempts, 'attempt')})" if record.attempts > 1 else ""
        out.write(
            f"  {what} {record.event!r} to {record.target} at {stamp(record.at)}: "
            f"{outcome}{tries}\n"
        )


def _history_json(out: TextIO, rows: Sequence[RunRow], died: Set[int]) -> None:
    """Past runs, newest first, as a JSON array."""
    runs: list[dict[str, Any]] = [
        {
            "run_id": row.id,
            "plan": row.plan,
            "state": "died" if row.id in died else row.state,
            "started_at": stamp(row.started_at),
            "ended_at": stamp(row.ended_at) if row.ended_at else None,
            "duration": (row.ended_at - row.started_at) if row.ended_at else None,
        }
        for row in rows
    ]
    json.dump(runs, out, indent=2)
    out.write("\n")


def _history_text(out: TextIO, rows: Sequence[RunRow], died: Set[int]) -> None:
    """Past runs, newest first, as a table."""
    if not rows:
        out.write("No runs in the journal.\n")
        return
    table = [("ID", "PLAN", "STATE", "STARTED", "DURATION")]
    table += [
        (
            str(row.id),
            printable(row.plan),
            "died" if row.id in died else row.state,
            stamp(row.started_at),
            _took(row.started_at, row.ended_at),
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(4)]
    for line in table:
        cells = [line[0].rjust(widths[0])]
        cells += [cell.ljust(width) for cell, width in zip(line[1:4], widths[1:], strict=True)]
        out.write("  ".join([*cells, line[4]]) + "\n")


STATUS_FORMATS: Mapping[str, Callable[[TextIO, RunRow, RunRecord, str | None], None]] = {
    "text": _status_text,
    "json": _status_json,
}
HISTORY_FORMATS: Mapping[str, Callable[[TextIO, Sequence[RunRow], Set[int]], None]] = {
    "text": _history_text,
    "json": _history_json,
}


def write_status(
    out: TextIO, row: RunRow, run: RunRecord, fmt: str, *, died_resume: str | None = None
) -> None:
    """One run in format ``fmt`` (a key of STATUS_FORMATS). ``died_resume``: the run's
    process is gone though the run is ``running``, and this command resumes it."""
    STATUS_FORMATS[fmt](out, row, run, died_resume)


def write_history(
    out: TextIO, rows: Sequence[RunRow], fmt: str, *, died: Set[int] = frozenset()
) -> None:
    """Past runs, newest first, in format ``fmt`` (a key of HISTORY_FORMATS); the runs
    ``died`` (ids) show as ``died``: ``running``, and their process is gone."""
    HISTORY_FORMATS[fmt](out, rows, died)
