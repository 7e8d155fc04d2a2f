"""Exported DAGs on a real Apache Airflow 3, against the sandbox, compared with apply.

``airflow dags test`` runs one DAG run in-process, one task at a time, triggers
included; the re-attach test runs a real executor beside an api-server and a
triggerer. Leave these out locally with ``-m 'not airflow'``.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from pathlib import Path

import pytest

from runbook.sandbox import SandboxOAuth
from tests.airflow.conftest import Airflow, Sandbox, sandbox
from tests.support.night import TOKEN
from tests.support.paths import DATA, ROOT
from tests.support.servers import closed_port

pytestmark = [pytest.mark.airflow, pytest.mark.timeout(900)]

EXAMPLES = ROOT / "examples"
SCENARIOS = EXAMPLES / "scenarios"
AS_PLAN = {"success": "succeeded", "failed": "failed", "upstream_failed": "skipped"}


def dags_test(airflow: Airflow, dag_id: str, *options: str) -> str:
    done = airflow("dags", "test", *options, dag_id, timeout=600)
    output = done.stdout + done.stderr
    assert "DagRun Finished" in output, output[-5000:]
    state = airflow.run_state(dag_id)
    assert (done.returncode == 0) == (state == "success"), output[-3000:]
    return output


def test_exported_examples_load_with_no_import_error(airflow) -> None:
    af = airflow("http://127.0.0.1:9/api/v1")
    plans = sorted(EXAMPLES.glob("*.yaml"))
    for plan in plans:
        af.export(plan)
    af.export(DATA / "airflow" / "odd-name.yaml")  # a name that is no DAG id, and hidden text
    # on a fresh database list-import-errors prints nothing, even for a broken file:
    # parse the folder first
    assert af("dags", "reserialize").returncode == 0
    errors = af("dags", "list-import-errors", "-o", "json")
    assert errors.returncode == 0, errors.stdout[-3000:]
    assert _json(errors.stdout) == []
    # and the check can fail: a broken file is listed (Airflow parses only files that
    # mention both "airflow" and "dag")
    broken = af.dags / "broken.py"
    broken.write_text("from airflow.sdk import DAG\nfrom runbook.airflow import NoSuchOperator\n")
    assert af("dags", "reserialize").returncode == 0
    errors = af("dags", "list-import-errors", "-o", "json")
    assert errors.returncode == 1
    assert [Path(e["filepath"]).name for e in _json(errors.stdout)] == ["broken.py"]
    listed = _json(af("dags", "list", "-o", "json").stdout)
    assert sorted(d["dag_id"] for d in listed) == sorted(
        ["every-key", "guarded-load", "minimal", "nightly-warehouse", "sales_eu.nightly"]
    )
    shown = af.query(
        "SELECT dag_display_name, description FROM dag WHERE dag_id = 'sales_eu.nightly'"
    )
    assert shown == [
        ("sales eu/\u202enightly\u2066", 'one\u2028two \u202eevil\u2069 \\N{BULLET} """ end')
    ]
    for path in af.dags.glob("*.py"):
        assert TOKEN not in path.read_text()


def _json(output: str) -> list[dict]:
    """The JSON an airflow command printed after its warnings."""
    return json.loads(output[output.index("\n[") + 1 :] if not output.startswith("[") else output)


def _order_ok(api: Sandbox, plan_path: Path) -> None:
    """Each step's execution was created after every upstream's execution ended."""
    from runbook.plan import load_plan

    plan = load_plan(plan_path)
    runs = {e.workflow_id: e for e in api.state.executions.values()}
    for name, step in plan.steps.items():
        for up in plan.upstreams(name, set(plan.steps)):
            upstream = runs[plan.steps[up].workflow_id]
            assert runs[step.workflow_id].created >= upstream.ends, (name, up)


def test_dags_test_runs_every_workflow_once_in_dependency_order(airflow) -> None:
    plan = EXAMPLES / "nightly.yaml"
    with sandbox() as api:
        af = airflow(api.url)
        af.export(plan)
        output = dags_test(af, "nightly-warehouse")
        assert set(api.executions().values()) == {1}
        assert len(api.executions()) == 11
        _order_ok(api, plan)
    states = af.task_states("nightly-warehouse")
    assert set(states.values()) == {"success"}, states
    assert len(states) == 12  # the steps and the outcome task
    assert "the run succeeded: 11 succeeded" in output
    # the token reaches neither Airflow's database (trigger arguments are stored
    # there) nor a log
    assert TOKEN.encode() not in (af.home / "airflow.db").read_bytes()
    assert TOKEN not in output and TOKEN not in af.logs()


def test_an_oauth_client_in_the_connection_outlives_its_tokens(airflow, tmp_path: Path) -> None:
    """Tokens that live 2 s, steps that run 3 s each: the trigger refreshes them while it
    polls, every workflow runs once; a refresh_token grant is refused with the reason."""
    plan = tmp_path / "oauth.yaml"
    plan.write_text(
        "version: 1\nname: oauth\n"
        "defaults: {poll_interval: 200ms, max_poll_interval: 500ms}\n"
        "workflows:\n"
        "  extract: {workflow_id: 1}\n"
        "  load: {workflow_id: 2, depends_on: extract}\n"
    )
    scenario = tmp_path / "slow.yaml"
    scenario.write_text("default: {queue: 0, duration: 3s}\n")
    with sandbox(scenario, oauth=SandboxOAuth(token_ttl=2.0)) as api:
        connection = {
            "conn_type": "http",
            "host": api.url,
            "login": "sandbox-client",
            "password": "sandbox-secret",
            "extra": {
                "token_url": api.url.removesuffix("/api/v1") + "/oauth/token",
                "grant": "client_credentials",
            },
        }
        af = airflow(api.url, connection)
        af.export(plan)
        output = dags_test(af, "oauth")
        counters = api.state.stats()
        assert api.executions() == {"1": 1, "2": 1}
        assert counters["token_requests"]["client_credentials"] >= 4  # refreshed mid-poll
        assert set(af.task_states("oauth").values()) == {"success"}
        minted = counters["token_requests"]["client_credentials"]

        refused = airflow(
            api.url, {**connection, "extra": {**connection["extra"], "grant": "refresh_token"}}
        )
        refused.export(plan)
        done = refused("dags", "test", "oauth", timeout=600)
        text = done.stdout + done.stderr + refused.logs()
        assert "in Airflow only client_credentials is supported" in text, text[-3000:]
        assert api.executions() == {"1": 1, "2": 1}  # nothing more was triggered
        assert api.state.stats()["token_requests"]["client_credentials"] == minted
    assert "sandbox-secret" not in output + af.logs()


def _apply(cli, plan: Path, scenario: Path, tmp_path: Path) -> tuple[int, dict[str, dict]]:
    report = tmp_path / "report.json"
    state_dir = tmp_path / "state"
    result = cli(
        "apply",
        str(plan),
        "--sandbox",
        "--scenario",
        str(scenario),
        "--report",
        str(report),
        "--state-dir",
        str(state_dir),
    )
    steps = {step["name"]: step for step in json.loads(report.read_text())["steps"]}
    return result.code, steps


@pytest.mark.parametrize(
    ("plan", "scenario"),
    [
        # a failed load, retried once as a new execution (retries: 1), failed again: its
        # success downstream not run, the rollback and the page run, the lock released;
        # the run fails although the clean-up succeeded
        (EXAMPLES / "cleanup.yaml", SCENARIOS / "rollback.yaml"),
        # the snapshot failed: the load never ran, so the rollback's mapping does not
        # hold ({snapshot_warehouse: succeeded, load_warehouse: failed}) and nothing is
        # restored; the page (run_if: failure) still runs
        (EXAMPLES / "cleanup.yaml", SCENARIOS / "snapshot-failed.yaml"),
        # an ignored failure (also retried once) passes: what follows it runs, nothing is
        # rolled back, and the run succeeds
        (EXAMPLES / "cleanup.yaml", SCENARIOS / "ignored-export.yaml"),
        # a trigger whose outcome is unknown fails without retries
        (DATA / "airflow" / "lost-answer.yaml", DATA / "airflow" / "lost-answer-scenario.yaml"),
    ],
    ids=["rollback", "snapshot-failed", "ignored-failure", "unknown-trigger"],
)
def test_the_same_outcomes_as_apply(
    airflow, cli, tmp_path: Path, plan: Path, scenario: Path
) -> None:
    from runbook.plan import load_plan

    code, expected = _apply(cli, plan, scenario, tmp_path)
    dag_id = load_plan(plan).name
    with sandbox(scenario) as api:
        af = airflow(api.url)
        af.export(plan)
        output = dags_test(af, dag_id)
        executions = api.executions()
    states = af.task_states(dag_id)
    outcome = states.pop("runbook_outcome")
    got = {name: AS_PLAN.get(str(state), "skipped") for name, state in states.items()}
    assert got == {
        name: "skipped" if step["state"] == "cancelled" else step["state"]
        for name, step in expected.items()
    }
    # as many executions of each workflow as apply made (retries included)
    assert executions == {
        str(step["workflow_id"]): len(step["attempts"])
        for step in expected.values()
        if step["attempts"]
    }
    # the DAG run fails exactly when apply exits 1
    assert code in (0, 1)
    assert af.run_state(dag_id) == ("failed" if code == 1 else "success")
    assert outcome == ("failed" if code == 1 else "success")
    for name, step in expected.items():
        if step["ignored"]:
            assert states[name] == "failed"
        if step["state"] == "skipped" and (step["reason"] or "").startswith("run_if: "):
            assert step["reason"] in output  # the mapping judged as apply judged it
        if step["state"] == "failed" and "trigger outcome unknown" in (step["reason"] or ""):
            assert af.tries(dag_id, name) == 1  # never retried
            assert "trigger outcome unknown" in output


def _wait(what: str, check, timeout: float = 180.0, every: float = 0.5):
    """Poll ``check`` until it returns something true; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def _state(af: Airflow, task_id: str) -> str | None:
    rows = af.query(
        "SELECT state FROM task_instance WHERE dag_id = 'reattach' AND task_id = ?", task_id
    )
    return rows[0][0] if rows else None


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.load(answer)


def test_a_killed_task_retried_polls_its_execution_and_triggers_no_other(airflow) -> None:
    """A real executor, api-server and triggerer. While `slow`'s execution runs, the
    triggerer polling it is killed (SIGKILL) and the task is cleared, which ends the
    deferred try and starts a new one: the new try must find the execution id in the
    task state store and poll it, never trigger the workflow again."""
    plan = DATA / "airflow" / "reattach.yaml"
    with sandbox(DATA / "airflow" / "reattach-scenario.yaml") as api:
        af = airflow(api.url)
        port = closed_port()
        af.env.update(
            {
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
                "AIRFLOW__API_AUTH__JWT_SECRET": "a-secret-for-this-test-only",
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(closed_port()),
                # a starved CI machine (the suite's workers and two busy loops on 2 cores)
                # answers the workers' Execution API calls late: Airflow's advice under
                # load is a longer timeout; a missed heartbeat or two ends no try either
                "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
                "AIRFLOW__WORKERS__MAX_FAILED_HEARTBEATS": "10",
            }
        )
        af.export(plan)
        assert af("dags", "reserialize").returncode == 0
        af.start("api-server", "--host", "127.0.0.1", "--port", str(port))
        triggerer = af.start("triggerer", "--skip-serve-logs")
        health = f"http://127.0.0.1:{port}/api/v2/monitor/health"
        _wait("the api-server", lambda: _get_ok(health), timeout=120)
        run = af.start("dags", "test", "--use-executor", "reattach")
        _wait(
            "slow's execution to run, its task deferred",
            lambda: _state(af, "slow") == "deferred" and api.executions().get("1") == 1,
        )
        Airflow.kill(triggerer)  # what polled the execution is gone
        # while a cleared task waits for its new try its task counts as neither running
        # nor deferred, so another step may trigger meanwhile (docs/airflow.md says so):
        # the limit is checked on what was triggered before the clear, and on the others
        peak_before_clear = api.state.peak_in_flight()
        cleared = _post(
            f"http://127.0.0.1:{port}/api/v2/dags/reattach/clearTaskInstances",
            {"dry_run": False, "task_ids": ["slow"], "only_failed": False},
        )
        assert [ti["task_id"] for ti in cleared["task_instances"]] == ["slow"]
        af.start("triggerer", "--skip-serve-logs")
        # the DAG run's end, in Airflow's database: `dags test --use-executor` may then
        # linger, shutting its executor down (seen once), which is not what is tested
        _wait("the DAG run to end", lambda: _run_over(af), timeout=300, every=1.0)
        Airflow.kill(run, signal.SIGTERM)
        executions = api.executions()
        peak_of_the_others = api.state.peak_in_flight(leaving_out={1})
    states = af.task_states("reattach")
    assert af.run_state("reattach") == "success", f"{states}\n{af.logs()[-6000:]}"
    assert af.tries("reattach", "slow") == 2  # the clear made a new try
    assert set(states.values()) == {"success"}
    # one execution of every workflow: the retry polled slow's, it did not trigger again
    assert executions == {"1": 1, "2": 1, "11": 1, "12": 1, "13": 1}
    logs = af.logs()
    assert "re-attaching to execution" in logs
    assert peak_before_clear <= 2  # max_parallel, deferred executions included
    assert peak_of_the_others <= 2
    assert TOKEN not in logs


def _run_over(af: Airflow) -> bool:
    rows = af.query("SELECT state FROM dag_run WHERE dag_id = 'reattach'")
    return bool(rows) and rows[0][0] in ("success", "failed")


def _get_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status == 200
    except OSError:
        return False
