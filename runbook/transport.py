"""An httpx transport on aiohttp's connection pool and C HTTP parser.

httpx stays the client API (``httpx.AsyncClient``, its requests, responses and
exceptions); only the engine underneath changes. httpx's default engine (httpcore)
rescans its whole pool on every request: on this project's 2-core machine it cost
about 2.4 ms of CPU a request against the sandbox, this one about a third of that
(``benchmarks/api_throughput.py``).

Exceptions are mapped with the one distinction the client's safety rests on: an
error while *connecting* (nothing was sent) becomes ``httpx.ConnectError`` or
``httpx.ConnectTimeout``; anything after that — a dropped connection, a read timeout,
a malformed answer — becomes ``httpx.ReadError``/``ReadTimeout``/``RemoteProtocolError``,
which the client treats as "the request may have arrived".

Through a proxy (:mod:`runbook.netenv`), an https:// request is a ``CONNECT`` tunnel.
A proxy that cannot be reached, or that refuses the tunnel, has sent nothing to the
API: ``httpx.ConnectError`` again (or a ProxyError, exit 3, for a proxy that wants
credentials or forbids the host). Once the tunnel is up, a drop is like any other
drop after sending.
"""

from __future__ import annotations

import ssl
import zlib

import aiohttp
import httpx
import yarl

from runbook.errors import ProxyError, TlsError
from runbook.netenv import describe_proxy, tls_context

__all__ = ["MAX_ANSWER_BYTES", "AiohttpTransport"]

MAX_ANSWER_BYTES = 1 << 20
"""An execution record is a few hundred bytes: an answer larger than 1 MiB, as sent or
once decompressed, is malformed, and is never held in memory whole."""
_DECODERS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One aiohttp session, created in the running loop on first use."""

    def __init__(
        self,
        *,
        max_connections: int = 16,
        connect_timeout: float = 10.0,
        read_timeout: float = 30.0,
        request_timeout: float | None = None,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
        proxy: str | None = None,
        resolver: aiohttp.abc.AbstractResolver | None = None,
    ) -> None:
        """``proxy``: the proxy URL every request goes through (None: directly);
        ``resolver``: how host names are resolved (tests map names to loopback)."""
        self._max_connections = max_connections
        self._proxy = proxy
        self._resolver = resolver
        self._max_answer = max_answer_bytes
        self._timeout = aiohttp.ClientTimeout(
            total=request_timeout,
            connect=connect_timeout,
            sock_connect=connect_timeout,
            sock_read=read_timeout,
        )
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[str, yarl.URL] = {}  # polls repeat URLs: parse each once

    def _open(self, secure: bool) -> aiohttp.ClientSession:
        # verification always on: SSL_CERT_FILE/SSL_CERT_DIR, else certifi's bundle;
        # loading it costs ~40 ms, so only when the API is reached over TLS
        tls: ssl.SSLContext | bool = tls_context() if secure else False
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            limit_per_host=self._max_connections,
            ssl=tls,
            enable_cleanup_closed=False,
            resolver=self._resolver,
        )
        return aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            auto_decompress=False,  # httpx decodes by Content-Encoding itself
            skip_auto_headers=("User-Agent",),
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._session is None:
            self._session = self._open(request.url.scheme == "https")
        text = str(request.url)
        url = self._urls.get(text)
        if url is None:
            if len(self._urls) >= 4096:
                self._urls.clear()
            url = self._urls[text] = yarl.URL(text, encoded=True)
        try:
            async with self._session.request(
                request.method,
                url,
                headers=request.headers.multi_items(),
                data=request.content or None,
                allow_redirects=False,
                compress=None,
                proxy=self._proxy,
            ) as answer:
                body = await self._read(answer, request)
                status, headers = answer.status, answer.raw_headers
                encoding = answer.headers.get("Content-Encoding", "").strip().lower()
                if encoding not in ("", "identity"):
                    body = self._decode(body, encoding, request)
                    headers = tuple(h for h in headers if h[0].lower() != b"content-encoding")
        except aiohttp.ClientSSLError as exc:  # a certificate refused: not transient
            raise TlsError(
                f"the TLS connection to {request.url.host} failed: {_text(exc)}; runbook "
                "always verifies the API's certificate (for a private CA, point "
                "SSL_CERT_FILE at its bundle)"
            ) from None
        except aiohttp.ClientHttpProxyError as exc:  # the tunnel was refused: nothing sent
            raise self._refused_tunnel(exc, request) from None
        except aiohttp.ClientProxyConnectionError as exc:
            raise httpx.ConnectError(
                f"cannot connect to the proxy {describe_proxy(self._proxy or '')}: "
                f"{_text(exc.os_error) if exc.os_error else 'no answer'}",
                request=request,
            ) from exc
        except aiohttp.ConnectionTimeoutError as exc:
            raise httpx.ConnectTimeout(_text(exc), request=request) from exc
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(_text(exc), request=request) from exc
        except aiohttp.SocketTimeoutError as exc:
            raise httpx.ReadTimeout(_text(exc), request=request) from exc
        except (aiohttp.ClientResponseError, aiohttp.ClientPayloadError) as exc:
            raise httpx.RemoteProtocolError(_text(exc), request=request) from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise httpx.ReadError(_text(exc), request=request) from exc
        return httpx.Response(status, headers=list(headers), content=body, request=request)

    def _refused_tunnel(
        self, exc: aiohttp.ClientHttpProxyError, request: httpx.Request
    ) -> Exception:
        """A proxy's answer to CONNECT other than 200. 407 (credentials) and 403 (the
        host is not allowed) will not change by trying again: exit 3. Any other answer
        (502, 503: the proxy could not reach the API) is a connection that never
        reached the API, retried like one."""
        proxy = describe_proxy(self._proxy or "")
        text = f"the proxy {proxy} refused to tunnel to {request.url.host}: HTTP {exc.status}"
        if exc.status in (403, 407):
            hint = (
                "check the user and password in HTTPS_PROXY"
                if exc.status == 407
                else "ask for the API's host to be allowed, or list it in NO_PROXY"
            )
            return ProxyError(f"{text}; {hint}")
        return httpx.ConnectError(text, request=request)

    async def _read(self, answer: aiohttp.ClientResponse, request: httpx.Request) -> bytes:
        """The body, refused as soon as it passes the limit."""
        body = bytearray()
        async for chunk in answer.content.iter_any():
            body += chunk
            if len(body) > self._max_answer:
                raise httpx.DecodingError(
                    f"the answer is larger than {self._max_answer} bytes", request=request
                )
        return bytes(body)

    def _decode(self, body: bytes, encoding: str, request: httpx.Request) -> bytes:
        """Decompress within the limit (a few KB of gzip can expand to gigabytes)."""
        if encoding not in _DECODERS:
            raise httpx.DecodingError(f"unsupported Content-Encoding {encoding!r}", request=request)
        decoder = zlib.decompressobj(_DECODERS[encoding])
        try:
            plain = decoder.decompress(body, self._max_answer + 1)
        except zlib.error as exc:
            message = f"undecodable {encoding} answer: {exc}"
            raise httpx.DecodingError(message, request=request) from None
        if len(plain) > self._max_answer:
            raise httpx.DecodingError(
                f"the answer decompresses to more than {self._max_answer} bytes", request=request
            )
        return plain

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
