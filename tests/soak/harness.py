"""The soaks' machinery, shared by ``tests/soak`` (bounded, in CI) and
``benchmarks/soak.py`` (the long form): seeded plans in the *wide* shape, the sandbox
and ``runbook apply`` in processes of their own on loopback, and the checks.

Both processes run without coverage's subprocess hook: a soak proves behaviour under
load, and tracing every line would make it a different load.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.support.entry import without_coverage_hook

TOKEN = "soak-token-4f1c9e-never-shown"


def environment(state: Path, url: str, sandbox: Sandbox | None = None) -> dict[str, str]:
    """What apply needs: the API and the state dir; the sandbox's OAuth client when it
    has one (the plan's api.oauth then wins over the static token)."""
    env = without_coverage_hook()
    env.update(NEXADATA_TOKEN=TOKEN, NEXADATA_API_URL=url, RUNBOOK_STATE_DIR=str(state))
    if sandbox is not None and sandbox.token_url:
        env.update(
            NEXADATA_TOKEN_URL=sandbox.token_url,
            NEXADATA_CLIENT_ID="sandbox-client",
            NEXADATA_CLIENT_SECRET="sandbox-secret",
            NEXADATA_REFRESH_TOKEN=sandbox.refresh_token,
        )
    return env


def runbook_command(*argv: str) -> list[str]:
    return [sys.executable, "-m", "runbook", *argv]


@dataclass(frozen=True)
class Shape:
    """A seeded plan in the *wide* shape and the sandbox scenario it runs against."""

    layers: int = 4
    width: int = 500
    max_parallel: int = 500
    duration: tuple[float, float] = (1.0, 3.0)
    queue: float = 0.1
    poll: str = "0.5s"
    fail_first_share: float = 0.0  # share of workflows that fail first, then succeed
    faults: dict[str, Any] = field(default_factory=dict)
    seed: int = 6
    token_ttl: float | None = None
    """The sandbox's tokens expire after this many seconds; apply reaches it through
    the plan's OAuth client (``grant``)."""
    grant: str = "client_credentials"
    cleanup_every: int = 0
    """Every this many steps of a layer after the first gets a ``run_if: failure`` step
    (skipped: nothing that counts fails), a ``run_if: always`` step and a rollback that
    names it (``{step: failed}``: skipped, it succeeded) with a step that waits for the
    rollback to pass; the plan gets a ``finally`` step. 0: none."""
    ignored_failures: int = 0
    """Steps that fail under ``on_failure: ignore``, each with a ``success`` step and a
    ``failure`` step below it (the first runs, the second is skipped), and a mapping
    that names its failure (``{step: failed}``: it runs)."""

    @property
    def layered_steps(self) -> int:
        return self.layers * self.width


@dataclass
class Workload:
    plan: Path
    scenario: Path
    fail_first: dict[int, int]  # workflow id -> failures before it succeeds
    states: dict[str, str] = field(default_factory=dict)  # step -> its expected end
    workflows: dict[str, int] = field(default_factory=dict)  # step -> workflow id

    def executions(self, step: str) -> int:
        """How many executions the step's workflow must get: one per attempt due, none
        for a step that is skipped."""
        if self.states[step] == "skipped":
            return 0
        return 1 + self.fail_first.get(self.workflows[step], 0)


def write_workload(directory: Path, shape: Shape, name: str = "soak") -> Workload:
    """Layer k > 0: each step depends on 2 distinct random steps of layer k - 1."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(shape.seed)
    plan = [
        f"version: 1\nname: {name}\nmax_parallel: {shape.max_parallel}",
        *([f"api: {{oauth: {{grant: {shape.grant}}}}}"] if shape.token_ttl else []),
        f"defaults: {{poll_interval: {shape.poll}, max_poll_interval: {shape.poll}, "
        "retry_delay: 100ms}",
        "workflows:",
    ]
    scenario = [f"seed: {shape.seed}", f"default: {{queue: {shape.queue}}}"]
    if shape.faults:
        scenario.append(f"faults: {json.dumps(shape.faults)}")
    scenario.append("workflows:")
    fail_first: dict[int, int] = {}
    states: dict[str, str] = {}
    workflows: dict[str, int] = {}

    def add(step: str, extra: str, behaviour: str, state: str) -> None:
        workflow_id = len(workflows) + 1
        workflows[step], states[step] = workflow_id, state
        plan.append(f"  {step}: {{workflow_id: {workflow_id}{extra}}}")
        scenario.append(f"  {workflow_id}: {{{behaviour}}}")

    previous: list[str] = []
    for layer in range(shape.layers):
        current = []
        for index in range(shape.width):
            step = f"l{layer}_{index:04d}"
            upstreams = sorted(rng.sample(previous, 2)) if len(previous) >= 2 else []
            extra = f", depends_on: [{', '.join(upstreams)}]" if upstreams else ""
            duration = round(rng.uniform(*shape.duration), 3)
            behaviour = f"duration: {duration}"
            if rng.random() < shape.fail_first_share:
                fail_first[len(workflows) + 1] = 1
                behaviour += ", fail_first: 1"
                extra += ", retries: 1"
            add(step, extra, behaviour, "succeeded")
            current.append(step)
        previous = current
    cleanup = []
    if shape.cleanup_every:
        for step in [name for name in workflows if not name.startswith("l0_")]:
            if int(step.split("_")[1]) % shape.cleanup_every == 0:
                cleanup.append((f"undo_{step}", step, "failure", "skipped"))
                cleanup.append((f"after_{step}", step, "always", "succeeded"))
                cleanup.append((f"rollback_{step}", step, f"{{{step}: failed}}", "skipped"))
                cleanup.append((f"past_{step}", f"rollback_{step}", "success", "succeeded"))
    for index in range(shape.ignored_failures):
        step = f"optional_{index}"
        add(step, ", on_failure: ignore", "duration: 0.1, outcome: failed", "failed")
        cleanup.append((f"then_{step}", step, "success", "succeeded"))
        cleanup.append((f"alert_{step}", step, "failure", "skipped"))
        cleanup.append((f"named_{step}", step, f"{{{step}: [failed, skipped]}}", "succeeded"))
    for step, upstream, run_if, state in cleanup:
        add(step, f", depends_on: {upstream}, run_if: {run_if}", "duration: 0.2", state)
    if shape.cleanup_every:
        plan.insert(2, "finally: [release]")
        add("release", "", "duration: 0.2", "succeeded")
    workload = Workload(
        directory / f"{name}.yaml",
        directory / f"{name}-scenario.yaml",
        fail_first,
        states,
        workflows,
    )
    workload.plan.write_text("\n".join(plan) + "\n")
    workload.scenario.write_text("\n".join(scenario) + "\n")
    return workload


class Sandbox:
    """``runbook sandbox`` in its own process: it outlives every apply it serves."""

    def __init__(self, scenario: Path, port: int = 0, token_ttl: float | None = None) -> None:
        self.scenario, self.port, self.token_ttl = scenario, port, token_ttl
        self.process: subprocess.Popen[str] | None = None
        self.url = self.token_url = self.refresh_token = ""

    def start(self) -> Sandbox:
        env = without_coverage_hook()
        self.process = subprocess.Popen(
            runbook_command(
                "sandbox",
                "--port",
                str(self.port),
                "--scenario",
                str(self.scenario),
                "--token",
                TOKEN,
                *(["--token-ttl", f"{self.token_ttl}s"] if self.token_ttl else []),
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        assert self.process.stdout is not None
        for line in self.process.stdout:
            found = re.search(r"base URL\s+(http://127\.0\.0\.1:(\d+)\S*)", line)
            if found:
                self.url, self.port = found.group(1), int(found.group(2))
            if found := re.match(r"\s+token URL\s+(\S+)$", line):
                self.token_url = found.group(1)
            if found := re.match(r"\s+refresh token\s+(\S+)$", line):
                self.refresh_token = found.group(1)
            if line.startswith("Press Ctrl-C") or (self.url and not self.token_ttl):
                return self
        raise RuntimeError("the sandbox did not print its base URL")

    def stats(self) -> dict[str, Any]:
        stats_url = self.url.removesuffix("/api/v1") + "/__sandbox/stats"
        with urllib.request.urlopen(stats_url, timeout=30) as answer:
            return dict(json.load(answer))

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
                self.process.wait(timeout=30)
            if self.process.stdout is not None:
                self.process.stdout.close()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def answered(stats: dict[str, Any], status: int) -> int:
    """How many requests the sandbox answered with ``status``, every route together."""
    return sum(by_status.get(str(status), 0) for by_status in stats["requests"].values())


def read_only(state: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{state / 'journal.sqlite3'}?mode=ro", uri=True)


def last_run(state: Path) -> sqlite3.Row | None:
    path = state / "journal.sqlite3"
    if not path.exists():
        return None
    with contextlib.closing(read_only(state)) as db:
        db.row_factory = sqlite3.Row
        try:
            row: sqlite3.Row | None = db.execute(
                "SELECT * FROM runs ORDER BY id DESC LIMIT 1"
            ).fetchone()
        except sqlite3.OperationalError:  # killed before the tables were made
            return None
        return row


def unanswered_triggers(state: Path, run_id: int) -> set[tuple[int, int]]:
    """(workflow, attempt number) of each step whose last attempt was left
    *triggering*, with no execution id."""
    with contextlib.closing(read_only(state)) as db:
        rows = db.execute(
            "SELECT s.workflow_id, a.number FROM attempts a JOIN steps s "
            "ON s.run_id = a.run_id AND s.name = a.step "
            "WHERE a.run_id = ? AND a.phase = 'triggering' AND a.execution_id IS NULL "
            "AND a.number = (SELECT max(number) FROM attempts "
            "WHERE run_id = a.run_id AND step = a.step)",
            (run_id,),
        ).fetchall()
    return {(row[0], row[1]) for row in rows}


def report_attempts(report: dict[str, Any]) -> dict[int, list[dict[str, Any]]]:
    return {step["workflow_id"]: step["attempts"] for step in report["steps"]}


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


# -- the fault soak ---------------------------------------------------------------------


@dataclass
class FaultSoak:
    exit_code: int
    seconds: float
    report: dict[str, Any]
    stats: dict[str, Any]
    run_ended_at: float
    output: str
    workload: Workload

    def figures(self) -> str:
        steps = len(self.report["steps"])
        s = self.stats
        resent = answered(s, 429) + answered(s, 500) + answered(s, 503)
        step_retries = s["executions_total"] - len(s["executions"])  # beyond one a workflow
        return (
            f"{steps} steps in {self.seconds:.1f} s: {s['requests_total']} requests, "
            f"{answered(s, 429)} answered 429, {answered(s, 500)} answered 500, "
            f"{answered(s, 503)} answered 503 ({resent} re-sent by the client); "
            f"{s['executions_total']} executions, {step_retries} step retries; "
            f"peak in flight {s['peak_in_flight']}"
        )


def fault_soak(directory: Path, shape: Shape) -> FaultSoak:
    """One ``runbook apply`` of the whole plan against a faulty sandbox."""
    workload = write_workload(directory, shape)
    state, report = directory / "state", directory / "report.json"
    with Sandbox(workload.scenario, token_ttl=shape.token_ttl) as sandbox:
        started = time.perf_counter()
        done = subprocess.run(
            runbook_command("apply", str(workload.plan), "--report", str(report), "-q"),
            env=environment(state, sandbox.url, sandbox),
            capture_output=True,
            text=True,
            timeout=1800,
        )
        seconds = time.perf_counter() - started
        stats = sandbox.stats()
    row = last_run(state)
    return FaultSoak(
        exit_code=done.returncode,
        seconds=seconds,
        report=json.loads(report.read_text()) if report.exists() else {},
        stats=stats,
        run_ended_at=row["ended_at"] if row is not None and row["ended_at"] else 0.0,
        output=done.stdout + done.stderr,
        workload=workload,
    )


def check_fault_soak(result: FaultSoak, shape: Shape) -> None:
    """Everything the fault soak must prove; an AssertionError says which broke."""
    workload = result.workload
    assert result.exit_code == 0, result.output[-3000:]
    assert result.report["state"] == "succeeded"
    assert {step["name"]: step["state"] for step in result.report["steps"]} == workload.states
    executions = {int(k): v for k, v in result.stats["executions"].items()}
    attempts = report_attempts(result.report)
    for step, workflow_id in workload.workflows.items():
        expected = workload.executions(step)  # a retry due per failure; 0: skipped
        got = executions.get(workflow_id, 0)
        assert got == expected == len(attempts.get(workflow_id, [])), workflow_id
    assert result.stats["peak_in_flight"] <= shape.max_parallel
    last = epoch(result.stats["last_request_at"])
    assert last <= result.run_ended_at + 0.001, "a request reached the API after the run ended"
    if shape.token_ttl:  # tokens that expired many times over: none used twice
        assert result.stats["refresh_token_reuse"] == 0
        assert result.report["token_refreshes"] >= result.seconds / shape.token_ttl - 1


# -- the crash soak ---------------------------------------------------------------------


@dataclass
class CrashSoak:
    kills: int = 0
    invocations: int = 0
    killed_before_a_run: int = 0
    refused: set[tuple[int, int]] = field(default_factory=set)  # (workflow, attempt)
    forced_attempts: set[tuple[int, int]] = field(default_factory=set)  # with the flag

    @property
    def forced(self) -> Counter[int]:
        """Per workflow, how many unanswered attempts were forced again (at most)."""
        return Counter(workflow for workflow, _ in self.forced_attempts)

    status: dict[str, Any] = field(default_factory=dict)  # ``runbook status --format json``
    seconds: float = 0.0
    workload: Workload | None = None

    def figures(self, executions: dict[int, int]) -> str:
        lost = lost_executions(self.status, executions)
        return (
            f"{self.kills} SIGKILLs over {self.invocations} invocations in "
            f"{self.seconds:.1f} s ({self.killed_before_a_run} before the run was written); "
            f"{len(self.refused)} unanswered triggers refused by a resume, "
            f"{len(self.forced_attempts)} forced with --retrigger-unknown, "
            f"{sum(lost.values())} executions whose id died with the process"
        )


def lost_executions(status: dict[str, Any], executions: dict[int, int]) -> Counter[int]:
    """Per workflow, the executions the API made that the journal has no id for."""
    known = {
        step["workflow_id"]: len({a["execution_id"] for a in step["attempts"] if a["execution_id"]})
        for step in status["steps"]
    }
    return Counter({w: n - known.get(w, 0) for w, n in executions.items() if n > known.get(w, 0)})


def crash_soak(
    directory: Path, shape: Shape, kills: int, window: tuple[float, float], seed: int
) -> tuple[CrashSoak, Sandbox]:
    """Kill ``runbook apply`` at seeded random instants — ``window`` seconds after it
    starts — resuming each time, until it was killed ``kills`` times; then resume to the
    end. An unanswered trigger is first shown to be refused by a plain ``--resume``
    (that invocation is killed too, once it said so), then forced as an operator would.
    Returns the sandbox still serving: the caller reads its counters and stops it."""
    rng = random.Random(seed)
    workload = write_workload(directory, shape, name="crash")
    state = directory / "state"
    sandbox = Sandbox(workload.scenario, token_ttl=shape.token_ttl).start()
    env = environment(state, sandbox.url, sandbox)
    soak = CrashSoak(workload=workload)
    started = time.perf_counter()
    try:
        while True:
            argv = ["apply", str(workload.plan)]
            row = last_run(state)
            if row is not None:
                argv.append("--resume")
                ambiguous = unanswered_triggers(state, row["id"])
                if ambiguous - soak.refused:
                    _expect_refusal(runbook_command(*argv), env)
                    soak.refused |= ambiguous
                    soak.kills += 1
                    soak.invocations += 1
                if ambiguous:
                    argv.append("--retrigger-unknown")
                    soak.forced_attempts |= ambiguous
            soak.invocations += 1
            if soak.kills >= kills:
                final = subprocess.run(
                    runbook_command(*argv, "-q"),
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=600,
                )
                assert final.returncode == 0, final.stdout + final.stderr
                break
            process = subprocess.Popen(
                runbook_command(*argv, "-q"),
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                process.wait(timeout=rng.uniform(*window))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)
                soak.kills += 1
                soak.killed_before_a_run += last_run(state) is None
                continue
            assert process.returncode == 0, f"apply exited {process.returncode} between kills"
            break  # it finished before its kill was due
        status = subprocess.run(
            runbook_command("status", "--format", "json"),
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        soak.status = json.loads(status.stdout)
    except BaseException:
        sandbox.stop()
        raise
    soak.seconds = time.perf_counter() - started
    return soak, sandbox


def check_crash_soak(soak: CrashSoak, executions: dict[int, int]) -> None:
    """Exactly once: one execution per workflow (none for a clean-up step that nothing
    called for), except where the operator forced a re-trigger of an unanswered POST —
    and no execution id lost anywhere else."""
    workload = soak.workload
    assert workload is not None
    assert soak.status["state"] == "succeeded"
    assert {step["name"]: step["state"] for step in soak.status["steps"]} == workload.states
    expected = {workload.workflows[n]: workload.executions(n) for n in workload.workflows}
    assert sorted(executions) == sorted(w for w, count in expected.items() if count)
    for step in soak.status["steps"]:
        workflow_id = step["workflow_id"]
        ids = {a["execution_id"] for a in step["attempts"] if a["execution_id"]}
        if workflow_id not in soak.forced:
            assert executions.get(workflow_id, 0) == len(ids) == expected[workflow_id], step
        else:  # each forced re-trigger adds at most one execution
            assert executions[workflow_id] <= 1 + soak.forced[workflow_id], step
    lost = lost_executions(soak.status, executions)
    assert set(lost) <= set(soak.forced), "an execution id was lost outside a trigger"


def _expect_refusal(command: list[str], env: dict[str, str]) -> None:
    """A plain ``--resume`` must say it will not re-trigger; it is killed once it did."""
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        assert process.stdout is not None
        seen = []
        for line in process.stdout:
            seen.append(line)
            if "not triggered again" in line:
                process.kill()
                return
    raise AssertionError("a resume did not refuse an unanswered trigger:\n" + "".join(seen))
