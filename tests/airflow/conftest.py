"""A real Apache Airflow for the tests: its own virtualenv, built once and cached.

The virtualenv holds Airflow at the version the ``airflow`` extra pins, and runbook's
runtime dependencies; runbook itself comes from this source tree (``PYTHONPATH``), so
the cache serves every checkout. It lives in the user's cache dir, keyed by the Airflow
version, the Python version and runbook's dependencies: a change to any of them builds a
new one. Builds take a lock, so that parallel test workers build it once.

Every test gets a fresh ``AIRFLOW_HOME`` (SQLite database, dags folder, logs) and a
sandbox of its own on loopback, in this process, whose executions the test reads.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from runbook.sandbox import SandboxOAuth
from runbook.sandbox.app import create_app
from runbook.sandbox.scenario import Scenario, load_scenario
from runbook.sandbox.server import serve_in_thread
from tests.support.entry import run_entry, without_coverage_hook
from tests.support.night import TOKEN
from tests.support.paths import REAL_CACHE, REAL_PIP_CACHE, ROOT

"""The user's cache dir, as it was before the tests made HOME a scratch dir."""


def _requirements() -> tuple[str, list[str]]:
    """The pinned Airflow requirement of the ``airflow`` extra, and runbook's own."""
    airflow, runtime = None, []
    for requirement in metadata.requires("nexadata-runbook") or []:
        spec, _, marker = requirement.partition(";")
        marker = marker.replace("'", '"')
        if 'extra == "airflow"' in marker:
            airflow = spec.strip()
        elif "extra ==" not in marker:
            runtime.append(requirement)
    assert airflow and "==" in airflow, "the airflow extra must pin apache-airflow"
    return airflow, sorted(runtime)


AIRFLOW_REQUIREMENT, RUNTIME = _requirements()
AIRFLOW_VERSION = AIRFLOW_REQUIREMENT.split("==")[1]


def _venv_dir() -> Path:
    key = hashlib.sha256("\n".join([AIRFLOW_REQUIREMENT, *RUNTIME]).encode()).hexdigest()[:10]
    python = f"py{sys.version_info[0]}{sys.version_info[1]}"
    return REAL_CACHE / "runbook" / f"airflow-{AIRFLOW_VERSION}-{python}-{key}"


def build_venv() -> Path:
    """The cached virtualenv, built now if it is not complete (under a lock)."""
    venv = _venv_dir()
    done = venv / "runbook-complete"
    if done.exists():
        return venv
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            return venv
        shutil.rmtree(venv, ignore_errors=True)
        started = time.monotonic()
        env = {**without_coverage_hook(), "PIP_CACHE_DIR": str(REAL_PIP_CACHE)}
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
        for command in (
            [*pip, "install", "--quiet", AIRFLOW_REQUIREMENT, *RUNTIME],
            [*pip, "check"],
        ):
            done_ = subprocess.run(command, capture_output=True, text=True, env=env)
            if done_.returncode:
                raise RuntimeError(
                    f"building the Airflow virtualenv failed: {' '.join(command)}\n"
                    f"{done_.stdout[-3000:]}{done_.stderr[-3000:]}"
                )
        done.write_text(f"built in {time.monotonic() - started:.0f} s\n")
    return venv


@pytest.fixture(scope="session")
def airflow_venv() -> Path:
    return build_venv()


@dataclass
class Sandbox:
    url: str
    app: Any

    @property
    def state(self) -> Any:
        return self.app.state.sandbox

    def executions(self) -> dict[str, int]:
        return dict(self.state.stats()["executions"])


@contextmanager
def sandbox(scenario: Path | None = None, oauth: SandboxOAuth | None = None) -> Iterator[Sandbox]:
    """``oauth``: the sandbox also has an OAuth client whose tokens expire."""
    app = create_app(load_scenario(scenario) if scenario else Scenario(), token=TOKEN, oauth=oauth)
    context = serve_in_thread(app)
    url = context.__enter__()
    try:
        yield Sandbox(url, app)
    finally:
        context.__exit__(None, None, None)


class Airflow:
    """One Airflow installation: a fresh AIRFLOW_HOME on the cached virtualenv."""

    def __init__(
        self, venv: Path, home: Path, api_url: str, connection: dict[str, Any] | None = None
    ) -> None:
        self.venv = venv
        self.home = home
        self.dags = home / "dags"
        self.dags.mkdir(parents=True)
        connection = connection or {"conn_type": "http", "host": api_url, "password": TOKEN}
        self.env = {
            **without_coverage_hook(),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW_CONN_NEXADATA_DEFAULT": json.dumps(connection),
            "PYTHONPATH": str(ROOT),
            "PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}",
        }
        self.processes: list[subprocess.Popen[bytes]] = []

    def __call__(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.venv / "bin" / "airflow"), *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            cwd=self.home,
        )

    def export(self, plan: Path, name: str | None = None) -> Path:
        out = self.dags / f"{name or plan.stem.replace('-', '_')}.py"
        result = run_entry("export", "airflow", str(plan), "-o", str(out))
        assert result.code == 0, result.err
        return out

    def migrate(self) -> None:
        done = self("db", "migrate")
        assert done.returncode == 0, done.stderr[-3000:]

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        """A long-running Airflow command (api-server, triggerer, ...) in the background."""
        log = open(self.home / f"{args[0]}-{len(self.processes)}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            [str(self.venv / "bin" / "airflow"), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.home,
            start_new_session=True,
        )
        log.close()
        self.processes.append(process)
        return process

    @staticmethod
    def kill(process: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        """Kill a background command and everything it started."""
        with suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:  # Airflow shutting down slowly: make it stop
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=20)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                self.kill(process, signal.SIGTERM)

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.home / "airflow.db", timeout=30) as db:
            return list(db.execute(sql, params))

    def task_states(self, dag_id: str) -> dict[str, str | None]:
        """Each task's state in the DAG's (only) run."""
        rows = self.query("SELECT task_id, state FROM task_instance WHERE dag_id = ?", dag_id)
        return dict(rows)

    def run_state(self, dag_id: str) -> str:
        (state,) = self.query("SELECT state FROM dag_run WHERE dag_id = ?", dag_id)
        return str(state[0])

    def tries(self, dag_id: str, task_id: str) -> int:
        ((tries,),) = self.query(
            "SELECT try_number FROM task_instance WHERE dag_id = ? AND task_id = ?",
            dag_id,
            task_id,
        )
        return int(tries)

    def logs(self) -> str:
        """Every task log and background command log, as one text."""
        parts = [p.read_text(errors="replace") for p in sorted(self.home.rglob("*.log"))]
        return "\n".join(parts)


@pytest.fixture
def airflow(airflow_venv: Path, tmp_path: Path) -> Iterator[Any]:
    """``start(api_url) -> Airflow``: a fresh, migrated Airflow talking to that API."""
    made: list[Airflow] = []

    def start(api_url: str, connection: dict[str, Any] | None = None) -> Airflow:
        home = tmp_path / f"airflow{len(made)}"
        instance = Airflow(airflow_venv, home, api_url, connection)
        made.append(instance)
        instance.migrate()
        return instance

    yield start
    for instance in made:
        instance.stop()
