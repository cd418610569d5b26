"""Real HTTP consumers for tests: aiohttp servers on 127.0.0.1 with scripted behaviour.

No mocks of HTTP: the delivery engine talks to these over real sockets. A ``ConsumerServer``
records every request it receives (headers, body, the CloudEvent decoded from it, arrival
time) and answers according to a *behaviour*: a function of the received request and its
1-based number that returns a ``Reply``. Behaviours compose::

    fail_then(2, status=500)          # 500, 500, then 200
    always(400, body=b"bad input")     # 400 every time
    slow(2.0)                          # sleeps 2 s before answering 200
    reply_event({"type": "t.reply", ...}, b'{"x": 1}')   # 200 with a binary-mode CloudEvent
    throttle(1, retry_after="3")       # 429 + Retry-After: 3 once, then 200

Use it inside a test's event loop::

    async with ConsumerServer(fail_then(2)) as consumer:
        ... consumer.url ... consumer.requests ...

or from synchronous code, on a background thread with its own loop::

    consumer = ConsumerServer(accept()).start()
    try: ... finally: consumer.stop()
"""
from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from aiohttp import web

__all__ = [
    "Behaviour",
    "ConsumerServer",
    "Received",
    "Reply",
    "accept",
    "always",
    "closed_port_url",
    "dead_letter_sink",
    "fail_then",
    "reply_event",
    "sequence",
    "slow",
    "throttle",
]


@dataclass(frozen=True)
class Received:
    """One request as the consumer saw it. ``headers`` have lower-case names."""

    number: int
    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    at: float
    event: Any = None  # the decoded CloudEvent, None when the request was not one
    decode_error: str | None = None


@dataclass(frozen=True)
class Reply:
    """What the consumer answers: after waiting ``delay`` seconds, ``status`` + headers + body."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0


Behaviour = Callable[[Received], Reply]


def accept(status: int = 200) -> Behaviour:
    """Answer ``status`` (200 or 202...) with an empty body, every time."""
    return lambda req: Reply(status)


def always(status: int, body: bytes = b"", headers: Mapping[str, str] | None = None) -> Behaviour:
    """Answer ``status`` with ``body`` every time (e.g. 400, 500, 503)."""
    reply = Reply(status, dict(headers or {}), body)
    return lambda req: reply


def fail_then(times: int, status: int = 500, body: bytes = b"", then: Behaviour | None = None) -> Behaviour:
    """Answer ``status`` to the first ``times`` requests, then behave as ``then`` (accept)."""
    after = then or accept()
    failure = Reply(status, {}, body)
    return lambda req: failure if req.number <= times else after(req)


def slow(seconds: float, then: Behaviour | None = None) -> Behaviour:
    """Wait ``seconds`` before answering as ``then`` (accept): longer than a timeout."""
    after = then or accept()

    def behaviour(req: Received) -> Reply:
        reply = after(req)
        return Reply(reply.status, reply.headers, reply.body, reply.delay + seconds)

    return behaviour


def throttle(times: int, retry_after: str = "1", status: int = 429, then: Behaviour | None = None) -> Behaviour:
    """Answer ``status`` (429) with ``Retry-After: retry_after`` ``times`` times, then ``then``."""
    after = then or accept()
    failure = Reply(status, {"Retry-After": retry_after}, b"slow down")
    return lambda req: failure if req.number <= times else after(req)


def reply_event(
    attributes: Mapping[str, Any],
    data: bytes = b"",
    status: int = 200,
    content_type: str = "application/json",
) -> Behaviour:
    """Answer with a CloudEvent in HTTP binary mode (``ce-*`` headers, data as the body).

    Built by hand, not with our codec, so the test checks the codec against the binding as
    written down; pass attributes without ``id`` to get a malformed reply.
    """
    headers = {f"ce-{name}": str(value) for name, value in attributes.items()}
    headers.setdefault("ce-specversion", "1.0")
    headers["content-type"] = content_type
    reply = Reply(status, headers, data)
    return lambda req: reply


def sequence(*replies: Reply, then: Behaviour | None = None) -> Behaviour:
    """Answer the given replies in order, then behave as ``then`` (accept)."""
    after = then or accept()
    return lambda req: replies[req.number - 1] if req.number <= len(replies) else after(req)


def dead_letter_sink() -> "ConsumerServer":
    """A consumer that stores whatever it gets (202), as a deadLetterSink does."""
    return ConsumerServer(accept(202))


def closed_port_url(host: str = "127.0.0.1") -> str:
    """A URL nothing listens on (connection refused): a consumer that is down."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port = sock.getsockname()[1]
    return f"http://{host}:{port}/"


def _decode(headers: Mapping[str, str], body: bytes) -> tuple[Any, str | None]:
    try:
        from transforms.codec import decode_http, is_http_cloudevent
    except ImportError as exc:  # codec not importable: record raw requests only
        return None, f"codec unavailable: {exc}"
    if not is_http_cloudevent(headers):
        return None, None
    try:
        events = decode_http(headers, body)
    except Exception as exc:  # noqa: BLE001 - recorded for the test to assert on
        return None, f"{type(exc).__name__}: {exc}"
    return (events[0] if len(events) == 1 else events), None


class ConsumerServer:
    """An aiohttp consumer on 127.0.0.1 (ephemeral port) recording what it receives; an
    https one with ``ssl`` (a server ``ssl.SSLContext``)."""

    def __init__(
        self,
        behaviour: Behaviour | None = None,
        *,
        host: str = "127.0.0.1",
        clock: Callable[[], float] = time.time,
        decode: bool = True,
        ssl: Any = None,
    ) -> None:
        self.behaviour: Behaviour = behaviour or accept()
        self.host = host
        self.ssl = ssl
        self.clock = clock
        self.decode = decode
        self.requests: list[Received] = []
        self.in_flight = 0
        self.max_in_flight = 0  # most requests being handled at once
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- what was received ---------------------------------------------------------------
    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("consumer not started")
        return f"{'https' if self.ssl is not None else 'http'}://{self.host}:{self.port}/"

    @property
    def events(self) -> list[Any]:
        return [r.event for r in self.requests]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    # -- serving ---------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        event, error = _decode(headers, body) if self.decode else (None, None)
        with self._lock:
            number = len(self.requests) + 1
            received = Received(
                number, request.method, request.path_qs, headers, body, self.clock(), event, error
            )
            self.requests.append(received)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            reply = self.behaviour(received)
            if reply.delay > 0:
                await asyncio.sleep(reply.delay)
            return web.Response(status=reply.status, headers=dict(reply.headers), body=reply.body)
        finally:
            with self._lock:
                self.in_flight -= 1

    async def astart(self) -> "ConsumerServer":
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        site = web.SockSite(runner, sock, shutdown_timeout=0.1, ssl_context=self.ssl)
        await site.start()
        self._runner = runner
        return self

    async def astop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> "ConsumerServer":
        return await self.astart()

    async def __aexit__(self, *exc: object) -> None:
        await self.astop()

    # -- background thread (for synchronous tests) -----------------------------------------
    def start(self) -> "ConsumerServer":
        """Serve on a background thread with its own event loop; returns once listening."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.astart())
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self.astop())
                loop.close()

        self._thread = threading.Thread(target=run, name=f"consumer-{id(self):x}", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._thread = None
        self._loop = None

    def __enter__(self) -> "ConsumerServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
