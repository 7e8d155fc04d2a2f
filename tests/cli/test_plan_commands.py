"""validate, plan and graph through runbook.cli.main: exit codes and the exact text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.entry import run_entry
from tests.support.paths import DATA, ROOT

MINIMAL = str(ROOT / "examples" / "minimal.yaml")
NIGHTLY = str(ROOT / "examples" / "nightly.yaml")
EVERY_KEY = str(ROOT / "examples" / "every-key.yaml")


def test_validate_ok(cli) -> None:
    result = cli("validate", MINIMAL, NIGHTLY)
    assert result.code == 0
    assert result.out == (
        f"{MINIMAL}: ok (2 workflows, 1 dependency)\n"
        f"{NIGHTLY}: ok (11 workflows, 11 dependencies)\n"
    )
    assert result.err == ""


def test_validate_reports_every_problem_and_a_summary(cli) -> None:
    bad = str(DATA / "plans" / "invalid" / "depends_on_unknown.yaml")
    result = cli("validate", MINIMAL, bad)
    assert result.code == 2
    assert result.out == f"{MINIMAL}: ok (2 workflows, 1 dependency)\n"
    assert result.err == (
        f"{bad}:8:17: workflows.transform.depends_on: unknown step 'extract_order'; "
        "did you mean 'extract_orders'?\n"
        f"{bad}:11:29: workflows.report.depends_on[1]: unknown step 'nowhere'\n"
        f"{bad}: invalid plan (2 problems)\n"
    )


def test_validate_missing_file(cli, tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = cli("validate", str(missing))
    assert result.code == 2
    assert result.err == (
        f"{missing}:1:1: cannot read the file: No such file or directory\n"
        f"{missing}: invalid plan (1 problem)\n"
    )


def test_validate_needs_a_plan(cli) -> None:
    result = cli("validate")
    assert result.code == 2
    assert "Error: Missing argument 'PLAN...'." in result.err


def test_plan_text(cli) -> None:
    result = cli("plan", MINIMAL)
    assert result.code == 0
    assert result.out == (
        "Plan minimal: 2 workflows in 2 stages, max_parallel 4\n"
        "\n"
        "STAGE  STEP    WORKFLOW  RUN_IF   ON_FAILURE  RETRIES  TIMEOUT  DEPENDS_ON\n"
        "    1  load          29  success  stop              0  6h       -\n"
        "    2  report        57  success  stop              0  6h       load\n"
    )


def test_plan_text_with_selection(cli) -> None:
    result = cli(
        "plan",
        NIGHTLY,
        "-s",
        "build_sales_mart+",
        "--select",
        "notify_finance",
        "-x",
        "refresh_dashboards",
    )
    assert result.code == 0
    assert result.out == (
        "Plan nightly-warehouse: 2 of 11 workflows selected in 1 stage, max_parallel 4\n"
        "Taken as already done (not selected): reconcile_payments, transform_customers, "
        "transform_orders\n"
        "\n"
        "STAGE  STEP              WORKFLOW  RUN_IF   ON_FAILURE  RETRIES  TIMEOUT  DEPENDS_ON\n"
        "    1  build_sales_mart        50  success  stop              1  3h       "
        "transform_orders, transform_customers, reconcile_payments\n"
        "    1  notify_finance          63  success  continue          0  2h       "
        "reconcile_payments\n"
    )


def test_plan_json(cli) -> None:
    result = cli("plan", EVERY_KEY, "--format", "json")
    assert result.code == 0
    document = json.loads(result.out)
    assert document["plan"] == "every-key"
    assert document["max_parallel"] == 2
    assert document["api"] == {
        "base_url": "https://nexadata.example.com/api/v1",
        "token_env": "WAREHOUSE_NEXADATA_TOKEN",
    }
    assert (document["workflows"], document["dependencies"], document["selected"]) == (4, 3, 4)
    assert document["finally"] == ["clean_up"]
    assert [[s["name"] for s in stage] for stage in document["stages"]] == [
        ["extract"],
        ["transform"],
        ["report"],
        ["clean_up"],
    ]
    extract, transform, report, clean_up = (stage[0] for stage in document["stages"])
    assert (report["on_failure"], report["run_if"], report["finally"]) == (
        "ignore",
        "success",
        False,
    )
    assert (clean_up["run_if"], clean_up["finally"], clean_up["depends_on"]) == (
        "failure",
        True,
        [],
    )
    assert extract == {
        "name": "extract",
        "workflow_id": 101,
        "depends_on": [],
        "description": "Durations may be numbers of seconds too",
        "run_if": "success",
        "finally": False,
        "on_failure": "continue",
        "retries": 2,
        "retry_delay": 10.0,
        "timeout": 5400.5,
        "poll_interval": 2.0,
        "max_poll_interval": 120.0,
    }
    assert transform["depends_on"] == ["extract"] and transform["poll_interval"] == 0.5
    assert report["timeout"] == 86400.0 and report["depends_on"] == ["extract", "transform"]


def test_plan_unknown_selection_is_a_usage_error(cli) -> None:
    result = cli("plan", NIGHTLY, "-s", "+extract_order")
    assert result.code == 2
    assert result.out == ""
    assert result.err == (
        "runbook: --select '+extract_order': unknown step 'extract_order'; "
        "did you mean 'extract_orders'?\n"
    )


def test_plan_of_an_invalid_plan(cli) -> None:
    bad = str(DATA / "plans" / "invalid" / "cycle.yaml")
    result = cli("plan", bad)
    assert result.code == 2
    assert result.out == ""
    assert result.err == (
        f"{bad}:6:17: dependency cycle: a -> b -> c -> a\n{bad}: invalid plan (1 problem)\n"
    )


def test_graph_dot(cli) -> None:
    result = cli("graph", MINIMAL)
    assert result.code == 0
    assert result.out == (
        'digraph "minimal" {\n'
        "  rankdir=LR;\n"
        "  node [shape=box, fontname=Helvetica];\n"
        '  "load" [label="load\\nworkflow 29"];\n'
        '  "report" [label="report\\nworkflow 57"];\n'
        '  "load" -> "report";\n'
        "}\n"
    )


def test_graph_mermaid(cli) -> None:
    result = cli("graph", EVERY_KEY, "--format", "mermaid")
    assert result.code == 0
    assert result.out == (
        "flowchart LR\n"
        '  clean_up["clean_up<br/>workflow 104"]\n'
        '  extract["extract<br/>workflow 101"]\n'
        '  report["report<br/>workflow 103"]\n'
        '  transform["transform<br/>workflow 102"]\n'
        "  report -.->|finally, failure| clean_up\n"
        "  extract --> report\n"
        "  transform --> report\n"
        "  extract --> transform\n"
        "  classDef continue stroke-dasharray: 5 5\n"
        "  class clean_up,extract continue\n"
        "  classDef ignore stroke-dasharray: 2 2\n"
        "  class report ignore\n"
        "  subgraph runbook_legend_box [legend]\n"
        '    runbook_legend["dashed arrow: into a clean-up step, labelled with its run_if<br/>'
        'dashed box: on_failure continue<br/>dotted box: on_failure ignore"]\n'
        "  end\n"
    )


def test_mermaid_ids_are_safe(cli, tmp_path: Path) -> None:
    path = tmp_path / "odd.yaml"
    path.write_text(
        "version: 1\nworkflows:\n  end: {workflow_id: 1}\n  a.b: {workflow_id: 2}\n"
        "  a_b: {workflow_id: 3, depends_on: [end, a.b]}\n"
    )
    result = cli("graph", str(path), "--format", "mermaid")
    assert result.out == (
        "flowchart LR\n"
        '  a_b["a.b<br/>workflow 2"]\n'
        '  a_b_2["a_b<br/>workflow 3"]\n'
        '  end_["end<br/>workflow 1"]\n'
        "  a_b --> a_b_2\n"
        "  end_ --> a_b_2\n"
    )


def test_dot_quotes_names(cli, tmp_path: Path) -> None:
    path = tmp_path / "q.yaml"
    path.write_text('version: 1\nname: my "plan"\nworkflows:\n  a: {workflow_id: 1}\n')
    assert cli("graph", str(path)).out.startswith('digraph "my \\"plan\\"" {\n')


def test_version_and_help(cli) -> None:
    from runbook import __version__

    assert cli("--version").out == f"runbook {__version__}\n"
    result = cli("--help")
    assert result.code == 0
    for command in ("validate", "plan", "graph"):
        assert command in result.out
    assert "Exit codes: 0 success" in result.out


def test_unexpected_error_says_so_and_points_at_traceback(cli, monkeypatch) -> None:
    def broken(path: str) -> None:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr("runbook.plan.load_plan", broken)
    result = cli("validate", MINIMAL)
    assert result.code == 70
    assert result.err == (
        "runbook: unexpected error (ZeroDivisionError); this is a bug in runbook. "
        "Run again with --traceback (runbook --traceback COMMAND ...) to see where.\n"
    )
    result = cli("--traceback", "validate", MINIMAL)
    assert result.code == 70
    assert "Traceback (most recent call last)" in result.err
    assert "ZeroDivisionError: boom" in result.err


@pytest.mark.parametrize(
    ("argv", "code", "out_start"),
    [
        (("validate", "examples/minimal.yaml"), 0, "examples/minimal.yaml: ok (2 workflows"),
        (("plan", "examples/nightly.yaml", "--format", "json"), 0, "{\n"),
        (("graph", "examples/minimal.yaml"), 0, 'digraph "minimal"'),
        (("--version",), 0, "runbook "),
    ],
)
def test_real_entry_point(argv: tuple[str, ...], code: int, out_start: str) -> None:
    result = run_entry(*argv, cwd=ROOT)
    assert result.code == code, result.err
    assert result.out.startswith(out_start)


def test_real_entry_point_from_another_directory(tmp_path: Path) -> None:
    """The schema ships inside the package: validate works wherever it is run."""
    plan = tmp_path / "p.yaml"
    plan.write_text("version: 1\nworkflows:\n  a: {workflow_id: 1}\n")
    result = run_entry("validate", "p.yaml", cwd=tmp_path)
    assert (result.code, result.out, result.err) == (
        0,
        "p.yaml: ok (1 workflow, 0 dependencies)\n",
        "",
    )
    plan.write_text("version: 1\nworkflows:\n  a: {workflow_id: 0}\n")
    result = run_entry("validate", "p.yaml", cwd=tmp_path)
    assert result.code == 2
    assert result.err == (
        "p.yaml:3:20: workflows.a.workflow_id: 0 is less than the minimum, 1\n"
        "p.yaml: invalid plan (1 problem)\n"
    )


CLEANUP = str(ROOT / "examples" / "cleanup.yaml")


def test_plan_text_shows_run_if_and_finally_last(cli) -> None:
    result = cli("plan", CLEANUP, "-s", "load_warehouse+", "-x", "page_on_call")
    assert result.code == 0
    mapping = "{snapshot_warehouse: succeeded, load_warehouse: failed}"
    assert result.out.endswith(
        f"STAGE  STEP                    WORKFLOW  RUN_IF{' ' * 51}ON_FAILURE  RETRIES  TIMEOUT  "
        "DEPENDS_ON\n"
        f"    1  load_warehouse                72  success{' ' * 50}stop              1  1h       "
        "snapshot_warehouse, extract_orders, extract_customers\n"
        f"    2  export_partner_feed           61  success{' ' * 50}ignore            1  1h       "
        "load_warehouse\n"
        f"    2  refresh_dashboards            57  success{' ' * 50}stop              1  1h       "
        "load_warehouse\n"
        f"    2  restore_snapshot              73  {mapping}  stop              1  1h       "
        "snapshot_warehouse, load_warehouse\n"
        f"    3  release_warehouse_lock        75  always{' ' * 51}stop              1  1h       "
        "every other step (finally)\n"
    )


def test_graph_draws_edges_into_clean_up_steps_dashed_and_labelled(cli) -> None:
    dot = cli("graph", CLEANUP).out
    assert '  "load_warehouse" -> "restore_snapshot" [style=dashed, label="failed"];\n' in dot
    assert '  "load_warehouse" -> "refresh_dashboards";\n' in dot
    # a finally step: from the last steps before it only
    into_release = [line for line in dot.splitlines() if '-> "release_warehouse_lock"' in line]
    # dashed, and labelled once: three labels would overlap at the step
    assert into_release == [
        '  "export_partner_feed" -> "release_warehouse_lock" '
        '[style=dashed, label="finally, always"];',
        '  "refresh_dashboards" -> "release_warehouse_lock" [style=dashed];',
        '  "restore_snapshot" -> "release_warehouse_lock" [style=dashed];',
    ]
    assert "dashed arrow: into a clean-up step, labelled with its run_if\\l" in dot  # legend
    assert '"export_partner_feed" [label="export_partner_feed\\nworkflow 61", style=dotted];' in dot
    mermaid = cli("graph", CLEANUP, "--format", "mermaid").out
    assert "  load_warehouse -.->|failed| restore_snapshot\n" in mermaid
    assert "  export_partner_feed -.->|finally, failure| page_on_call\n" in mermaid
    assert "  extract_orders --> load_warehouse\n" in mermaid
    assert "  refresh_dashboards -.-> release_warehouse_lock\n" in mermaid  # no second label
    assert (
        "  classDef ignore stroke-dasharray: 2 2\n  class export_partner_feed ignore\n" in mermaid
    )
    assert mermaid.endswith('dotted box: on_failure ignore"]\n  end\n')


def test_schema_prints_the_schema_a_plan_is_checked_against(cli, tmp_path: Path) -> None:

    result = cli("schema")
    assert result.code == 0
    assert result.out == (ROOT / "runbook" / "schemas" / "plan.schema.json").read_text()
    scenario = cli("schema", "scenario")
    assert json.loads(scenario.out)["title"] == "runbook sandbox scenario"
    bad = cli("schema", "plans")
    assert bad.code == 2 and "'plans' is not one of 'plan', 'scenario'" in bad.err
    # what an editor is pointed at: a plan beside it validates, with the schema's line
    schema = tmp_path / ".plan.schema.json"
    schema.write_text(result.out)
    plan = tmp_path / "p.yaml"
    plan.write_text(
        "# yaml-language-server: $schema=.plan.schema.json\nversion: 1\n"
        "workflows: {a: {workflow_id: 1}}\n"
    )
    assert cli("validate", str(plan)).code == 0


def test_hints_for_the_mistakes_a_newcomer_makes(cli, tmp_path: Path) -> None:
    plan = tmp_path / "p.yaml"
    plan.write_text(
        "version: 1\n"
        "notify:\n  - {webhook_env: HOOK, on: failure}\n  - {webhook_env: HOOK2, on: [failure]}\n"
        "schedule: '0 3 * * *'\n"
        "workflows:\n"
        "  extract_orders: {workflow_id: 1, timeout: 2H}\n"
        "  report: {workflow_id: 2, depends_on: [extract_customers, extract_ordres]}\n"
    )
    lines = cli("validate", str(plan)).err.splitlines()
    assert lines[0].endswith("(each once); did you mean 'failed'?")
    assert lines[1].endswith("at_risk; did you mean 'failed'?")
    assert lines[2] == (
        f"{plan}:5:1: unknown key 'schedule': a plan has no schedule of its own: run apply "
        "from cron (0 3 * * * runbook apply plan.yaml --quiet), or give the schedule to "
        "runbook export airflow --schedule"
    )
    assert lines[3].endswith("(e.g. 90s, 1h30m); did you mean '2h'?")
    # another step that shares a prefix is no typo; letters swapped are one
    assert lines[4].endswith("depends_on[0]: unknown step 'extract_customers'")
    assert lines[5].endswith(
        "depends_on[1]: unknown step 'extract_ordres'; did you mean 'extract_orders'?"
    )
