"""``UvhttpSender``: the ``Sender`` interface on the running loop's own transports.

HTTP/1.1 over ``asyncio.Protocol`` connections (uvloop's libuv transports in the job, the
standard loop's anywhere else), responses parsed by ``httptools`` (llhttp, the parser
uvicorn uses). Everything happens on the loop thread that calls ``post``: no client thread,
no hand-off of each response across threads and no GIL round trip per request, which is
where pyreqwest's Tokio thread spends most of the ~39-48 us of the caller's CPU it costs per
request on this machine; this one costs ~13-17 us (same process, same consumer, pinned;
README, Performance > HTTP client). It is the default sender (``DEFAULT_SENDER``).

Per request: the head is built as one string (the request line and ``Host`` cached per
URL, the given headers, ``Content-Length``), encoded, written with the body in one
``transport.write``; its deadline covers the whole exchange (one sender-wide timer, armed at
the earliest deadline in flight, times out what is due: a timer per request cost ~2-3 us of set-up
and cancelling, a float comparison does not); the response's
status, headers and body come from the parser's callbacks into the protocol object.

What it does and does not do:

- Keep-alive pools per (host, port), at most ``limit`` connections in all (0 = no bound).
  A caller that finds no idle connection and no free slot first closes an idle connection
  to another host if there is one, else waits; waiters are served first come, first served,
  each with the next connection released (the released one itself if it is to the same
  host, a fresh slot otherwise). Idle connections are closed after ``keepalive_timeout``.
- ``timeout`` bounds waiting for a connection, connecting, sending and the whole response;
  a connection that timed out is closed, never reused.
- Responses: Content-Length, chunked, or until the server closes; 1xx interim responses
  are skipped; 204/304 have no body; trailer fields of a chunked body are dropped. A response whose ``Connection: close`` or HTTP/1.0
  framing says the connection ends (``should_keep_alive()`` false) closes the connection
  after the body. Header names are lower-cased, repeated headers joined with ", ".
  A connection that ends before the response is complete is a ``SendError``; so is a
  response that does not parse.
- Stale connections: a pooled connection the server closed while idle is retried once on
  a new connection, and only when (a) the connection had already served a response (a
  fresh connection failing is the server's answer, not staleness) and (b) not one byte of
  a response arrived. POST is not idempotent: the server may have read the request before
  closing; every HTTP client with keep-alive makes this trade, and delivery here is at
  least once anyway (the same event may reach a subscriber twice after any network error).
- Redirects are not followed: a 3xx is returned like any other response.
- Header names and values are checked before anything is sent: a CR, LF or NUL in a value
  or a name that is not an HTTP token raises ``ValueError`` naming the header (as aiohttp
  and pyreqwest do); ``Host``, ``Content-Length`` and ``Transfer-Encoding`` are the
  sender's to write and raise ``ValueError`` too. Values are sent UTF-8 encoded.
- Not here: https and URLs with user info are delegated to a ``PyreqwestSender`` opened
  on first use (TLS was not tested without a certificate tool such as ``trustme``); no
  HTTP/2, no proxies (the other senders use none either), no request compression.
"""
from __future__ import annotations

import asyncio
import re
import socket
from collections import deque
from typing import Any, Mapping
from urllib.parse import quote, urlsplit

import httptools

from transforms.sender import Response, SendError

__all__ = ["UvhttpSender"]

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_OWN_HEADERS = frozenset({"host", "content-length", "transfer-encoding"})
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?"
#: Bodies up to this size are joined to the head and written in one call; larger ones go
#: with ``writelines`` instead of being copied.
_JOIN_BODY = 64 * 1024
_MAX_TARGETS = 4096


class _Stale(Exception):
    """A reused connection ended before any byte of the response: retried once."""


class _Pool:
    """Idle keep-alive connections to one (host, port); the most recently used is last."""

    __slots__ = ("host", "port", "idle")

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.idle: list[_Connection] = []


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: at most one request at a time, the response parsed as it
    arrives. ``waiter`` is the current request's future (None while idle)."""

    def __init__(self, sender: "UvhttpSender", pool: _Pool) -> None:
        self.sender = sender
        self.pool = pool
        self.loop = sender._loop
        self.transport: Any = None
        self.parser = httptools.HttpResponseParser(self)
        self.alive = False
        self.counted = True  # holds one of the sender's ``limit`` slots
        self.served = 0  # responses completed on this connection
        self.idle_since = 0.0
        self.waiter: asyncio.Future[Response] | None = None
        self.deadline = 0.0  # of the request in flight (``waiter`` not None)
        self.url = ""
        self.timeout = 0.0
        self.got = False  # a byte of the current response arrived
        self.done = False  # the current response is complete (set inside feed_data)
        self.keep = False
        self.in_headers = True
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []

    # -- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.alive = True
        self.sender._connections.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:  # nothing asked: a server talking out of turn
            self._kill()
            return
        self.got = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(SendError(self.url, f"malformed response: {type(exc).__name__}: {exc}"))
            self._kill()
            return
        if self.done:
            self.done = False
            self.waiter = None
            self.served += 1
            if self.keep and self.alive:
                self.sender._release(self)
            else:
                self._kill()

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            if exc is None and not self.in_headers and self._until_eof():
                self._complete(False)  # a body delimited by the end of the connection
            elif not self.got and self.served:
                waiter.set_exception(_Stale())
            else:
                cause = f": {type(exc).__name__}: {exc}" if exc is not None else ""
                what = "before the response" if not self.got else "before the response was complete"
                waiter.set_exception(SendError(self.url, f"connection error: connection closed {what}{cause}"))
        self.waiter = None
        self.sender._lost(self)

    # -- httptools callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.waiter is None or self.done:  # a second response in one read: nobody asked
            self.alive = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.in_headers:  # a chunked body's trailer fields: not headers (as aiohttp, hyper)
            return
        key = name.decode("latin-1").lower()
        text = value.decode("utf-8", "surrogateescape")
        headers = self.headers
        if key in headers:
            headers[key] = headers[key] + ", " + text
        else:
            headers[key] = text

    def on_headers_complete(self) -> None:
        self.in_headers = False
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.status < 200 and self.status != 101:  # 1xx interim response: the real one follows
            self.headers = {}
            self.body = []
            self.in_headers = True
            return
        self._complete(self.parser.should_keep_alive())

    # -- requests --------------------------------------------------------------------------
    def send(self, data: Any, deadline: float, url: str, timeout: float) -> "asyncio.Future[Response]":
        self.waiter = waiter = self.loop.create_future()
        self.url = url
        self.timeout = timeout
        self.got = False
        self.in_headers = True
        self.deadline = deadline
        sender = self.sender
        if deadline < sender._check_at:
            sender._arm(deadline)
        if type(data) is bytes:
            self.transport.write(data)
        else:
            self.transport.writelines(data)
        return waiter

    def _complete(self, keep: bool) -> None:
        body = self.body
        data = body[0] if len(body) == 1 else b"".join(body)
        response = Response(self.status, self.headers, data)
        self.headers = {}
        self.body = []
        self.keep = keep
        self.done = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    def _until_eof(self) -> bool:
        """The current response's body ends with the connection (no length, not chunked)."""
        headers = self.headers
        return (
            "content-length" not in headers
            and "chunked" not in headers.get("transfer-encoding", "").lower()
            and self.status not in (204, 304)
        )

    def _timed_out(self) -> None:
        self._fail(SendError(self.url, f"timed out after {self.timeout:g}s", timeout=True))
        self._kill(abort=True)

    def _fail(self, exc: BaseException) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _kill(self, abort: bool = False) -> None:
        """Close for good (``connection_lost`` follows and frees the slot)."""
        self.alive = False
        transport = self.transport
        if transport is not None:
            if abort:
                transport.abort()
            else:
                transport.close()


class UvhttpSender:
    """HTTP/1.1 keep-alive client on the running loop's transports (see the module doc):
    at most ``limit`` connections (0 = no bound), idle ones closed after
    ``keepalive_timeout`` seconds, per-request total timeout, redirects not followed.
    https goes to a ``PyreqwestSender`` made on first use, with ``ca_certs``."""

    name = "uvhttp"

    def __init__(self, *, limit: int = 256, keepalive_timeout: float = 30.0,
                 ca_certs: Mapping[str, str] | None = None) -> None:
        self.limit = limit
        self.keepalive_timeout = keepalive_timeout
        self.ca_certs = dict(ca_certs or {})
        self._loop: Any = None
        self._pools: dict[tuple[str, int], _Pool] = {}
        self._targets: dict[str, tuple[_Pool, str] | None] = {}
        self._valid_names: set[str] = set()
        self._count = 0  # connections open or being opened (each holds a slot)
        self._waiters: deque[tuple[_Pool, asyncio.Future[Any]]] = deque()
        self._connections: set[_Connection] = set()
        self._sweep: asyncio.TimerHandle | None = None
        self._check_at = float("inf")  # when ``_check`` runs next (inf: not armed)
        self._check_handle: asyncio.TimerHandle | None = None
        self._fallback: Any = None

    async def open(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()

    async def close(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        if self._check_handle is not None:
            self._check_handle.cancel()
            self._check_handle = None
        self._check_at = float("inf")
        for _pool, waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(RuntimeError("sender closed"))
        self._waiters.clear()
        for conn in list(self._connections):
            conn._fail(SendError(conn.url, "connection error: sender closed"))
            conn._kill(abort=True)
        for pool in self._pools.values():
            pool.idle.clear()
        self._pools.clear()
        self._targets.clear()
        await asyncio.sleep(0)  # let the transports report connection_lost
        fallback, self._fallback = self._fallback, None
        if fallback is not None:
            await fallback.close()

    # -- the request ---------------------------------------------------------------------
    async def post(self, url: str, headers: dict[str, str], body: bytes, timeout: float) -> Response:
        loop = self._loop
        if loop is None:
            raise RuntimeError("UvhttpSender.post() before open()")
        try:
            target = self._targets[url]
        except KeyError:
            target = self._target(url)
        if target is None:
            return await self._delegate(url, headers, body, timeout)
        pool, prefix = target
        if headers:
            try:
                lines = "\r\n".join(map(": ".join, headers.items()))
            except TypeError:
                self._check_headers(headers)
                raise
            n = len(headers) - 1
            if (lines.count("\n") != n or lines.count("\r") != n or "\0" in lines
                    or not self._valid_names.issuperset(headers)):
                self._check_headers(headers)
            head = f"{prefix}{lines}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        else:
            head = f"{prefix}Content-Length: {len(body)}\r\n\r\n".encode()
        data: Any = head + body if len(body) <= _JOIN_BODY else (head, body)
        deadline = loop.time() + timeout
        idle = pool.idle
        conn = None
        while idle:
            conn = idle.pop()
            if conn.alive:
                break
            conn = None
        if conn is None:
            conn = await self._acquire(pool, url, deadline, timeout)
        waiter = conn.send(data, deadline, url, timeout)
        try:
            return await waiter
        except _Stale:
            pass  # retried below, once, on a new connection
        except BaseException:
            if conn.waiter is waiter:  # cancelled mid-exchange: the connection cannot be reused
                conn._fail(SendError(url, "cancelled"))
                conn._kill(abort=True)
            raise
        conn = await self._acquire(pool, url, deadline, timeout, fresh=True)
        waiter = conn.send(data, deadline, url, timeout)
        try:
            return await waiter
        except _Stale:
            raise SendError(url, "connection error: connection closed before the response") from None
        except BaseException:
            if conn.waiter is waiter:
                conn._fail(SendError(url, "cancelled"))
                conn._kill(abort=True)
            raise

    def _check_headers(self, headers: dict[str, str]) -> None:
        """Raise ``ValueError`` naming the first bad header; remember names that are fine."""
        for name, value in headers.items():
            if name not in self._valid_names:
                if not isinstance(name, str) or not _TOKEN.match(name):
                    raise ValueError(f"invalid HTTP header name {name!r}")
                if name.lower() in _OWN_HEADERS:
                    raise ValueError(f"header {name!r} is set by the sender, not by the caller")
                if len(self._valid_names) < 1024:
                    self._valid_names.add(name)
            if not isinstance(value, str):
                raise ValueError(f"invalid value for HTTP header {name!r}: {type(value).__name__}, not str")
            if "\r" in value or "\n" in value or "\0" in value:
                raise ValueError(f"invalid value for HTTP header {name!r}: {value!r} (CR, LF or NUL)")

    def _target(self, url: str) -> tuple[_Pool, str] | None:
        """(pool, request line + Host) for an http URL, None for one delegated to pyreqwest."""
        try:
            parts = urlsplit(url)
            host = parts.hostname
            port = parts.port
        except ValueError as exc:
            raise SendError(url, f"connection error: invalid URL: {exc}") from None
        scheme = parts.scheme.lower()
        if scheme == "https" or (scheme == "http" and (parts.username or parts.password)):
            target = None
        elif scheme != "http":
            raise SendError(url, f"connection error: URL scheme {parts.scheme!r} is not http or https")
        elif not host:
            raise SendError(url, "connection error: URL has no host")
        else:
            if port is None:
                port = 80
            key = (host, port)
            pool = self._pools.get(key)
            if pool is None:
                pool = self._pools[key] = _Pool(host, port)
            path = quote(parts.path or "/", safe=_PATH_SAFE)
            if parts.query:
                path += "?" + quote(parts.query, safe=_QUERY_SAFE)
            host_header = f"[{host}]" if ":" in host else host
            if port != 80:
                host_header += f":{port}"
            target = (pool, f"POST {path} HTTP/1.1\r\nHost: {host_header}\r\n")
        if len(self._targets) >= _MAX_TARGETS:
            self._targets.clear()
        self._targets[url] = target
        return target

    async def _delegate(self, url: str, headers: dict[str, str], body: bytes, timeout: float) -> Response:
        fallback = self._fallback
        if fallback is None:
            from transforms.sender_pyreqwest import PyreqwestSender

            fallback = PyreqwestSender(limit=self.limit, keepalive_timeout=self.keepalive_timeout,
                                       ca_certs=self.ca_certs)
            await fallback.open()
            if self._fallback is None:
                self._fallback = fallback
            else:  # another request opened one meanwhile
                await fallback.close()
                fallback = self._fallback
        return await fallback.post(url, headers, body, timeout)

    # -- the pool --------------------------------------------------------------------------
    async def _acquire(self, pool: _Pool, url: str, deadline: float, timeout: float,
                       fresh: bool = False) -> _Connection:
        """A live connection to ``pool``: an idle one unless ``fresh``, else a new one when a
        slot is free (or made free by closing another host's idle connection), else the next
        one released, waiting in line."""
        try:
            async with asyncio.timeout_at(deadline):
                while True:
                    if not fresh:
                        idle = pool.idle
                        while idle:
                            conn = idle.pop()
                            if conn.alive:
                                return conn
                    if not self.limit or self._count < self.limit:
                        self._count += 1
                        return await self._connect(pool, url)
                    if self._evict_idle():  # its slot is ours now
                        return await self._connect(pool, url)
                    waiter = self._loop.create_future()
                    self._waiters.append((pool, waiter))
                    try:
                        conn = await waiter
                    except BaseException:
                        if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                            self._give_back(waiter.result())
                        raise
                    if conn is None:  # a slot was handed over
                        return await self._connect(pool, url)
                    if conn.alive:
                        if not fresh:
                            return conn
                        conn.counted = False  # a new one is needed: trade it for its slot
                        conn._kill()
                        return await self._connect(pool, url)
                    # it died on the way (its slot was freed with it): in line again
        except TimeoutError:
            raise SendError(url, f"timed out after {timeout:g}s", timeout=True) from None

    async def _connect(self, pool: _Pool, url: str) -> _Connection:
        """A new connection on a slot already counted (freed again if the connect fails)."""
        made: list[_Connection] = []

        def factory() -> _Connection:
            made.append(_Connection(self, pool))
            return made[0]

        try:
            _transport, conn = await self._loop.create_connection(factory, pool.host, pool.port)
        except BaseException as exc:
            # the slot is freed once: here, unless a connection was made and its loss freed it
            if not made or made[0].counted:
                if made:
                    made[0].counted = False
                self._free_slot()
            if isinstance(exc, OSError):
                raise SendError(url, f"connection error: {type(exc).__name__}: {exc}") from exc
            raise
        if not conn.alive:  # lost before we saw it (its slot went with it)
            raise SendError(url, "connection error: connection closed before the request")
        return conn

    def _give_back(self, conn: _Connection | None) -> None:
        """What a waiter got but cannot use (it was cancelled): a connection or a slot."""
        if conn is None:
            self._free_slot()
        elif conn.alive:
            self._release(conn)

    def _release(self, conn: _Connection) -> None:
        """A connection whose response is complete and that may be reused."""
        waiters = self._waiters
        while waiters:
            pool, waiter = waiters.popleft()
            if waiter.done():
                continue
            if pool is not conn.pool:  # its slot goes to a caller for another host
                conn.counted = False
                conn._kill()
                waiter.set_result(None)
                return
            waiter.set_result(conn)
            return
        conn.idle_since = self._loop.time()
        conn.pool.idle.append(conn)
        if self._sweep is None:
            self._sweep = self._loop.call_later(self.keepalive_timeout, self._close_idle)

    def _lost(self, conn: _Connection) -> None:
        self._connections.discard(conn)
        idle = conn.pool.idle
        if idle and conn in idle:
            idle.remove(conn)
        if conn.counted:
            conn.counted = False
            self._free_slot()

    def _free_slot(self) -> None:
        """One slot less in use: the first caller waiting gets it, else the count drops."""
        waiters = self._waiters
        while waiters:
            _pool, waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._count -= 1

    def _evict_idle(self) -> bool:
        """Close the oldest idle connection of any host to free its slot for a new one."""
        for pool in self._pools.values():
            idle = pool.idle
            while idle:
                conn = idle.pop(0)
                if conn.alive:  # (a dead one frees its own slot when its loss is reported)
                    conn.counted = False
                    conn._kill()
                    return True
        return False

    def _arm(self, at: float) -> None:
        """Run ``_check`` at ``at`` (earlier than it was armed for)."""
        if self._check_handle is not None:
            self._check_handle.cancel()
        self._check_at = at
        self._check_handle = self._loop.call_at(at, self._check)

    def _check(self) -> None:
        """Time out the requests whose deadline passed; re-arm at the next one in flight."""
        self._check_handle = None
        self._check_at = float("inf")
        loop = self._loop
        if loop is None:
            return
        now = loop.time()
        soonest = float("inf")
        for conn in list(self._connections):
            if conn.waiter is not None:
                if conn.deadline <= now + 0.001:  # (a timer may fire a little early)
                    conn._timed_out()
                elif conn.deadline < soonest:
                    soonest = conn.deadline
        if soonest != float("inf"):
            self._arm(soonest)

    def _close_idle(self) -> None:
        """Close connections idle for ``keepalive_timeout``; re-armed while any stay idle."""
        self._sweep = None
        loop = self._loop
        if loop is None:
            return
        cutoff = loop.time() - self.keepalive_timeout
        soonest = None
        for pool in self._pools.values():
            idle = pool.idle
            while idle and idle[0].idle_since <= cutoff:
                idle.pop(0)._kill()
            if idle and (soonest is None or idle[0].idle_since < soonest):
                soonest = idle[0].idle_since
        if soonest is not None:
            self._sweep = loop.call_at(soonest + self.keepalive_timeout, self._close_idle)
