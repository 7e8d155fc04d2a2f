"""The trigger a deferred step task waits on: it polls one execution, in the triggerer,
with ``apply``'s adaptive schedule, until it ends or the attempt's timeout runs out.

Its arguments are stored by Airflow in its database, so they hold no secret: the token
is read from the Airflow connection when the trigger runs, every time it runs (a
triggerer that restarts reads it again, a rotated token is picked up).

A triggerer runs all its triggers in one event loop: those that read the same
connection the same way share one client there (:mod:`runbook.airflow.pool`).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

from airflow.sdk import BaseHook
from airflow.triggers.base import BaseTrigger, TriggerEvent

from runbook.airflow import rules
from runbook.airflow.pool import POOL_CONNECTIONS, SharedClients, fingerprint
from runbook.api import Credentials, NexadataClient, Redactor, Secret, Token, check_token_url
from runbook.api.oauth import OAuthClient, OAuthSource, token_transport
from runbook.errors import ApiError, ConfigError
from runbook.netenv import ProxySettings
from runbook.polling import jittered, poll_wait
from runbook.run.reasons import TIMEOUT_REASON

__all__ = ["NexadataExecutionTrigger"]

_CLIENTS = SharedClients()
"""The clients this process's triggers share (:mod:`runbook.airflow.pool`)."""


class NexadataExecutionTrigger(BaseTrigger):  # type: ignore[misc]
    """Polls execution ``execution_id`` until it is terminal, or until ``deadline``
    (Unix time: the attempt's trigger time plus the step's timeout).

    Fires one event, ``{"state": ..., "execution_id": ..., ...}``: ``succeeded`` or
    ``failed`` (with the execution's ``errors``), ``timed out``, or ``error`` (with a
    ``detail``: the API refused the token, lost the execution, or stayed unavailable).
    """

    def __init__(
        self,
        *,
        execution_id: int,
        workflow_id: int,
        conn_id: str,
        base_url: str | None,
        triggered_at: float,
        deadline: float,
        poll_interval: float,
        max_poll_interval: float,
    ) -> None:
        super().__init__()
        self.execution_id = execution_id
        self.workflow_id = workflow_id
        self.conn_id = conn_id
        self.base_url = base_url
        self.triggered_at = triggered_at
        self.deadline = deadline
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "execution_id": self.execution_id,
                "workflow_id": self.workflow_id,
                "conn_id": self.conn_id,
                "base_url": self.base_url,
                "triggered_at": self.triggered_at,
                "deadline": self.deadline,
                "poll_interval": self.poll_interval,
                "max_poll_interval": self.max_poll_interval,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        yield TriggerEvent(await self._watch())

    async def _watch(self) -> dict[str, Any]:
        done = {"execution_id": self.execution_id}
        try:
            conn = await read_connection(self.conn_id)
            key = fingerprint(
                self.conn_id, self.base_url, conn.host, conn.schema, conn.port, conn.login,
                conn.password, _extra(conn),
            )  # fmt: skip
            opener = partial(_open_client, conn, self.conn_id, self.base_url)
            async with _CLIENTS.use(key, opener) as api:
                return {**done, **await self._poll(api)}
        except asyncio.TimeoutError:
            return {**done, "state": "timed out", "detail": TIMEOUT_REASON}
        except (ConfigError, ApiError) as error:
            return {**done, "state": "error", "detail": str(error)}

    async def _poll(self, api: NexadataClient) -> dict[str, Any]:
        rng = random.Random()
        warned = False
        while True:
            remaining = self.deadline - time.time()
            if remaining <= 0:
                return {"state": "timed out", "detail": TIMEOUT_REASON}
            execution = await asyncio.wait_for(api.get_execution(self.execution_id), remaining)
            if execution.terminal:
                return {
                    "state": execution.state,
                    "errors": list(execution.errors),
                    "start_at": execution.start_at,
                    "end_at": execution.end_at,
                }
            if not execution.known_state and not warned:
                warned = True
                self.log.warning(
                    "execution %s reports an unknown state %r; polling on until the step's timeout",
                    self.execution_id,
                    execution.state,
                )
            elapsed = time.time() - self.triggered_at
            wait = poll_wait(elapsed, self.poll_interval, self.max_poll_interval)
            await asyncio.sleep(min(jittered(wait, rng), max(0.0, remaining)))


def _proxy(url: str) -> str | None:
    return ProxySettings.from_env().for_url(url)


async def read_connection(conn_id: str) -> Any:
    """Airflow connection ``conn_id``, read now."""
    try:
        return await BaseHook.aget_connection(conn_id)
    except Exception as error:  # AirflowNotFoundException, a secrets backend's error
        raise ConfigError(f"cannot read the Airflow connection {conn_id!r}: {error}") from None


def _open_client(
    conn: Any, conn_id: str, default_url: str | None
) -> tuple[NexadataClient, Credentials]:
    url, credentials = target(conn, conn_id, default_url)
    client = NexadataClient(url, credentials, max_in_flight=POOL_CONNECTIONS, proxy=_proxy(url))
    return client, credentials


def target(conn: Any, conn_id: str, default_url: str | None) -> tuple[str, Credentials]:
    """The base URL (``host``, else the plan's) and the credentials of a connection: an
    OAuth client when its extra names a ``token_url`` (``login`` the client id,
    ``password`` the secret), else the static token in ``password``. A ConfigError
    naming the connection when something is missing."""
    if not conn.password:
        raise ConfigError(
            f"the Airflow connection {conn_id!r} has no password: set it to the Nexadata token "
            "(or, with a token_url in its extra, to the OAuth client's secret)"
        )
    try:
        url = rules.base_url(conn.host, conn.schema, conn.port, default_url)
    except ConfigError as problem:
        raise ConfigError(f"{conn_id!r}: {problem}") from None
    extra = _extra(conn)
    if not extra.get("token_url"):
        return url, Credentials.static(Token(conn.password), f"the connection {conn_id!r}")
    source = oauth_source(conn, conn_id, extra)
    return url, Credentials(source, source.redactor)


def oauth_source(conn: Any, conn_id: str, extra: dict[str, Any]) -> OAuthSource:
    """The connection's OAuth client: ``client_credentials`` only (Airflow's workers
    and triggerers share no locked cache in which a rotating refresh token could live)."""
    grant = extra.get("grant", "client_credentials")
    if grant != "client_credentials":
        raise ConfigError(
            f"the Airflow connection {conn_id!r} asks for the OAuth grant {str(grant)!r}: "
            "in Airflow only client_credentials is supported (its workers and triggerers "
            "share no locked cache, so a rotating refresh token would be used twice and the "
            "whole token family revoked); use the client's id and secret"
        )
    if not conn.login:
        raise ConfigError(
            f"the Airflow connection {conn_id!r} has a token_url but no login: set it to "
            "the OAuth client's id"
        )
    token_url = check_token_url(str(extra["token_url"]))
    method = extra.get("auth_method", "basic")
    client = OAuthClient(
        token_url=token_url,
        client_id=str(conn.login),
        client_secret=Secret(conn.password),
        auth_method="post" if method == "post" else "basic",
        scope=extra.get("scope") or None,
    )
    redactor = Redactor()
    return OAuthSource(client, transport=token_transport(_proxy(token_url)), redactor=redactor)


def _extra(conn: Any) -> dict[str, Any]:
    try:
        extra = conn.extra_dejson
    except Exception:  # pragma: no cover - Airflow logs a bad extra and gives {}
        return {}
    return extra if isinstance(extra, dict) else {}
