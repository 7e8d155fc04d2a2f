"""Renderers fed by hand-made run records: the live view of a 200-step plan, the summary."""

from __future__ import annotations

import io

from rich.console import Console

from runbook.events import (
    AttemptRecord,
    RunFinished,
    RunRecord,
    RunStarted,
    StepFinished,
    StepRecord,
)
from runbook.render.live import LiveView
from runbook.render.summary import write_summary


def big_run() -> RunRecord:
    steps = {}
    for index in range(200):
        name = f"step_{index:03d}"
        record = StepRecord(name, 1000 + index, stage=index // 20 + 1)
        if index < 150:
            record.state = "succeeded"
        elif index < 153:
            record.state, record.reason = "failed", f"execution {index} failed"
            record.attempts.append(
                AttemptRecord(1, 0.0, execution_id=index, state="failed", errors=("bad rows",))
            )
        elif index < 165:
            record.state, record.started_at = "running", 100.0
            record.attempts.append(AttemptRecord(1, 100.0, execution_id=index, state="running"))
        steps[name] = record
    return RunRecord(plan="big", run_id=7, max_parallel=12, steps=steps, started_at=100.0)


def test_live_view_of_200_steps_fits_one_screen() -> None:
    run = big_run()
    out = io.StringIO()
    console = Console(file=out, width=100, force_terminal=False)
    view = LiveView(console, clock=lambda: 112.0, max_rows=20)
    view.run = run
    view.recent = [run.steps["step_149"]]
    console.print(view.render())
    text = out.getvalue()
    lines = text.splitlines()
    assert lines[0] == "big  200 steps: 35 pending  12 running  150 succeeded  3 failed  "
    assert "step_150" in text and "step_164" in text  # failed and running are shown
    assert "step_165" in text and "step_169" in text  # then the first pending ones
    assert "step_149" not in text and "step_000" not in text  # successes: only counted
    assert lines[-1] == "... and 30 more pending, 150 more succeeded"
    assert len(lines) == 23  # the header, the table's, 20 rows, the count of the others
    assert "12s" in text  # elapsed of running steps


def test_the_live_view_fills_the_terminals_height_and_finished_steps_go_first() -> None:
    run = big_run()
    out = io.StringIO()
    console = Console(file=out, width=160, height=45, force_terminal=False)
    view = LiveView(console, clock=lambda: 112.0)
    view.run = run
    console.print(view.render())
    lines = out.getvalue().splitlines()
    assert len(lines) == 44  # every row of a 45-row terminal but the cursor's
    assert lines[-1] == "... and 9 more pending, 150 more succeeded"
    small = {
        name: StepRecord(name, index, 1 + index // 2, state=state, upstreams=ups)
        for index, (name, state, ups) in enumerate(
            [
                ("extract", "succeeded", ()),
                ("snapshot", "succeeded", ()),
                ("load", "running", ("extract", "snapshot")),
                ("report", "pending", ("load",)),
                ("audit", "pending", ("extract",)),
            ]
        )
    }
    out = io.StringIO()
    console = Console(file=out, width=160, height=45, force_terminal=False)
    view = LiveView(console, clock=lambda: 112.0)
    view.run = RunRecord(plan="s", run_id=1, max_parallel=1, steps=small, started_at=100.0)
    console.print(view.render())
    text = out.getvalue()
    rows = {line.split()[1]: line for line in text.splitlines()[2:] if line.strip()}
    assert list(rows) == ["load", "report", "audit", "extract", "snapshot"]  # all fit
    assert rows["report"].rstrip().endswith("after load")
    assert rows["audit"].rstrip().endswith("waiting for a slot (max_parallel 1)")


def test_a_retry_wait_counts_down_and_a_failure_shows_the_apis_error() -> None:
    from runbook.events import AttemptTriggering, RetryScheduled

    load = StepRecord("load", 1, 1, state="running", started_at=100.0)
    load.attempts.append(
        AttemptRecord(1, 100.0, execution_id=5, state="failed", errors=("Lock timeout",))
    )
    load.reason = "execution 5 failed"
    gone = StepRecord("export", 2, 1, state="failed", reason="execution 6 failed")
    gone.attempts.append(
        AttemptRecord(1, 100.0, execution_id=6, state="failed", errors=("Quota exceeded",))
    )
    run = RunRecord(
        plan="r", run_id=1, max_parallel=2, steps={"load": load, "export": gone}, started_at=0
    )
    now = [104.0]
    out = io.StringIO()
    console = Console(file=out, width=160, height=20, force_terminal=False)
    view = LiveView(console, clock=lambda: now[0])
    view.run = run
    view(RetryScheduled(load, 5.0, 103.0))
    console.print(view.render())
    line = next(line for line in out.getvalue().splitlines() if "load" in line)
    assert "retry in 4s" in line and "execution 5 failed: Lock timeout" in line
    failed = next(line for line in out.getvalue().splitlines() if "export" in line)
    assert "execution 6 failed: Quota exceeded" in failed
    view(AttemptTriggering(load, load.attempts[0], 108.0))  # the retry has begun
    load.attempts[0].state = "triggering"
    out.truncate(0)
    out.seek(0)
    console.print(view.render())
    line = next(line for line in out.getvalue().splitlines() if "load" in line)
    assert "retry in" not in line and "triggering" in line


def test_live_view_follows_events() -> None:
    run = big_run()
    console = Console(file=io.StringIO(), width=100)
    view = LiveView(console)
    view(RunStarted(run, 0.0))
    assert view.live.is_started
    view(StepFinished(run.steps["step_010"], 1.0))
    assert view.recent == [run.steps["step_010"]]
    view(RunFinished(run, 2.0))
    assert not view.live.is_started


def test_summary_lists_failed_first_with_errors() -> None:
    run = big_run()
    run.ended_at, run.state = 190.0, "failed"
    out = io.StringIO()
    write_summary(out, run, resume_hint="Resume with: runbook apply big.yaml --resume")
    lines = out.getvalue().splitlines()
    assert lines[0] == (
        "Run 7 of big failed in 1m30s: 150 succeeded, 3 failed, 35 pending, 12 running"
    )
    assert lines[1] == ("  FAILED    step_150  workflow 1150  execution 150: execution 150 failed")
    assert lines[2] == "                      error: bad rows"
    assert lines[-1] == "Resume with: runbook apply big.yaml --resume"


def test_live_view_says_why_a_clean_up_step_runs_and_marks_ignored_failures() -> None:
    steps = {
        "load": StepRecord("load", 1, 1, state="failed", reason="execution 1 failed"),
        "export": StepRecord(
            "export", 2, 1, state="failed", reason="execution 2 failed", ignored=True
        ),
        "rollback": StepRecord(
            "rollback",
            3,
            2,
            state="running",
            started_at=100.0,
            run_if="failure",
            why="run_if failure: upstream load failed",
        ),
        "alert": StepRecord(
            "alert", 4, 2, state="skipped", reason="run_if failure: no upstream failed"
        ),
    }
    run = RunRecord(plan="c", run_id=1, max_parallel=4, steps=steps, started_at=100.0)
    out = io.StringIO()
    console = Console(file=out, width=120, force_terminal=False)
    view = LiveView(console, clock=lambda: 103.0)
    view.run = run
    view.recent = [steps["alert"]]
    console.print(view.render())
    text = out.getvalue()
    rollback = next(line for line in text.splitlines() if "rollback" in line)
    assert "running" in rollback and "run_if failure: upstream load failed" in rollback
    assert "failed (ignored)" in next(line for line in text.splitlines() if "export" in line)
    alert = next(line for line in text.splitlines() if "alert" in line)
    assert "run_if failure: no upstream failed" in alert


def test_summary_counts_ignored_failures_apart() -> None:
    steps = {
        "a": StepRecord("a", 1, 1, state="succeeded"),
        "b": StepRecord("b", 2, 1, state="failed", reason="execution 2 failed", ignored=True),
    }
    run = RunRecord(
        plan="p", run_id=3, max_parallel=4, steps=steps, state="succeeded", started_at=0.0
    )
    run.ended_at = 2.0
    out = io.StringIO()
    write_summary(out, run)
    assert out.getvalue() == (
        "Run 3 of p succeeded in 2s: 1 succeeded, 1 failure ignored\n"
        "  IGNORED   b  workflow 2: execution 2 failed\n"
    )


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_run_renderer_is_chosen_by_format_and_terminal() -> None:
    from runbook.render.jsonlines import JsonLines
    from runbook.render.registry import RUN_RENDERERS, run_renderer_name
    from runbook.render.runlog import PlainLines

    assert run_renderer_name("json", Terminal()) == "json"
    assert run_renderer_name("text", Terminal()) == "live"
    assert run_renderer_name("text", io.StringIO()) == "plain"
    assert isinstance(RUN_RENDERERS["json"](io.StringIO()), JsonLines)
    assert isinstance(RUN_RENDERERS["plain"](io.StringIO()), PlainLines)
    live = RUN_RENDERERS["live"](Terminal())
    assert isinstance(live, LiveView)
    live.close()  # never started: nothing to stop, nothing raised


def test_a_signal_is_told_on_stderr_and_as_a_json_line() -> None:
    import json

    from runbook.events import SignalReceived
    from runbook.render.jsonlines import JsonLines
    from runbook.render.runlog import PlainLines
    from runbook.render.wording import signal_message

    def received(first: bool, waiting: int) -> SignalReceived:
        return SignalReceived(
            name="SIGTERM", first=first, triggers_under_way=waiting, grace=30.0, at=0.0
        )

    assert signal_message(received(True, 0)) == (
        "runbook: SIGTERM: stopping (a second SIGTERM exits at once)\n"
    )
    assert signal_message(received(True, 2)) == (
        "runbook: SIGTERM: stopping; waiting for 2 triggers under way to be answered, so "
        "that no execution id is lost (at most 30s) (a second SIGTERM exits at once)\n"
    )
    assert signal_message(received(False, 2)) == "runbook: second SIGTERM: exiting at once\n"
    out = io.StringIO()
    JsonLines(out)(received(True, 1))
    assert json.loads(out.getvalue()) == {
        "time": "1970-01-01T00:00:00Z",
        "event": "signal",
        "signal": "SIGTERM",
        "first": True,
        "triggers_under_way": 1,
    }
    plain = io.StringIO()
    PlainLines(plain)(received(True, 1))  # stderr carries it: no line on stdout
    assert plain.getvalue() == ""


def test_a_notice_about_a_step_names_it_in_json_lines() -> None:
    import json

    from runbook.events import Notice
    from runbook.render.jsonlines import JsonLines

    step = StepRecord("load", 72, 1)
    out = io.StringIO()
    JsonLines(out)(Notice("odd state", 0.0, step))
    assert json.loads(out.getvalue()) == {
        "time": "1970-01-01T00:00:00Z",
        "event": "notice",
        "step": "load",
        "workflow_id": 72,
        "level": "warning",
        "message": "odd state",
    }


def test_live_view_shows_the_eta_until_the_run_is_late() -> None:
    from runbook.events import Forecasted, Notice, RunLate

    run = big_run()
    run.deadline = 90.0
    out = io.StringIO()
    console = Console(file=out, width=140, force_terminal=False)
    view = LiveView(console, clock=lambda: 112.0)
    view.run = run
    view(Notice("nothing to draw", 0.0))  # every other event changes nothing
    view(
        Forecasted(
            run=run,
            p50_end=1_800_000_000.0,
            p90_end=1_800_000_600.0,
            critical_path=("step_000",),
            first=True,
            at_risk=False,
            at=0.0,
        )
    )
    console.print(view.render())
    assert "ETA 08:00:00Z (p90 08:10:00Z)" in out.getvalue().splitlines()[0]
    run.late = True
    view(RunLate(run, 1.0))
    out.truncate(0)
    out.seek(0)
    console.print(view.render())
    header = out.getvalue().splitlines()[0]
    assert "late: past its 1m30s deadline" in header and "ETA" not in header
