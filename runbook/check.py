"""``runbook check``: what a run at 2 a.m. needs, checked now, every problem in one
pass, and nothing triggered.

Each check gives :class:`Finding`\\ s: the plan; the state dir and its journal; the
plan's lock and what its latest run left running; the metrics dir; every webhook and
ping variable (with ``notify``, a test message to every webhook — never a ping, which
would change the healthchecks check's state); the API's URL, proxy and CA; a token from
the token source; and the token put to the API without triggering anything — a poll of
execution 0, which cannot exist: ``404`` is a token accepted, ``401``/``403`` one
refused, anything else an URL that is not the API's.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from runbook.api.client import API_PATH_HINT
from runbook.errors import ApiError, ApiUnavailable, ConfigError, ExecutionNotFound, RunbookError
from runbook.plan import Plan
from runbook.text import plural, printable

if TYPE_CHECKING:
    from runbook.api.credentials import Credentials
    from runbook.notify.notifier import Webhook

__all__ = ["Finding", "check", "exit_code"]

Level = Literal["ok", "warning", "problem"]


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing checked: ``what`` it was, how it stands, and the exit code of its kind
    when it is a problem (2 plan or usage, 3 token or API, 4 lock, 5 journal)."""

    what: str
    level: Level
    text: str
    code: int = 0


def exit_code(findings: list[Finding]) -> int:
    """0 when nothing is a problem; else the code of the first kind found, in the order
    2, 3, 4, 5."""
    codes = [f.code for f in findings if f.level == "problem"]
    return min(codes) if codes else 0


def check(
    plan_path: str,
    *,
    api_url: str | None = None,
    token_file: str | None = None,
    token_command: str | None = None,
    state_dir: str | None = None,
    metrics_dir: str | None = None,
    notify: bool = False,
    environ: Mapping[str, str] | None = None,
) -> tuple[Plan, list[Finding]]:
    """Every check, in the order a run meets them, with the plan checked. An invalid
    plan is its InputError (every problem of it, exit 2): nothing else can be checked."""
    from runbook.plan import load_plan

    env = os.environ if environ is None else environ
    plan = load_plan(plan_path)
    counts = f"{plural(len(plan.steps), 'workflow')}, {plural(plan.edge_count, 'dependency')}"
    findings = [Finding("plan", "ok", f"{printable(plan.path)}: {counts}")]
    directory = _journal(plan, state_dir, findings)
    if metrics_dir:
        findings.append(_metrics(metrics_dir))
    webhooks = _notifications(plan, env, findings)
    findings += asyncio.run(
        _api(plan, api_url, token_file, token_command, directory, env, webhooks, notify)
    )
    return plan, findings


def _journal(plan: Plan, state_dir: str | None, findings: list[Finding]) -> Path | None:
    from runbook.journal import Store
    from runbook.journal import state_dir as resolve
    from runbook.journal.lock import holder_gone, lock_held
    from runbook.run.resume import left_running

    try:
        directory = resolve(state_dir)
        with Store(directory) as store:
            latest = store.latest(plan.name)
            record = store.load_run(latest) if latest is not None else None
    except RunbookError as exc:
        findings.append(Finding("state dir", "problem", str(exc), exc.exit_code))
        return None
    said = "no run of this plan yet" if latest is None else f"its latest run is run {latest.id}"
    findings.append(Finding("state dir", "ok", f"{directory}: the journal is usable ({said})"))
    # the lock is never taken to find out: an apply starting that instant would exit 4
    running = None
    if lock_held(directory, plan.name):
        running = "an apply of this plan is running now"
    elif (
        latest is not None
        and latest.state == "running"
        and not holder_gone(directory, plan.name, latest.pid, latest.host)
    ):
        running = (
            f"run {latest.id} is running, as the journal says (pid {latest.pid} on "
            f"{printable(latest.host)})"
        )
    if running is not None:
        findings.append(Finding("lock", "problem", running, 4))
    elif record is not None and latest is not None and latest.state != "abandoned":
        unseen, _ = left_running(record)
        if unseen:
            listed = ", ".join(step.name for step, _ in unseen)
            findings.append(
                Finding(
                    "lock",
                    "problem",
                    f"run {latest.id} left executions that may still be running ({listed}): "
                    "a new apply would refuse to start; --resume follows them, --new-run "
                    "leaves them",
                    4,
                )
            )
        else:
            findings.append(Finding("lock", "ok", "free"))
    else:
        findings.append(Finding("lock", "ok", "free"))
    return directory


def _metrics(directory: str) -> Finding:
    from runbook.notify.metrics import check_metrics_dir

    try:
        check_metrics_dir(directory)
    except RunbookError as exc:
        return Finding("metrics dir", "problem", str(exc), exc.exit_code)
    return Finding("metrics dir", "ok", f"{printable(directory)}: writable")


def _notifications(plan: Plan, env: Mapping[str, str], findings: list[Finding]) -> list[Webhook]:
    if not (plan.notify or plan.healthchecks):
        return []
    from runbook.notify.notifier import read_targets

    webhooks, ping, problems = read_targets(plan, env)
    for problem in problems:
        what, _, text = problem.partition(": ")
        findings.append(Finding(what, "problem", text, 3))
    for index, hook in enumerate(webhooks):
        findings.append(Finding(f"notify[{index}]", "ok", f"{hook.url.host} ({hook.format})"))
    if ping is not None:
        findings.append(Finding("healthchecks", "ok", f"{ping.host}: set (not pinged)"))
    return list(webhooks)


async def _api(
    plan: Plan,
    api_url: str | None,
    token_file: str | None,
    token_command: str | None,
    directory: Path | None,
    env: Mapping[str, str],
    webhooks: list[Webhook],
    notify: bool,
) -> list[Finding]:
    """The test messages, then the target, a token, and the token put to the API. With
    no usable state dir (already a finding), a client_credentials client's cache goes
    to a scratch one, gone after the check, never to the current directory; a rotating
    refresh token is not used at all."""
    findings = await _test_messages(plan, webhooks) if notify else []
    oauth = plan.api.oauth
    rotating = oauth is not None and oauth.grant == "refresh_token"
    if directory is None and rotating and not (token_file or token_command):
        # each token minted replaces the refresh token: the new one must be kept in the
        # state dir's cache, or the next apply sends the old one and the family is revoked
        return [
            *findings,
            Finding(
                "token",
                "warning",
                "not checked: the OAuth client's refresh token rotates with every token, "
                "and the new one is kept in the state dir's credential cache, which cannot "
                "be used (see the state dir)",
            ),
        ]
    with ExitStack() as scratch:
        if directory is None:
            import tempfile

            directory = Path(
                scratch.enter_context(tempfile.TemporaryDirectory(prefix="runbook-check-"))
            )
        findings += await _token(plan, api_url, token_file, token_command, directory, env)
    return findings


async def _token(
    plan: Plan,
    api_url: str | None,
    token_file: str | None,
    token_command: str | None,
    directory: Path,
    env: Mapping[str, str],
) -> list[Finding]:
    """The target (URL, proxy, CA, token source), a token, and the token put to the API."""
    from runbook.target import api_target

    findings: list[Finding] = []
    try:
        target = api_target(
            plan,
            api_url=api_url,
            token_file=token_file,
            token_command=token_command,
            state_dir=directory,
            environ=env,
        )
    except RunbookError as exc:
        return [Finding("token", "problem", str(exc), exc.exit_code)]
    url = target.base_url
    via = f" through the proxy {urlsplit(target.proxy).hostname}" if target.proxy else ""
    if not urlsplit(url).path.rstrip("/").endswith("/api/v1"):
        findings.append(Finding("API URL", "warning", f"{url}: {API_PATH_HINT}"))
    credentials = target.auth.credentials
    try:
        try:
            await credentials.token()
        except RunbookError as exc:
            return [*findings, Finding("token", "problem", str(exc), exc.exit_code)]
        findings.append(Finding("token", "ok", f"from {credentials.origin}"))
        findings.append(await _probe(url, credentials, target.proxy, via))
    finally:
        await credentials.aclose()
    return findings


async def _probe(url: str, credentials: Credentials, proxy: str | None, via: str) -> Finding:
    """The token put to the API with a poll of execution 0, which cannot exist."""
    from runbook.api import NexadataClient
    from runbook.api.pacing import RetryPolicy

    policy = RetryPolicy(attempts=2, rate_limited_attempts=2, retry_after_cap=5.0)
    try:
        async with NexadataClient(
            url, credentials, retry=policy, max_in_flight=1, proxy=proxy
        ) as api:
            await api.get_execution(0)
    except ExecutionNotFound:
        if "html" in api.last_content_type:  # a web server's "not found" page, not the API
            return Finding(
                "API", "problem", f"{url} answered with a web page (404): {API_PATH_HINT}", 3
            )
        return Finding("API", "ok", f"{url} answers{via}, and accepts the token")
    except ApiUnavailable as exc:  # it answered, but not as the API would
        return Finding("API", "problem", f"{url}{via}: {exc}; {API_PATH_HINT}", 3)
    except ConfigError as exc:  # refused (401/403), TLS, proxy
        return Finding("API", "problem", str(exc), exc.exit_code)
    except ApiError as exc:
        return Finding("API", "problem", f"{url}: {exc}; {API_PATH_HINT}", 3)
    return Finding(
        "API", "problem", f"{url} answered a poll of execution 0 with a record: {API_PATH_HINT}", 3
    )


async def _test_messages(plan: Plan, webhooks: list[Webhook]) -> list[Finding]:
    """One test message to every webhook, each saying it is a test."""
    from runbook.notify.delivery import post
    from runbook.notify.payloads import slack_literal

    findings = []
    text = f"runbook check: a test message for plan {plan.name}; nothing was run"
    for index, hook in enumerate(webhooks):
        body: dict[str, object]
        if hook.format == "slack":
            body = {
                "text": f"runbook check: a test message for plan {slack_literal(plan.name)}"
                "; nothing was run"
            }
        else:
            body = {"event": "test", "test": True, "plan": plan.name, "message": text}
        delivery = await post(hook.url, json.dumps(body).encode(), "application/json")
        what = f"notify[{index}]"
        if delivery.ok:
            findings.append(Finding(what, "ok", f"{hook.url.host}: a test message was delivered"))
        else:
            findings.append(
                Finding(what, "problem", f"{hook.url.host}: not delivered: {delivery.error}", 3)
            )
    return findings
