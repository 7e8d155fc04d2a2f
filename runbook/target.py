"""Where a run's requests go: the API's URL (flag, environment or plan), the proxy the
environment names for it, and the token source — all checked before anything is
sent — or the built-in simulator on a loopback port."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from runbook.api import Token, check_base_url
from runbook.api.credentials import Credentials
from runbook.auth import TokenSetup, choose_credentials
from runbook.errors import ONE_PER_LINE, ConfigError, UsageError
from runbook.netenv import ProxySettings, ca_bundle
from runbook.plan import Plan
from runbook.text import printable

if TYPE_CHECKING:
    from runbook.notify.notifier import Webhook
    from runbook.notify.urls import SecretUrl

__all__ = ["ApiTarget", "Went", "api_target", "resume_url", "sandbox_target", "targets"]


@dataclass(frozen=True, slots=True)
class ApiTarget:
    """Where requests go, through which proxy (None: directly), and with which token
    source."""

    base_url: str
    auth: TokenSetup
    proxy: str | None = None


def api_target(
    plan: Plan,
    *,
    api_url: str | None,
    token_file: str | None,
    token_command: str | None = None,
    state_dir: Path,
    environ: Mapping[str, str] | None = None,
) -> ApiTarget:
    """The URL (flag > NEXADATA_API_URL > plan), the proxy the environment names for it
    (netenv) and the token source (runbook.auth).

    All are checked before anything is sent: a ConfigError (exit 3) otherwise.
    """
    env = os.environ if environ is None else environ
    url = check_base_url(api_url or env.get("NEXADATA_API_URL") or plan.api.base_url)
    proxy = ProxySettings.from_env(env).for_url(url)
    if url.startswith("https:"):
        ca_bundle(env)
    auth = choose_credentials(
        plan,
        token_file=token_file,
        token_command=token_command,
        state_dir=state_dir,
        environ=env,
    )
    return ApiTarget(url, auth, proxy)


def targets(
    plan: Plan,
    *,
    sandbox: bool,
    api_url: str | None,
    token_file: str | None,
    token_command: str | None,
    state_dir: Path,
) -> tuple[ApiTarget | None, list[Webhook], SecretUrl | None]:
    """Where the run's requests go (None: the sandbox, started later), its webhooks and
    its ping URL: every one checked, and every problem found said in one ConfigError
    (exit 3) — three unset variables are one message, not three runs."""
    target = None
    webhooks: list[Webhook] = []
    ping = None
    problems: list[ConfigError] = []
    if not sandbox:
        try:
            target = api_target(
                plan,
                api_url=api_url,
                token_file=token_file,
                token_command=token_command,
                state_dir=state_dir,
            )
        except ConfigError as exc:
            problems.append(exc)
    if plan.notify or plan.healthchecks:  # the notifier loads only for a plan that has one
        from runbook.notify.notifier import targets_of

        try:
            webhooks, ping = targets_of(plan)
        except ConfigError as exc:
            problems.append(exc)
    if len(problems) == 1:
        raise problems[0]  # as it is: a credential cache's problem keeps its exit 5
    if problems:
        combined = ConfigError(ONE_PER_LINE.join(str(p) for p in problems))
        combined.exit_code = min(p.exit_code for p in problems)  # the first kind: 3 before 5
        raise combined
    return target, webhooks, ping


@dataclass(frozen=True, slots=True)
class Went:
    """Where the run a resume continues went, as its journal row says."""

    run_id: int
    api_url: str | None
    """None: recorded before runbook kept it."""
    sandbox: bool


def resume_url(
    went: Went,
    plan: Plan,
    *,
    api_url: str | None,
    environ: Mapping[str, str] | None = None,
) -> tuple[str | None, str | None]:
    """The URL a resume of the run ``went`` goes to, and a note to show (or None): the
    one its run went to, whatever the plan now says, since an execution id means
    nothing on another API. A URL the flag or ``NEXADATA_API_URL`` asks for that is
    another one, or a run made with the sandbox (gone with it), is a UsageError: exit
    2, before anything is sent."""
    env = os.environ if environ is None else environ
    ident = f"run {went.run_id}"
    if went.sandbox:
        raise UsageError(
            f"{ident} was made with --sandbox: its simulator, and the executions it "
            "followed, ended with it, so it cannot be resumed; start a new run instead"
        )
    if went.api_url is None:  # a journal row older than the record of where runs go
        return api_url, None
    asked, source = (api_url, "--api-url") if api_url else (env.get("NEXADATA_API_URL"), None)
    if asked:
        source = source or "NEXADATA_API_URL"
        # compared as given: another URL is the mistake to name, whatever else is wrong with it
        named = printable(asked.strip().rstrip("/"))
        if named != went.api_url:
            raise UsageError(
                f"{ident} went to {went.api_url}, and {source} names {named}: "
                "its executions are there, so its resume goes there too. Resume without "
                f"{source}, or start a new run"
            )
        return went.api_url, None
    note = None
    if check_base_url(plan.api.base_url) != went.api_url:
        note = (
            f"{ident} went to {went.api_url}: its resume goes there too (the plan's "
            f"api.base_url is {plan.api.base_url})"
        )
    return went.api_url, note


@contextmanager
def sandbox_target(scenario_path: str | None, token_ttl: float | None) -> Iterator[ApiTarget]:
    """The built-in simulator on a free loopback port, for the length of the block;
    with ``token_ttl``, reached through its OAuth client, whose tokens expire."""
    from runbook.sandbox import SANDBOX_TOKEN
    from runbook.sandbox.app import create_app
    from runbook.sandbox.scenario import Scenario, load_scenario
    from runbook.sandbox.server import serve_in_thread

    scenario = load_scenario(scenario_path) if scenario_path else Scenario()
    if token_ttl is None:
        with serve_in_thread(create_app(scenario, token=SANDBOX_TOKEN)) as url:
            token = Token(SANDBOX_TOKEN)
            yield ApiTarget(url, TokenSetup(Credentials.static(token, "the sandbox's token")))
        return
    from runbook.sandbox import SandboxOAuth

    oauth = SandboxOAuth(token_ttl=token_ttl)
    with serve_in_thread(create_app(scenario, token=SANDBOX_TOKEN, oauth=oauth)) as url:
        from runbook.api.oauth import OAuthClient, OAuthSource, token_transport
        from runbook.api.secrets import Redactor, Secret

        client = OAuthClient(
            token_url=url.removesuffix("/api/v1") + "/oauth/token",
            client_id=oauth.client_id,
            client_secret=Secret(oauth.client_secret),
        )
        redactor = Redactor()
        source = OAuthSource(client, transport=token_transport(), redactor=redactor)
        yield ApiTarget(url, TokenSetup(Credentials(source, redactor)))
