"""Start-up as processes: ``runbook validate`` whole, ``runbook apply`` to its first request.

- *validate*: ``runbook validate`` of a 20-step plan, a new process each time; its CPU
  (user + sys) from ``os.wait4``, the whole process. Target: <= 0.15 s.
- *apply to first request*: ``runbook apply`` of the same plan against a loopback HTTP
  server in this process. When the first request arrives, the server reads the apply
  process's CPU from ``/proc/PID/stat`` (user + sys, in clock ticks), then answers 401 so
  that the run ends. Target: <= 0.2 s.

Both run the installed ``runbook`` console script, as a user or cron does, with its
``.pyc`` files written and used (``PYTHONDONTWRITEBYTECODE`` is dropped for the children).
Runs are interleaved; medians are printed with every run's figure.

With ``--against TREE`` (another checkout's root, e.g. a ``git worktree`` of an older
commit), each run of this tree is paired with one of ``TREE``'s (``PYTHONPATH``), and the
median of the per-pair differences is printed: the machine's drift over the minutes of
a run falls on both sides, which two separate runs' medians cannot promise.

    python benchmarks/startup.py [--repeat 7] [--against TREE]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def plan_text(steps: int = 20) -> str:
    lines = ["version: 1", "name: startup", "max_parallel: 4", "workflows:"]
    for index in range(1, steps + 1):
        after = f", depends_on: [s{index - 1:02d}]" if index > 1 else ""
        lines.append(f"  s{index:02d}: {{workflow_id: {index}{after}}}")
    return "\n".join(lines) + "\n"


def process_cpu(pid: int) -> float:
    """User + sys CPU of a running process, from /proc (clock-tick resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14, 15)


class FirstRequest(HTTPServer):
    """Answers every request 401; records the client's CPU at the first one."""

    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.pid = 0
        self.cpu: float | None = None
        self.seen = threading.Event()


class Handler(BaseHTTPRequestHandler):
    server: FirstRequest

    def _answer(self) -> None:
        if self.server.cpu is None:
            self.server.cpu = process_cpu(self.server.pid)
            self.server.seen.set()
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = b'{"message": "bad token"}'
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


def runbook_command() -> str:
    found = shutil.which("runbook", path=str(Path(sys.executable).parent))
    if found is None:
        raise SystemExit("no runbook console script beside this python: pip install -e .")
    return found


def source_env(tree: str | None) -> dict[str, str]:
    """This environment, with ``tree``'s runbook imported first (None: the installed one)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    if tree:
        env["PYTHONPATH"] = tree
    return env


def validate_cpu(command: str, plan: Path, tree: str | None = None) -> float:
    process = subprocess.Popen(
        [command, "validate", str(plan)], stdout=subprocess.DEVNULL, env=source_env(tree)
    )
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError("validate failed")
    return usage.ru_utime + usage.ru_stime


def apply_cpu(
    command: str, plan: Path, state: Path, tree: str | None = None
) -> tuple[float, float]:
    """(CPU at the first request, CPU of the whole process)."""
    server = FirstRequest()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/api/v1"
    env = {**source_env(tree), "NEXADATA_TOKEN": "startup-token", "RUNBOOK_STATE_DIR": str(state)}
    try:
        process = subprocess.Popen(
            [command, "apply", str(plan), "--api-url", url],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        server.pid = process.pid
        _, _, usage = os.wait4(process.pid, 0)
    finally:
        server.shutdown()
        server.server_close()
    if server.cpu is None:
        raise RuntimeError("apply sent no request")
    return server.cpu, usage.ru_utime + usage.ru_stime


def paired(command: str, plan: Path, tmp: Path, against: str, repeat: int) -> None:
    """This tree and ``against`` (another checkout's root), one run of each in turn, so
    that the machine's drift falls on both: the median of the per-pair differences."""
    here = str(Path(__file__).resolve().parent.parent)
    diffs: dict[str, list[float]] = {"validate": [], "first": [], "whole": []}
    for run in range(repeat):
        ours = (validate_cpu(command, plan, here), *apply_cpu(command, plan, tmp / f"a{run}", here))
        theirs = (
            validate_cpu(command, plan, against),
            *apply_cpu(command, plan, tmp / f"b{run}", against),
        )
        for key, a, b in zip(diffs, ours, theirs, strict=True):
            diffs[key].append(a - b)
    print(f"this tree - {against}, {repeat} interleaved pairs (CPU, median and quartiles):")
    for key, values in diffs.items():
        values.sort()
        q1, q3 = values[len(values) // 4], values[3 * len(values) // 4]
        print(f"  {key:8s} {statistics.median(values):+.3f} s  ({q1:+.3f} .. {q3:+.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument(
        "--against",
        metavar="TREE",
        help="another checkout of runbook (its root): print the paired differences instead",
    )
    args = parser.parse_args()
    command = runbook_command()
    socket.setdefaulttimeout(30)
    with tempfile.TemporaryDirectory() as tmp:
        plan = Path(tmp) / "plan.yaml"
        plan.write_text(plan_text())
        validate_cpu(command, plan)  # warm the .pyc files and the page cache
        if args.against:
            validate_cpu(command, plan, args.against)
            paired(command, plan, Path(tmp), args.against, args.repeat)
            return
        validates, firsts, wholes = [], [], []
        for run in range(args.repeat):
            validates.append(validate_cpu(command, plan))
            first, whole = apply_cpu(command, plan, Path(tmp) / f"state{run}")
            firsts.append(first)
            wholes.append(whole)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {args.repeat} runs each")
    print(
        f"validate, 20 steps, whole process: median {statistics.median(validates):.3f} s "
        f"CPU (target <= 0.15)   runs: " + " ".join(f"{v:.3f}" for v in validates)
    )
    print(
        f"apply, start to first request:     median {statistics.median(firsts):.3f} s "
        f"CPU (target <= 0.20)   runs: " + " ".join(f"{v:.2f}" for v in firsts)
    )
    print(f"apply, whole process (401 answer): median {statistics.median(wholes):.3f} s CPU")


if __name__ == "__main__":
    main()
