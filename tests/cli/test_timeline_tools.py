"""The timeline in the programs that read it: a real headless Chromium (Debian's
``chromium``; ``.ci/run`` installs it when missing) loads the HTML from a ``file://``
path with every host unresolvable, and the real Mermaid parser (``mermaid`` from the npm
registry under Node, installed into a cached folder as the Airflow virtualenv is) reads
the gantt chart.

One browser start makes the screenshot, the DOM and the network log checked here.
``RUNBOOK_SCREENSHOT=docs/timeline.png`` keeps the screenshot: the docs' picture.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from runbook.sandbox.scenario import Scenario, load_scenario
from tests.support.paths import REAL_CACHE, ROOT

ROLLBACK = load_scenario(ROOT / "examples" / "scenarios" / "rollback.yaml")
MERMAID = "11.17.2"
JSDOM = "24.1.3"
PARSE = """\
import { JSDOM } from 'jsdom';
const dom = new JSDOM('<!doctype html><html><body></body></html>');
globalThis.window = dom.window; globalThis.document = dom.window.document;
const mermaid = (await import('mermaid')).default;
const text = (await import('node:fs')).readFileSync(0, 'utf8');
await mermaid.parse(text);  // throws on a chart it cannot read
const diagram = await mermaid.mermaidAPI.getDiagramFromText(text);
console.log(JSON.stringify({
  type: diagram.type,
  tasks: diagram.db.getTasks().map(t => ({task: t.task.trim(), section: t.section,
    start: +t.startTime, end: +t.endTime, milestone: !!t.milestone})),
}));
"""


@pytest.fixture
def cleanup_run(cli, api, tmp_path: Path) -> dict[str, str]:
    """examples/cleanup.yaml on a night its load fails (its rollback scenario, ten times
    faster): the timeline in each format."""
    api(Scenario(default={"queue": 0.02, "duration": 0.1}, workflows=ROLLBACK.workflows))
    plan = tmp_path / "cleanup.yaml"
    text = (ROOT / "examples" / "cleanup.yaml").read_text()
    for slow, fast in (
        ("retry_delay: 2s", "retry_delay: 200ms"),
        ("poll_interval: 500ms", "poll_interval: 20ms"),
        ("max_poll_interval: 5s", "max_poll_interval: 50ms"),
    ):
        assert slow in text
        text = text.replace(slow, fast)
    plan.write_text(text)
    page = tmp_path / "timeline.html"
    assert cli("apply", str(plan), "--timeline", str(page)).code == 1
    return {"html": str(page), "mermaid": cli("timeline", "--format", "mermaid").out}


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, (
        "the browser tests need Debian's chromium (.ci/run installs it): apt install chromium"
    )
    return found


def _pixels(png: bytes) -> set[bytes]:
    """The distinct RGB(A) pixels of a PNG (8-bit, no interlace: what Chromium writes)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    at, data, width, channels = 8, b"", 0, 4
    while at < len(png):
        (length,), kind = struct.unpack(">I", png[at : at + 4]), png[at + 4 : at + 8]
        body = png[at + 8 : at + 8 + length]
        if kind == b"IHDR":
            width, _, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8
            channels = {2: 3, 6: 4}[colour]
        elif kind == b"IDAT":
            data += body
        at += 12 + length
    raw = zlib.decompress(data)
    stride = width * channels + 1
    seen: set[bytes] = set()
    for row in range(0, len(raw), stride * 7):  # every 7th row: plenty to tell blank
        line = raw[row + 1 : row + stride]  # (filters aside: a blank page is one value)
        seen.update(line[i : i + channels] for i in range(0, len(line), channels * 5))
    return seen


def test_the_page_renders_offline_in_a_real_browser_and_fetches_nothing(
    cleanup_run, tmp_path: Path
) -> None:
    page = Path(cleanup_run["html"])
    shot, netlog = tmp_path / "shot.png", tmp_path / "net.json"
    done = subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--window-size=1280,900",
            f"--screenshot={shot}",
            f"--log-net-log={netlog}",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    for step in ("take_warehouse_lock", "load_warehouse", "restore_snapshot", "page_on_call"):
        assert f'data-step="{step}"' in dom
    assert dom.count('class="row"') == 10
    assert "<svg" in dom and '<table id="steps">' in dom
    # non-blank: the bars' colours are in the picture, not a white page
    png = shot.read_bytes()
    assert len(_pixels(png)) > 20
    if target := os.environ.get("RUNBOOK_SCREENSHOT"):
        Path(target).write_bytes(png)
    # nothing requested by the page: a request it starts has its opaque file origin as
    # initiator ("null"); the browser's own background ones have none ("not an origin")
    log = json.loads(netlog.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    fetched = [
        params.get("url")
        for event in log["events"]
        if event["type"] == start
        and (params := event.get("params") or {}).get("initiator", "not an origin")
        != "not an origin"
    ]
    assert fetched == [], fetched


def _mermaid_dir() -> Path:
    """The cached Mermaid parser, installed now if it is not complete (under a lock)."""
    folder = REAL_CACHE / "runbook" / f"mermaid-{MERMAID}-jsdom-{JSDOM}"
    done = folder / "runbook-complete"
    if done.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f"{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            npm = shutil.which("npm")
            assert npm, "the Mermaid test needs Node and npm"
            installed = subprocess.run(
                [
                    npm,
                    "install",
                    "--prefix",
                    str(folder),
                    "--no-audit",
                    "--no-fund",
                    f"mermaid@{MERMAID}",
                    f"jsdom@{JSDOM}",
                ],
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert installed.returncode == 0, installed.stderr[-3000:]
            done.write_text("installed\n")
    return folder


def test_the_gantt_chart_parses_with_the_real_mermaid_parser(cleanup_run, tmp_path: Path) -> None:
    folder = _mermaid_dir()
    script = folder / "parse.mjs"
    script.write_text(PARSE)
    parsed = subprocess.run(
        ["node", str(script)],
        input=cleanup_run["mermaid"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=folder,
    )
    assert parsed.returncode == 0, parsed.stderr[-3000:]
    chart = json.loads(parsed.stdout)
    assert chart["type"] == "gantt"
    tasks = chart["tasks"]
    names = {task["task"].split(" (")[0].split(" attempt")[0].rstrip(" ★") for task in tasks}
    assert names == {
        "take_warehouse_lock",
        "snapshot_warehouse",
        "extract_orders",
        "extract_customers",
        "load_warehouse",
        "restore_snapshot",
        "refresh_dashboards",
        "export_partner_feed",
        "release_warehouse_lock",
        "page_on_call",
    }
    loads = [t for t in tasks if t["task"].startswith("load_warehouse")]
    assert len(loads) == 2 and loads[0]["end"] <= loads[1]["start"]  # the retry after it
    assert all(t["start"] <= t["end"] for t in tasks)
    assert {t["task"] for t in tasks if t["milestone"]} == {
        "refresh_dashboards (skipped)",
        "export_partner_feed (skipped)",
    }
