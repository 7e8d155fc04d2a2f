"""The forecast against known answers: fixed durations give the exact makespan and
critical path (through a max_parallel wait too), a seeded journal the same forecast
twice, an outlier moves the p90 and not the p50; and the journal's history as the
forecast reads it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runbook.events import AttemptRecord, RunRecord, StepRecord
from runbook.forecast import forecast, percentile
from runbook.journal import JournalSink, Store
from runbook.plan import load_plan

# polls every 1 ms, growing with the running time: a step is seen to end at
# Step.noticed(its time), which the known answers below use too
FAST = "defaults: {poll_interval: 1ms, max_poll_interval: 1ms}\n"


def plan_of(tmp_path: Path, body: str, max_parallel: int = 4):
    path = tmp_path / "p.yaml"
    path.write_text(f"version: 1\nname: p\nmax_parallel: {max_parallel}\n{FAST}workflows:\n{body}")
    return load_plan(path)


def seen(plan, name: str, took: float) -> float:
    return plan.steps[name].noticed(took)


def test_fixed_durations_give_the_exact_makespan_and_critical_path(tmp_path: Path) -> None:
    plan = plan_of(
        tmp_path,
        "  a: {workflow_id: 1}\n  b: {workflow_id: 2}\n"
        "  c: {workflow_id: 3, depends_on: [a, b]}\n  d: {workflow_id: 4, depends_on: a}\n",
    )
    history = {1: [10.0], 2: [20.0], 3: [5.0], 4: [30.0]}
    result = forecast(plan, history)
    a, b, c, d = (seen(plan, n, t) for n, t in zip("abcd", (10, 20, 5, 30), strict=True))
    assert result.p50 == result.p90 == pytest.approx(max(b + c, a + d))
    assert result.critical_path == ("a", "d")  # 10 + 30 beats 20 + 5
    steps = result.steps
    assert (steps["c"].start, steps["c"].end) == (pytest.approx(b), pytest.approx(b + c))
    assert [name for name, s in steps.items() if s.critical] == ["a", "d"]
    assert steps["a"].history == 1 and steps["a"].source == "history"


def test_a_path_runs_through_a_max_parallel_wait(tmp_path: Path) -> None:
    plan = plan_of(
        tmp_path,
        "  a: {workflow_id: 1}\n  b: {workflow_id: 2}\n  c: {workflow_id: 3}\n"
        "  e: {workflow_id: 5, depends_on: c}\n",
        max_parallel=2,
    )
    result = forecast(plan, {1: [10.0], 2: [20.0], 3: [30.0], 5: [1.0]})
    # a and b start; c waits for a's slot: the path goes a -> c -> e, with no edge a -> c
    assert result.critical_path == ("a", "c", "e")
    assert result.steps["c"].start == pytest.approx(seen(plan, "a", 10))
    expected = seen(plan, "a", 10) + seen(plan, "c", 30) + seen(plan, "e", 1)
    assert result.p50 == pytest.approx(expected)


def test_estimates_stand_in_for_history_and_what_has_neither_is_listed(tmp_path: Path) -> None:
    plan = plan_of(
        tmp_path,
        "  a: {workflow_id: 1, estimate: 1m}\n  b: {workflow_id: 2, depends_on: a}\n"
        "  undo: {workflow_id: 3, depends_on: a, run_if: failure}\n",
    )
    result = forecast(plan, {9: [5.0]})  # another plan's workflow: no help here
    assert result.steps["a"].source == "estimate" and result.steps["a"].history == 0
    assert result.without_history == ("b",)  # undo would not run: it is not counted
    assert result.steps["undo"].start is None
    assert result.p50 == pytest.approx(seen(plan, "a", 60))
    assert forecast(plan_of(tmp_path, "  x: {workflow_id: 1}\n"), {}).has_history is False


def test_a_mapping_counts_only_where_it_holds_when_every_step_succeeds(tmp_path: Path) -> None:
    plan = plan_of(
        tmp_path,
        "  a: {workflow_id: 1}\n"
        "  rollback: {workflow_id: 2, depends_on: a, run_if: {a: failed}}\n"
        "  after: {workflow_id: 3, depends_on: rollback}\n"
        "  confirm: {workflow_id: 4, depends_on: a, run_if: {a: [succeeded, skipped]}}\n",
    )
    result = forecast(plan, {1: [10.0], 2: [100.0], 3: [1.0], 4: [5.0]})
    assert result.steps["rollback"].start is None  # not on the all-succeed path
    # a skipped rollback passed: what waits for it runs, right after a
    assert result.steps["after"].start == pytest.approx(seen(plan, "a", 10))
    assert result.critical_path == ("a", "confirm")
    assert result.p50 == pytest.approx(seen(plan, "a", 10) + seen(plan, "confirm", 5))


def test_a_seeded_forecast_is_the_same_twice_and_an_outlier_moves_only_the_p90(
    tmp_path: Path,
) -> None:
    plan = plan_of(tmp_path, "  a: {workflow_id: 1}\n  b: {workflow_id: 2, depends_on: a}\n")
    history = {1: [60.0] * 29 + [6000.0], 2: [30.0, 31.0, 29.0]}
    first, again = forecast(plan, history), forecast(plan, history)
    assert first == again
    assert first.steps["a"].p50 == pytest.approx(seen(plan, "a", 60))
    assert first.steps["a"].p90 == pytest.approx(seen(plan, "a", 60))  # 1 in 30 is no p90
    runs = forecast(plan, {1: [60.0] * 8 + [6000.0] * 2, 2: [30.0]})
    assert runs.p50 < 200 < 6000 < runs.p90  # the outlier shows in the p90 only


def test_percentiles_are_nearest_rank() -> None:
    assert percentile([], 0.5) == 0
    assert percentile([3, 1, 2], 0.5) == 2
    assert percentile(list(range(1, 11)), 0.9) == 9
    assert percentile([5], 0.9) == 5


def recorded(store: Store, records: list[tuple[str, int, float, float, dict | None]]) -> None:
    """One run whose steps each had one succeeded attempt: (name, workflow id,
    triggered, ended, record)."""
    import asyncio

    from runbook.events import AttemptFinished, AttemptTriggering

    steps = {name: StepRecord(name, wid, 1) for name, wid, *_ in records}
    run = RunRecord(plan="other", run_id=None, max_parallel=4, steps=steps)
    run.run_id = store.create_run(
        run, plan_path="o.yaml", plan_sha256="", options={}, started_at=0.0
    )
    sink = JournalSink(store, run.run_id)

    async def main() -> None:
        for name, _, triggered, ended, record in records:
            attempt = AttemptRecord(1, triggered, execution_id=1, state="succeeded")
            attempt.record, attempt.ended_at = record, ended
            await sink(AttemptTriggering(steps[name], attempt, 0))
            sink(AttemptFinished(steps[name], attempt, "succeeded", 0))
        await asyncio.sleep(0)

    asyncio.run(main())
    sink.close()


T = "1970-01-01T00:0"


def test_the_history_is_per_workflow_from_the_apis_times_or_runbooks(tmp_path: Path) -> None:
    store = Store(tmp_path)
    recorded(
        store,
        [
            # queued 2 s, ran 10 s: 12 s from the trigger
            ("a", 1, 100.0, 115.0, {"start_at": T + "1:42Z", "end_at": T + "1:52Z"}),
            # no timestamps the API gave: runbook's own trigger-to-end, 7 s
            ("b", 2, 100.0, 107.0, {"start_at": "soon", "end_at": None}),
            ("c", 3, 100.0, 104.0, None),
            # clock skew: started before it was triggered: the wait counts as 0
            ("d", 4, 100.0, 120.0, {"start_at": T + "1:35Z", "end_at": T + "1:45Z"}),
        ],
    )  # fmt: skip
    assert store.workflow_history([1, 2, 3, 4, 9]) == {1: [12.0], 2: [7.0], 3: [4.0], 4: [10.0]}
    assert store.workflow_history([2]) == {2: [7.0]}  # only the workflows asked for
    store.db.execute("UPDATE attempts SET record = '{not json' WHERE step = 'a'")
    assert store.workflow_history([1])[1] == [15.0]  # a damaged record: runbook's own time
    store.close()


def test_plan_forecast_through_the_cli(cli, tmp_path: Path) -> None:
    plan = tmp_path / "p.yaml"
    plan.write_text(
        "version: 1\nname: p\nworkflows:\n  a: {workflow_id: 1, estimate: 90s}\n"
        "  b: {workflow_id: 2, depends_on: a}\n"
    )
    state = tmp_path / "state"
    empty = cli("plan", str(plan), "--forecast", "--state-dir", str(state))
    seen_a = load_plan(plan).steps["a"].noticed(90)  # polled every 5 s, then a tenth
    assert 90 < seen_a < 95
    assert empty.code == 0
    assert "Forecast: p50 1m30s, p90 1m30s (60 simulated runs); critical path: a -> b" in empty.out
    assert "Without history or estimate (counted as 0s): b" in empty.out
    assert not state.exists()  # nothing created to find out there is no history
    document = json.loads(
        cli("plan", str(plan), "--forecast", "--format", "json", "--state-dir", str(state)).out
    )
    assert document["forecast"] == {
        "p50_s": seen_a,
        "p90_s": seen_a,
        "samples": 60,  # one estimate a step: settled at the first look
        "critical_path": ["a", "b"],
        "without_history": ["b"],
    }
    (a,), (b,) = document["stages"]
    assert (a["expected_start_s"], a["expected_end_s"], a["critical"]) == (0.0, seen_a, True)
    assert (b["history"], b["p50_s"]) == (0, 0.0)
    bare = tmp_path / "bare.yaml"
    bare.write_text("version: 1\nworkflows:\n  x: {workflow_id: 1}\n")
    nothing = cli("plan", str(bare), "--forecast", "--state-dir", str(state))
    assert nothing.code == 0 and "Forecast: no history yet in the journal" in nothing.out
    (state / "journal.sqlite3").parent.mkdir()
    (state / "journal.sqlite3").write_bytes(b"not a database" * 100)
    broken = cli("plan", str(plan), "--forecast", "--state-dir", str(state))
    assert broken.code == 5 and "cannot be opened" in broken.err


def test_graph_forecast_draws_the_critical_path(cli, tmp_path: Path) -> None:
    plan = tmp_path / "p.yaml"
    plan.write_text(
        "version: 1\nname: p\nmax_parallel: 1\nworkflows:\n  a: {workflow_id: 1, estimate: 9s}\n"
        "  b: {workflow_id: 2, estimate: 1s}\n  c: {workflow_id: 3, depends_on: b}\n"
    )
    state = str(tmp_path / "state")
    dot = cli("graph", str(plan), "--forecast", "--state-dir", state).out
    assert '"a" [label="a\\nworkflow 1", color=red, penwidth=2];' in dot
    assert '"b" -> "c" [color=red, penwidth=2];' in dot
    assert '"a" -> "b" [style=dotted, color=red, penwidth=2, label="slot"];' in dot
    mermaid = cli("graph", str(plan), "--forecast", "--format", "mermaid", "--state-dir", state)
    assert "  class a,b,c critical\n" in mermaid.out
    assert "  linkStyle 0,1 stroke:#d00,stroke-width:3px\n" in mermaid.out
    plain = cli("graph", str(plan)).out
    assert "red" not in plain and "critical" not in plain


def test_the_eta_is_told_at_the_start_recomputed_as_steps_end_and_at_risk_once(
    tmp_path: Path,
) -> None:
    from runbook.eta import Eta
    from runbook.events import (
        AttemptTriggered,
        AttemptTriggering,
        Forecasted,
        RunStarted,
        StepFinished,
    )

    plan = plan_of(
        tmp_path,
        "  a: {workflow_id: 1}\n  b: {workflow_id: 2, depends_on: a}\n",
    )
    steps = {"a": StepRecord("a", 1, 1), "b": StepRecord("b", 2, 2)}
    run = RunRecord(plan="p", run_id=1, max_parallel=4, steps=steps, deadline=25.0)
    now = [1000.0]
    told: list = []
    eta = Eta(
        plan,
        {1: [10.0], 2: [20.0]},
        steps=steps,
        max_parallel=4,
        tell=told.append,
        wall=lambda: now[0],
        clock=lambda: now[0],
    )
    run.started_at = now[0]
    eta(RunStarted(run, now[0]))
    # the forecast waits for the first triggers to leave and be answered
    first = AttemptRecord(1, now[0])
    eta(AttemptTriggering(steps["a"], first, now[0]))
    assert told == []
    now[0] += 0.2
    eta(AttemptTriggered(steps["a"], first, now[0]))
    (start,) = told
    assert isinstance(start, Forecasted) and start.first
    a, b = seen(plan, "a", 10), seen(plan, "b", 20)
    assert start.at == 1000 and start.p50_end == pytest.approx(1000 + a + b)  # as of the start
    assert start.at_risk  # p90 end 1030 passes the deadline at 1025
    now[0] += 0.5
    steps["a"].state = "succeeded"
    eta(StepFinished(steps["a"], now[0]))
    assert len(told) == 1  # within a second of the last: not recomputed
    now[0] += 10
    steps["b"].state, steps["b"].started_at = "running", now[0] - 50  # retried since:
    steps["b"].attempts.append(AttemptRecord(2, now[0] - 5))  # its attempt runs for 5 s
    eta(StepFinished(steps["a"], now[0]))
    recomputed = told[-1]
    assert not recomputed.first and not recomputed.at_risk  # at_risk is told once
    assert recomputed.p50_end == pytest.approx(now[0] + b - 5)  # b has run 5 s already


def test_a_forecast_of_what_remains_skips_what_ended_and_counts_what_runs(
    tmp_path: Path,
) -> None:
    plan = plan_of(
        tmp_path,
        "  a: {workflow_id: 1}\n  b: {workflow_id: 2, depends_on: a}\n"
        "  c: {workflow_id: 3, depends_on: b}\n  d: {workflow_id: 4}\n",
    )
    history = {1: [10.0], 2: [10.0], 3: [10.0], 4: [100.0]}
    # a resume's kept steps a and b, with d under way for 60 s: c, then d's remaining
    result = forecast(plan, history, done=["a", "b"], running={"d": 60.0})
    assert result.steps["a"].start is None and result.steps["b"].start is None
    assert result.steps["c"].start == 0.0
    assert result.p50 == pytest.approx(max(seen(plan, "c", 10), seen(plan, "d", 100) - 60))


def test_a_p50_beyond_the_p50_schedule_is_explained(tmp_path: Path) -> None:
    """Four parallel steps that take 10 s or 100 s: each step's p50 schedule ends early,
    the run's p50 waits for the slowest; the text says why the two differ, and says
    nothing where they agree."""
    import io

    from runbook.render.planview import _forecast_text

    body = "".join(f"  s{n}: {{workflow_id: {n}}}\n" for n in range(1, 5))
    plan = plan_of(tmp_path, body)
    varied = forecast(plan, {n: [10.0, 10.0, 100.0] for n in range(1, 5)})
    out = io.StringIO()
    _forecast_text(out, varied)
    assert max(s.end for s in varied.steps.values() if s.end is not None) < varied.p50
    assert "is the middle of whole simulated runs" in out.getvalue()
    steady = forecast(plan, {n: [10.0] for n in range(1, 5)})
    out = io.StringIO()
    _forecast_text(out, steady)
    assert "simulated runs, in which" not in out.getvalue()


def test_the_first_forecast_waits_until_every_first_trigger_is_answered(tmp_path: Path) -> None:
    """Its work never delays a trigger, nor the journaling of an execution id: it is
    made once the triggers sent at the start have all been answered (or given up)."""
    from runbook.eta import Eta
    from runbook.events import AttemptFinished, AttemptTriggered, AttemptTriggering, RunStarted

    plan = plan_of(tmp_path, "  a: {workflow_id: 1}\n  b: {workflow_id: 2}\n")
    steps = {"a": StepRecord("a", 1, 1), "b": StepRecord("b", 2, 1)}
    run = RunRecord(plan="p", run_id=1, max_parallel=4, steps=steps)
    run.started_at = 1000.0
    told: list = []
    eta = Eta(plan, {1: [10.0], 2: [5.0]}, steps=steps, max_parallel=4, tell=told.append)
    eta(RunStarted(run, 1000.0))
    a, b = AttemptRecord(1, 1000.0), AttemptRecord(1, 1000.0)
    eta(AttemptTriggering(steps["a"], a, 1000.0))
    eta(AttemptTriggering(steps["b"], b, 1000.0))
    eta(AttemptTriggered(steps["a"], a, 1000.1))
    assert told == []  # b's trigger is still unanswered
    eta(AttemptFinished(steps["b"], b, "error", 1000.2))  # refused: answered all the same
    (first,) = told
    assert first.first and first.at == 1000.0
    assert first.p50_end == pytest.approx(1000.0 + seen(plan, "a", 10))
    assert run.forecast is not None and run.forecast.p50_end == first.p50_end
