"""The client an Airflow triggerer's triggers share (runbook.airflow.pool), against the
sandbox under uvicorn, behind a loopback proxy that counts the connections made."""

from __future__ import annotations

import asyncio

import pytest

from runbook.airflow.pool import POOL_CONNECTIONS, SharedClients, fingerprint
from runbook.api import Credentials, NexadataClient, Redactor, Secret, Token
from runbook.api.oauth import OAuthClient, OAuthSource, token_transport
from runbook.errors import AuthError
from runbook.sandbox import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, SANDBOX_TOKEN, SandboxOAuth
from runbook.sandbox.app import POLL, TRIGGER, create_app
from runbook.sandbox.scenario import Scenario
from runbook.sandbox.server import serve_in_thread
from tests.support.proxy import Proxy

TRIGGERS = 60


class Opener:
    """Makes a client and counts how often it was asked to; records each client's
    credentials, to see them closed."""

    def __init__(self, url: str, credentials=None) -> None:
        self.url = url
        self.credentials = credentials
        self.made: list[Credentials] = []

    def __call__(self) -> tuple[NexadataClient, Credentials]:
        credentials = self.credentials or Credentials.static(Token(SANDBOX_TOKEN), "the test")
        self.made.append(credentials)
        return NexadataClient(self.url, credentials, max_in_flight=POOL_CONNECTIONS), credentials


@pytest.fixture
def api():
    """``(proxy, sandbox state, sandbox url)``: the sandbox's executions never end."""
    app = create_app(Scenario(default={"queue": 0, "duration": 3600}), oauth=SandboxOAuth(3600))
    with serve_in_thread(app) as url:
        port = int(url.split(":")[2].split("/")[0])
        with Proxy(port) as proxy:
            yield proxy, app.state.sandbox, url


async def watch(
    clients: SharedClients, key: str, opener, polls: int, gate: asyncio.Event
) -> list[str]:
    """What a trigger does: its execution (triggered here), polled ``polls`` times."""
    async with clients.use(key, opener) as client:
        execution = await client.trigger(7)
        await gate.wait()  # every trigger holds the client at once
        return [(await client.get_execution(execution.id)).state for _ in range(polls)]


def test_a_triggerers_triggers_share_one_pool_and_the_last_closes_it(api) -> None:
    proxy, state, _ = api
    clients, opener = SharedClients(), Opener(proxy.url)
    key = fingerprint("nexadata_default", None, proxy.url, SANDBOX_TOKEN)

    async def main() -> list[list[str]]:
        gate = asyncio.Event()
        watches = [
            asyncio.ensure_future(watch(clients, key, opener, 5, gate)) for _ in range(TRIGGERS)
        ]
        while sum(state.by_workflow.values()) < TRIGGERS:
            await asyncio.sleep(0.01)
        assert clients.open_clients() == 1
        gate.set()
        done = await asyncio.gather(*watches)
        assert clients.open_clients() == 0  # closed by the last to leave
        return done

    states = asyncio.run(main())
    assert states == [["running"] * 5] * TRIGGERS
    assert len(opener.made) == 1
    assert 1 <= proxy.accepted <= POOL_CONNECTIONS  # not one pool per trigger
    stats = state.stats()
    assert stats["requests"] == {POLL: {"200": 5 * TRIGGERS}, TRIGGER: {"200": TRIGGERS}}


def test_an_oauth_connection_mints_one_token_for_all_its_triggers(api) -> None:
    proxy, state, url = api
    token_url = url.removesuffix("/api/v1") + "/oauth/token"
    client = OAuthClient(
        token_url=token_url,
        client_id=SANDBOX_CLIENT_ID,
        client_secret=Secret(SANDBOX_CLIENT_SECRET),
    )
    redactor = Redactor()
    source = OAuthSource(client, transport=token_transport(None), redactor=redactor)
    opener = Opener(proxy.url, Credentials(source, redactor))
    clients = SharedClients()

    async def main() -> None:
        gate = asyncio.Event()
        gate.set()
        await asyncio.gather(*(watch(clients, "k", opener, 2, gate) for _ in range(TRIGGERS)))

    asyncio.run(main())
    assert state.stats()["token_requests"]["client_credentials"] == 1
    assert len(opener.made) == 1


def test_another_connection_or_a_rotated_secret_gets_a_client_of_its_own(api) -> None:
    proxy, _, _ = api
    clients, opener = SharedClients(), Opener(proxy.url)
    old = fingerprint("nexadata_default", proxy.url, "secret-1")
    new = fingerprint("nexadata_default", proxy.url, "secret-2")
    assert old != new and "secret-1" not in old

    async def main() -> None:
        gate = asyncio.Event()
        first = asyncio.ensure_future(watch(clients, old, opener, 1, gate))
        second = asyncio.ensure_future(watch(clients, new, opener, 1, gate))
        while len(opener.made) < 2:
            await asyncio.sleep(0.01)
        assert clients.open_clients() == 2
        gate.set()
        await asyncio.gather(first, second)
        # all gone: the next trigger opens a new one
        await watch(clients, old, opener, 1, gate)

    asyncio.run(main())
    assert len(opener.made) == 3


def test_a_trigger_that_fails_leaves_the_client_to_the_others(api) -> None:
    proxy, _, _ = api
    clients, opener = SharedClients(), Opener(proxy.url)
    closed: list[str] = []

    async def failing(gate: asyncio.Event) -> None:
        async with clients.use("k", opener):
            await gate.wait()
            raise AuthError("refused")

    async def main() -> list[str]:
        gate, later = asyncio.Event(), asyncio.Event()
        broken = asyncio.ensure_future(failing(gate))
        polling = asyncio.ensure_future(watch(clients, "k", opener, 3, later))
        while not opener.made:
            await asyncio.sleep(0.01)
        gate.set()
        with pytest.raises(AuthError):
            await broken
        closed.append(str(clients.open_clients()))
        later.set()
        return await polling

    assert asyncio.run(main()) == ["running"] * 3
    assert closed == ["1"]  # still open for the trigger that polls on
    assert len(opener.made) == 1


def test_each_event_loop_has_its_own_clients(api) -> None:
    """A pool belongs to the loop it was opened in: a second loop gets its own."""
    proxy, _, _ = api
    clients, opener = SharedClients(), Opener(proxy.url)

    async def once() -> list[str]:
        gate = asyncio.Event()
        gate.set()
        return await watch(clients, "k", opener, 1, gate)

    assert asyncio.run(once()) == asyncio.run(once()) == ["running"]
    assert len(opener.made) == 2
