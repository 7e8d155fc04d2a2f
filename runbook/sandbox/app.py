"""The Nexadata simulator: one Starlette app, the API exactly as docs/nexadata-api.md states it.

Routes under ``/api/v1``: trigger (``POST /workflows/{id}/execute``), poll (``GET
/workflows/executions/{id}``) and the deprecated pipeline trigger, which answers 404.
Executions move ``created -> running -> succeeded|failed`` by the time elapsed since
their trigger, on an injectable clock (tests advance it by hand instead of sleeping).

With an OAuth client (:class:`~runbook.sandbox.SandboxOAuth`), ``POST /oauth/token``
(outside the API too) issues access tokens that expire, beside the static token that
never does; :mod:`runbook.sandbox.oauth` holds the tokens. An expired access token is
answered 401 with RFC 6750's ``WWW-Authenticate: Bearer error="invalid_token"``.

``GET /__sandbox/stats`` (outside the API) counts requests by route and status,
executions by workflow and token requests by grant, for tests and benchmarks.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runbook.sandbox import SANDBOX_TOKEN, SandboxOAuth
from runbook.sandbox.oauth import GRANTS, Issuer, TokenError, parse_form
from runbook.sandbox.scenario import Behaviour, Scenario

__all__ = ["SandboxState", "create_app"]
TRIGGER = "POST /api/v1/workflows/{id}/execute"
POLL = "GET /api/v1/workflows/executions/{id}"
PIPELINE = "POST /api/v1/pipelines/{id}/execute"
TOKEN = "POST /oauth/token"
OTHER = "other"

Refusal = Literal["invalid", "expired", "revoked"]
"""Why a request's token is refused: never issued (or missing), or an OAuth one gone bad."""


def iso(epoch: float) -> str:
    """ISO 8601 UTC with milliseconds and a Z, e.g. ``2026-11-28T02:00:03.120Z``."""
    moment = datetime.fromtimestamp(epoch, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class SimulatedExecution:
    id: int
    workflow_id: int
    created: float  # on the state's clock
    created_wall: float  # epoch seconds, for start_at/end_at
    behaviour: Behaviour
    outcome: str
    errors: tuple[Any, ...]

    @property
    def ends(self) -> float:
        """When it reaches its terminal state, on the clock; inf if it never does."""
        if self.behaviour.duration is None:
            return math.inf
        return self.created + self.behaviour.queue + self.behaviour.duration

    def record(self, now: float) -> dict[str, Any]:
        behaviour = self.behaviour
        elapsed = now - self.created
        record: dict[str, Any] = {
            "id": self.id,
            "workflow_id": self.workflow_id,
            "state": "created",
            "start_at": None,
            "end_at": None,
            "errors": [],
            "warnings": [],
        }
        if elapsed < behaviour.queue:
            return record
        record["start_at"] = iso(self.created_wall + behaviour.queue)
        if now < self.ends:
            record["state"] = behaviour.running_state
            return record
        assert behaviour.duration is not None
        record["state"] = self.outcome
        record["end_at"] = iso(self.created_wall + behaviour.queue + behaviour.duration)
        record["errors"] = list(self.errors)
        record["warnings"] = list(behaviour.warnings)
        return record


class SandboxState:
    """Everything the simulator remembers; one per app."""

    def __init__(
        self,
        scenario: Scenario,
        token: str,
        clock: Callable[[], float],
        wall: Callable[[], float],
        oauth: SandboxOAuth | None = None,
    ) -> None:
        self.scenario = scenario
        self.token = token
        self.clock = clock
        self.wall = wall
        self.rng = random.Random(scenario.seed)
        self.executions: dict[int, SimulatedExecution] = {}
        self.by_workflow: Counter[int] = Counter()
        self.requests: Counter[tuple[str, int]] = Counter()
        self.last_request: float | None = None
        self.issuer = Issuer(oauth, clock) if oauth is not None else None
        self.expired_token_401s = 0
        self.revoked_token_401s = 0
        self._behaviours: dict[int, Behaviour] = {}
        self._next_id = 1
        rate = scenario.faults.rate_limit
        self._bucket = max(1.0, rate) if rate else 0.0
        self._bucket_at = clock()

    @property
    def first_refresh_token(self) -> str | None:
        """The refresh token handed out with the OAuth credentials (None without)."""
        return self.issuer.first_refresh_token if self.issuer is not None else None

    def refusal(self, authorization: str | None) -> Refusal | None:
        """Why a request's Authorization is refused, None if it is not: the static
        token, or an OAuth access token neither expired nor revoked."""
        if authorization == f"Bearer {self.token}":
            return None
        if self.issuer is None or authorization is None:
            return "invalid"
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return "invalid"
        verdict = self.issuer.verdict(value.strip())
        if verdict == "valid":
            return None
        return "invalid" if verdict == "unknown" else verdict

    def use(self, scenario: Scenario) -> None:
        """From now on, new executions behave as ``scenario`` says (for a test that
        changes what the API does between two runs)."""
        self.scenario = scenario
        self._behaviours.clear()

    def behaviour(self, workflow_id: int) -> Behaviour:
        found = self._behaviours.get(workflow_id)
        if found is None:
            found = self._behaviours[workflow_id] = self.scenario.behaviour(workflow_id)
        return found

    def create(self, workflow_id: int) -> SimulatedExecution:
        behaviour = self.behaviour(workflow_id)
        earlier = self.by_workflow[workflow_id]
        self.by_workflow[workflow_id] += 1
        failing_first = earlier < behaviour.fail_first
        outcome = "failed" if failing_first else behaviour.outcome
        errors = behaviour.errors
        if failing_first:
            errors = errors or (
                f"Simulated failure {earlier + 1} of {behaviour.fail_first} (fail_first)",
            )
        elif outcome == "failed" and not errors:
            errors = ("Workflow failed (simulated by the runbook sandbox)",)
        elif outcome == "succeeded":
            errors = ()  # the errors of a fail_first workflow are its failed executions
        execution = SimulatedExecution(
            id=self._next_id,
            workflow_id=workflow_id,
            created=self.clock(),
            created_wall=self.wall(),
            behaviour=behaviour,
            outcome=outcome,
            errors=errors,
        )
        self._next_id += 1
        self.executions[execution.id] = execution
        return execution

    def take_turn(self) -> float | None:
        """Spend one request of the rate limit; the wait in seconds if there is none left."""
        rate = self.scenario.faults.rate_limit
        if not rate:
            return None
        now = self.clock()
        self._bucket = min(max(1.0, rate), self._bucket + (now - self._bucket_at) * rate)
        self._bucket_at = now
        if self._bucket >= 1:
            self._bucket -= 1
            return None
        return (1 - self._bucket) / rate

    def retry_after(self, seconds: float) -> str:
        whole = max(1, math.ceil(seconds))
        if self.scenario.faults.retry_after == "date":
            return email.utils.formatdate(self.wall() + whole, usegmt=True)
        return str(whole)

    def peak_in_flight(self, *, leaving_out: Collection[int] = ()) -> int:
        """The most executions that were between trigger and terminal state at once,
        those of the workflows `leaving_out` not counted."""
        counted = [e for e in self.executions.values() if e.workflow_id not in leaving_out]
        events = sorted([(e.created, 1) for e in counted] + [(e.ends, -1) for e in counted])
        peak = current = 0
        for _, change in events:
            current += change
            peak = max(peak, current)
        return peak

    def stats(self) -> dict[str, Any]:
        routes: dict[str, dict[str, int]] = {}
        for (route, status), count in sorted(self.requests.items()):
            routes.setdefault(route, {})[str(status)] = count
        return {
            "requests": routes,
            "requests_total": sum(self.requests.values()),
            "executions": {str(k): v for k, v in sorted(self.by_workflow.items())},
            "executions_total": len(self.executions),
            "peak_in_flight": self.peak_in_flight(),
            "last_request_at": None if self.last_request is None else iso(self.last_request),
            **(
                self.issuer.stats()
                if self.issuer is not None
                else {"token_requests": dict.fromkeys(GRANTS, 0), "refresh_token_reuse": 0}
            ),
            "expired_token_401s": self.expired_token_401s,
            "revoked_token_401s": self.revoked_token_401s,
        }


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _unauthorized(refusal: Refusal) -> JSONResponse:
    """The 401 of a missing or unknown token, or RFC 6750 §3's of an OAuth one gone bad."""
    if refusal == "invalid":
        return _error(401, "unauthorized: missing or invalid Bearer token")
    said = "the access token expired" if refusal == "expired" else "the access token was revoked"
    challenge = f'Bearer error="invalid_token", error_description="{said}"'
    return _error(401, f"unauthorized: {said}", {"WWW-Authenticate": challenge})


def create_app(
    scenario: Scenario | None = None,
    *,
    token: str = SANDBOX_TOKEN,
    clock: Callable[[], float] = time.monotonic,
    wall: Callable[[], float] = time.time,
    private_stats: bool = False,
    oauth: SandboxOAuth | None = None,
) -> Starlette:
    """The simulator as an ASGI app; its state is at ``app.state.sandbox``.

    ``private_stats``: the stats need the token too (a sandbox served beyond loopback).
    ``oauth``: serve ``POST /oauth/token`` for this client; its access tokens are good
    on every route, as the static ``token`` stays.
    """
    state = SandboxState(scenario or Scenario(), token, clock, wall, oauth)
    faults = state.scenario.faults

    async def guard(request: Request, kind: str) -> Response | None:
        """Latency, then the answers a real gateway gives before the app sees a request."""
        state.last_request = state.wall()
        if faults.latency:
            await asyncio.sleep(faults.latency)
        refusal = state.refusal(request.headers.get("authorization"))
        if refusal == "expired":
            state.expired_token_401s += 1
        elif refusal == "revoked":
            state.revoked_token_401s += 1
        if refusal is not None:
            return _unauthorized(refusal)
        wait = state.take_turn()
        if wait is not None:
            return _error(429, "too many requests", {"Retry-After": state.retry_after(wait)})
        if faults.unavailable_rate and state.rng.random() < faults.unavailable_rate:
            return _error(503, "service unavailable", {"Retry-After": state.retry_after(1)})
        if (
            faults.error_rate
            and kind in faults.errors_on
            and state.rng.random() < faults.error_rate
        ):
            return _error(500, "internal server error (simulated)")
        return None

    def answer(route: str, response: Response) -> Response:
        state.requests[(route, response.status_code)] += 1
        return response

    async def trigger(request: Request) -> Response:
        refused = await guard(request, "trigger")
        if refused is not None:
            return answer(TRIGGER, refused)
        workflow_id: int = request.path_params["workflow_id"]
        if workflow_id < 1 or not state.behaviour(workflow_id).exists:
            return answer(TRIGGER, _error(404, f"workflow {workflow_id} not found"))
        execution = state.create(workflow_id)
        if faults.lost_answer_rate and state.rng.random() < faults.lost_answer_rate:
            return answer(TRIGGER, _error(500, "internal server error (simulated lost answer)"))
        return answer(TRIGGER, JSONResponse(execution.record(state.clock())))

    async def poll(request: Request) -> Response:
        refused = await guard(request, "poll")
        if refused is not None:
            return answer(POLL, refused)
        execution = state.executions.get(request.path_params["execution_id"])
        if execution is None:
            ident = request.path_params["execution_id"]
            return answer(POLL, _error(404, f"execution {ident} not found"))
        return answer(POLL, JSONResponse(execution.record(state.clock())))

    async def pipeline(request: Request) -> Response:
        refused = await guard(request, "trigger")
        if refused is not None:
            return answer(PIPELINE, refused)
        return answer(
            PIPELINE,
            _error(404, "the pipeline execution endpoint is deprecated; use /workflows"),
        )

    async def stats(request: Request) -> Response:
        refusal = state.refusal(request.headers.get("authorization"))
        if private_stats and refusal is not None:
            return _unauthorized(refusal)
        return JSONResponse(state.stats())

    async def issue(request: Request) -> Response:
        """RFC 6749's token endpoint; no faults but latency (it is not the gateway's)."""
        assert state.issuer is not None
        state.last_request = state.wall()
        if faults.latency:
            await asyncio.sleep(faults.latency)
        headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
        try:
            form = parse_form(request.headers.get("content-type"), await request.body())
            body: dict[str, Any] = state.issuer.token(form, request.headers.get("authorization"))
            status = 200
        except TokenError as refused:
            body, status = refused.body(), refused.status
            headers.update(refused.headers())
        return answer(TOKEN, JSONResponse(body, status_code=status, headers=headers))

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        # a 405 names the methods the route takes (RFC 9110, 15.5.6): Starlette puts
        # them in the exception's Allow header
        headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else None
        message = "not found" if status == 404 else "method not allowed"
        return answer(OTHER, _error(status, message, headers))

    routes = [
        Route("/api/v1/workflows/{workflow_id:int}/execute", trigger, methods=["POST"]),
        Route("/api/v1/workflows/executions/{execution_id:int}", poll, methods=["GET"]),
        Route("/api/v1/pipelines/{pipeline_id}/execute", pipeline, methods=["POST"]),
        Route("/__sandbox/stats", stats, methods=["GET"]),
    ]
    if oauth is not None:
        routes.append(Route("/oauth/token", issue, methods=["POST"]))
    app = Starlette(
        routes=routes,
        exception_handlers={404: not_found, 405: not_found},
    )
    app.state.sandbox = state
    return app
