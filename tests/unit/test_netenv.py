"""Which proxy a URL goes through, and which CA certificates verify it: curl's rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from runbook.errors import ConfigError
from runbook.netenv import CaBundle, ProxySettings, ca_bundle, describe_proxy, tls_context

API = "https://app.nexadata.com/api/v1"


def chosen(url: str = API, **env: str) -> str | None:
    return ProxySettings.from_env(env).for_url(url)


def test_each_scheme_takes_its_own_variable_lower_case_first() -> None:
    assert chosen(HTTPS_PROXY="http://upper:3128") == "http://upper:3128"
    assert chosen(https_proxy="http://lower:3128", HTTPS_PROXY="http://upper:3128") == (
        "http://lower:3128"
    )
    assert chosen(HTTP_PROXY="http://plain:3128") is None  # http_proxy is not for https
    assert chosen("http://10.1.2.3/api/v1", HTTP_PROXY="http://plain:3128") == ("http://plain:3128")
    assert chosen(ALL_PROXY="http://all:3128") == "http://all:3128"
    assert chosen(all_proxy="http://all:3128", HTTPS_PROXY="http://own:1") == "http://own:1"
    assert chosen(HTTPS_PROXY="proxy.corp:8080") == "http://proxy.corp:8080"  # as curl does
    assert chosen(HTTPS_PROXY="  ") is None and chosen() is None


@pytest.mark.parametrize(
    ("url", "no_proxy", "direct"),
    [
        (API, "*", True),
        (API, "nexadata.com", True),
        (API, ".nexadata.com", True),
        (API, "*.nexadata.com", True),
        (API, "app.nexadata.com", True),
        (API, "other.com, NEXADATA.COM ", True),
        (API, "xnexadata.com", False),
        (API, "com.nexadata", False),
        (API, "", False),
        ("https://10.1.2.3/api/v1", "10.0.0.0/8", True),
        ("https://10.1.2.3/api/v1", "10.1.2.3", True),
        ("https://10.1.2.3/api/v1", "10.1.2.4,192.168.0.0/16", False),
        ("https://[fd00::5]/api/v1", "fd00::/8", True),
    ],
)
def test_no_proxy_lists_hosts_domains_addresses_and_networks(url, no_proxy, direct) -> None:
    assert (chosen(url, HTTPS_PROXY="http://p:1", NO_PROXY=no_proxy) is None) is direct


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8321/api/v1", "https://localhost/api/v1", "http://[::1]:80/x"]
)
def test_loopback_is_never_proxied(url: str) -> None:
    assert chosen(url, HTTPS_PROXY="http://p:1", HTTP_PROXY="http://p:1", NO_PROXY="") is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"HTTPS_PROXY": "socks5h://p:1080"}, "HTTPS_PROXY names a socks5h:// proxy"),
        ({"ALL_PROXY": "socks4://p:1080"}, "ALL_PROXY names a socks4:// proxy"),
        ({"HTTP_PROXY": "http://p:notaport"}, "HTTP_PROXY is not a proxy URL"),
        ({"https_proxy": "http://"}, "HTTPS_PROXY is not a proxy URL"),
    ],
)
def test_an_unusable_proxy_is_a_config_error_naming_its_variable(env, message) -> None:
    with pytest.raises(ConfigError, match=message):
        ProxySettings.from_env(env)


def test_messages_show_a_proxy_without_its_credentials() -> None:
    assert describe_proxy("http://alice:s3cret@proxy.corp:8080") == "proxy.corp:8080"
    assert describe_proxy("proxy.corp") == "proxy.corp:80"
    assert describe_proxy("https://proxy.corp") == "proxy.corp:443"


def test_a_ca_bundle_is_a_file_or_a_directory_that_exists(tmp_path: Path) -> None:
    assert ca_bundle({}) is None
    pem = tmp_path / "ca.pem"
    pem.write_text("not a certificate\n")
    assert ca_bundle({"SSL_CERT_FILE": str(pem)}) == CaBundle(cafile=str(pem))
    assert ca_bundle({"SSL_CERT_DIR": str(tmp_path)}) == CaBundle(capath=str(tmp_path))
    both = {"SSL_CERT_FILE": str(pem), "SSL_CERT_DIR": str(tmp_path)}
    assert ca_bundle(both) == CaBundle(str(pem), str(tmp_path))  # OpenSSL loads both
    with pytest.raises(ConfigError, match=r"SSL_CERT_FILE names /nowhere/ca\.pem, which is not"):
        ca_bundle({"SSL_CERT_FILE": "/nowhere/ca.pem"})
    with pytest.raises(ConfigError, match=r"SSL_CERT_DIR names .*, which is not a directory"):
        ca_bundle({"SSL_CERT_DIR": str(pem)})
    with pytest.raises(ConfigError, match=r"the CA certificates in SSL_CERT_FILE \(.*\) cannot"):
        tls_context({"SSL_CERT_FILE": str(pem)})
    assert tls_context({}).verify_mode.name == "CERT_REQUIRED"


def test_a_missing_ca_bundle_is_exit_3_before_anything_is_sent(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = tmp_path / "p.yaml"
    plan.write_text("version: 1\nworkflows:\n  a: {workflow_id: 1}\n")
    monkeypatch.setenv("NEXADATA_TOKEN", "t" * 20)
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "none.pem"))
    result = cli("apply", str(plan), "--state-dir", str(tmp_path / "state"))
    assert result.code == 3
    assert (
        result.err == f"runbook: SSL_CERT_FILE names {tmp_path / 'none.pem'}, which is not a file\n"
    )
    assert not (tmp_path / "state").exists()  # the journal was not even opened
