"""The sink that tells webhooks and a healthchecks check how the run goes.

| event         | when                                                                 |
| ------------- | -------------------------------------------------------------------- |
| succeeded     | the run ended succeeded                                              |
| failed        | the run ended failed (an authentication failure ends it failed too)  |
| interrupted   | a signal interrupted it                                              |
| recovered     | it succeeded, and the plan's previous invocation did not             |
| late          | it is still going past its deadline: once per run, while it runs     |
| at_risk       | the forecast's p90 end passes the deadline (told by the forecast)    |

Pings: ``/start`` when an invocation starts, the URL itself when the run succeeded,
``/fail`` when it failed or was interrupted, the summary as the end ping's body.

Nothing here changes the run: a delivery that fails is a NotificationSent event with
``ok`` false (the journal keeps it, stderr or JSON lines say it), and everything sent
at the end — every target's notifications and the end ping — holds the end of the run
for at most ``end_budget`` seconds in all.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from runbook._compat import assert_never
from runbook.errors import ONE_PER_LINE, ConfigError
from runbook.events import (
    AttemptFinished,
    AttemptTriggered,
    AttemptTriggering,
    Event,
    ExecutionSeen,
    Forecasted,
    Notice,
    NotificationRecord,
    NotificationSent,
    RetryScheduled,
    RunFinished,
    RunLate,
    RunRecord,
    RunStarted,
    SignalReceived,
    StepFinished,
)
from runbook.notify import payloads
from runbook.notify.delivery import Delivery, post
from runbook.notify.urls import SecretUrl, secret_url
from runbook.plan import NotifyEvent, Plan

__all__ = ["END_BUDGET", "Notifier", "Webhook", "targets_of"]

END_BUDGET = 30.0
"""The most the end of a run waits for what it sends."""

Kind = Literal["webhook", "healthchecks"]


@dataclass(frozen=True, slots=True)
class Webhook:
    url: SecretUrl
    on: tuple[NotifyEvent, ...]
    format: Literal["json", "slack"]


def targets_of(
    plan: Plan, environ: Mapping[str, str] | None = None
) -> tuple[list[Webhook], SecretUrl | None]:
    """The plan's webhooks and ping URL, read from the environment: a ConfigError
    (exit 3) naming every variable that cannot be used, all in one message."""
    webhooks, ping, problems = read_targets(plan, environ)
    if problems:
        raise ConfigError(ONE_PER_LINE.join(problems))
    return webhooks, ping


def read_targets(
    plan: Plan, environ: Mapping[str, str] | None = None
) -> tuple[list[Webhook], SecretUrl | None, list[str]]:
    """The webhooks and the ping URL that can be used, and what is wrong with each of
    the others (``notify[0]: the environment variable HOOK is not set or empty``)."""
    webhooks: list[Webhook] = []
    ping = None
    problems: list[str] = []
    for index, target in enumerate(plan.notify):
        try:
            url = secret_url(target.webhook_env, f"notify[{index}]", environ)
        except ConfigError as exc:
            problems.append(str(exc))
        else:
            webhooks.append(Webhook(url, target.on, target.format))
    if plan.healthchecks is not None:
        try:
            ping = secret_url(plan.healthchecks.ping_url_env, "healthchecks", environ)
        except ConfigError as exc:
            problems.append(str(exc))
    return webhooks, ping, problems


Post = Callable[..., Awaitable[Delivery]]


class Notifier:
    """Webhooks and pings for one invocation of a run.

    ``recovered``: the plan's previous invocation did not succeed, so a success is a
    recovery. ``late_told``: an earlier invocation of this run already sent ``late``.
    ``tell``: how deliveries reach the other sinks (the executor's ``tell``).
    """

    def __init__(
        self,
        webhooks: Sequence[Webhook],
        ping: SecretUrl | None,
        *,
        tell: Callable[[Event], None],
        recovered: bool = False,
        late_told: bool = False,
        end_budget: float = END_BUDGET,
        wall: Callable[[], float] = time.time,
        send: Post = post,
    ) -> None:
        self.webhooks = list(webhooks)
        self.ping = ping
        self._tell = tell
        self._recovered = recovered
        self._late_told = late_told
        self._end_budget = end_budget
        self._wall = wall
        self._send = send
        self._run: RunRecord | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._start_ping: asyncio.Task[None] | None = None
        self._cutting = False

    def __call__(self, event: Event) -> Awaitable[None] | None:
        match event:
            case RunStarted(run=run):
                self._run = run
                if self.ping is not None:
                    self._start_ping = self._spawn(
                        "healthchecks", "start", self.ping.with_suffix("/start"), b"", 1
                    )
            case RunLate(run=run):
                if not self._late_told:
                    self._late_told = True
                    self._notify(run, ("late",))
            case RunFinished(run=run):
                return self._end(run)
            case Forecasted(run=run, at_risk=True):
                self._notify(run, ("at_risk",))
            case (
                AttemptTriggering()
                | AttemptTriggered()
                | ExecutionSeen()
                | AttemptFinished()
                | RetryScheduled()
                | StepFinished()
                | Notice()
                | SignalReceived()
                | NotificationSent()
                | Forecasted()
            ):
                pass
            case _:
                assert_never(event)
        return None

    def _notify(self, run: RunRecord, events: Sequence[NotifyEvent]) -> None:
        """One POST for each target and each of ``events`` it is told of; the payload
        is the run as it stands now."""
        for webhook in self.webhooks:
            for name in events:
                if name in webhook.on:
                    body = (
                        payloads.slack_payload(run, name)
                        if webhook.format == "slack"
                        else payloads.json_payload(run, name)
                    )
                    self._spawn("webhook", name, webhook.url, body, None)

    async def _end(self, run: RunRecord) -> None:
        """Send the run's end, and wait for everything still under way, for at most
        the end budget."""
        events: list[NotifyEvent] = []
        if run.state in ("succeeded", "failed", "interrupted"):  # never running, abandoned
            events.append(run.state)
        if run.state == "succeeded" and self._recovered:
            events.append("recovered")
        self._notify(run, events)
        if self.ping is not None:
            url = self.ping if run.state == "succeeded" else self.ping.with_suffix("/fail")
            self._spawn("healthchecks", run.state, url, payloads.ping_body(run), 1)
        if not self._tasks:
            return
        _, late = await asyncio.wait(self._tasks, timeout=self._end_budget)
        self._cutting = True
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)

    def _spawn(
        self, kind: Kind, event: str, url: SecretUrl, body: bytes, attempts: int | None
    ) -> asyncio.Task[None]:
        after = self._start_ping if kind == "healthchecks" and event != "start" else None
        task = asyncio.get_running_loop().create_task(
            self._deliver(kind, event, url, body, attempts, after)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _deliver(
        self,
        kind: Kind,
        event: str,
        url: SecretUrl,
        body: bytes,
        attempts: int | None,
        after: asyncio.Task[None] | None,
    ) -> None:
        tried: list[int] = []
        try:
            if after is not None:  # an end ping after its start ping, never before
                await asyncio.wait([after])
            content_type = (
                "text/plain; charset=utf-8" if kind == "healthchecks" else ("application/json")
            )
            options = {"attempts": attempts} if attempts is not None else {}
            delivery = await self._send(url, body, content_type, tried=tried, **options)
        except asyncio.CancelledError:
            if not self._cutting:
                raise
            delivery = Delivery(
                False,
                max(1, len(tried)),
                f"not delivered within the {self._end_budget:g}s the end of a run waits",
            )
        except Exception as exc:  # a notification never changes the run, a bug included
            delivery = Delivery(
                False,
                max(1, len(tried)),
                f"an unexpected error in runbook ({type(exc).__name__}); please report it",
            )
        record = NotificationRecord(
            kind=kind,
            event=event,
            target=url.host,
            ok=delivery.ok,
            error=delivery.error,
            attempts=delivery.attempts,
            at=self._wall(),
        )
        if self._run is not None:
            self._run.notifications.append(record)
        self._tell(NotificationSent(record, record.at))
