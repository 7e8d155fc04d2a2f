"""``status`` and ``history``: the runs the journal holds, read without the HTTP stack."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from runbook.cli.shared import files, format_option, run_ids, state_dir_option, stdout
from runbook.errors import UsageError

if TYPE_CHECKING:
    from runbook.journal import Store
    from runbook.journal.store import RunRow


@click.command()
@click.argument("run_id", type=int, required=False, shell_complete=run_ids)
@state_dir_option
@format_option("text", "json")
def status(run_id: int | None, state_dir: str | None, fmt: str) -> int:
    """One run from the journal (default the latest): each step's state, attempts,
    execution ids, times and errors."""
    from runbook.journal import Store
    from runbook.journal import state_dir as resolve
    from runbook.journal.lock import holder_gone
    from runbook.render import journalview
    from runbook.text import shell_word

    journal = Store(resolve(state_dir))
    try:
        row = _run_row(journal, run_id)
        resume = None
        if row.state == "running" and holder_gone(journal.path.parent, row.plan, row.pid, row.host):
            again = f" --state-dir {shell_word(state_dir)}" if state_dir else ""
            # the journal keeps the token source's kind, never where a secret is: name
            # the option the run used, its value to be given again
            again += {"file": " --token-file FILE", "command": " --token-command CMD"}.get(
                row.auth or "", ""
            )
            resume = f"runbook apply {shell_word(row.plan_path)} --resume{again}"
        journalview.write_status(stdout(), row, journal.load_run(row), fmt, died_resume=resume)
    finally:
        journal.close()
    return 0


@click.command()
@click.argument("plan_name", required=False)
@state_dir_option
@click.option(
    "--limit",
    default=20,
    show_default=True,
    type=click.IntRange(min=1),
    help="How many runs at most.",
)
@format_option("text", "json")
def history(plan_name: str | None, state_dir: str | None, limit: int, fmt: str) -> int:
    """Past runs, newest first: id, plan, state, start and duration."""
    from runbook.journal import Store
    from runbook.journal import state_dir as resolve
    from runbook.journal.lock import holder_gone
    from runbook.render import journalview

    journal = Store(resolve(state_dir))
    try:
        rows = journal.runs(plan_name, limit)
        died = {
            row.id
            for row in rows
            if row.state == "running"
            and holder_gone(journal.path.parent, row.plan, row.pid, row.host)
        }
        journalview.write_history(stdout(), rows, fmt, died=died)
    finally:
        journal.close()
    return 0


@click.command()
@click.argument("run_id", type=int, required=False, shell_complete=run_ids)
@state_dir_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["html", "svg", "mermaid"]),
    default=None,
    help="html (the default, one self-contained page), svg, or mermaid (a gantt chart "
    "for Markdown); default from the suffix of -o (.svg, .mmd), else html.",
)
@click.option(
    "-o",
    "--output",
    "output",
    metavar="FILE",
    shell_complete=files,
    help="Write it to FILE (atomically) instead of standard output.",
)
def timeline(run_id: int | None, state_dir: str | None, fmt: str | None, output: str | None) -> int:
    """One run from the journal (default the latest), drawn: a row per step with its
    waits, attempts and retries on one time axis, the critical path, the deadline and
    the forecast made at the start. Opens offline, fetches nothing."""
    import time

    from runbook.files import write_atomically
    from runbook.journal import Store
    from runbook.journal import state_dir as resolve
    from runbook.render.timeline import build
    from runbook.render.timeline_file import format_for, render
    from runbook.text import printable

    journal = Store(resolve(state_dir))
    try:
        row = _run_row(journal, run_id)
        run = journal.load_run(row)
    finally:
        journal.close()
    going = row.state == "running"
    drawn = build(run, now=time.time(), finally_steps=_finally_of(row), going=going)
    chosen = fmt or (format_for(output) if output else "html")
    text = render(drawn, chosen)  # type: ignore[arg-type]
    if output is None:
        stdout().write(text)
    else:
        try:
            write_atomically(output, text)
        except OSError as exc:  # as export -o says it
            raise UsageError(f"cannot write {printable(output)}: {exc.strerror or exc}") from None
    return 0


def _run_row(journal: Store, run_id: int | None) -> RunRow:
    """The run ``run_id`` (None: the latest) of the journal; none is a usage error."""
    row = journal.run_row(run_id)
    if row is None:
        raise UsageError(
            f"no run {run_id} in the journal" if run_id is not None else "no run in the journal yet"
        )
    return row


def _finally_of(row: RunRow) -> tuple[str, ...]:
    """The plan's finally steps, if its file is still the one the run ran (the journal
    does not keep them); else none are set apart as finally."""
    from runbook.errors import InputError
    from runbook.plan import load_plan

    try:
        plan = load_plan(row.plan_path)
    except (InputError, OSError):
        return ()
    return plan.finally_steps if plan.sha256 == row.plan_sha256 else ()
