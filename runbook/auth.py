"""Which token source a run uses, from its flags, its environment and its plan.

Exactly one source a run, the first configured in this order: ``--token-command``,
``--token-file``, ``NEXADATA_TOKEN_COMMAND``, the plan's ``api.oauth`` client, the
environment variable ``api.token_env`` names. A source that wins over another one also
configured is named in one note, so nobody wonders which was used. Everything that can
be checked without sending anything is checked here (exit 3, or 5 for the credential
cache); the first token is fetched when the run's event loop starts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from runbook.api.credentials import Credentials
from runbook.api.secrets import Redactor, Secret
from runbook.api.sources import EnvSource, FileSource, TokenSource
from runbook.api.tokencommand import CommandSource
from runbook.api.urls import check_token_url
from runbook.errors import ConfigError
from runbook.netenv import ProxySettings, ca_bundle
from runbook.plan import OAuthSettings, Plan

__all__ = ["TOKEN_COMMAND_ENV", "TOKEN_URL_ENV", "TokenSetup", "choose_credentials", "oauth_setup"]

TOKEN_COMMAND_ENV = "NEXADATA_TOKEN_COMMAND"
TOKEN_URL_ENV = "NEXADATA_TOKEN_URL"


@dataclass(slots=True)
class TokenSetup:
    """The run's credentials, and the note to print about the choice (None: nothing
    else was configured)."""

    credentials: Credentials
    note: str | None = None


def choose_credentials(
    plan: Plan,
    *,
    token_file: str | None,
    token_command: str | None,
    state_dir: Path,
    environ: Mapping[str, str] | None = None,
) -> TokenSetup:
    """The source the precedence picks, checked; a ConfigError naming what is missing."""
    env = os.environ if environ is None else environ
    env_command = env.get(TOKEN_COMMAND_ENV, "").strip()
    offered: list[tuple[str, bool]] = [
        ("--token-command", bool(token_command)),
        ("--token-file", bool(token_file)),
        (TOKEN_COMMAND_ENV, bool(env_command)),
        ("the plan's api.oauth client", plan.api.oauth is not None),
        (plan.api.token_env, bool(env.get(plan.api.token_env, "").strip())),
    ]
    configured = [name for name, present in offered if present]
    redactor = Redactor()
    source: TokenSource
    first = None
    if token_command:
        source = CommandSource(token_command, redactor)
    elif token_file:
        file_source = FileSource(token_file)
        source, first = file_source, file_source.token
    elif env_command:
        source = CommandSource(env_command, redactor)
    elif plan.api.oauth is not None:
        source = oauth_setup(plan.api.oauth, state_dir, redactor, env)
    else:
        env_source = EnvSource(plan.api.token_env, env)
        source, first = env_source, env_source.token
    note = None
    if len(configured) > 1:
        unused = ", ".join(configured[1:])
        note = f"the token comes from {source.origin} ({configured[0]}); not used: {unused}"
    return TokenSetup(Credentials(source, redactor, first=first), note)


def oauth_setup(
    settings: OAuthSettings,
    state_dir: Path,
    redactor: Redactor,
    environ: Mapping[str, str],
) -> TokenSource:
    """The plan's OAuth client, its credentials read from the environment."""
    from runbook.api.cache import CredentialCache
    from runbook.api.oauth import OAuthClient, OAuthSource, token_transport

    url = environ.get(TOKEN_URL_ENV, "").strip() or settings.token_url
    if not url:
        raise ConfigError(
            "the plan's api.oauth client has no token URL: set api.oauth.token_url in the "
            f"plan or the environment variable {TOKEN_URL_ENV} (Nexadata shows the token "
            "endpoint with the client's credentials)"
        )
    url = check_token_url(url)
    client_id = _required(environ, settings.client_id_env, "the OAuth client's id")
    secret = Secret(_required(environ, settings.client_secret_env, "the OAuth client's secret"))
    refresh = None
    cache = None
    if settings.grant == "refresh_token":
        refresh = Secret(
            _required(environ, settings.refresh_token_env, "the OAuth client's refresh token")
        )
        cache = CredentialCache(state_dir, url, client_id)
    proxy = ProxySettings.from_env(environ).for_url(url)
    if url.startswith("https:"):
        ca_bundle(environ)
    client = OAuthClient(
        token_url=url,
        client_id=client_id,
        client_secret=secret,
        grant=settings.grant,
        auth_method=settings.auth_method,
        scope=settings.scope,
        refresh_token=refresh,
    )
    return OAuthSource(client, transport=token_transport(proxy), redactor=redactor, cache=cache)


def _required(environ: Mapping[str, str], name: str, what: str) -> str:
    value = environ.get(name, "").strip()
    if not value:
        raise ConfigError(
            f"{what} is not set: set the environment variable {name} (the plan's api.oauth "
            "names it)"
        )
    return value
