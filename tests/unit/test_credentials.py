"""Token sources and the refresh flow, in-process on a clock that moves only when told:
when a token is fetched again, one fetch at a time, a 401 answered once, and the
command and file sources with everything that can go wrong with them."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import httpx
import pytest

from runbook.api import NexadataClient, Token
from runbook.api.credentials import Credentials, margin
from runbook.api.secrets import Redactor
from runbook.api.sources import FileSource, Issued
from runbook.api.tokencommand import CommandSource
from runbook.errors import AuthError, ConfigError
from tests.support.clocks import Clock

URL = "http://127.0.0.1/api/v1"
RECORD = {"id": 7, "state": "running"}


class Minted:
    """A source that mints ``tok-N`` tokens living ``lifetime`` seconds, counting fetches;
    ``gate``: each fetch waits for it (to hold a refresh in flight)."""

    kind = "command"
    refreshable = True
    origin = "the test's source"

    def __init__(self, lifetime: float | None = 3600.0, gate: asyncio.Event | None = None):
        self.lifetime = lifetime
        self.fetches = 0
        self.gate = gate

    async def fetch(self) -> Issued:
        self.fetches += 1
        if self.gate is not None:
            await self.gate.wait()
        return Issued(Token(f"tok-{self.fetches:04d}-abcdefgh"), self.lifetime)


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize(
    ("lifetime", "expected"),
    [(3600, 360), (1.5, 0.75), (2, 1), (120, 60), (600, 60), (86400, 8640)],
)
def test_the_margin_is_a_tenth_at_least_a_minute_at_most_half(lifetime, expected) -> None:
    assert margin(lifetime) == pytest.approx(expected)


def test_a_token_is_replaced_once_inside_its_margin_never_before() -> None:
    clock = Clock(0.0)
    source = Minted(lifetime=3600)
    credentials = Credentials(source, clock=clock)

    async def main():
        first = await credentials.token()
        clock.now = 3600 - 360 - 0.001  # just outside the margin: kept
        assert await credentials.token() is first
        clock.now = 3600 - 360  # inside: a new one before the request leaves
        second = await credentials.token()
        assert second is not first
        return first, second

    first, second = run(main())
    assert source.fetches == 2 and credentials.refreshes == 1
    assert first.reveal() == "tok-0001-abcdefgh" and second.reveal() == "tok-0002-abcdefgh"


def test_a_token_without_an_expiry_is_kept_until_refused() -> None:
    clock = Clock(0.0)
    source = Minted(lifetime=None)
    credentials = Credentials(source, clock=clock)

    async def main():
        first = await credentials.token()
        clock.now = 10**9
        assert await credentials.token() is first
        assert credentials.current() is first
        replaced = await credentials.refused(first)
        assert replaced is not None and replaced is not first

    run(main())
    assert source.fetches == 2


def test_five_hundred_requests_waiting_share_one_fetch() -> None:
    clock = Clock(0.0)
    gate = asyncio.Event()
    source = Minted(lifetime=2.0, gate=gate)
    credentials = Credentials(source, clock=clock)

    async def main():
        waiters = [asyncio.ensure_future(credentials.token()) for _ in range(500)]
        await asyncio.sleep(0)
        gate.set()
        tokens = await asyncio.gather(*waiters)
        assert len({id(token) for token in tokens}) == 1
        clock.now = 1.5  # inside the 1 s margin of a 2 s token
        gate.clear()
        again = [asyncio.ensure_future(credentials.token()) for _ in range(500)]
        await asyncio.sleep(0)
        gate.set()
        renewed = await asyncio.gather(*again)
        assert len({id(token) for token in renewed}) == 1 and renewed[0] is not tokens[0]
        # 500 requests refused with the old token: the one already replaced, no fetch
        refused = await asyncio.gather(*(credentials.refused(tokens[0]) for _ in range(500)))
        assert {id(token) for token in refused} == {id(renewed[0])}

    run(main())
    assert source.fetches == 2 and credentials.refreshes == 1


def test_a_waiter_cancelled_does_not_cancel_the_fetch_others_wait_for() -> None:
    gate = asyncio.Event()
    source = Minted(gate=gate)
    credentials = Credentials(source, clock=Clock(0.0))

    async def main():
        first = asyncio.ensure_future(credentials.token())
        second = asyncio.ensure_future(credentials.token())
        await asyncio.sleep(0)
        first.cancel()
        gate.set()
        token = await second
        assert first.cancelled() and token.reveal() == "tok-0001-abcdefgh"

    run(main())
    assert source.fetches == 1


def test_a_failed_refresh_before_expiry_keeps_the_token_then_fails_once_it_expires() -> None:
    clock = Clock(0.0)

    class Flaky(Minted):
        async def fetch(self) -> Issued:
            if self.fetches >= 1:
                self.fetches += 1
                raise AuthError("the token endpoint could not be used: HTTP 503")
            return await super().fetch()

    source = Flaky(lifetime=100)
    credentials = Credentials(source, clock=clock)

    async def main():
        first = await credentials.token()
        clock.now = 50  # inside the 50 s margin: a refresh that fails
        assert await credentials.token() is first
        tries = source.fetches
        assert await credentials.token() is first  # not tried again at once
        assert source.fetches == tries
        clock.now = 100  # expired: now it is an authentication failure
        with pytest.raises(AuthError, match="HTTP 503"):
            await credentials.token()

    run(main())


def test_every_token_fetched_is_redacted_even_after_it_is_replaced() -> None:
    credentials = Credentials(Minted(), clock=Clock(0.0))

    async def main():
        first = await credentials.token()
        await credentials.refused(first)

    run(main())
    text = "old tok-0001-abcdefgh new tok-0002-abcdefgh"
    assert credentials.redactor.redact(text) == "old *** new ***"
    assert "tok-" not in repr(credentials)


# -- the client: a 401 is answered once ---------------------------------------------


def counting(handler):
    seen: list[httpx.Request] = []

    def wrapped(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    return httpx.MockTransport(wrapped), seen


def test_a_trigger_answered_401_is_sent_again_once_with_a_new_token() -> None:
    source = Minted()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers["authorization"] == "Bearer tok-0001-abcdefgh":
            return httpx.Response(401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return httpx.Response(200, json={"id": 5, "state": "created"})

    transport, seen = counting(handler)
    credentials = Credentials(source, clock=Clock(0.0))

    async def main():
        async with NexadataClient(URL, credentials, transport=transport) as api:
            return await api.trigger(29)

    execution = run(main())
    assert execution.id == 5
    assert [r.method for r in seen] == ["POST", "POST"]
    assert [r.headers["authorization"] for r in seen] == [
        "Bearer tok-0001-abcdefgh",
        "Bearer tok-0002-abcdefgh",
    ]
    assert credentials.refreshes == 1


def test_a_403_with_invalid_token_is_a_refused_token_and_a_plain_403_is_not() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers["authorization"].endswith("0001-abcdefgh"):
            challenge = 'Bearer realm="x", error="invalid_token"'
            return httpx.Response(403, headers={"WWW-Authenticate": challenge})
        return httpx.Response(200, json=RECORD)

    transport, seen = counting(handler)
    credentials = Credentials(Minted(), clock=Clock(0.0))

    async def main():
        async with NexadataClient(URL, credentials, transport=transport) as api:
            return await api.get_execution(7)

    assert run(main()).id == 7 and len(seen) == 2

    plain, seen = counting(lambda request: httpx.Response(403))
    credentials = Credentials(Minted(), clock=Clock(0.0))

    async def forbidden():
        async with NexadataClient(URL, credentials, transport=plain) as api:
            await api.get_execution(7)

    with pytest.raises(AuthError, match=r"answered 403 \(forbidden\)"):
        run(forbidden())
    assert len(seen) == 1 and credentials.refreshes == 0


def test_a_second_401_on_the_new_token_is_an_authentication_failure() -> None:
    transport, seen = counting(lambda request: httpx.Response(401))
    credentials = Credentials(Minted(), clock=Clock(0.0))

    async def main():
        async with NexadataClient(URL, credentials, transport=transport) as api:
            await api.trigger(29)

    with pytest.raises(AuthError) as caught:
        run(main())
    assert str(caught.value) == (
        "authentication failed: the API answered 401 (unauthorized) to a new token from the "
        "test's source too; check that it is a token for this API"
    )
    assert len(seen) == 2 and caught.value.exit_code == 3


def test_500_polls_refused_together_make_one_refresh() -> None:
    source = Minted()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers["authorization"].endswith("0001-abcdefgh"):
            return httpx.Response(401)
        ident = int(request.url.path.rsplit("/", 1)[1])
        return httpx.Response(200, json={"id": ident, "state": "running"})

    transport, seen = counting(handler)
    credentials = Credentials(source, clock=Clock(0.0))

    async def main():
        async with NexadataClient(URL, credentials, transport=transport, max_in_flight=64) as api:
            await credentials.token()
            return await asyncio.gather(*(api.get_execution(n) for n in range(1, 501)))

    polled = run(main())
    assert [e.id for e in polled] == list(range(1, 501))
    assert source.fetches == 2 and credentials.refreshes == 1
    assert len(seen) <= 500 + 64  # each refused request is sent again once, at most


def test_a_static_token_answered_401_is_not_refreshed() -> None:
    transport, seen = counting(lambda request: httpx.Response(401))

    async def main():
        async with NexadataClient(URL, Token("static-token-value"), transport=transport) as api:
            await api.get_execution(7)

    with pytest.raises(AuthError, match=r"answered 401 \(unauthorized\); check the token$"):
        run(main())
    assert len(seen) == 1


# -- the token file -------------------------------------------------------------------


def test_a_token_file_rewritten_mid_run_is_read_again_on_a_401(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("first-token-0001\n")
    source = FileSource(str(path))
    credentials = Credentials(source, first=source.token, clock=Clock(0.0))

    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers["authorization"] != "Bearer second-token-0002":
            return httpx.Response(401)
        return httpx.Response(200, json=RECORD)

    transport, seen = counting(handler)

    async def main():
        async with NexadataClient(URL, credentials, transport=transport) as api:
            path.write_text("second-token-0002\n")  # another program rotates it
            return await api.get_execution(7)

    assert run(main()).id == 7
    assert [r.headers["authorization"] for r in seen] == [
        "Bearer first-token-0001",
        "Bearer second-token-0002",
    ]


def test_a_token_file_still_holding_the_refused_token_is_an_authentication_failure(
    tmp_path: Path,
) -> None:
    path = tmp_path / "token"
    path.write_text("first-token-0001\n")
    source = FileSource(str(path))
    credentials = Credentials(source, first=source.token, clock=Clock(0.0))
    transport, seen = counting(lambda request: httpx.Response(401))

    async def main():
        async with NexadataClient(URL, credentials, transport=transport) as api:
            await api.get_execution(7)

    with pytest.raises(AuthError) as caught:
        run(main())
    assert str(caught.value) == (
        f"authentication failed: the API answered 401 (unauthorized), and the token file "
        f"{path} gave no other token; check the token"
    )
    assert len(seen) == 1
    path.unlink()
    with pytest.raises(AuthError, match="cannot read the token file"):
        run(source.fetch())


# -- the token command ----------------------------------------------------------------


def command(tmp_path: Path, body: str) -> str:
    """A token command: a Python script whose runs are counted in ``runs``."""
    script = tmp_path / "token_command.py"
    script.write_text(
        "import pathlib, sys\n"
        f"runs = pathlib.Path({str(tmp_path / 'runs')!r})\n"
        "runs.write_text(str(int(runs.read_text() or 0) + 1) if runs.exists() else '1')\n" + body
    )
    return f"{sys.executable} {script} --secret-arg=hunter2-distinctive"


def runs(tmp_path: Path) -> int:
    path = tmp_path / "runs"
    return int(path.read_text()) if path.exists() else 0


def test_a_command_printing_one_line_is_run_again_only_when_refused(tmp_path: Path) -> None:
    cmd = command(tmp_path, "print('line-token-' + str(runs.read_text()) + '-abcdefgh')\n")
    source = CommandSource(cmd, Redactor())
    credentials = Credentials(source, clock=Clock(0.0))

    async def main():
        first = await credentials.token()
        assert await credentials.token() is first  # no expiry: kept
        second = await credentials.refused(first)
        return first, second

    first, second = run(main())
    assert first.reveal() == "line-token-1-abcdefgh" and second.reveal() == "line-token-2-abcdefgh"
    assert runs(tmp_path) == 2 and source.runs == 2


def test_a_command_printing_json_with_an_expiry_is_run_again_before_it(tmp_path: Path) -> None:
    cmd = command(
        tmp_path,
        "import json\n"
        "print(json.dumps({'access_token': 'json-token-' + runs.read_text() + '-abcd',"
        " 'expires_in': 2}))\n",
    )
    clock = Clock(0.0)
    credentials = Credentials(CommandSource(cmd, Redactor()), clock=clock)

    async def main():
        tokens = []
        for moment in (0.0, 0.5, 0.99, 1.0, 1.5, 2.0):
            clock.now = moment
            tokens.append((await credentials.token()).reveal())
        return tokens

    tokens = run(main())
    assert tokens == ["json-token-1-abcd"] * 3 + ["json-token-2-abcd"] * 2 + ["json-token-3-abcd"]
    assert runs(tmp_path) == 3


def test_a_command_printing_an_expires_at(tmp_path: Path) -> None:
    cmd = command(
        tmp_path,
        'print(\'{"access_token": "at-token-abcdefgh", \'\n'
        '\'"expires_at": "2027-01-15T09:00:00Z"}\')\n',
    )
    source = CommandSource(cmd, Redactor(), wall=lambda: 1_800_000_000.0 - 3600)
    issued = run(source.fetch())
    # 2027-01-15T09:00:00Z is epoch 1_800_003_600: two hours after the wall above
    assert issued.token.reveal() == "at-token-abcdefgh"
    assert issued.expires_in == pytest.approx(7200.0)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "sys.stderr.write('vault: permission denied for hunter2-distinctive\\nmore\\n');"
            " sys.exit(2)\n",
            "the token command {first!r} exited with status 2 (its standard error: vault: "
            "permission denied for ***)",
        ),
        ("pass\n", "the token command {first!r} printed nothing"),
        ("print('a b')\n", "the token command {first!r} contains spaces, line breaks"),
        ("print('one'); print('two')\n", "the token command {first!r} printed more than one"),
        ("print('{not json')\n", "the token command {first!r} printed JSON that cannot be"),
        ("print('{\"token\": 1}')\n", "the token command {first!r} printed JSON without an"),
        (
            'print(\'{"access_token": "abcdefghijkl", "expires_in": -3}\')\n',
            'the token command {first!r} printed an "expires_in" that is not a positive',
        ),
        (
            'print(\'{"access_token": "abcdefghijkl", "expires_at": "soon"}\')\n',
            'the token command {first!r} printed an "expires_at" that is not an RFC 3339',
        ),
        ("sys.stdout.write('x' * 70000)\n", "the token command {first!r} printed more than 64"),
        (
            'print(\'{"access_token": "abcdefghijkl", "expires_at": "2001-01-01T00:00:00Z"}\')\n',
            'the token command {first!r} printed an "expires_at" already past',
        ),
        ("sys.stdout.buffer.write(b'\\xff\\xfe')\n", "the token command {first!r} printed some"),
    ],
)
def test_a_failing_command_is_named_by_its_first_word_only(tmp_path: Path, body, message) -> None:
    redactor = Redactor()
    source = CommandSource(command(tmp_path, body), redactor)
    redactor.add(Token("hunter2-distinctive"))  # as if a secret the process held
    with pytest.raises(AuthError) as caught:
        run(source.fetch())
    assert str(caught.value).startswith(message.format(first=sys.executable))
    assert "--secret-arg" not in str(caught.value) and "hunter2" not in str(caught.value)
    assert caught.value.exit_code == 3


def test_a_command_that_cannot_start_or_runs_too_long(tmp_path: Path) -> None:
    with pytest.raises(AuthError) as caught:
        run(CommandSource("/nonexistent/vault read secret", Redactor()).fetch())
    assert str(caught.value) == (
        "the token command '/nonexistent/vault' cannot be started: No such file or directory"
    )
    marker = tmp_path / "child-survived"
    # a shell whose child holds the pipes: the whole process group is stopped
    slow = CommandSource(f"sh -c 'sleep 30; touch {marker}' ", Redactor(), timeout=0.2)
    with pytest.raises(AuthError, match=r"'sh' ran longer than 0.2 s; it was stopped"):
        run(slow.fetch())
    assert not marker.exists()
    with pytest.raises(ConfigError, match="the token command cannot be read"):
        CommandSource("vault 'unclosed", Redactor())
    with pytest.raises(ConfigError, match="the token command is empty"):
        CommandSource("   ", Redactor())


def test_the_command_gets_no_standard_input_and_the_environment(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("VAULT_ADDR_FOR_TEST", "inherited-value")
    body = (
        "import os\n"
        "assert sys.stdin.read() == ''\n"
        "print(os.environ['VAULT_ADDR_FOR_TEST'] + '-token')\n"
    )
    issued = run(CommandSource(command(tmp_path, body), Redactor()).fetch())
    assert issued.token.reveal() == "inherited-value-token"


def test_json_answer_of_a_command_is_redacted_from_then_on(tmp_path: Path) -> None:
    redactor = Redactor()
    body = 'print(\'{"access_token": "json-secret-abcdefgh", "expires_in": 60}\')\n'
    run(CommandSource(command(tmp_path, body), redactor).fetch())
    assert redactor.redact(json.dumps({"echo": "json-secret-abcdefgh"})) == '{"echo": "***"}'


def test_a_command_that_leaves_a_child_holding_its_pipes_still_gives_its_token(tmp_path):
    pid_file = tmp_path / "child.pid"
    source = CommandSource(
        f"sh -c 'echo tok-from-sh-abcdef; sleep 30 & echo $! > {pid_file}'", Redactor()
    )
    issued = run(source.fetch())  # within the 1 s grace, not the 30 s bound
    assert issued.token.reveal() == "tok-from-sh-abcdef"
    status = Path(f"/proc/{pid_file.read_text().strip()}/status")

    def ended() -> bool:  # a zombie until init reaps it, or gone
        try:
            return "State:\tZ" in status.read_text()
        except FileNotFoundError:
            return True

    import time

    deadline = time.monotonic() + 10  # SIGKILLed with the group: it dies within moments
    while not ended() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ended()  # not left for its 30 s


def test_the_end_of_a_run_waits_for_a_refresh_under_way() -> None:
    gate = asyncio.Event()
    source = Minted(gate=gate)
    credentials = Credentials(source, clock=Clock(0.0))

    async def main():
        pending = asyncio.ensure_future(credentials.token())
        await asyncio.sleep(0)
        pending.cancel()  # the request that wanted it is gone (a signal, a timeout)
        asyncio.get_running_loop().call_later(0.05, gate.set)
        await credentials.aclose()
        return credentials.current()

    token = run(main())
    assert token is not None and token.reveal() == "tok-0001-abcdefgh"  # kept, not lost
