"""What a webhook and a healthchecks ping are sent.

- ``json``: the run report (docs/cli.md, "The run report"), with one more key,
  ``event``; for ``late`` and ``at_risk``, the report as it stands, state ``running``.
- ``slack``: ``{"text": ...}``: a line with the plan, the run id, the event and the
  counts, then a line per failed step. Slack, Mattermost and most chat webhooks take it.
- a ping's body: the plain-text summary, at most 10,000 bytes.
"""

from __future__ import annotations

import io
import json

from runbook.events import RunRecord
from runbook.render.report import report_document
from runbook.render.summary import count_text, write_summary
from runbook.render.wording import late_text

__all__ = ["MAX_PING_BODY", "json_payload", "ping_body", "slack_payload"]

MAX_PING_BODY = 10_000

_HEADLINES = {
    "succeeded": "succeeded",
    "failed": "failed",
    "interrupted": "was interrupted",
    "recovered": "succeeded again after an invocation that did not",
    "at_risk": "is at risk of missing its deadline",
}


def json_payload(run: RunRecord, event: str) -> bytes:
    document = report_document(run)
    document["event"] = event
    return json.dumps(document).encode()


def slack_payload(run: RunRecord, event: str) -> bytes:
    ident = f"run {run.run_id} of" if run.run_id is not None else "a run of"
    if event == "late":
        head = f"runbook: plan {run.plan}: {late_text(run)} ({count_text(run)})"
    else:
        head = f"runbook: {ident} plan {run.plan} {_HEADLINES[event]}: {count_text(run)}"
    lines = [head]
    for step in run.ordered():
        if step.state == "failed" and not step.ignored:
            attempt = step.attempt
            execution = (
                f", execution {attempt.execution_id}"
                if attempt is not None and attempt.execution_id is not None
                else ""
            )
            lines.append(f"• {step.name} (workflow {step.workflow_id}{execution}): {step.reason}")
    return json.dumps({"text": "\n".join(lines)}).encode()


def ping_body(run: RunRecord) -> bytes:
    out = io.StringIO()
    write_summary(out, run)
    body = out.getvalue().encode()
    if len(body) <= MAX_PING_BODY:
        return body
    cut = body[: MAX_PING_BODY - 4].decode(errors="ignore").encode()
    return cut + b"\n..."
