"""What a webhook and a healthchecks ping are sent.

- ``json``: the run report (docs/cli.md, "The run report"), with one more key,
  ``event``; for ``late`` and ``at_risk``, the report as it stands, state ``running``.
- ``slack``: ``{"text": ...}``: a line with the plan, the run id, the event and the
  counts, then a line per failed step. Slack, Mattermost and most chat webhooks take it.
  Every text runbook did not write itself (the plan's and steps' names, a reason that
  quotes the API) goes through :func:`slack_literal`: the API or a plan must not be able
  to mention ``<!channel>``, plant a masked link, or style the on-call message.
- a ping's body: the plain-text summary, at most 10,000 bytes.
"""

from __future__ import annotations

import io
import json

from runbook.events import RunRecord
from runbook.render.report import report_document
from runbook.render.summary import count_text, write_summary
from runbook.render.wording import late_text

__all__ = ["MAX_PING_BODY", "json_payload", "ping_body", "slack_literal", "slack_payload"]

MAX_PING_BODY = 10_000

_HEADLINES = {
    "succeeded": "succeeded",
    "failed": "failed",
    "interrupted": "was interrupted",
    "recovered": "succeeded again after an invocation that did not",
    "at_risk": "is at risk of missing its deadline",
}


def slack_literal(text: str) -> str:
    """``text`` as Slack shows it and never parses: in a code span (no emphasis, no
    emoji, no bare link), with ``&``, ``<`` and ``>`` escaped as Slack's formatting rules
    ask (no mention, no ``<url|label>`` link), and each backtick, which would end the
    span, made U+02CB (the modifier letter grave accent, its look-alike). Empty text
    stays empty."""
    if not text:
        return ""
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return "`" + escaped.replace("`", "\u02cb") + "`"


def json_payload(run: RunRecord, event: str) -> bytes:
    document = report_document(run)
    document["event"] = event
    return json.dumps(document).encode()


def slack_payload(run: RunRecord, event: str) -> bytes:
    ident = f"run {run.run_id} of" if run.run_id is not None else "a run of"
    plan = slack_literal(run.plan)
    if event == "late":
        head = f"runbook: plan {plan}: {late_text(run)} ({count_text(run)})"
    else:
        head = f"runbook: {ident} plan {plan} {_HEADLINES[event]}: {count_text(run)}"
    lines = [head]
    for step in run.ordered():
        if step.state == "failed" and not step.ignored:
            attempt = step.attempt
            execution = (
                f", execution {attempt.execution_id}"
                if attempt is not None and attempt.execution_id is not None
                else ""
            )
            name, reason = slack_literal(step.name), slack_literal(step.reason or "")
            lines.append(f"• {name} (workflow {step.workflow_id}{execution}): {reason}")
    return json.dumps({"text": "\n".join(lines)}).encode()


def ping_body(run: RunRecord) -> bytes:
    out = io.StringIO()
    write_summary(out, run)
    body = out.getvalue().encode()
    if len(body) <= MAX_PING_BODY:
        return body
    cut = body[: MAX_PING_BODY - 4].decode(errors="ignore").encode()
    return cut + b"\n..."
