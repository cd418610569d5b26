"""The HTTP side of delivery: one POST, its status, headers and body. Nothing else.

A ``Sender`` knows nothing about CloudEvents, retries or dead letters (``delivery.py`` and
``retry_policy.py`` decide those); it only turns (url, headers, body, timeout) into a
``Response`` or a ``SendError``. Implementations are strategy objects in the Beam sense:
created in ``setup()``, ``open()``ed once per worker (one pooled, keep-alive connection pool),
``close()``d in ``teardown()``. They are chosen by name with ``make_sender``:

- ``"aiohttp"``: ``AiohttpSender``, one ``aiohttp.ClientSession`` per worker.
- ``"pyreqwest"``: ``PyreqwestSender`` (``sender_pyreqwest.py``), Rust reqwest/hyper under
  a Python API; the HTTP work runs on a Tokio thread.
- ``"uvhttp"``: ``UvhttpSender`` (``sender_uvhttp.py``), HTTP/1.1 on the running loop's own
  transports (``asyncio.Protocol``), responses parsed by httptools; no client thread.

Redirects are not followed: Knative treats a 3xx from a subscriber as a (non-retryable)
failure, so it must reach ``decide`` as such. ``ca_certs`` (``{origin: PEM}``, see
``tls_trust``) adds CA certificates to the system's for the https origins it names: a
destination's ``CACerts``.
"""
from __future__ import annotations

import asyncio
from types import MappingProxyType
from typing import Any, Callable, Mapping, NamedTuple, Protocol, runtime_checkable

from filters.errors import KnflowError
from transforms.tls_trust import origin, ssl_context

__all__ = [
    "AiohttpSender",
    "Response",
    "SendError",
    "Sender",
    "make_sender",
    "sender_names",
]


class Response(NamedTuple):
    """An HTTP response: status, headers with lower-case names, and the whole body.

    A named tuple rather than a frozen dataclass: one is made per request, and a tuple is
    built in a third of the time."""

    status: int
    headers: Mapping[str, str] = MappingProxyType({})
    body: bytes = b""


class SendError(KnflowError, ConnectionError):
    """No HTTP response: the connection failed or the request timed out.

    ``timeout`` tells the two apart; the message names the URL and which it was.
    """

    def __init__(self, url: str, message: str, *, timeout: bool = False) -> None:
        self.url = url
        self.timeout = timeout
        self.message = message
        super().__init__(f"POST {url}: {message}")


@runtime_checkable
class Sender(Protocol):
    """One HTTP client per worker. ``post`` may be called concurrently after ``open``."""

    name: str

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def post(self, url: str, headers: dict[str, str], body: bytes, timeout: float) -> Response: ...


def _lower_headers(items: Any) -> dict[str, str]:
    """Lower-case header names; repeated headers are joined with ", " (RFC 9110 5.3)."""
    out: dict[str, str] = {}
    for key, value in items:
        key = key.lower()
        if key in out:
            out[key] = out[key] + ", " + value
        else:
            out[key] = value
    return out


class AiohttpSender:
    """``aiohttp`` client: one ClientSession (keep-alive pool of ``limit`` connections).

    ``limit`` bounds the connections (and so the requests in flight) of this worker; 0 means
    no bound. ``keepalive_timeout`` is how long an idle connection is kept. ``ca_certs``:
    see the module docstring; an origin it names gets its own ``ssl.SSLContext``.
    """

    name = "aiohttp"

    def __init__(self, *, limit: int = 256, keepalive_timeout: float = 30.0,
                 ca_certs: Mapping[str, str] | None = None) -> None:
        self.limit = limit
        self.keepalive_timeout = keepalive_timeout
        self.ca_certs = dict(ca_certs or {})
        self._session: Any = None
        self._timeouts: dict[float, Any] = {}
        self._ssl: dict[str, Any] = {}

    async def open(self) -> None:
        if self._session is not None:
            return
        import aiohttp

        connector = aiohttp.TCPConnector(
            limit=self.limit, keepalive_timeout=self.keepalive_timeout, ttl_dns_cache=300
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            # No cookies between events, no Accept/Accept-Encoding/User-Agent noise and no
            # guessed Content-Type: the request carries exactly the CloudEvent headers we give
            # it (+ Host and Content-Length).
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            timeout=aiohttp.ClientTimeout(total=None),
        )
        self._ssl = {key: ssl_context(pem) for key, pem in self.ca_certs.items()}

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _timeout(self, seconds: float) -> Any:
        timeout = self._timeouts.get(seconds)
        if timeout is None:
            import aiohttp

            timeout = self._timeouts[seconds] = aiohttp.ClientTimeout(total=seconds)
        return timeout

    async def post(self, url: str, headers: dict[str, str], body: bytes, timeout: float) -> Response:
        session = self._session
        if session is None:
            raise RuntimeError("AiohttpSender.post() before open()")
        import aiohttp

        context = self._ssl.get(origin(url), True) if self._ssl else True
        try:
            async with session.post(
                url, data=body, headers=headers, timeout=self._timeout(timeout), allow_redirects=False, ssl=context,
            ) as resp:
                data = await resp.read()
                return Response(resp.status, _lower_headers(resp.headers.items()), data)
        except asyncio.TimeoutError:  # aiohttp's ServerTimeoutError subclasses it
            raise SendError(url, f"timed out after {timeout:g}s", timeout=True) from None
        except aiohttp.ClientError as exc:
            raise SendError(url, f"connection error: {type(exc).__name__}: {exc}") from exc
        except OSError as exc:
            raise SendError(url, f"connection error: {type(exc).__name__}: {exc}") from exc


def _make_pyreqwest(**options: Any) -> Sender:
    from transforms.sender_pyreqwest import PyreqwestSender

    return PyreqwestSender(**options)


def _make_uvhttp(**options: Any) -> Sender:
    from transforms.sender_uvhttp import UvhttpSender

    return UvhttpSender(**options)


_SENDERS: dict[str, Callable[..., Sender]] = {
    "aiohttp": AiohttpSender,
    "pyreqwest": _make_pyreqwest,
    "uvhttp": _make_uvhttp,
}


def sender_names() -> tuple[str, ...]:
    return tuple(_SENDERS)


#: The default client: uvhttp, HTTP/1.1 on the loop's own transports. pyreqwest (Rust)
#: measured about twice aiohttp's requests/s per core (bench/delivery.py), but its responses
#: cross from a Tokio thread to the loop's (GIL, eventfd wake-up): ~35-45 us of the caller's CPU
#: per request against ~15 us for uvhttp, and bench/worker.py's CPU per event drops by a
#: third (README, Performance). pyreqwest and aiohttp stay available as --http-client.
DEFAULT_SENDER = "uvhttp"


def make_sender(name: str = DEFAULT_SENDER, **options: Any) -> Sender:
    """A new, unopened sender by name (``limit=`` and the like are passed on)."""
    try:
        factory = _SENDERS[name]
    except KeyError:
        raise ValueError(f"unknown sender {name!r} (known: {', '.join(_SENDERS)})") from None
    return factory(**options)
