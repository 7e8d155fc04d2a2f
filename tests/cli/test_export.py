"""``runbook export airflow`` without Airflow: the file's shape, its formatting, what it
imports, the DAG it builds (run against stand-ins for Airflow's classes), and every
bad input. tests/airflow runs the same files on a real Airflow."""

from __future__ import annotations

import ast
import os
import stat
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import click
import pytest

import runbook.airflow
from runbook import conditions
from runbook.airflow import rules
from runbook.cli.export import command_line
from runbook.plan import load_plan
from tests.support.entry import run_entry
from tests.support.night import TOKEN
from tests.support.paths import ROOT

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
CLEANUP = str(ROOT / "examples" / "cleanup.yaml")
NIGHTLY = str(ROOT / "examples" / "nightly.yaml")

AWKWARD = """\
version: 1
name: 'odd "plan" \\ name'
description: "Quotes \\" and ' and a backslash \\\\ and é and a tab\\t"
api: {token_env: AWKWARD_TOKEN}
airflow: {dag_id: odd.plan_1}
max_parallel: 2
finally: [tidy.up]
workflows:
  a-b.c: {workflow_id: 1, description: "it's \\"quoted\\""}
  _under: {workflow_id: 2, depends_on: a-b.c, on_failure: ignore, timeout: 1500ms}
  runbook_outcome: {workflow_id: 3, depends_on: _under, retries: 2, retry_delay: 0.25}
  tidy.up: {workflow_id: 4, run_if: failure}
"""


class FakeDag:
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.tasks: list[FakeTask] = []

    def __enter__(self) -> FakeDag:
        FakeDag.current = self
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class FakeTask:
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = {**FakeDag.current.kwargs.get("default_args", {}), **kwargs}
        self.task_id = kwargs["task_id"]
        self.upstream: list[str] = []
        FakeDag.current.tasks.append(self)

    def set_upstream(self, tasks: list[FakeTask]) -> None:
        self.upstream += [task.task_id for task in tasks]


def assert_formatted(text: str) -> None:
    """``ruff format`` leaves the DAG file as it is."""
    formatted = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--isolated", "--check", "-"],
        input=text,
        capture_output=True,
        text=True,
    )
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr


def build(text: str, monkeypatch: pytest.MonkeyPatch) -> FakeDag:
    """Run a DAG file with Airflow's DAG and runbook's operators replaced by recorders."""
    sdk = types.ModuleType("airflow.sdk")
    sdk.DAG = FakeDag  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "airflow", types.ModuleType("airflow"))
    monkeypatch.setitem(sys.modules, "airflow.sdk", sdk)
    # into the module's namespace: its __getattr__ would import the real operators
    monkeypatch.setitem(vars(runbook.airflow), "NexadataWorkflowOperator", FakeTask)
    monkeypatch.setitem(vars(runbook.airflow), "PlanOutcomeOperator", FakeTask)
    exec(compile(text, "dag.py", "exec"), {"__name__": "dag"})
    return FakeDag.current


def test_a_run_if_mapping_is_written_as_the_plan_writes_it(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = tmp_path / "m.yaml"
    plan.write_text(
        "version: 1\nname: m\nfinally: [unlock]\nworkflows:\n"
        "  lock: {workflow_id: 1}\n  load: {workflow_id: 2, depends_on: lock}\n"
        "  notify: {workflow_id: 3, depends_on: [lock, load], "
        "run_if: {lock: succeeded, load: [failed, skipped]}}\n"
        "  unlock: {workflow_id: 4, run_if: {lock: passed}}\n"
    )
    text = cli("export", "airflow", str(plan)).out
    assert_formatted(text)
    tasks = {task.task_id: task.kwargs for task in build(text, monkeypatch).tasks[:-1]}
    assert tasks["notify"]["run_if"] == {"lock": "succeeded", "load": ["failed", "skipped"]}
    assert tasks["notify"]["trigger_rule"] == "all_done"
    assert tasks["unlock"]["run_if"] == {"lock": "passed"}
    # the operator reads it back as the plan's own condition
    assert rules.run_if(tasks["notify"]["run_if"]) == load_plan(plan).steps["notify"].run_if


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_exports_to_a_dag_equal_to_the_plan(
    cli, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = cli("export", "airflow", str(path))
    assert result.code == 0, result.err
    plan = load_plan(path)
    dag = build(result.out, monkeypatch)
    assert dag.kwargs["dag_id"] == plan.name
    assert dag.kwargs["schedule"] is None and dag.kwargs["catchup"] is False
    assert dag.kwargs["max_active_runs"] == 1
    assert dag.kwargs["max_active_tasks"] == plan.max_parallel
    assert dag.kwargs["tags"] == ["runbook"]
    assert dag.kwargs.get("description") == plan.description
    steps = {task.task_id: task for task in dag.tasks[:-1]}
    assert list(steps) == list(plan.steps)
    for name, step in plan.steps.items():
        args = steps[name].kwargs
        assert args["workflow_id"] == step.workflow_id
        assert args.get("run_if", "success") == conditions.written(step.run_if)
        assert args.get("on_failure", "stop") == step.on_failure
        assert args["retries"] == step.retries
        assert args["timeout"].total_seconds() == step.timeout
        assert args["poll_interval"].total_seconds() == step.poll_interval
        assert args["max_poll_interval"].total_seconds() == step.max_poll_interval
        if step.retries:
            assert args["retry_delay"].total_seconds() == step.retry_delay
        assert args["conn_id"] == (plan.airflow_conn_id or "nexadata_default")
        assert args["base_url"] == plan.api.base_url
        assert steps[name].upstream == list(plan.upstreams(name, set(plan.steps)))
    outcome = dag.tasks[-1]
    assert outcome.task_id == "runbook_outcome" and outcome.upstream == list(plan.steps)


def test_the_trigger_rules_of_the_clean_up_example(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    dag = build(cli("export", "airflow", CLEANUP).out, monkeypatch)
    rule = {task.task_id: task.kwargs.get("trigger_rule", "all_success") for task in dag.tasks}
    assert rule["load_warehouse"] == "all_success"
    assert rule["restore_snapshot"] == "all_done"  # run_if failure: judged when all ended
    assert rule["release_warehouse_lock"] == "all_done"
    # downstream of an on_failure: ignore step and of a run_if: failure one: all_done
    assert rule["page_on_call"] == "all_done"


def test_the_file_is_formatted_imports_little_and_holds_no_secret(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = tmp_path / "awkward.yaml"
    plan.write_text(AWKWARD)
    monkeypatch.setenv("AWKWARD_TOKEN", TOKEN)
    result = cli("export", "airflow", str(plan), "--schedule", "0 3 * * *")
    assert result.code == 0, result.err
    text = result.out
    assert TOKEN not in text
    assert_formatted(text)
    imported = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
    assert imported == {"datetime", "airflow.sdk", "runbook.airflow"}
    assert text.startswith(f"# Generated by runbook {runbook.__version__} from {plan}\n")
    assert load_plan(plan).sha256 in text.splitlines()[1]
    dag = build(text, monkeypatch)
    assert dag.kwargs["dag_id"] == "odd.plan_1"
    assert dag.kwargs["dag_display_name"] == 'odd "plan" \\ name'
    assert dag.kwargs["description"] == "Quotes \" and ' and a backslash \\ and é and a tab\t"
    assert dag.kwargs["schedule"] == "0 3 * * *"
    names = [task.task_id for task in dag.tasks]
    # a step may be named runbook_outcome: the outcome task takes another name
    assert names == ["a-b.c", "_under", "runbook_outcome", "tidy.up", "runbook_outcome_"]
    assert dag.tasks[0].kwargs["doc_md"] == 'it\'s "quoted"'
    assert dag.tasks[1].kwargs["timeout"].total_seconds() == 1.5
    assert dag.tasks[2].kwargs["retry_delay"].total_seconds() == 0.25


def test_output_file_is_written_whole_and_says_so(cli, tmp_path: Path) -> None:
    out = tmp_path / "dags" / "nightly.py"
    out.parent.mkdir()
    result = cli("export", "airflow", NIGHTLY, "-o", str(out), "-s", "+build_sales_mart")
    assert result.code == 0
    assert result.out == ""
    assert result.err == f"runbook: wrote DAG 'nightly-warehouse' (8 steps) to {out}\n"
    text = out.read_text()
    again = f"#   runbook export airflow {NIGHTLY} --select=+build_sales_mart -o {out}"
    assert text.splitlines()[3] == again
    assert '"refresh_dashboards"' not in text  # not selected
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~_umask()
    assert [p.name for p in out.parent.iterdir()] == ["nightly.py"]  # no temporary left


def test_the_header_spells_again_what_click_parsed(cli) -> None:
    """Every option given, by its long name, in --help's order, the schedule as it was
    checked, quoted for a shell; an option left at its default is not there."""
    argv = ["-x", "refresh_dashboards", "--schedule", " 0  3 * * *"]
    text = cli("export", "airflow", NIGHTLY, *argv).out
    again = (
        f"#   runbook export airflow {NIGHTLY} --schedule='0 3 * * *' --exclude=refresh_dashboards"
    )
    assert text.splitlines()[3] == again


def test_a_command_line_is_spelled_from_the_parsed_parameters() -> None:
    @click.command()
    @click.argument("paths", nargs=-1)
    @click.option("--name", "-n", default="x")
    @click.option("--tag", "-t", multiple=True)
    @click.option("--loud", is_flag=True)
    def toy(**kwargs: object) -> None:
        pass

    ctx = toy.make_context("toy", ["a b", "-t", "1", "--loud", "c", "-t", "it's"])
    spelled = ["toy", "'a b'", "c", "--tag=1", "--tag='it'\"'\"'s'", "--loud"]
    assert command_line(ctx) == spelled
    assert command_line(ctx, tag=None, name="y") == ["toy", "'a b'", "c", "--name=y", "--loud"]
    quiet = toy.make_context("toy", ["-n", "x"])
    assert command_line(quiet) == ["toy", "--name=x"]  # given, though equal to the default


def test_unselected_upstreams_count_as_done(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    dag = build(cli("export", "airflow", NIGHTLY, "-s", "build_sales_mart+").out, monkeypatch)
    steps = {task.task_id: task.upstream for task in dag.tasks}
    assert steps == {
        "build_sales_mart": [],
        "refresh_dashboards": ["build_sales_mart"],
        "runbook_outcome": ["build_sales_mart", "refresh_dashboards"],
    }


def test_settings_airflow_cannot_carry_are_named(cli, tmp_path: Path) -> None:
    plan = tmp_path / "p.yaml"
    plan.write_text(
        "version: 1\nname: p\ndeadline: 1h\nnotify: [{webhook_env: HOOK}]\n"
        "healthchecks: {ping_url_env: PING}\nairflow: {conn_id: nexadata_prod}\n"
        "workflows: {a: {workflow_id: 1}}\n"
    )
    result = cli("export", "airflow", str(plan))
    assert result.code == 0
    assert result.err == (
        "runbook: note: not exported: deadline (use Airflow's deadline alerts)\n"
        "runbook: note: not exported: notify (use Airflow's notifiers or callbacks)\n"
        "runbook: note: not exported: healthchecks (Airflow's scheduler is what to watch)\n"
    )
    assert '"conn_id": "nexadata_prod"' in result.out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--schedule", "every night"], "--schedule 'every night': not a cron expression"),
        (["--schedule", "0 3 * *"], "not a cron expression (5 fields"),
        (["-s", "nope"], "--select 'nope': unknown step 'nope'"),
        (["-o", "/nonexistent/dir/x.py"], "cannot write /nonexistent/dir/x.py: No such file"),
    ],
)
def test_bad_input_is_exit_2_with_nothing_written(cli, argv: list[str], message: str) -> None:
    result = cli("export", "airflow", NIGHTLY, *argv)
    assert result.code == 2
    assert result.out == ""
    assert message in result.err


def test_a_preset_schedule_and_an_invalid_plan(cli, tmp_path: Path) -> None:
    assert 'schedule="@daily",' in cli("export", "airflow", NIGHTLY, "--schedule", "@daily").out
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nworkflows: {a: {workflow_id: 1, depends_on: a}}\n")
    result = cli("export", "airflow", str(bad))
    assert result.code == 2 and result.out == ""
    assert f"{bad}:2:" in result.err


def test_through_the_real_entry_point(tmp_path: Path) -> None:
    out = tmp_path / "guarded_load.py"
    result = run_entry("export", "airflow", CLEANUP, "--output", str(out))
    assert result.code == 0, result.err
    assert "NexadataWorkflowOperator(" in out.read_text()
    helped = run_entry("export", "airflow", "--help")
    assert helped.code == 0 and "--schedule CRON" in helped.out


def test_the_exporter_needs_no_airflow() -> None:
    code = (
        "import sys, runbook.cli;"
        "runbook.cli.main(['export', 'airflow', sys.argv[1], '-o', sys.argv[2]]);"
        "assert not [m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')]"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, CLEANUP, os.devnull], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
