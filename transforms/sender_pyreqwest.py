"""``PyreqwestSender``: the ``Sender`` interface on pyreqwest (Rust reqwest + hyper).

HTTP parsing, connection pooling and timeouts run in Rust on a Tokio runtime thread; Python
only builds the request and awaits the result, which costs less interpreter time per request
than aiohttp's pure-asyncio client. Chosen with ``make_sender("pyreqwest")``, which imports
this module (and so pyreqwest) only then.
"""
from __future__ import annotations

from datetime import timedelta
from typing import Any, Mapping

from pyreqwest.client import ClientBuilder
from pyreqwest.exceptions import PyreqwestError, RequestTimeoutError

from transforms.sender import Response, SendError, _lower_headers
from transforms.tls_trust import certificates, origin

__all__ = ["PyreqwestSender"]


def _describe(exc: Exception) -> str:
    """pyreqwest's message plus its innermost cause ("Connection refused (os error 111)")."""
    message = getattr(exc, "message", None) or str(exc)
    details = getattr(exc, "details", None)
    causes = details.get("causes") if isinstance(details, dict) else None
    if causes:
        return f"{message}: {causes[-1].get('message', '')}"
    return message


class PyreqwestSender:
    """One pyreqwest ``Client`` per worker: keep-alive pool, at most ``limit`` requests in
    flight (0 = no bound), per-request total timeout, redirects not followed. An origin of
    ``ca_certs`` (``{origin: PEM}``, see ``tls_trust``) gets a client of its own that also
    trusts those CAs: reqwest's trust is per client (so is its pool: ``limit`` bounds each
    client's connections, not their sum)."""

    name = "pyreqwest"

    def __init__(self, *, limit: int = 256, keepalive_timeout: float = 30.0,
                 ca_certs: Mapping[str, str] | None = None) -> None:
        self.limit = limit
        self.keepalive_timeout = keepalive_timeout
        self.ca_certs = dict(ca_certs or {})
        self._client: Any = None
        self._trusting: dict[str, Any] = {}  # origin -> its client (ca_certs)
        self._timeouts: dict[float, timedelta] = {}

    async def open(self) -> None:
        if self._client is not None:
            return
        self._client = self._build(None)
        for key, pem in self.ca_certs.items():
            self._trusting[key] = self._build(pem)

    def _build(self, pem: str | None) -> Any:
        builder = (
            ClientBuilder()
            .follow_redirects(False)
            .gzip(False)
            .brotli(False)
            .zstd(False)
            .deflate(False)
            .referer(False)
            .no_proxy()
            .tcp_nodelay(True)
            .pool_idle_timeout(timedelta(seconds=self.keepalive_timeout))
            .max_connections(self.limit or None)
        )
        for certificate in certificates(pem or ""):
            builder = builder.add_root_certificate_pem(certificate.encode("ascii"))
        return builder.build()

    async def close(self) -> None:
        client, self._client = self._client, None
        trusting, self._trusting = self._trusting, {}
        for one in (client, *trusting.values()):
            if one is not None:
                await one.close()

    def _timeout(self, seconds: float) -> timedelta:
        td = self._timeouts.get(seconds)
        if td is None:
            td = self._timeouts[seconds] = timedelta(seconds=seconds)
        return td

    async def post(self, url: str, headers: dict[str, str], body: bytes, timeout: float) -> Response:
        client = self._client
        if client is None:
            raise RuntimeError("PyreqwestSender.post() before open()")
        if self._trusting:
            client = self._trusting.get(origin(url), client)
        try:
            request = (
                client.post(url).headers(headers).body_bytes(body).timeout(self._timeout(timeout)).build()
            )
            resp = await request.send()
            data = (await resp.bytes()).to_bytes()
        except RequestTimeoutError:
            raise SendError(url, f"timed out after {timeout:g}s", timeout=True) from None
        except PyreqwestError as exc:
            raise SendError(url, f"connection error: {type(exc).__name__}: {_describe(exc)}") from exc
        return Response(resp.status, _lower_headers(resp.headers.items()), data)
