"""The simulator in-process: every route, every scenario key, reproducible faults."""

from __future__ import annotations

import asyncio
import email.utils
from pathlib import Path

import httpx
import pytest

from runbook.errors import ScenarioError
from runbook.sandbox.app import OTHER, PIPELINE, POLL, TRIGGER, create_app, iso
from runbook.sandbox.scenario import Faults, Scenario, default_duration, load_scenario
from tests.support.clocks import Clock
from tests.support.paths import DATA

AUTH = {"Authorization": "Bearer sandbox"}
WALL = 1_800_000_000.0


def make(scenario: Scenario | None = None, clock: Clock | None = None):
    clock = clock or Clock()
    app = create_app(scenario, clock=clock, wall=lambda: WALL)
    return app, clock


def call(app, *requests: tuple[str, str, dict]) -> list[httpx.Response]:
    async def main():
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://sandbox"
        ) as http:
            return [
                await http.request(method, path, headers=headers)
                for method, path, headers in requests
            ]

    return asyncio.run(main())


def trigger(app, workflow_id: int, headers: dict = AUTH) -> httpx.Response:
    return call(app, ("POST", f"/api/v1/workflows/{workflow_id}/execute", headers))[0]


def poll(app, execution_id: int, headers: dict = AUTH) -> httpx.Response:
    return call(app, ("GET", f"/api/v1/workflows/executions/{execution_id}", headers))[0]


def test_default_behaviour_by_elapsed_time() -> None:
    app, clock = make()
    created = trigger(app, 29)
    assert created.status_code == 200
    assert created.json() == {
        "id": 1,
        "workflow_id": 29,
        "state": "created",
        "start_at": None,
        "end_at": None,
        "errors": [],
        "warnings": [],
    }
    duration = default_duration(29)
    assert 1.0 <= duration < 3.0 and default_duration(29) == duration
    clock.now += 0.19
    assert poll(app, 1).json()["state"] == "created"
    clock.now += 0.02
    running = poll(app, 1).json()
    assert running["state"] == "running" and running["start_at"] == iso(WALL + 0.2)
    clock.now += duration
    done = poll(app, 1).json()
    assert done["state"] == "succeeded"
    assert (done["start_at"], done["end_at"]) == (iso(WALL + 0.2), iso(WALL + 0.2 + duration))
    assert done["end_at"].endswith("Z") and "T" in done["end_at"]


def test_default_durations_spread_over_one_to_three_seconds() -> None:
    durations = {default_duration(n) for n in range(1, 200)}
    assert min(durations) >= 1.0 and max(durations) < 3.01
    assert len(durations) > 150


def test_auth_401_on_every_api_route() -> None:
    app, _ = make()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "sandbox"}):
        assert trigger(app, 1, headers).status_code == 401
        assert poll(app, 1, headers).status_code == 401
    assert trigger(app, 1, {}).json() == {"error": "unauthorized: missing or invalid Bearer token"}
    assert app.state.sandbox.stats()["executions_total"] == 0


def test_404s_and_the_deprecated_pipeline_endpoint() -> None:
    app, _ = make(Scenario(workflows={99: {"exists": False}}))
    assert trigger(app, 99).status_code == 404
    assert trigger(app, 0).status_code == 404
    assert poll(app, 5).status_code == 404
    pipeline, other, wrong_method = call(
        app,
        ("POST", "/api/v1/pipelines/3/execute", AUTH),
        ("GET", "/api/v2/x", AUTH),
        ("GET", "/api/v1/workflows/3/execute", AUTH),
    )
    assert pipeline.status_code == 404
    assert "deprecated" in pipeline.json()["error"]
    assert other.status_code == 404 and wrong_method.status_code == 405
    assert wrong_method.headers["allow"] == "POST"  # RFC 9110: a 405 names what is allowed
    assert wrong_method.json() == {"error": "method not allowed"}
    assert app.state.sandbox.stats()["requests"] == {
        OTHER: {"404": 1, "405": 1},
        PIPELINE: {"404": 1},
        POLL: {"404": 1},
        TRIGGER: {"404": 2},
    }


def test_scenario_behaviours() -> None:
    scenario = load_scenario(DATA / "scenarios" / "every_key.yaml")
    scenario = Scenario(default=scenario.default, workflows=scenario.workflows)  # no faults
    app, clock = make(scenario)
    ids = {wf: trigger(app, wf).json()["id"] for wf in (42, 57, 77, 101, 5)}
    second_57 = trigger(app, 57).json()["id"]
    clock.now += 0.3
    assert poll(app, ids[101]).json()["state"] == "paused"
    assert poll(app, ids[42]).json()["state"] == "running"
    clock.now += 10_000
    states = {wf: poll(app, ident).json() for wf, ident in ids.items()}
    assert states[42]["state"] == "failed"
    assert states[42]["errors"] == ["Row count mismatch in orders"]
    assert states[57]["state"] == "failed"
    assert states[57]["errors"] == ["Simulated failure 1 of 1 (fail_first)"]
    assert poll(app, second_57).json()["state"] == "succeeded"
    assert states[77]["state"] == "running" and states[77]["end_at"] is None
    assert states[101]["state"] == "succeeded"
    assert states[101]["warnings"] == [{"code": "W1", "message": "slow source"}]
    assert states[5]["state"] == "succeeded"
    assert app.state.sandbox.stats()["executions"] == {"101": 1, "42": 1, "5": 1, "57": 2, "77": 1}


def test_failed_outcome_without_errors_gets_one() -> None:
    app, clock = make(Scenario(default={"outcome": "failed", "duration": 1.0}))
    trigger(app, 3)
    clock.now += 2
    assert poll(app, 1).json()["errors"] == ["Workflow failed (simulated by the runbook sandbox)"]


def statuses(scenario: Scenario, count: int = 60) -> list[int]:
    app, _ = make(scenario)
    trigger_status = [trigger(app, 7).status_code for _ in range(count)]
    return trigger_status + [poll(app, 1).status_code for _ in range(count)]


def test_error_rate_is_reproducible_with_a_seed_and_respects_errors_on() -> None:
    scenario = Scenario(seed=3, faults=Faults(error_rate=0.3))
    first, second = statuses(scenario), statuses(scenario)
    assert first == second
    assert 5 < first.count(500) < 60
    other_seed = statuses(Scenario(seed=4, faults=Faults(error_rate=0.3)))
    assert other_seed != first
    poll_only = statuses(
        Scenario(seed=3, faults=Faults(error_rate=0.3, errors_on=frozenset({"poll"})))
    )
    assert 500 not in poll_only[:60] and 500 in poll_only[60:]


def test_a_500_trigger_creates_nothing_but_a_lost_answer_does() -> None:
    app, _ = make(Scenario(seed=1, faults=Faults(error_rate=1.0)))
    assert trigger(app, 7).status_code == 500
    assert app.state.sandbox.stats()["executions_total"] == 0
    app, _ = make(Scenario(seed=1, faults=Faults(lost_answer_rate=1.0)))
    lost = trigger(app, 7)
    assert lost.status_code == 500 and "lost answer" in lost.json()["error"]
    assert app.state.sandbox.stats()["executions"] == {"7": 1}


@pytest.mark.parametrize("form", ["seconds", "date"])
def test_rate_limit_answers_429_with_retry_after(form: str) -> None:
    app, clock = make(Scenario(faults=Faults(rate_limit=2, retry_after=form)))
    answers = [trigger(app, 1) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    header = answers[2].headers["retry-after"]
    if form == "seconds":
        assert header == "1"
    else:
        assert email.utils.parsedate_to_datetime(header).timestamp() == WALL + 1
    clock.now += 0.5  # one request's worth of budget back
    assert trigger(app, 1).status_code == 200
    assert trigger(app, 1).status_code == 429


def test_unavailable_rate_answers_503_with_retry_after() -> None:
    app, _ = make(Scenario(seed=2, faults=Faults(unavailable_rate=1.0)))
    answer = trigger(app, 1)
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1"


def test_latency_delays_every_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    slept = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr("runbook.sandbox.app.asyncio.sleep", fake_sleep)
    app, _ = make(Scenario(faults=Faults(latency=0.02)))
    trigger(app, 1)
    poll(app, 1)
    poll(app, 1, {})
    assert slept == [0.02, 0.02, 0.02]


def test_stats_counts_peak_and_last_request() -> None:
    app, clock = make(Scenario(default={"queue": 0, "duration": 10.0}))
    stats = app.state.sandbox.stats()
    assert stats["last_request_at"] is None and stats["peak_in_flight"] == 0
    for _ in range(3):
        trigger(app, 1)
    clock.now += 11
    trigger(app, 2)
    poll(app, 4)
    stats = call(app, ("GET", "/__sandbox/stats", {}))[0].json()
    assert stats["peak_in_flight"] == 3
    assert stats["requests_total"] == 5 and stats["executions_total"] == 4
    assert stats["last_request_at"] == iso(WALL)


def test_the_peak_can_leave_out_workflows() -> None:
    app, clock = make(Scenario(default={"queue": 0, "duration": 10.0}))
    trigger(app, 1)
    trigger(app, 2)
    clock.now += 5
    trigger(app, 2)
    state = app.state.sandbox
    assert state.peak_in_flight() == 3
    assert state.peak_in_flight(leaving_out={1}) == 2
    assert state.peak_in_flight(leaving_out={1, 2}) == 0


def test_every_key_scenario_loads() -> None:
    scenario = load_scenario(DATA / "scenarios" / "every_key.yaml")
    assert scenario.seed == 1
    assert scenario.faults == Faults(
        error_rate=0.05,
        errors_on=frozenset({"poll"}),
        unavailable_rate=0.01,
        lost_answer_rate=0.02,
        rate_limit=50,
        retry_after="date",
        latency=0.02,
    )
    assert scenario.behaviour(42).duration == 3.0 and scenario.behaviour(42).queue == 0.2
    assert scenario.behaviour(77).duration is None
    assert scenario.behaviour(99).exists is False
    assert scenario.behaviour(5).duration == 1.0  # default.duration given
    assert Scenario().behaviour(5).duration == default_duration(5)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("seed: x\n", ["1:7: seed: expected an integer, got the string 'x'"]),
        (
            "default: {queue: soon}\n",
            [
                "1:18: default.queue: 'soon' must be a duration: a number of "
                "seconds or <number><unit> groups with units ms, s, m, h, d "
                "(e.g. 90s, 1h30m)"
            ],
        ),
        (
            "workflows:\n  42: {duration: always}\n",
            ["2:18: workflows.42.duration: 'always' must be a duration (e.g. 3s, 1m) or forever"],
        ),
        (
            "workflows:\n  abc: {}\n  0: {}\n",
            [
                "2:3: workflows: 'abc' is not a workflow id (an integer of 1 or more)",
                "3:3: workflows: 0 is not a workflow id (an integer of 1 or more)",
            ],
        ),
        (
            "faults: {error_rate: 1.5, rate_limt: 3}\n",
            [
                "1:22: faults.error_rate: 1.5 is greater than the maximum, 1",
                "1:27: faults: unknown key 'rate_limt'; did you mean 'rate_limit'?",
            ],
        ),
        ("faults: {latency: .inf}\n", ["1:19: faults.latency: inf is not a finite duration"]),
        (
            "workflows:\n  5: {outcome: succeded}\n  5: {}\n",
            [
                "2:16: workflows.5.outcome: 'succeded' is not one of 'succeeded', 'failed'; "
                "did you mean 'succeeded'?",
                "3:3: duplicate key 5 (first given at line 2)",
            ],
        ),
        (
            "default: [1\n",
            [
                "2:1: YAML syntax error: did not find expected ',' or ']' "
                "(while parsing a flow sequence at line 1)"
            ],
        ),
    ],
)
def test_invalid_scenarios(tmp_path: Path, text: str, expected: list[str]) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert [f"{p.line}:{p.column}: {p.message}" for p in caught.value.problems] == expected
    assert caught.value.exit_code == 2


def test_empty_scenario_is_the_default(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing\n")
    assert load_scenario(path) == Scenario()
    with pytest.raises(ScenarioError, match="is a directory"):
        load_scenario(tmp_path)


def test_the_execution_that_succeeds_after_fail_first_carries_no_error() -> None:
    app, clock = make(Scenario(workflows={3: {"fail_first": 1, "errors": ["Lock timeout"]}}))
    first, second = (trigger(app, 3).json()["id"] for _ in range(2))
    clock.now += 10_000
    failed, succeeded = poll(app, first).json(), poll(app, second).json()
    assert (failed["state"], failed["errors"]) == ("failed", ["Lock timeout"])
    assert (succeeded["state"], succeeded["errors"]) == ("succeeded", [])
