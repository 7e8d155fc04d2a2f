"""``apply``: its options into one frozen ``ApplyOptions``, then the run under the
renderers the options and the terminal call for, the summary, the report and JUnit
files, and the run's exit code."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import click

from runbook.cli.shared import (
    duration,
    files,
    metrics_dir_option,
    plan_files,
    selection_options,
    state_dir_option,
    stderr,
    stdout,
    target_options,
)

if TYPE_CHECKING:
    from runbook.events import RunFinished, RunRecord, Sink
    from runbook.options import ApplyOptions
    from runbook.runner import Prepared


@click.command()
@click.argument("plan_path", metavar="PLAN", shell_complete=plan_files)
@target_options
@click.option(
    "--sandbox",
    "use_sandbox",
    is_flag=True,
    help="Run against the built-in simulator on a free loopback port; no token needed.",
)
@click.option(
    "--token-ttl",
    metavar="DURATION",
    help="With --sandbox: reach the simulator through its OAuth client, whose tokens "
    "expire after DURATION (e.g. 2s, 1h).",
)
@click.option(
    "--new-run",
    is_flag=True,
    help="Start a new run even though the latest run left executions that may still be "
    "running (that run becomes abandoned).",
)
@click.option(
    "--scenario",
    "scenario_path",
    metavar="FILE",
    shell_complete=files,
    help="With --sandbox: the simulator's scenario (YAML).",
)
@click.option(
    "--max-parallel",
    type=click.IntRange(min=1),
    metavar="N",
    help="Executions in flight at once (overrides the plan's max_parallel).",
)
@click.option(
    "--report",
    "report_path",
    metavar="FILE",
    shell_complete=files,
    help="Write the run report as JSON.",
)
@click.option(
    "--timeline",
    "timeline_path",
    metavar="FILE",
    shell_complete=files,
    help="Write the run's timeline: HTML, or SVG or Mermaid by the suffix (.svg, .mmd); "
    "rewritten at most every 5 s while the run goes.",
)
@click.option(
    "--junit",
    "junit_path",
    metavar="FILE",
    shell_complete=files,
    help="Write a JUnit XML file: one test case per step.",
)
@click.option(
    "--quiet",
    "-q",
    is_flag=True,
    help="Print nothing if the run succeeds; on failure only the summary.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one JSON object per event per line.",
)
@state_dir_option
@click.option(
    "--resume", is_flag=True, help="Continue the latest run of this plan that did not succeed."
)
@click.option(
    "--retrigger-unknown",
    is_flag=True,
    help="With --resume: trigger again the steps whose earlier trigger got no "
    "answer (their workflow may then run twice).",
)
@metrics_dir_option(
    "Write Prometheus textfile metrics of the run there, for node_exporter's textfile collector"
)
@selection_options
def apply(
    plan_path: str,
    state_dir: str | None,
    resume: bool,
    retrigger_unknown: bool,
    api_url: str | None,
    token_file: str | None,
    token_command: str | None,
    use_sandbox: bool,
    token_ttl: str | None,
    new_run: bool,
    scenario_path: str | None,
    max_parallel: int | None,
    report_path: str | None,
    timeline_path: str | None,
    junit_path: str | None,
    quiet: bool,
    log_format: str,
    metrics_dir: str | None,
    selects: tuple[str, ...],
    excludes: tuple[str, ...],
) -> int:
    """Run the plan against the Nexadata API (or the built-in sandbox).

    Each ready step's workflow is triggered and polled, at most --max-parallel at once;
    a step starts when its run_if holds on its upstreams (by default: every one passed),
    and clean-up steps (run_if failure/always, finally) run after a failure too. Exit
    codes: 0 the run succeeded (no step failed, other than under on_failure: ignore),
    1 a step failed, 2 invalid plan or usage, 3 authentication or API configuration,
    4 the plan is already being applied, 5 the run journal cannot be used,
    130 interrupted (resume with --resume).
    """
    from runbook.options import ApplyOptions

    options = ApplyOptions(
        plan_path=plan_path,
        state_dir=state_dir,
        resume=resume,
        retrigger_unknown=retrigger_unknown,
        api_url=api_url,
        token_file=token_file,
        token_command=token_command,
        sandbox=use_sandbox,
        token_ttl=None if token_ttl is None else duration("--token-ttl", token_ttl),
        new_run=new_run,
        scenario=scenario_path,
        max_parallel=max_parallel,
        report=report_path,
        junit=junit_path,
        timeline=timeline_path,
        quiet=quiet,
        log_format="json" if log_format == "json" else "text",
        metrics_dir=metrics_dir or None,
        selects=selects,
        excludes=excludes,
    )
    return apply_plan(options)


def apply_plan(options: ApplyOptions) -> int:
    """One apply, parsed: the process hardened, the runner prepares the run and runs
    it; then the summary, the files and the exit code."""
    from runbook import process, runner

    process.forbid_core_dumps()  # before the token is read
    with runner.prepare(options, notice=_notice) as prepared:
        run = _execute(prepared, options)
        finally_steps = prepared.plan.finally_steps
    return _conclude(run, options, finally_steps)


def _notice(level: str, text: str) -> None:
    stderr().write(f"runbook: {level}: {text}\n")


def _execute(prepared: Prepared, options: ApplyOptions) -> RunRecord:
    """Run with the renderer the options and the terminal call for, and the signal
    messages on stderr; a second signal ends the process at once."""
    import os

    from runbook import runner
    from runbook._compat import assert_never
    from runbook.events import (
        AttemptFinished,
        AttemptTriggered,
        AttemptTriggering,
        Event,
        ExecutionSeen,
        Forecasted,
        Notice,
        NotificationSent,
        RetryScheduled,
        RunFinished,
        RunLate,
        RunStarted,
        SignalReceived,
        StepFinished,
    )
    from runbook.render.registry import RUN_RENDERERS, run_renderer_name
    from runbook.render.wording import delivery_text, signal_message

    out = stdout()
    renderers = (
        [] if options.quiet else [RUN_RENDERERS[run_renderer_name(options.log_format, out)](out)]
    )

    def on_stderr(event: Event) -> None:
        """Signals, and deliveries that failed (which --quiet does not print, and JSON
        lines carry themselves)."""
        match event:
            case SignalReceived():
                err = stderr()
                err.write(signal_message(event))
                err.flush()
            case NotificationSent(record=record):
                if not record.ok and not options.quiet and options.log_format == "text":
                    _notice("warning", delivery_text(record))
            case (
                RunStarted()
                | AttemptTriggering()
                | AttemptTriggered()
                | ExecutionSeen()
                | AttemptFinished()
                | RetryScheduled()
                | StepFinished()
                | Notice()
                | RunLate()
                | Forecasted()
                | RunFinished()
            ):
                pass  # the renderer shows these
            case _:
                assert_never(event)

    def end_now() -> None:
        """The second signal: the process ends at once (what the run did is in the
        journal; a trigger still unanswered stays *triggering*)."""
        os._exit(130)

    sinks: list[Sink] = [*renderers, on_stderr]
    if options.timeline:
        import time

        from runbook.render.timeline_file import TimelineFile

        sinks.append(
            TimelineFile(
                options.timeline,
                finally_steps=prepared.plan.finally_steps,
                clock=time.monotonic,
                wall=time.time,
                warn=lambda text: _notice("warning", text),
            )
        )
    try:
        return runner.run(prepared, sinks, on_second_signal=end_now)
    finally:
        for renderer in renderers:
            renderer.close()


def _conclude(run: RunRecord, options: ApplyOptions, finally_steps: tuple[str, ...] = ()) -> int:
    """The summary, the report, JUnit and timeline files, and the exit code."""
    from runbook.render import report
    from runbook.render.jsonlines import JsonLines
    from runbook.render.summary import write_summary
    from runbook.text import printable

    out = stdout()
    if not options.quiet or run.state != "succeeded":
        if options.log_format == "json" and options.quiet:
            JsonLines(out)(_finished(run))
        elif options.log_format != "json":
            hint = None
            resumable = run.exit_code in (None, 3) or bool(run.in_flight())
            if run.state != "succeeded" and resumable and not options.sandbox:
                hint = f"Resume with: {options.resume_command}"
            write_summary(out, run, resume_hint=hint)
    # after the summary: a file that cannot be written changes neither what the run
    # did nor its exit code, and says so on stderr
    files: list[tuple[str | None, Callable[[str, RunRecord], None]]] = [
        (options.report, report.write_report),
        (options.junit, report.write_junit),
    ]
    if options.timeline:
        from runbook.render.timeline_file import write_timeline

        files.append((options.timeline, partial(write_timeline, finally_steps=finally_steps)))
    for path, write in files:
        if path:
            try:
                write(path, run)
            except OSError as exc:
                stderr().write(f"runbook: cannot write {printable(path)}: {exc.strerror or exc}\n")
    if run.exit_code is not None:
        return run.exit_code
    return {"succeeded": 0, "interrupted": 130}.get(run.state, 1)


def _finished(run: RunRecord) -> RunFinished:
    from runbook.events import RunFinished

    return RunFinished(run, run.ended_at or run.started_at)
