"""The network the environment describes: proxies and the CA bundle, as curl reads them.

- ``https_proxy``/``HTTPS_PROXY`` for https:// URLs, ``http_proxy``/``HTTP_PROXY`` for
  http:// ones, ``all_proxy``/``ALL_PROXY`` for either when the other is unset; the
  lower-case name wins when both are set. A proxy URL without a scheme is http://.
  HTTPS goes through the proxy as a ``CONNECT host:port`` tunnel: the proxy sees the
  host, never a request, a header or the token.
- ``no_proxy``/``NO_PROXY``: a comma-separated list of hosts reached directly: ``*``
  (every host), a domain (``example.com`` or ``.example.com``: it and its subdomains),
  an IP address, or a network (``10.0.0.0/8``). Loopback (``localhost``, 127.0.0.0/8,
  ::1) is never proxied, whatever the variables say.
- ``SSL_CERT_FILE`` (a PEM bundle) and ``SSL_CERT_DIR`` (a hashed directory), one or
  both, replace the bundled CA certificates, for a company CA; verification is never
  turned off.

Everything here is decided before anything is sent: a variable runbook cannot use is a
ConfigError (exit 3) that names it.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from runbook.errors import ConfigError

__all__ = [
    "CaBundle",
    "ProxySettings",
    "UrlFault",
    "ca_bundle",
    "describe_proxy",
    "is_loopback",
    "tls_context",
    "url_fault",
]

_PROXY_SCHEMES = ("http", "https")


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1)."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


UrlFault = Literal["unreadable", "not http", "credentials", "insecure"]


def url_fault(url: str) -> UrlFault | None:
    """What keeps runbook from sending a secret (a token, a report) to ``url``, or None:
    it must be an http(s) URL with a host and a valid port, hold no user or password,
    and use https:// unless its host is loopback. One rule for the API, webhooks and
    pings; each caller words the message (a webhook's URL is never shown)."""
    if not url.isprintable() or any(c.isspace() for c in url):
        return "unreadable"  # a control character or a space: no URL holds one
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
        if parts.hostname:
            parts.hostname.encode("idna")  # an empty or 64-letter label cannot be resolved
    except (ValueError, UnicodeError):
        return "unreadable"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "not http"
    if parts.username or parts.password:
        return "credentials"
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        return "insecure"
    return None


def _get(environ: Mapping[str, str], name: str) -> str | None:
    """The variable in lower case, else upper case; None when unset or blank."""
    for key in (name.lower(), name.upper()):
        value = environ.get(key, "").strip()
        if value:
            return value
    return None


def describe_proxy(url: str) -> str:
    """``host:port`` of a proxy URL: what messages show (never its user or password)."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}"


def _checked_proxy(variable: str, value: str) -> str:
    url = value if "://" in value else f"http://{value}"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigError(f"{variable} is not a proxy URL (expected http://host:port)") from None
    if parts.scheme.lower() not in _PROXY_SCHEMES:
        raise ConfigError(
            f"{variable} names a {parts.scheme}:// proxy; runbook speaks to proxies over "
            "http:// or https:// (a CONNECT tunnel)"
        )
    if not parts.hostname:
        raise ConfigError(f"{variable} is not a proxy URL (expected http://host:port)")
    return url


@dataclass(frozen=True, slots=True)
class ProxySettings:
    """The proxy variables of one environment."""

    http: str | None = None
    https: str | None = None
    no_proxy: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ProxySettings:
        env = os.environ if environ is None else environ
        fallback = _get(env, "all_proxy")
        found: dict[str, str | None] = {}
        for scheme in ("http", "https"):
            name = f"{scheme}_proxy"
            value = _get(env, name)
            variable = name.upper() if value is not None else "ALL_PROXY"
            value = value if value is not None else fallback
            found[scheme] = _checked_proxy(variable, value) if value is not None else None
        listed = _get(env, "no_proxy") or ""
        no_proxy = tuple(entry.strip().lower() for entry in listed.split(",") if entry.strip())
        return cls(http=found["http"], https=found["https"], no_proxy=no_proxy)

    def for_url(self, url: str) -> str | None:
        """The proxy URL a request to ``url`` goes through, or None to go directly."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower().rstrip(".")
        proxy = self.https if parts.scheme == "https" else self.http
        if proxy is None or not host or is_loopback(host) or self._bypassed(host):
            return None
        return proxy

    def _bypassed(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            address = None
        for entry in self.no_proxy:
            if entry == "*":
                return True
            if address is not None:
                try:
                    if address in ipaddress.ip_network(entry.strip("[]"), strict=False):
                        return True
                except ValueError:
                    pass
                continue
            domain = entry.lstrip("*").lstrip(".")
            if domain and (host == domain or host.endswith("." + domain)):
                return True
        return False


@dataclass(frozen=True, slots=True)
class CaBundle:
    """The CA certificates the environment names: a PEM file, a hashed directory, or
    both (OpenSSL loads both when both are set)."""

    cafile: str | None = None
    capath: str | None = None


def ca_bundle(environ: Mapping[str, str] | None = None) -> CaBundle | None:
    """What ``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` name, or None when neither is set; a
    ConfigError when one names nothing usable (checked before anything is sent)."""
    env = os.environ if environ is None else environ
    found: dict[str, str | None] = {"cafile": None, "capath": None}
    for variable, option in (("SSL_CERT_FILE", "cafile"), ("SSL_CERT_DIR", "capath")):
        path = env.get(variable, "").strip()
        if not path:
            continue
        exists = os.path.isfile(path) if option == "cafile" else os.path.isdir(path)
        if not exists:
            kind = "file" if option == "cafile" else "directory"
            raise ConfigError(f"{variable} names {path}, which is not a {kind}")
        found[option] = path
    if found["cafile"] is None and found["capath"] is None:
        return None
    return CaBundle(cafile=found["cafile"], capath=found["capath"])


def tls_context(environ: Mapping[str, str] | None = None) -> ssl.SSLContext:
    """A verifying TLS context: the CA certificates ``SSL_CERT_FILE`` and
    ``SSL_CERT_DIR`` name, else the bundled ones (certifi's, as httpx uses)."""
    bundle = ca_bundle(environ)
    if bundle is None:
        import certifi

        return ssl.create_default_context(cafile=certifi.where())
    try:
        return ssl.create_default_context(cafile=bundle.cafile, capath=bundle.capath)
    except (OSError, ssl.SSLError) as exc:
        named = " and ".join(
            f"{variable} ({path})"
            for variable, path in (
                ("SSL_CERT_FILE", bundle.cafile),
                ("SSL_CERT_DIR", bundle.capath),
            )
            if path
        )
        raise ConfigError(f"the CA certificates in {named} cannot be loaded ({exc})") from None
