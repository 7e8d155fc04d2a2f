"""Behind a corporate proxy: a real loopback CONNECT proxy in front of the TLS sandbox.

The API is named ``api.nexadata.test``, a name nothing resolves: through the proxy,
runbook never looks it up; the proxy routes the tunnel to the sandbox on loopback."""

from __future__ import annotations

import asyncio
import base64
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from runbook.api import NexadataClient, RetryPolicy, Token
from runbook.errors import ApiUnreachable, ProxyError, TriggerOutcomeUnknown
from runbook.netenv import ProxySettings
from runbook.sandbox.app import create_app
from runbook.sandbox.scenario import Scenario
from runbook.transport import AiohttpTransport
from tests.support.connect_proxy import ConnectProxy
from tests.support.entry import run_entry
from tests.support.servers import API_HOST, Certificate, serve_https

TOKEN = "proxy-test-token-5e1f9a"
PLAN = """\
version: 1
name: behind-proxy
workflows:
  a: {workflow_id: 1}
  b: {workflow_id: 2, depends_on: a}
"""
URL = f"https://{API_HOST}/api/v1"


@pytest.fixture
def sandbox(certificate: Certificate) -> Iterator[tuple[int, Any]]:
    """The TLS sandbox on loopback: its port and its app."""
    app = create_app(Scenario(default={"queue": 0.0, "duration": 0.05}), token=TOKEN)
    with serve_https(app, certificate) as url:
        yield int(url.split(":")[2].split("/")[0]), app


def requests_total(app: Any) -> int:
    return int(app.state.sandbox.stats()["requests_total"])


def apply(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, certificate: Certificate, **env: str):
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN + "defaults: {poll_interval: 50ms}\n")
    base = {
        "NEXADATA_TOKEN": TOKEN,
        "NEXADATA_API_URL": URL,
        "RUNBOOK_STATE_DIR": str(tmp_path / "state"),
        "SSL_CERT_FILE": str(certificate.ca),
    }
    for name, value in {**base, **env}.items():
        monkeypatch.setenv(name, value)
    return run_entry("apply", str(plan), "--report", str(tmp_path / "report.json"), timeout=60)


def test_a_run_through_the_proxy_shows_it_only_the_host(
    tmp_path: Path, sandbox, certificate: Certificate, monkeypatch: pytest.MonkeyPatch
) -> None:
    port, app = sandbox
    with ConnectProxy({f"{API_HOST}:443": port}) as proxy:
        result = apply(
            tmp_path,
            monkeypatch,
            certificate,
            HTTPS_PROXY=proxy.url("alice:proxy-pass-77"),
            NO_PROXY="example.com,10.0.0.0/8",
        )
    assert result.code == 0, result.out + result.err
    assert app.state.sandbox.stats()["executions"] == {"1": 1, "2": 1}
    assert proxy.request_lines and set(proxy.request_lines) == {f"CONNECT {API_HOST}:443 HTTP/1.1"}
    credentials = base64.b64encode(b"alice:proxy-pass-77")
    assert all(b"Proxy-Authorization: Basic " + credentials in head for head in proxy.heads)
    seen = b"".join(proxy.heads) + bytes(proxy.carried)
    assert TOKEN.encode() not in seen  # the token only ever went inside TLS
    assert len(proxy.carried) > 1000  # (the tunnel did carry the run)
    written = result.out + result.err + (tmp_path / "report.json").read_text()
    assert "proxy-pass-77" not in written


def test_a_refused_tunnel_is_exit_3_and_sends_nothing(
    tmp_path: Path, sandbox, certificate: Certificate, monkeypatch: pytest.MonkeyPatch
) -> None:
    port, app = sandbox
    with ConnectProxy({f"{API_HOST}:443": port}, refuse=403) as proxy:
        result = apply(tmp_path, monkeypatch, certificate, https_proxy=proxy.url())
    assert result.code == 3, result.out + result.err
    assert (
        f"the proxy 127.0.0.1:{proxy.port} refused to tunnel to {API_HOST}: HTTP 403; "
        "ask for the API's host to be allowed, or list it in NO_PROXY"
    ) in result.out
    assert "Traceback" not in result.out + result.err
    assert requests_total(app) == 0


def test_an_unusable_proxy_variable_is_exit_3_before_anything_is_sent(
    tmp_path: Path, sandbox, certificate: Certificate, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, app = sandbox
    result = apply(tmp_path, monkeypatch, certificate, ALL_PROXY="socks5://127.0.0.1:1080")
    assert result.code == 3
    assert result.err == (
        "runbook: ALL_PROXY names a socks5:// proxy; runbook speaks to proxies over http:// "
        "or https:// (a CONNECT tunnel)\n"
    )
    assert requests_total(app) == 0


class LoopbackResolver(aiohttp.abc.AbstractResolver):
    """Every name is 127.0.0.1: for the requests that go directly to api.nexadata.test."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[Any]:
        return [
            {
                "hostname": host,
                "host": "127.0.0.1",
                "port": port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        pass


def client(url: str, proxy: str | None, certificate: Certificate, **policy: Any) -> NexadataClient:
    async def no_sleep(seconds: float) -> None:
        pass

    retry = RetryPolicy(**policy)
    transport = AiohttpTransport(
        proxy=proxy, resolver=LoopbackResolver(), request_timeout=retry.request_timeout
    )
    return NexadataClient(url, Token(TOKEN), transport=transport, retry=retry, sleep=no_sleep)


def trigger(api: NexadataClient) -> Any:
    async def main() -> Any:
        async with api:
            return await api.trigger(1)

    return asyncio.run(main())


@pytest.mark.parametrize(
    ("no_proxy", "tunnelled"),
    [("", True), (f".{API_HOST.split('.', 1)[1]}", False), ("*", False), (API_HOST, False)],
)
def test_no_proxy_sends_matching_hosts_directly(
    sandbox, certificate: Certificate, monkeypatch: pytest.MonkeyPatch, no_proxy, tunnelled
) -> None:
    port, app = sandbox
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate.ca))
    url = f"https://{API_HOST}:{port}/api/v1"
    with ConnectProxy({f"{API_HOST}:{port}": port}) as proxy:
        env = {"HTTPS_PROXY": proxy.url(), "NO_PROXY": no_proxy}
        chosen = ProxySettings.from_env(env).for_url(url)
        execution = trigger(client(url, chosen, certificate))
    assert execution.id == 1 and app.state.sandbox.stats()["executions"] == {"1": 1}
    assert (chosen is not None) is tunnelled
    assert len(proxy.request_lines) == (1 if tunnelled else 0)


def test_a_proxy_that_is_down_or_fails_upstream_sent_nothing_and_is_retried(
    sandbox, certificate: Certificate, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, app = sandbox
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate.ca))
    url = f"https://{API_HOST}/api/v1"
    with ConnectProxy({}) as proxy:  # no route: every CONNECT answered 502
        # the API never answered: where requests go is wrong (exit 3), not a flaky API
        with pytest.raises(ApiUnreachable) as caught:
            trigger(client(url, proxy.url(), certificate, attempts=3))
        assert len(proxy.request_lines) == 3  # a trigger that provably sent nothing: re-sent
    assert f"refused to tunnel to {API_HOST}: HTTP 502 (gave up after 3 tries" in str(caught.value)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    down = f"http://127.0.0.1:{closed.getsockname()[1]}"
    closed.close()
    with pytest.raises(ApiUnreachable, match=r"cannot connect to the proxy 127\.0\.0\.1:\d+"):
        trigger(client(url, down, certificate, attempts=2))
    assert requests_total(app) == 0


def test_credentials_the_proxy_refuses_are_exit_3(
    sandbox, certificate: Certificate, monkeypatch: pytest.MonkeyPatch
) -> None:
    port, app = sandbox
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate.ca))
    with (
        ConnectProxy({f"{API_HOST}:443": port}, refuse=407) as proxy,
        pytest.raises(ProxyError, match="check the user and password in HTTPS_PROXY"),
    ):
        trigger(client(URL, proxy.url("bob:wrong"), certificate))
    assert requests_total(app) == 0


def test_a_drop_once_the_tunnel_is_up_is_an_unknown_trigger_never_resent(
    sandbox, certificate: Certificate, monkeypatch: pytest.MonkeyPatch
) -> None:
    port, app = sandbox
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate.ca))
    # cut the tunnel as the answer comes back: the trigger reached the API
    with ConnectProxy({f"{API_HOST}:443": port}, trip=lambda: requests_total(app) > 0) as proxy:
        with pytest.raises(TriggerOutcomeUnknown, match="not sent again"):
            trigger(client(URL, proxy.url(), certificate))
        assert proxy.cut == 1
    assert app.state.sandbox.stats()["executions"] == {"1": 1}
