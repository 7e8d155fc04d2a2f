"""The sandbox in a process of its own, for benchmarks: start it, read its stats."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any


def start_sandbox(scenario: Path) -> tuple[subprocess.Popen[str], str]:
    """``runbook sandbox --port 0 --scenario FILE``; returns the process and its base URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "runbook", "sandbox", "--port", "0", "--scenario", str(scenario)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    for line in process.stdout:
        found = re.search(r"base URL\s+(\S+)", line)
        if found:
            return process, found.group(1)
    raise RuntimeError("the sandbox did not print its base URL")


def stats(url: str) -> dict[str, Any]:
    """The sandbox's counters (``GET /__sandbox/stats``, on loopback)."""
    with urllib.request.urlopen(url.removesuffix("/api/v1") + "/__sandbox/stats") as answer:
        return dict(json.load(answer))
