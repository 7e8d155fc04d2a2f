"""N deferred steps in one real Airflow triggerer, beside ``runbook apply`` at the same N.

For each N, against the sandbox in a process of its own (executions that run for an
hour, so that none ends while it is measured):

- **triggerer**: a fresh Airflow (the tests' cached virtualenv), a DAG of N tasks, one
  DAG run whose N task instances are deferred on :class:`NexadataExecutionTrigger`, each
  on an execution of its own, as a task of an exported plan defers once it has
  triggered; then one ``airflow triggerer`` picks them up. The operator's own trigger
  path is not what is measured (the tests drive it): starting N tasks through an
  executor would cost minutes of CPU and measure the executor.
- **apply**: ``runbook apply`` of a plan of N independent steps, all in flight at once.

Both poll every ``--poll`` seconds. Once every step has been polled twice, a window of
``--window`` seconds is measured: the CPU of the whole process tree (the triggerer and
its trigger runner; apply) per poll the sandbox answered, the TCP connections open to
the API, and the memory (resident set of the tree) per step in flight above the same
program with none (an idle triggerer; apply of one step).

``python benchmarks/triggerer.py`` (N = 100, 500, 1000); ``--n 100`` for one.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONN_ID = "nexadata_default"
PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


# --- inside the Airflow virtualenv: the DAG run and its deferred task instances --------


def defer_into(dag_id: str, executions: list[list[int]], poll: float) -> None:
    """One run of ``dag_id``; task ``s{i}`` deferred on execution ``executions[i]``."""
    from airflow.models.dagrun import get_or_create_dagrun
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.models.trigger import Trigger
    from airflow.utils import timezone
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from airflow.utils.types import DagRunTriggeredByType

    from runbook.airflow.trigger import NexadataExecutionTrigger

    with create_session() as session:
        dag = SerializedDagModel.get_dag(dag_id, session=session)
        assert dag is not None, f"{dag_id} is not serialized"
        now = timezone.utcnow()
        run = get_or_create_dagrun(
            dag=dag,
            run_id=f"{dag_id}-bench",
            logical_date=now,
            data_interval=(now, now),
            run_after=now,
            conf=None,
            triggered_by=DagRunTriggeredByType.TEST,
            triggering_user_name=None,
            start_date=now,
            session=session,
        )
        instances = {ti.task_id: ti for ti in run.get_task_instances(session=session)}
        for index, (workflow_id, execution_id) in enumerate(executions):
            trigger = NexadataExecutionTrigger(
                execution_id=execution_id,
                workflow_id=workflow_id,
                conn_id=CONN_ID,
                base_url=None,
                triggered_at=time.time(),
                deadline=time.time() + 3600,
                poll_interval=poll,
                max_poll_interval=poll,
            )
            row = Trigger.from_object(trigger)
            session.add(row)
            session.flush()
            ti = instances[f"s{index}"]
            ti.state = TaskInstanceState.DEFERRED
            ti.trigger_id = row.id
            ti.next_method = "execute_complete"
        session.commit()


# --- measuring a process tree -----------------------------------------------------------


def tree(root: int) -> list[int]:
    """``root`` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def cpu_and_rss(root: int) -> tuple[float, float]:
    """CPU seconds (user + system) and resident MB of the tree, now."""
    cpu = rss = 0.0
    for pid in tree(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        cpu += (int(fields[11]) + int(fields[12])) / TICKS
        rss += int(fields[21]) * PAGE / 2**20
    return cpu, rss


def connections_to(port: int) -> int:
    """Established TCP connections whose far end is ``port`` (the sandbox's)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if fields[3] == "01" and int(fields[2].rsplit(":", 1)[1], 16) == port:
                    count += 1
    return count


def polls(url: str) -> int:
    with urllib.request.urlopen(url.removesuffix("/api/v1") + "/__sandbox/stats") as answer:
        routes = json.load(answer)["requests"]
    return sum(
        count
        for route, statuses in routes.items()
        if route.startswith("GET")
        for count in statuses.values()
    )


def wait(what: str, ready: Callable[[], bool], timeout: float) -> None:
    end = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > end:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.5)


def window(root: int, url: str, port: int, seconds: float) -> dict[str, float]:
    cpu0, _ = cpu_and_rss(root)
    polls0, t0 = polls(url), time.monotonic()
    sockets = 0
    end = t0 + seconds
    while time.monotonic() < end:
        time.sleep(1)
        sockets = max(sockets, connections_to(port))
    cpu1, rss = cpu_and_rss(root)
    answered = polls(url) - polls0
    return {
        "cpu": cpu1 - cpu0,
        "polls": answered,
        "cpu_per_poll_ms": 1000 * (cpu1 - cpu0) / max(1, answered),
        "sockets": sockets,
        "rss": rss,
        "seconds": time.monotonic() - t0,
    }


# --- the two programs -------------------------------------------------------------------


def settled_window(
    who: str, pid: int, url: str, port: int, before: int, n: int, args
) -> dict[str, float]:
    """Once ``pid`` has polled each of ``n`` executions twice (past ``before`` polls),
    the measured window."""
    wait(
        f"{who} to poll {n} executions twice",
        lambda: polls(url) - before >= 2 * n,
        timeout=max(120, 6 * args.poll + n / 5),
    )
    return window(pid, url, port, args.window)


def trigger_executions(url: str, token: str, n: int) -> list[list[int]]:
    made = []
    for workflow_id in range(1, n + 1):
        request = urllib.request.Request(
            f"{url}/workflows/{workflow_id}/execute",
            method="POST",
            data=b"",
            headers={"Authorization": f"Bearer {token}"},
        )
        with urllib.request.urlopen(request) as answer:
            made.append([workflow_id, int(json.load(answer)["id"])])
    return made


def dag_file(dag_id: str, n: int) -> str:
    tasks = "\n".join(f"    Step(task_id='s{i}')" for i in range(n))
    return (
        "from airflow.sdk import DAG, BaseOperator\n\n\n"
        "class Step(BaseOperator):\n"
        "    def execute(self, context):\n"
        "        return None\n\n"
        "    def execute_complete(self, context, event=None):\n"
        "        return None\n\n\n"
        f"with DAG({dag_id!r}, schedule=None):\n{tasks}\n"
    )


def measure_triggerer(af, url: str, port: int, token: str, n: int, args) -> dict[str, float]:
    dag_id = f"bench_{n}"
    (af.dags / f"{dag_id}.py").write_text(dag_file(dag_id, n))
    done = af("dags", "reserialize")
    assert done.returncode == 0, done.stderr[-3000:]
    # the previous N's deferred steps are over: nothing left for this triggerer but ours
    af.query("UPDATE task_instance SET state = 'failed', trigger_id = NULL")
    af.query("DELETE FROM trigger")
    triggerer = af.start("triggerer", "--skip-serve-logs", "--capacity", str(n + 100))
    try:
        time.sleep(args.idle)  # started, its trigger runner up, nothing to run
        _, idle_rss = cpu_and_rss(triggerer.pid)
        executions = trigger_executions(url, token, n)
        before = polls(url)
        setup = subprocess.run(
            [
                str(af.venv / "bin" / "python"),
                __file__,
                "--defer-into",
                dag_id,
                json.dumps(executions),
                str(args.poll),
            ],
            env=af.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert setup.returncode == 0, setup.stderr[-3000:]
        figures = settled_window("the triggerer", triggerer.pid, url, port, before, n, args)
    finally:
        af.kill(triggerer, signal.SIGTERM)
    figures["idle_rss"] = idle_rss
    return figures


def apply_plan(tmp: Path, n: int, poll: float) -> Path:
    steps = "\n".join(f"  s{i}: {{workflow_id: {i + 1}}}" for i in range(n))
    plan = tmp / f"wide-{n}.yaml"
    plan.write_text(
        f"version: 1\nname: wide-{n}\nmax_parallel: {n}\n"
        f"defaults: {{poll_interval: {poll}s, max_poll_interval: {poll}s, timeout: 2h}}\n"
        f"workflows:\n{steps}\n"
    )
    return plan


def measure_apply(tmp: Path, url: str, port: int, token: str, n: int, args) -> dict[str, float]:
    plan = apply_plan(tmp, n, args.poll)
    env = {**os.environ, "NEXADATA_TOKEN": token}
    command = [sys.executable, "-m", "runbook", "apply", str(plan), "--api-url", url]
    command += ["--state-dir", str(tmp / f"state-{n}"), "--quiet"]
    before = polls(url)
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        figures = settled_window("apply", process.pid, url, port, before, n, args)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, action="append", help="deferred steps (repeatable)")
    parser.add_argument("--poll", type=float, default=5.0, help="seconds between polls")
    parser.add_argument("--window", type=float, default=30.0, help="seconds measured")
    parser.add_argument("--idle", type=float, default=20.0, help="an idle triggerer's wait")
    parser.add_argument("--defer-into", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.defer_into:
        dag_id, executions, poll = args.defer_into
        defer_into(dag_id, json.loads(executions), float(poll))
        return

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from sandbox_process import start_sandbox

    from runbook.sandbox import SANDBOX_TOKEN
    from tests.airflow.conftest import Airflow, build_venv

    sizes = args.n or [100, 500, 1000]
    venv = build_venv()
    with tempfile.TemporaryDirectory(prefix="runbook-triggerer-") as scratch:
        tmp = Path(scratch)
        scenario = tmp / "hour.yaml"
        scenario.write_text("default: {queue: 0, duration: 1h}\n")
        sandbox, url = start_sandbox(scenario)
        port = int(url.split(":")[2].split("/")[0])
        try:
            connection = {"conn_type": "http", "host": url, "password": SANDBOX_TOKEN}
            af = Airflow(venv, tmp / "airflow", url, connection)
            af.migrate()
            one = measure_apply(tmp, url, port, SANDBOX_TOKEN, 1, args)
            rows = []
            for n in sizes:
                t = measure_triggerer(af, url, port, SANDBOX_TOKEN, n, args)
                a = measure_apply(tmp, url, port, SANDBOX_TOKEN, n, args)
                rows.append((n, t, a))
                print(f"N={n}: triggerer {json.dumps(t)}", flush=True)
                print(f"N={n}: apply {json.dumps(a)}", flush=True)
        finally:
            sandbox.send_signal(signal.SIGINT)
            sandbox.wait(timeout=30)

    print(f"\npolling every {args.poll:g} s, a window of {args.window:g} s\n")
    print(
        "| N | program | CPU per poll | polls/s | connections to the API "
        "| memory per step in flight |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for n, t, a in rows:
        for name, f, base in (("triggerer", t, t["idle_rss"]), ("apply", a, one["rss"])):
            per_step = 1024 * (f["rss"] - base) / n
            print(
                f"| {n} | {name} | {f['cpu_per_poll_ms']:.2f} ms | {f['polls'] / f['seconds']:.0f} "
                f"| {f['sockets']:.0f} | {per_step:.0f} KiB ({f['rss']:.0f} MB in all) |"
            )


if __name__ == "__main__":
    main()
