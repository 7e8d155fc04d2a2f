"""The run's report as JSON (``--report``) and as JUnit XML (``--junit``)."""

from __future__ import annotations

import json
from typing import Any

from runbook import conditions
from runbook.events import RunRecord, StepRecord
from runbook.files import write_atomically
from runbook.render.jsonlines import attempt_fields, in_flight_fields
from runbook.render.wording import stamp, step_duration

__all__ = ["report_document", "write_junit", "write_report"]


def report_document(run: RunRecord) -> dict[str, Any]:
    """The report's keys, exactly as docs/cli.md states them."""
    document: dict[str, Any] = {
        "plan": run.plan,
        "run_id": run.run_id,
        "state": run.state,
        "started_at": stamp(run.started_at),
        "ended_at": stamp(run.ended_at) if run.ended_at is not None else None,
        "late": run.late,
        "steps": [_step(step) for step in run.ordered()],
        "notifications": [
            {
                "kind": record.kind,
                "event": record.event,
                "target": record.target,
                "ok": record.ok,
                "error": record.error,
                "attempts": record.attempts,
            }
            for record in run.notifications
        ],
        "api_url": run.api_url,
        "auth": run.auth,
        "token_refreshes": run.token_refreshes,
    }
    if run.auth_failed:
        document.update(auth_failed=True, in_flight=in_flight_fields(run))
    if run.died is not None:  # this invocation resumed a run whose process had died
        document["died"] = {"pid": run.died.pid, "host": run.died.host}
    return document


def _step(step: StepRecord) -> dict[str, Any]:
    return {
        "name": step.name,
        "workflow_id": step.workflow_id,
        "state": step.state,
        "reason": step.reason,
        "run_if": conditions.written(step.run_if),
        "on_failure": step.on_failure,
        "ignored": step.ignored,
        "attempts": [attempt_fields(attempt) for attempt in step.attempts],
    }


def write_report(path: str, run: RunRecord) -> None:
    write_atomically(path, json.dumps(report_document(run), indent=2) + "\n")


def write_junit(path: str, run: RunRecord) -> None:
    """One test case per step: failed -> failure; skipped, cancelled, pending and a
    failure under ``on_failure: ignore`` -> skipped."""
    import xml.etree.ElementTree as ET  # only for --junit: a run without it skips the import

    steps = run.ordered()
    failures = sum(1 for step in steps if step.state == "failed" and not step.ignored)
    skipped = len(steps) - failures - run.count("succeeded")
    total = (run.ended_at or run.started_at) - run.started_at
    suite = ET.Element(
        "testsuite",
        {
            "name": run.plan,
            "tests": str(len(steps)),
            "failures": str(failures),
            "errors": "0",
            "skipped": str(skipped),
            "time": f"{total:.3f}",
            "timestamp": stamp(run.started_at),
        },
    )
    for step in steps:
        duration = step_duration(step) or 0.0
        case = ET.SubElement(
            suite,
            "testcase",
            {
                "classname": run.plan,
                "name": step.name,
                "time": f"{duration:.3f}",
            },
        )
        attempt = step.attempt
        properties = ET.SubElement(case, "properties")
        ET.SubElement(
            properties, "property", {"name": "workflow_id", "value": str(step.workflow_id)}
        )
        if attempt is not None and attempt.execution_id is not None:
            ET.SubElement(
                properties, "property", {"name": "execution_id", "value": str(attempt.execution_id)}
            )
        if step.ignored:
            message = f"failed (on_failure: ignore): {step.reason}"
            ET.SubElement(case, "skipped", {"message": message})
        elif step.state == "failed":
            failure = ET.SubElement(case, "failure", {"message": step.reason or "failed"})
            lines = [f"workflow {step.workflow_id}"]
            if attempt is not None and attempt.execution_id is not None:
                lines.append(f"execution {attempt.execution_id} ({attempt.state})")
            lines += [f"error: {error}" for error in (attempt.errors if attempt else ())]
            failure.text = "\n".join(lines)
        elif step.state != "succeeded":
            ET.SubElement(case, "skipped", {"message": f"{step.state}: {step.reason}"})
    ET.indent(suite)
    text = ET.tostring(suite, encoding="unicode", xml_declaration=True)
    write_atomically(path, text + "\n")
