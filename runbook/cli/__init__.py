"""The ``runbook`` command line: parse options, call the core, render, return an exit code.

Only this module imports click. Heavy modules (YAML, jsonschema, networkx, httpx, rich)
are imported inside the commands that need them, so ``runbook --help`` stays fast.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

import click

from runbook import __version__
from runbook.errors import InputError, RunbookError, UsageError
from runbook.sandbox import SANDBOX_TOKEN

if TYPE_CHECKING:
    from runbook.events import RunFinished, RunRecord
    from runbook.forecast import Forecast
    from runbook.plan import Plan
    from runbook.runner import ApplyOptions, Runner

EXIT_INTERNAL = 70
"""An unexpected error: a bug in runbook (sysexits' EX_SOFTWARE)."""

_SELECT_HELP = (
    "Only these steps: NAME, +NAME (and its upstreams), NAME+ (and its downstreams) "
    "or +NAME+. Repeatable."
)


def _selection_options(command: Any) -> Any:
    command = click.option(
        "--exclude",
        "-x",
        "excludes",
        multiple=True,
        metavar="SPEC",
        help="Leave out these steps (same SPEC forms as --select). Repeatable.",
    )(command)
    return click.option(
        "--select", "-s", "selects", multiple=True, metavar="SPEC", help=_SELECT_HELP
    )(command)


def _files(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Shell completion offers file names here (click asks the shell for them)."""
    from click.shell_completion import CompletionItem

    return [CompletionItem(incomplete, type="file")]


def _dirs(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Shell completion offers directory names here."""
    from click.shell_completion import CompletionItem

    return [CompletionItem(incomplete, type="dir")]


_state_dir_option = click.option(
    "--state-dir",
    metavar="DIR",
    shell_complete=_dirs,
    envvar="RUNBOOK_STATE_DIR",
    help="Where the run journal lives (env RUNBOOK_STATE_DIR; default "
    "$XDG_STATE_HOME/runbook, i.e. ~/.local/state/runbook).",
)


def _forecast_options(command: Any) -> Any:
    command = _state_dir_option(command)
    return click.option(
        "--forecast",
        "with_forecast",
        is_flag=True,
        help="Forecast the run from the journal's history: p50, p90, the critical path.",
    )(command)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(
    __version__, "--version", "-V", prog_name="runbook", message="%(prog)s %(version)s"
)
@click.option(
    "--traceback",
    "show_traceback",
    is_flag=True,
    help="On an unexpected error, print the whole Python traceback.",
)
def cli(show_traceback: bool) -> None:
    """Run chains of Nexadata workflows from a plan kept in git.

    \b
    Exit codes: 0 success, 1 a step failed (other than under on_failure: ignore),
    2 invalid plan or usage, 3 authentication or API configuration,
    4 the plan is already being applied, 5 the run journal cannot be used,
    130 interrupted (resumable), 70 an unexpected error in runbook itself.
    """
    # --traceback is read by main(), which handles every error


@cli.command()
@click.argument("plans", nargs=-1, required=True, metavar="PLAN...", shell_complete=_files)
def validate(plans: tuple[str, ...]) -> int:
    """Check plans without sending anything.

    Prints 'PLAN: ok (N workflows, M dependencies)' for each valid plan, and every
    problem of an invalid one as FILE:LINE:COLUMN: message. Exits 2 if any plan is
    invalid.
    """
    from runbook.plan import load_plan
    from runbook.render import planview

    code = 0
    for path in plans:
        try:
            plan = load_plan(path)
        except InputError as error:
            planview.write_invalid(_stderr(), error)
            code = error.exit_code
        else:
            planview.write_valid(_stdout(), plan)
    return code


@cli.command()
@click.argument("plan_path", metavar="PLAN", shell_complete=_files)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Output format.",
)
@_forecast_options
@_selection_options
def plan(
    plan_path: str,
    fmt: str,
    with_forecast: bool,
    state_dir: str | None,
    selects: tuple[str, ...],
    excludes: tuple[str, ...],
) -> int:
    """Show the execution order: stages of steps that can run together.

    Each step is shown with its workflow id, upstreams and failure policy. With
    --forecast: how long a run will take (p50, p90), each step's expected start and end,
    and the critical path, from the journal's history. Nothing is sent.
    """
    from runbook.plan import load_plan
    from runbook.render.planview import PLAN_FORMATS

    loaded = load_plan(plan_path)
    selection = loaded.dag.select(selects, excludes)
    predicted = _forecast(loaded, selection.steps, state_dir) if with_forecast else None
    PLAN_FORMATS[fmt](_stdout(), loaded, loaded.dag.stages(selection.steps), selection, predicted)
    return 0


def _forecast(plan: Plan, steps: Iterable[str] | None, state_dir: str | None) -> Forecast:
    """The forecast of ``steps`` from the journal's history (none when the state dir
    has no journal yet: nothing is created to find that out)."""
    from runbook.forecast import forecast
    from runbook.journal import Store
    from runbook.journal import state_dir as resolve
    from runbook.journal.store import DB_NAME

    directory = resolve(state_dir)
    history: dict[int, list[float]] = {}
    if (directory / DB_NAME).exists():
        store = Store(directory)
        try:
            history = store.workflow_history(step.workflow_id for step in plan.steps.values())
        finally:
            store.close()
    return forecast(plan, history, steps=steps)


@cli.command()
@click.argument("plan_path", metavar="PLAN", shell_complete=_files)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["dot", "mermaid"]),
    default="dot",
    show_default=True,
    help="Graphviz DOT or a Mermaid flowchart.",
)
@_forecast_options
def graph(plan_path: str, fmt: str, with_forecast: bool, state_dir: str | None) -> int:
    """Draw the dependency graph, edges from upstream to downstream; with --forecast,
    the critical path in red.

    \b
    runbook graph plan.yaml | dot -Tsvg > plan.svg
    runbook graph plan.yaml --format mermaid   # paste into Markdown
    """
    from runbook.plan import load_plan
    from runbook.render.planview import GRAPH_FORMATS

    loaded = load_plan(plan_path)
    predicted = _forecast(loaded, None, state_dir) if with_forecast else None
    GRAPH_FORMATS[fmt](_stdout(), loaded, predicted)
    return 0


@cli.command()
@click.argument("plan_path", metavar="PLAN", shell_complete=_files)
@click.option(
    "--api-url",
    metavar="URL",
    help="The API's base URL (overrides NEXADATA_API_URL and the plan's api.base_url).",
)
@click.option(
    "--token-file",
    metavar="PATH",
    shell_complete=_files,
    help="Read the Bearer token from this file (again whenever the API refuses it) "
    "instead of the plan's api.oauth client or api.token_env.",
)
@click.option(
    "--token-command",
    metavar="CMD",
    help="Get the token from this command's output, again whenever it must be "
    "refreshed (env NEXADATA_TOKEN_COMMAND).",
)
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
    shell_complete=_files,
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
    shell_complete=_files,
    help="Write the run report as JSON.",
)
@click.option(
    "--junit",
    "junit_path",
    metavar="FILE",
    shell_complete=_files,
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
@_state_dir_option
@click.option(
    "--resume", is_flag=True, help="Continue the latest run of this plan that did not succeed."
)
@click.option(
    "--retrigger-unknown",
    is_flag=True,
    help="With --resume: trigger again the steps whose earlier trigger got no "
    "answer (their workflow may then run twice).",
)
@click.option(
    "--metrics-dir",
    metavar="DIR",
    envvar="RUNBOOK_METRICS_DIR",
    shell_complete=_dirs,
    help="Write Prometheus textfile metrics of the run there, for node_exporter's textfile "
    "collector (env RUNBOOK_METRICS_DIR).",
)
@_selection_options
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
    from runbook.runner import ApplyOptions, Runner

    options = ApplyOptions(
        plan_path=plan_path,
        state_dir=state_dir,
        resume=resume,
        retrigger_unknown=retrigger_unknown,
        api_url=api_url,
        token_file=token_file,
        token_command=token_command,
        sandbox=use_sandbox,
        token_ttl=_duration_option("--token-ttl", token_ttl),
        new_run=new_run,
        scenario=scenario_path,
        max_parallel=max_parallel,
        report=report_path,
        junit=junit_path,
        quiet=quiet,
        log_format="json" if log_format == "json" else "text",
        metrics_dir=metrics_dir or None,
        selects=selects,
        excludes=excludes,
    )
    with Runner(options, notice=_notice) as runner:
        runner.build()
        run = _execute(runner, options)
    return _conclude(run, options)


def _duration_option(name: str, value: str | None) -> float | None:
    """A duration flag's seconds (``2s``, ``1.5s``, ``1h``); a UsageError if unreadable."""
    if value is None:
        return None
    from runbook.durations import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise UsageError(f"{name}: {exc}") from None


def _notice(level: str, text: str) -> None:
    _stderr().write(f"runbook: {level}: {text}\n")


def _execute(runner: Runner, options: ApplyOptions) -> RunRecord:
    """Run with the renderer the options and the terminal call for, and the signal
    messages on stderr; a second signal ends the process at once."""
    import os

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
    from runbook.render.runlog import delivery_text, signal_message

    out = _stdout()
    renderers = (
        [] if options.quiet else [RUN_RENDERERS[run_renderer_name(options.log_format, out)](out)]
    )

    def on_stderr(event: Event) -> None:
        """Signals, and deliveries that failed (which --quiet does not print, and JSON
        lines carry themselves)."""
        match event:
            case SignalReceived():
                err = _stderr()
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

    try:
        return runner.execute([*renderers, on_stderr], on_second_signal=end_now)
    finally:
        for renderer in renderers:
            renderer.close()


def _conclude(run: RunRecord, options: ApplyOptions) -> int:
    """The summary, the report and JUnit files, and the exit code."""
    from runbook.render import report, runlog

    out = _stdout()
    if not options.quiet or run.state != "succeeded":
        if options.log_format == "json" and options.quiet:
            runlog.JsonLines(out)(_finished(run))
        elif options.log_format != "json":
            hint = None
            resumable = run.exit_code is None or run.auth_failed or bool(run.in_flight())
            if run.state != "succeeded" and resumable and not options.sandbox:
                hint = f"Resume with: {options.resume_command}"
            runlog.write_summary(out, run, resume_hint=hint)
    # after the summary: a file that cannot be written changes neither what the run
    # did nor its exit code, and says so on stderr
    for path, write in ((options.report, report.write_report), (options.junit, report.write_junit)):
        if path:
            try:
                write(path, run)
            except OSError as exc:
                _stderr().write(f"runbook: cannot write {path}: {exc.strerror or exc}\n")
    if run.exit_code is not None:
        return run.exit_code
    return {"succeeded": 0, "interrupted": 130}.get(run.state, 1)


def _finished(run: RunRecord) -> RunFinished:
    from runbook.events import RunFinished

    return RunFinished(run, run.ended_at or run.started_at)


@cli.command()
@click.argument("run_id", type=int, required=False)
@_state_dir_option
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
def status(run_id: int | None, state_dir: str | None, fmt: str) -> int:
    """One run from the journal (default the latest): each step's state, attempts,
    execution ids, times and errors."""
    from runbook.journal import Store
    from runbook.journal import state_dir as resolve
    from runbook.render import journalview

    journal = Store(resolve(state_dir))
    try:
        row = journal.run_row(run_id)
        if row is None:
            raise UsageError(
                f"no run {run_id} in the journal"
                if run_id is not None
                else "no run in the journal yet"
            )
        journalview.write_status(_stdout(), row, journal.load_run(row), fmt)
    finally:
        journal.close()
    return 0


@cli.command()
@click.argument("plan_name", required=False)
@_state_dir_option
@click.option(
    "--limit",
    default=20,
    show_default=True,
    type=click.IntRange(min=1),
    help="How many runs at most.",
)
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
def history(plan_name: str | None, state_dir: str | None, limit: int, fmt: str) -> int:
    """Past runs, newest first: id, plan, state, start and duration."""
    from runbook.journal import Store
    from runbook.journal import state_dir as resolve
    from runbook.render import journalview

    journal = Store(resolve(state_dir))
    try:
        journalview.write_history(_stdout(), journal.runs(plan_name, limit), fmt)
    finally:
        journal.close()
    return 0


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=8321,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on; 0 takes a free one.",
)
@click.option(
    "--scenario",
    "scenario_path",
    metavar="FILE",
    shell_complete=_files,
    help="How workflows behave and which faults to inject (YAML).",
)
@click.option(
    "--token",
    default=SANDBOX_TOKEN,
    show_default=True,
    help="The Bearer token the simulator accepts.",
)
@click.option(
    "--token-ttl",
    metavar="DURATION",
    help="Also serve an OAuth 2.0 token endpoint (/oauth/token) whose access tokens "
    "expire after DURATION (e.g. 2s, 1.5s, 1h); --token keeps working.",
)
@click.option(
    "--client-id",
    metavar="ID",
    help="With --token-ttl: the OAuth client's id.  [default: sandbox-client]",
)
@click.option(
    "--client-secret",
    metavar="SECRET",
    help="With --token-ttl: the OAuth client's secret.  [default: sandbox-secret]",
)
def sandbox(
    host: str,
    port: int,
    scenario_path: str | None,
    token: str,
    token_ttl: str | None,
    client_id: str | None,
    client_secret: str | None,
) -> int:
    """Serve the built-in Nexadata simulator until interrupted (Ctrl-C).

    It answers the API as Nexadata documents it: trigger, poll, 401 without the token,
    404 for unknown workflows and executions. Without --scenario every workflow waits
    200 ms in created, runs 1-3 s (fixed per workflow id) and succeeds. With
    --token-ttl it is an OAuth 2.0 server too: client_credentials and refresh_token
    grants, tokens that expire, refresh tokens rotated, and a reused one revoking
    every token issued from it.
    """
    from runbook.durations import parse_duration
    from runbook.netenv import is_loopback
    from runbook.render.sandboxview import write_banner
    from runbook.sandbox import (
        SANDBOX_CLIENT_ID,
        SANDBOX_CLIENT_SECRET,
        SANDBOX_TOKEN,
        SandboxOAuth,
    )
    from runbook.sandbox.app import create_app
    from runbook.sandbox.scenario import Scenario, load_scenario
    from runbook.sandbox.server import base_url, bind, serve_forever
    from runbook.text import is_token_text

    if not is_token_text(token):
        raise UsageError("--token must be one word of printable ASCII")
    oauth = None
    if token_ttl is None:
        if client_id is not None or client_secret is not None:
            given = "--client-id" if client_id is not None else "--client-secret"
            raise UsageError(f"{given} needs --token-ttl (the OAuth client is off without it)")
    else:
        try:
            ttl = parse_duration(token_ttl)
        except ValueError as exc:
            raise UsageError(f"--token-ttl: {exc}") from None
        if ttl <= 0:
            raise UsageError(f"--token-ttl: {token_ttl!r} is not more than 0 (e.g. 2s, 1h)")
        for flag, value in (("--client-id", client_id), ("--client-secret", client_secret)):
            if value is not None and not is_token_text(value):
                raise UsageError(f"{flag} must be one word of printable ASCII")
        oauth = SandboxOAuth(
            ttl, client_id or SANDBOX_CLIENT_ID, client_secret or SANDBOX_CLIENT_SECRET
        )
    local = is_loopback(host.strip("[]"))
    if not local and token == SANDBOX_TOKEN:
        raise UsageError(
            f"--host {host} serves beyond this machine: choose a token of your own with "
            f"--token (everyone knows the default, {SANDBOX_TOKEN!r})"
        )
    if not local and oauth is not None and oauth.client_secret == SANDBOX_CLIENT_SECRET:
        raise UsageError(
            f"--host {host} serves beyond this machine: choose a client secret of your own "
            f"with --client-secret (everyone knows the default, {SANDBOX_CLIENT_SECRET!r})"
        )
    scenario = load_scenario(scenario_path) if scenario_path else Scenario()
    try:
        sock = bind(host, port)
    except OSError as exc:
        raise UsageError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; "
            "choose another --port (0 takes a free one)"
        ) from None
    url = base_url(sock)
    if not local:
        _stderr().write(
            f"runbook sandbox: warning: listening on {host}, beyond loopback: whoever can "
            "reach this port and has the token can use it (its stats need the token too)\n"
        )
    app = create_app(scenario, token=token, private_stats=not local, oauth=oauth)
    write_banner(_stdout(), url, token, scenario_path, oauth, app.state.sandbox.first_refresh_token)
    serve_forever(app, sock)
    _stdout().write("runbook sandbox: stopped\n")
    return 0


@cli.group()
def export() -> None:
    """Hand a plan over to another scheduler."""


@export.command("airflow")
@click.argument("plan_path", metavar="PLAN", shell_complete=_files)
@click.option(
    "--output",
    "-o",
    "output",
    metavar="FILE",
    shell_complete=_files,
    help="Write the DAG file here (atomically) instead of to stdout.",
)
@click.option(
    "--schedule",
    metavar="CRON",
    help="The DAG's schedule: a cron expression ('0 3 * * *') or a preset (@daily). "
    "Default: none (runs are triggered by hand or by the API).",
)
@_selection_options
def export_airflow(
    plan_path: str,
    output: str | None,
    schedule: str | None,
    selects: tuple[str, ...],
    excludes: tuple[str, ...],
) -> int:
    """Write an Apache Airflow 3 DAG file equivalent to the plan.

    One task per selected step, running runbook.airflow's operator (install
    nexadata-runbook[airflow] where Airflow runs), plus a last task that fails the DAG
    run exactly when apply would exit 1. The token comes from an Airflow connection
    (default nexadata_default, or the plan's airflow.conn_id): the file holds no secret.
    The plan stays the source of truth: export again when it changes. Nothing is sent.
    """
    from runbook.airflow import dagfile
    from runbook.files import write_atomically
    from runbook.plan import load_plan

    cron = dagfile.check_schedule(schedule) if schedule is not None else None
    loaded = load_plan(plan_path)
    selection = loaded.dag.select(selects, excludes)
    command = ["runbook", "export", "airflow", plan_path]
    command += [f"--select={spec}" for spec in selects]
    command += [f"--exclude={spec}" for spec in excludes]
    if cron:
        command.append(f"--schedule={cron!r}" if " " in cron else f"--schedule={cron}")
    if output:
        command += ["-o", output]
    text = dagfile.render(
        loaded,
        selection.steps,
        schedule=cron,
        conn_id=loaded.airflow_conn_id,
        command=command,
    )
    for setting in dagfile.not_exported(loaded):
        _stderr().write(f"runbook: note: not exported: {setting}\n")
    if output is None:
        _stdout().write(text)
        return 0
    try:
        write_atomically(output, text)
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror or exc}") from None
    _stderr().write(
        f"runbook: wrote DAG {loaded.name!r} ({len(selection.steps)} steps) to {output}\n"
    )
    return 0


def _stdout() -> TextIO:
    return sys.stdout


def _stderr() -> TextIO:
    return sys.stderr


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: run the command line and return its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = cli.main(args=args, prog_name="runbook", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        click.echo("runbook: interrupted", err=True)
        return 130
    except InputError as exc:
        from runbook.render import planview

        planview.write_invalid(_stderr(), exc)
        return exc.exit_code
    except RunbookError as exc:
        click.echo(f"runbook: {exc}", err=True)
        return exc.exit_code
    except Exception as exc:
        if "--traceback" in args:
            traceback.print_exc()
        click.echo(
            f"runbook: unexpected error ({type(exc).__name__}); this is a bug in runbook. "
            "Run again with --traceback (runbook --traceback COMMAND ...) to see where.",
            err=True,
        )
        return EXIT_INTERNAL
    return result if isinstance(result, int) else 0
