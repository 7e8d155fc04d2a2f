"""``sandbox``: the built-in Nexadata simulator served in the foreground, after its
options are checked (a token of one's own before serving beyond loopback)."""

from __future__ import annotations

import click

from runbook.cli.shared import duration, files, stderr, stdout
from runbook.errors import UsageError
from runbook.sandbox import SANDBOX_TOKEN


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=8321,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on; 0 takes a free one.",
)
@click.option(
    "--scenario",
    "scenario_path",
    metavar="FILE",
    shell_complete=files,
    help="How workflows behave and which faults to inject (YAML).",
)
@click.option(
    "--token",
    default=SANDBOX_TOKEN,
    show_default=True,
    help="The Bearer token the simulator accepts.",
)
@click.option(
    "--token-ttl",
    metavar="DURATION",
    help="Also serve an OAuth 2.0 token endpoint (/oauth/token) whose access tokens "
    "expire after DURATION (e.g. 2s, 1.5s, 1h); --token keeps working.",
)
@click.option(
    "--client-id",
    metavar="ID",
    help="With --token-ttl: the OAuth client's id.  [default: sandbox-client]",
)
@click.option(
    "--client-secret",
    metavar="SECRET",
    help="With --token-ttl: the OAuth client's secret.  [default: sandbox-secret]",
)
def sandbox(
    host: str,
    port: int,
    scenario_path: str | None,
    token: str,
    token_ttl: str | None,
    client_id: str | None,
    client_secret: str | None,
) -> int:
    """Serve the built-in Nexadata simulator until interrupted (Ctrl-C).

    It answers the API as Nexadata documents it: trigger, poll, 401 without the token,
    404 for unknown workflows and executions. Without --scenario every workflow waits
    200 ms in created, runs 1-3 s (fixed per workflow id) and succeeds. With
    --token-ttl it is an OAuth 2.0 server too: client_credentials and refresh_token
    grants, tokens that expire, refresh tokens rotated, and a reused one revoking
    every token issued from it.
    """
    from runbook.netenv import is_loopback
    from runbook.render.sandboxview import write_banner
    from runbook.sandbox import (
        SANDBOX_CLIENT_ID,
        SANDBOX_CLIENT_SECRET,
        SANDBOX_TOKEN,
        SandboxOAuth,
    )
    from runbook.sandbox.app import create_app
    from runbook.sandbox.scenario import Scenario, load_scenario
    from runbook.sandbox.server import base_url, bind, serve_forever
    from runbook.text import is_token_text

    if not is_token_text(token):
        raise UsageError("--token must be one word of printable ASCII")
    oauth = None
    if token_ttl is None:
        if client_id is not None or client_secret is not None:
            given = "--client-id" if client_id is not None else "--client-secret"
            raise UsageError(f"{given} needs --token-ttl (the OAuth client is off without it)")
    else:
        ttl = duration("--token-ttl", token_ttl)
        if ttl <= 0:
            raise UsageError(f"--token-ttl: {token_ttl!r} is not more than 0 (e.g. 2s, 1h)")
        for flag, value in (("--client-id", client_id), ("--client-secret", client_secret)):
            if value is not None and not is_token_text(value):
                raise UsageError(f"{flag} must be one word of printable ASCII")
        oauth = SandboxOAuth(
            ttl, client_id or SANDBOX_CLIENT_ID, client_secret or SANDBOX_CLIENT_SECRET
        )
    local = is_loopback(host.strip("[]"))
    if not local and token == SANDBOX_TOKEN:
        raise UsageError(
            f"--host {host} serves beyond this machine: choose a token of your own with "
            f"--token (everyone knows the default, {SANDBOX_TOKEN!r})"
        )
    if not local and oauth is not None and oauth.client_secret == SANDBOX_CLIENT_SECRET:
        raise UsageError(
            f"--host {host} serves beyond this machine: choose a client secret of your own "
            f"with --client-secret (everyone knows the default, {SANDBOX_CLIENT_SECRET!r})"
        )
    scenario = load_scenario(scenario_path) if scenario_path else Scenario()
    try:
        sock = bind(host, port)
    except OSError as exc:
        raise UsageError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; "
            "choose another --port (0 takes a free one)"
        ) from None
    url = base_url(sock)
    if not local:
        stderr().write(
            f"runbook sandbox: warning: listening on {host}, beyond loopback: whoever can "
            "reach this port and has the token can use it (its stats need the token too)\n"
        )
    app = create_app(scenario, token=token, private_stats=not local, oauth=oauth)
    write_banner(stdout(), url, token, scenario_path, oauth, app.state.sandbox.first_refresh_token)
    serve_forever(app, sock)
    stdout().write("runbook sandbox: stopped\n")
    return 0
