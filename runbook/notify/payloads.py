"""What a webhook and a healthchecks ping are sent.

- ``json``: the run report (docs/cli.md, "The run report"), with ``event``, and what
  the people paged read first: ``failures`` (each failed step, its reason and the API's
  first error) and ``clean_up`` (each clean-up step that ran, and how it ended); for
  ``late`` and ``at_risk``, the report as it stands, state ``running``.
- ``slack``: ``{"text": ...}``: a line with the plan, the run id, the event and the
  counts, then a line per failed step with the API's first error, then the clean-up
  steps that ran. Slack, Mattermost and most chat webhooks take it.
  Every text runbook did not write itself (the plan's and steps' names, a reason that
  quotes the API) goes through :func:`slack_literal`: the API or a plan must not be able
  to mention ``<!channel>``, plant a masked link, or style the on-call message.
- a ping's body: the plain-text summary, at most 10,000 bytes.
"""

from __future__ import annotations

import io
import json

from runbook import conditions
from runbook.conditions import is_cleanup
from runbook.events import RunRecord, StepRecord
from runbook.render.report import report_document
from runbook.render.summary import count_text, write_summary
from runbook.render.wording import late_text

__all__ = ["MAX_PING_BODY", "json_payload", "ping_body", "slack_literal", "slack_payload"]

MAX_PING_BODY = 10_000
MAX_ERROR = 200
"""An API error in a message is cut to this many characters (it was redacted already)."""

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
    document["failures"] = [
        {
            "step": step.name,
            "workflow_id": step.workflow_id,
            "execution_id": step.attempt.execution_id if step.attempt else None,
            "reason": step.reason,
            "error": _first_error(step),
        }
        for step in _failed(run)
    ]
    document["clean_up"] = [
        {
            "step": step.name,
            "run_if": conditions.written(step.run_if),
            "state": step.state,
            "reason": step.reason,
        }
        for step in _clean_up(run)
    ]
    return json.dumps(document).encode()


def _failed(run: RunRecord) -> list[StepRecord]:
    return [step for step in run.ordered() if step.state == "failed" and not step.ignored]


def _clean_up(run: RunRecord) -> list[StepRecord]:
    """The clean-up steps (``run_if`` failure, always, or a mapping that accepts a
    failure or a skip) that started."""
    return [step for step in run.ordered() if is_cleanup(step.run_if) and step.attempts]


def _first_error(step: StepRecord) -> str | None:
    """The API's first error of the step's last attempt, cut to MAX_ERROR characters."""
    attempt = step.attempt
    if attempt is None or not attempt.errors:
        return None
    error = attempt.errors[0]
    return error if len(error) <= MAX_ERROR else error[: MAX_ERROR - 1] + "…"


def slack_payload(run: RunRecord, event: str) -> bytes:
    ident = f"run {run.run_id} of" if run.run_id is not None else "a run of"
    plan = slack_literal(run.plan)
    if event == "late":
        head = f"runbook: plan {plan}: {late_text(run)} ({count_text(run)})"
    else:
        head = f"runbook: {ident} plan {plan} {_HEADLINES[event]}: {count_text(run)}"
    lines = [head]
    for step in _failed(run):
        attempt = step.attempt
        execution = (
            f", execution {attempt.execution_id}"
            if attempt is not None and attempt.execution_id is not None
            else ""
        )
        name, reason = slack_literal(step.name), slack_literal(step.reason or "")
        lines.append(f"• {name} (workflow {step.workflow_id}{execution}): {reason}")
        if (error := _first_error(step)) is not None:
            lines.append(f"    error: {slack_literal(error)}")
    cleaned = _clean_up(run)
    if cleaned:
        done = ", ".join(f"{slack_literal(step.name)} {step.state}" for step in cleaned)
        lines.append(f"clean-up: {done}")
    return json.dumps({"text": "\n".join(lines)}).encode()


def ping_body(run: RunRecord) -> bytes:
    out = io.StringIO()
    write_summary(out, run)
    body = out.getvalue().encode()
    if len(body) <= MAX_PING_BODY:
        return body
    cut = body[: MAX_PING_BODY - 4].decode(errors="ignore").encode()
    return cut + b"\n..."
