"""Each command loads only what it uses: start-up is paid at every cron run and hook.

The real entry point runs in a fresh interpreter, which writes the modules it loaded
when it exits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.entry import without_coverage_hook
from tests.support.receiver import Receiver

RECORD = """\
import atexit, json, sys
path = sys.argv.pop(1)
atexit.register(lambda: open(path, "w").write(json.dumps([k for k, v in sys.modules.items() if v])))
import runbook.cli
sys.argv[0] = "runbook"
raise SystemExit(runbook.cli.main(sys.argv[1:]))
"""

# loaded only by the commands or the paths that need them
HEAVY = {
    "networkx",  # cycles and +name/name+ selections
    "jsonschema",  # explaining an invalid plan
    "rich",  # a live view on a terminal, a rendered table
    "pygments",
    "starlette",  # the sandbox
    "uvicorn",
    "prometheus_client",  # a metrics textfile
    "httpx._main",  # httpx's own command-line client
}


def modules(tmp_path: Path, *argv: str, env: dict[str, str] | None = None) -> set[str]:
    record = tmp_path / "modules.json"
    subprocess.run(
        [sys.executable, "-c", RECORD, str(record), *argv],
        env={**without_coverage_hook(), **(env or {})},
        capture_output=True,
        timeout=60,
        check=False,
    )
    return set(json.loads(record.read_text()))


def loaded(names: set[str], heavy: set[str]) -> set[str]:
    return {top for top in heavy if any(n == top or n.startswith(top + ".") for n in names)}


PLAN = "version: 1\nworkflows:\n  a: {workflow_id: 1}\n  b: {workflow_id: 2, depends_on: a}\n"


def test_validate_of_a_valid_plan_loads_no_graph_library_schema_explainer_or_http(
    tmp_path: Path,
) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN)
    names = modules(tmp_path, "validate", str(plan))
    assert "runbook.plan" in names
    assert loaded(names, HEAVY | {"aiohttp", "httpx"}) == set()


def test_an_invalid_plan_loads_what_explains_it(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN.replace("1}", "1, depends_on: b}") + "  c: {workflow_id: x}\n")
    names = modules(tmp_path, "validate", str(plan))
    assert loaded(names, {"jsonschema", "networkx"}) == {"jsonschema", "networkx"}
    plan.write_text(PLAN)
    assert loaded(modules(tmp_path, "plan", str(plan), "--select", "a+"), HEAVY) == {"networkx"}


def test_apply_off_a_terminal_loads_the_client_and_nothing_else_heavy(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN)
    with Receiver(default=401) as api:
        env = {"NEXADATA_TOKEN": "t", "RUNBOOK_STATE_DIR": str(tmp_path / "state")}
        names = modules(tmp_path, "apply", str(plan), "--api-url", api.url("/api/v1"), env=env)
        assert api.received, "apply sent no request"
    assert {"aiohttp", "httpx", "runbook.journal"} <= names
    assert loaded(names, HEAVY) == set()


def test_httpx_works_with_its_command_line_client_left_out() -> None:
    code = (
        "from runbook.process import without_httpx_cli; without_httpx_cli(); import httpx; "
        "print(httpx.Request('GET', 'http://x/').url); httpx.main()"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ},
        timeout=60,
        check=False,
    )
    assert done.stdout.startswith("http://x/\n")
    assert "httpx command line client could not run" in done.stdout


def test_importing_runbook_changes_nothing_of_the_interpreter() -> None:
    """``import runbook`` (and its plan loader) adds its own modules and nothing else:
    no entry of sys.modules planted, the collector as it was; what a command does to
    its process it does at its entry (runbook.process)."""
    code = (
        "import gc, sys\n"
        "before = set(sys.modules), gc.isenabled(), gc.get_threshold()\n"
        "import runbook, runbook.plan\n"
        "added = {m for m in set(sys.modules) - before[0] if not m.startswith('runbook')}\n"
        "planted = sorted(m for m in added if sys.modules[m] is None)\n"
        "print(planted, before[1:] == (gc.isenabled(), gc.get_threshold()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split("\n")[0] == "[] True"
