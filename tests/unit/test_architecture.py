"""The arrows of docs/architecture.md, checked on the source: which module may import
which, and what the light commands load."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import ROOT

PACKAGE = ROOT / "runbook"


def imports_of(path: Path, *, typing_only: bool = False) -> set[str]:
    """The modules ``path`` imports; imports under ``if TYPE_CHECKING:`` are left out
    unless ``typing_only`` (they cost nothing at run time and make no arrow)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            skip |= {id(child) for child in ast.walk(node)}
    for node in ast.walk(tree):
        if id(node) in skip and not typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def test_the_module_list_is_what_the_architecture_doc_describes() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text()
    for name in MODULES:
        shown = name.replace(".", "/")
        assert f"`{shown}" in doc, f"{shown} is not described in docs/architecture.md"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_arrows_point_one_way(name: str) -> None:
    imported = imports_of(MODULES[name])
    ours = {m for m in imported if m == "runbook" or m.startswith("runbook.")}
    in_cli = name == "runbook.cli" or name.startswith("runbook.cli.")
    if name != "runbook.__main__" and not in_cli:
        cli = {m for m in ours if m == "runbook.cli" or m.startswith("runbook.cli.")}
        assert not cli, "nothing imports the CLI"
    if not in_cli:
        assert "click" not in imported, "only the CLI imports click"
    if name.startswith("runbook.render"):
        assert not ours & {"runbook.api", "runbook.transport", "runbook.executor"}
        assert not any(m.startswith("runbook.journal") for m in ours), "renderers know no SQL"
    if name.startswith("runbook.notify"):
        forbidden = {"runbook.executor", "runbook.runner", "runbook.schedule"}
        assert not ours & forbidden and not any(m.startswith("runbook.journal") for m in ours)
    if name.startswith(("runbook.render", "runbook.journal", "runbook.sandbox")):
        assert not any(m.startswith("runbook.notify") for m in ours)
    if name == "runbook.graph":
        assert "runbook.plan" not in imports_of(MODULES[name], typing_only=True)
    if name.startswith("runbook.sandbox"):
        # the file-loading helpers are shared; the runtime is not
        runtime = {"api", "transport", "executor", "schedule", "plan", "runner", "events"}
        assert not {m.split(".")[1] for m in ours if "." in m} & (runtime | {"journal", "render"})
    if name in ("runbook.schedule", "runbook.events", "runbook.errors"):
        assert not imported & {"asyncio", "httpx", "aiohttp", "sqlite3"}


def test_status_and_history_load_no_http_client(tmp_path: Path) -> None:
    """The journal's commands start without the HTTP stack (nor rich, nor networkx)."""
    code = (
        "import sys\n"
        "from runbook.cli import main\n"
        f"main(['history', '--state-dir', {str(tmp_path)!r}])\n"
        f"main(['status', '--state-dir', {str(tmp_path)!r}])\n"
        "heavy = {'httpx', 'aiohttp', 'rich', 'networkx', 'runbook.api', 'starlette'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.splitlines()[-1] == "[]"


def test_only_the_airflow_operator_and_trigger_import_airflow() -> None:
    importers = {
        module_name(path)
        for path in (ROOT / "runbook").rglob("*.py")
        if any(m == "airflow" or m.startswith("airflow.") for m in imports_of(path))
    }
    assert importers == {"runbook.airflow.operator", "runbook.airflow.trigger"}


def test_the_polling_cadence_has_one_home() -> None:
    """The growth fraction, the jitter and its mean are written in runbook/polling.py
    alone: the executor, the Airflow trigger and the forecast take them from there, so
    a change to the cadence is one edit."""
    import re

    copies = re.compile(r"uniform\(\s*0\.9|\b0\.95\b|POLL_FRACTION\s*=|\bjitter\s*=\s*0\.")
    for name, path in MODULES.items():
        if name == "runbook.polling":
            continue
        found = copies.findall(path.read_text())
        assert not found, f"{name} has its own copy of the polling cadence: {found}"
    polling = imports_of(MODULES["runbook.polling"])
    assert not {m for m in polling if m.startswith("runbook")}, "polling imports nothing of ours"


def _calls(path: Path) -> list[ast.Call]:
    return [node for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Call)]


def _called(call: ast.Call) -> str:
    func = call.func
    return (
        func.id
        if isinstance(func, ast.Name)
        else func.attr
        if isinstance(func, ast.Attribute)
        else ""
    )


def test_the_start_order_and_the_cores_rules_have_one_home() -> None:
    """A selection's order (stage, then name) and the core's Rules are made by
    Plan.start_order and Plan.rules alone: the executor, the forecast and the plan
    command take them from there."""
    for name, path in MODULES.items():
        if name in ("runbook.plan", "runbook.graph", "runbook.schedule"):
            continue
        for call in _calls(path):
            assert _called(call) != "Rule", f"{name} builds the core's rules itself"
            func = call.func
            dag_stages = (
                isinstance(func, ast.Attribute)
                and func.attr == "stages"
                and isinstance(func.value, ast.Attribute)
                and func.value.attr == "dag"
            )
            assert not dag_stages, f"{name} orders a selection itself: use Plan.start_order"


def test_the_sink_order_has_one_home() -> None:
    """The bus owns the sinks: the runner builds it with the journal first, and nothing
    else calls sinks in a loop or edits a list of them."""
    builders = set()
    for name, path in MODULES.items():
        text = path.read_text()
        assert ".insert(0" not in text, f"{name} puts something in front of a list"
        assert "for sink in" not in text or name == "runbook.run.bus", f"{name} calls sinks"
        for call in _calls(path):
            if _called(call) == "Bus":
                builders.add(name)
                first = call.args[0] if call.args else None
                assert isinstance(first, ast.Name) and first.id == "journal", (
                    f"{name} builds the bus without the journal first"
                )
    assert builders == {"runbook.runner"}


RUN_ROOMS = {name for name in MODULES if name.startswith("runbook.run.")} | {"runbook.executor"}


@pytest.mark.parametrize("name", sorted(RUN_ROOMS))
def test_the_executors_rooms_know_no_terminal_no_sql_no_yaml(name: str) -> None:
    imported = imports_of(MODULES[name])
    ours = {m for m in imported if m.startswith("runbook.")}
    assert not imported & {"sqlite3", "yaml", "click", "rich"}
    assert not {m for m in ours if m.startswith(("runbook.journal", "runbook.render"))}
    assert not ours & {"runbook.runner", "runbook.notify", "runbook.cli", "runbook.forecast"}
    if name in ("runbook.run.resume", "runbook.run.planned", "runbook.run.reasons"):
        assert not imported & {"asyncio", "httpx", "aiohttp"}, "decided on records alone"
    if name == "runbook.run.slots":
        assert not ours, "the slots know nothing of runbook"
    if name != "runbook.run.signals":
        assert "signal" not in imported, "only the signals' room handles signals"


def test_process_settings_are_made_at_a_commands_entry_only() -> None:
    """Nothing changes the interpreter on import: the cycle collector, sys.modules and
    the process's limits are set by runbook.process, called where a command starts."""
    for name, path in MODULES.items():
        if name == "runbook.process":
            continue
        text = path.read_text()
        for marker in ("gc.disable", "gc.set_threshold", "sys.modules[", "setrlimit", "prctl"):
            assert marker not in text, f"{name} changes the process itself ({marker})"
    assert not {m for m in imports_of(MODULES["runbook.process"]) if m.startswith("runbook")}


def test_no_room_outgrows_what_a_reader_can_hold() -> None:
    """A module past 400 lines (the executor's past 300) has more than one job: split
    it along its seams before it grows on."""
    for name, path in MODULES.items():
        if path.parent.name == "schemas" and path.name.endswith("_check.py"):
            continue  # a schema's validator, generated by fastjsonschema: nobody reads it
        limit = 300 if name == "runbook.executor" else 400
        lines = len(path.read_text().splitlines())
        assert lines <= limit, f"{name} has {lines} lines (at most {limit})"
