"""The broker ingress: Knative's ``POST /<namespace>/<broker>`` in front of Kafka.

A producer's event is acknowledged (202) only after Kafka acknowledged the record with
``acks=all``; nothing is acknowledged that was not stored. Events are written to the
broker's topic in the Kafka binary content mode, keyed by the ``partitionkey``
extension, stamped with ``knativearrivaltime`` and the ``knativebrokerttl`` hop counter.

An event is stored as it came: attribute texts as received (``time`` with its nanoseconds
and offset), a binary-mode payload byte for byte (checked, never re-serialized).

When Kafka cannot take events (unreachable, or the producer's bounded queue is full) the
ingress answers 503 with ``Retry-After`` at once, ``/readyz`` says why, and it answers 202
again by itself as soon as Kafka is back (``eventing.ingress_kafka``). A batch request
(``application/cloudevents-batch+json``) is stored in one go: all its events or, on 503,
none acknowledged (some may be stored; the sender's retry makes duplicates, never losses).

``knflow ingress`` serves it with granian (RSGI, :mod:`eventing.ingress_rsgi`: HTTP in Rust
threads outside the GIL) on uvloop; :meth:`Ingress.server` serves the same requests on
aiohttp's low-level server (``serve(server="aiohttp")``), :meth:`Ingress.app` as an aiohttp
application (tests compose it). ``serve(workers=N)`` runs N processes on one port, each
with its own producer.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from datetime import datetime, timezone
from typing import Callable, Mapping

from aiohttp import web

from eventing.ingress_kafka import KafkaUnavailable, KafkaWriter
from eventing.plan import Plan
from transforms.codec import CodecError, decode_http, encode_kafka
from transforms.delivery import DEFAULT_TTL, TTL_EXTENSION
from transforms.gc_tuning import tune_for_streaming

__all__ = ["ARRIVAL_EXTENSION", "DEFAULT_MAX_BODY", "Ingress", "KafkaUnavailable", "KafkaWriter", "serve"]

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY = 1024 * 1024
ARRIVAL_EXTENSION = "knativearrivaltime"


class _ArrivalClock:
    """``knativearrivaltime`` texts (RFC 3339, UTC, Go's RFC3339Nano trimming of the
    fraction) from ``clock``, the seconds part formatted once per second."""

    __slots__ = ("clock", "_second", "_prefix")

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._second = None
        self._prefix = ""

    def now(self) -> str:
        stamp = self.clock()
        second = int(stamp // 1)
        micro = round((stamp - second) * 1_000_000)
        if micro >= 1_000_000:
            second, micro = second + 1, micro - 1_000_000
        if second != self._second:
            self._prefix = datetime.fromtimestamp(second, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = second
        if micro:
            return f"{self._prefix}.{micro:06d}".rstrip("0") + "Z"
        return self._prefix + "Z"


_ALLOW = {"Allow": "POST, OPTIONS"}
_ALLOW_GET = {"Allow": "GET, HEAD"}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

Answer = tuple  # (status, text or None, headers or None)
ACCEPTED: Answer = (202, None, None)


async def _no_expect(request: web.BaseRequest) -> None:
    """The router's Expect handler for :meth:`Ingress.app`: :meth:`Ingress.handle` answers
    ``Expect: 100-continue`` itself, once it knows the body is wanted."""


class Ingress:
    """The ingress's requests: :meth:`handle` routes and answers every one itself (the broker
    paths, ``/healthz``, ``/readyz``). :meth:`server` serves it on aiohttp's low-level server
    (what ``knflow ingress`` runs: no router, no middlewares); :meth:`app` wraps it in a
    ``web.Application`` for code that composes applications."""

    def __init__(self, plan: Plan, writer: KafkaWriter, *, max_body: int = DEFAULT_MAX_BODY,
                 clock: Callable[[], float] = time.time, retry_after_s: int = 1) -> None:
        self.topics = {(b.namespace, b.name): b.topic for b in plan.brokers}
        # "/<namespace>/<broker>" as sent (names are DNS labels: nothing to percent-decode);
        # a path that is not here exactly (a query, an escape, another path) takes route().
        self.paths = {f"/{namespace}/{name}": topic for (namespace, name), topic in self.topics.items()}
        self.writer = writer
        self.max_body = max_body
        self.arrival = _ArrivalClock(clock)
        self.retry_after = {"Retry-After": str(retry_after_s)}
        self.accepted = 0
        self.rejected = 0

    def server(self, *, loop: asyncio.AbstractEventLoop | None = None, **kwargs: object) -> web.Server:
        """aiohttp's low-level server for :meth:`handle` (``web.ServerRunner``); ``kwargs``
        go to each connection's ``RequestHandler``."""
        loop = loop or asyncio.get_running_loop()
        max_body = self.max_body
        base_request = web.BaseRequest

        def request_factory(message, payload, protocol, writer, task):  # type: ignore[no-untyped-def]
            return base_request(message, payload, protocol, writer, task, loop, client_max_size=max_body)

        return web.Server(self.handle, request_factory=request_factory, loop=loop, **kwargs)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body)
        app.router.add_route("*", "/{path:.*}", self.handle, expect_handler=_no_expect)
        return app

    # -- the requests, transport-neutral: an answer is (status, text or None, headers or None) --

    def healthz(self) -> Answer:
        return (200, "ok\n", None)

    def readyz(self) -> Answer:
        ready, reason = self.writer.status()
        if ready:
            return (200, "ready\n", None)
        return (503, f"not ready: {reason}\n", self.retry_after)

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> Answer:
        self.rejected += 1
        return (status, message + "\n", headers)

    def _unavailable(self, reason: str) -> Answer:
        log.debug("503: %s", reason)
        return self._error(503, f"event not stored: {reason}", self.retry_after)

    def route(self, method: str, path: str) -> str | Answer:
        """A path (percent-decoded, without the query) other than an exact broker path: a
        broker's topic, or the answer."""
        if path == "/healthz" or path == "/readyz":
            if method not in ("GET", "HEAD"):
                return (405, "405: Method Not Allowed\n", _ALLOW_GET)
            return self.healthz() if path == "/healthz" else self.readyz()
        parts = path.split("/")
        if len(parts) != 3 or not parts[1] or not parts[2]:
            return (404, "404: Not Found\n", None)
        topic = self.topics.get((parts[1], parts[2]))
        if topic is None:
            return self._error(404, f"broker {parts[1]}/{parts[2]} not found")
        return topic

    def before_body(self, method: str, length: int | None, expect: str | None) -> Answer | None:
        """The answer known before the body is read (so it is never read, nor asked for with
        ``100 Continue``), or None: read it."""
        if method != "POST":
            if method == "OPTIONS":
                return (200, None, _ALLOW)
            return self._error(405, f"method {method} not allowed: POST CloudEvents to the broker", _ALLOW)
        if length is not None and length > self.max_body:
            return self._error(413, f"request body of {length} bytes exceeds the limit of {self.max_body}")
        writer = self.writer
        if not writer.up:  # Kafka cannot take it anyway
            return self._unavailable(writer.status()[1] or "Kafka is unreachable")
        if expect is not None and expect.lower() != "100-continue":
            return self._error(417, f"unknown Expect: {expect}")
        return None

    def too_large(self) -> Answer:
        return self._error(413, f"request body exceeds the limit of {self.max_body} bytes")

    async def store(self, topic: str, headers: Mapping[str, str], body: bytes) -> Answer:
        """Decodes the request's events, stores them in ``topic``: ACCEPTED once Kafka has them all."""
        try:
            events = decode_http(headers, body, keep_payload=True)
        except CodecError as exc:
            return self._error(400, f"invalid CloudEvent: {exc}")
        arrival = self.arrival.now()
        records = []
        for index, event in enumerate(events):
            attrs = event.get_attributes()
            ttl = attrs.get(TTL_EXTENSION, DEFAULT_TTL)
            if type(ttl) is not int:
                try:
                    ttl = int(ttl)
                except (TypeError, ValueError):
                    return self._error(400, f"{_where(events, index)}: {TTL_EXTENSION} must be an integer, got {ttl!r}")
            if ttl <= 0:
                return self._error(
                    400, f"{_where(events, index)}: {TTL_EXTENSION} is exhausted ({ttl}): the event looped through brokers too often")
            attrs[TTL_EXTENSION] = ttl
            attrs[ARRIVAL_EXTENSION] = arrival
            try:
                key, kafka_headers, value = encode_kafka(event, "binary")
            except CodecError as exc:
                return self._error(400, f"{_where(events, index)}: cannot be stored: {exc}")
            # An event without data is a record with an empty value (Kafka needs a key or a value).
            records.append((key, kafka_headers, b"" if value is None else value))
        try:
            await self.writer.write_many(topic, records)
        except KafkaUnavailable as exc:
            return self._unavailable(str(exc))
        self.accepted += len(records)
        return ACCEPTED

    # -- aiohttp --------------------------------------------------------------------------

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """aiohttp's handler (:meth:`server`, :meth:`app`) for every path."""
        topic = self.paths.get(request.raw_path)
        if topic is None:
            topic = self.route(request.method, request.path)
            if type(topic) is not str:
                return _response(topic)
        headers = request.headers
        length = request.content_length
        expect = headers.get("Expect") if request.version >= (1, 1) else None
        answer = self.before_body(request.method, length, expect)
        if answer is not None:
            return _response(answer)
        if expect is not None:  # the body is wanted: let the client send it
            await request.writer.write(_CONTINUE)
            request.writer.output_size = 0
        if length is not None:  # the usual case: exactly the announced bytes
            try:
                body = await request.content.readexactly(length) if length else b""
            except asyncio.IncompleteReadError as exc:
                return _response(self._error(400, f"request body ended after {len(exc.partial)} of {length} bytes"))
        else:  # chunked: up to max_body
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                return _response(self.too_large())
        answer = await self.store(topic, headers, body)
        return web.Response(status=202) if answer is ACCEPTED else _response(answer)


def _response(answer: Answer) -> web.Response:
    status, text, headers = answer
    return web.Response(status=status, text=text, headers=headers)


def _where(events: list, index: int) -> str:
    event_id = events[index].get_attributes().get("id")
    return f"event {index} (id {event_id!r})" if len(events) > 1 else f"event id {event_id!r}"


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is in requirements.txt
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


async def _run(ingress: Ingress, host: str, port: int, reuse_port: bool, tune_gc: bool) -> None:
    runner = web.ServerRunner(ingress.server(access_log=None), handle_signals=True)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_port=reuse_port or None).start()
        if tune_gc:
            tune_for_streaming()
        while True:
            await asyncio.sleep(3600)
    finally:
        await runner.cleanup()


def _writer(plan: Plan, bootstrap_servers: str, partitions: int, topics_ready: bool,
            writer_factory: Callable[..., KafkaWriter]) -> KafkaWriter:
    """A worker's writer; when Kafka was down at start it creates the topics once it reaches Kafka."""
    from eventing.kafka_topics import ensure_topics

    topics = [b.topic for b in plan.brokers]
    on_connect = None if topics_ready else (lambda: ensure_topics(bootstrap_servers, topics, partitions, timeout_s=5.0,
                                                                  client_config=plan.kafka_python_config(),
                                                                  layouts=plan.topic_layouts))
    return writer_factory(bootstrap_servers, on_connect=on_connect, **plan.librdkafka_config())


def _serve_one(plan: Plan, bootstrap_servers: str, host: str, port: int, max_body: int, partitions: int,
               topics_ready: bool, reuse_port: bool, writer_factory: Callable[..., KafkaWriter], tune_gc: bool) -> None:
    writer = _writer(plan, bootstrap_servers, partitions, topics_ready, writer_factory)
    ingress = Ingress(plan, writer, max_body=max_body)
    loop = _new_loop()
    asyncio.set_event_loop(loop)
    main = loop.create_task(_run(ingress, host, port, reuse_port, tune_gc))
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):  # SIGINT/SIGTERM (the runner's handlers)
        pass
    finally:
        try:
            if not main.done():
                main.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    loop.run_until_complete(main)
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()
            writer.close()


def _serve_granian(plan: Plan, bootstrap_servers: str, host: str, port: int, max_body: int, partitions: int,
                   topics_ready: bool, _reuse_port: bool, writer_factory: Callable[..., KafkaWriter], tune_gc: bool,
                   *, workers: int) -> None:
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, Loops, RuntimeModes
    from granian.log import LogLevels

    from eventing.ingress_rsgi import RsgiIngress

    def load(_target: str) -> RsgiIngress:  # in each worker process (forked): its own producer
        writer = _writer(plan, bootstrap_servers, partitions, topics_ready, writer_factory)
        return RsgiIngress(Ingress(plan, writer, max_body=max_body), tune_for_streaming if tune_gc else None)

    # one Rust runtime thread per worker (a second one measured within noise on 2 cores)
    Granian("eventing.ingress_rsgi:RsgiIngress", address=host, port=port, interface=Interfaces.RSGI,
            workers=workers, loop=Loops.uvloop, runtime_mode=RuntimeModes.st, runtime_threads=1,
            http=HTTPModes.http1, websockets=False, log_access=False,
            log_level=LogLevels.warning).serve(target_loader=load)


def serve(plan: Plan, bootstrap_servers: str, *, host: str = "127.0.0.1", port: int = 8080,
          max_body: int = DEFAULT_MAX_BODY, partitions: int = 4, workers: int = 1,
          writer_factory: Callable[..., KafkaWriter] = KafkaWriter, create_topics: bool = True,
          tune_gc: bool = True, server: str = "granian") -> None:
    """Run the ingress until interrupted (``knflow ingress``); ``workers`` processes share
    the port, each with its own writer. ``server``: ``granian`` (RSGI,
    :mod:`eventing.ingress_rsgi`; its workers share one listening socket) or ``aiohttp``
    (the low-level server on uvloop; workers bind the port with SO_REUSEPORT).
    ``writer_factory`` makes each worker's writer (``bench/ingress.py`` passes one without
    Kafka). ``tune_gc``: each worker tunes the garbage collector once it serves
    (``transforms.gc_tuning``)."""
    if server not in ("granian", "aiohttp"):
        raise ValueError(f"server must be granian or aiohttp, got {server!r}")
    from eventing.kafka_topics import TopicCreationError, ensure_topics

    if plan.kafka_auth is not None:  # a refused login stops the start; Kafka down does not (503s until it is up)
        from eventing.kafka_topics import KafkaAccessError, KafkaLoginRefused, check_access

        try:
            check_access(bootstrap_servers, "knflow-ingress", timeout_s=5.0, config=plan.librdkafka_config())
        except KafkaLoginRefused:
            raise
        except KafkaAccessError as exc:
            log.warning("%s; serving anyway", exc)
    topics_ready = not create_topics
    if create_topics:
        try:
            ensure_topics(bootstrap_servers, [b.topic for b in plan.brokers], partitions, timeout_s=5.0,
                          client_config=plan.kafka_python_config(), layouts=plan.topic_layouts)
            topics_ready = True
        except TopicCreationError:  # Kafka refused the manifests' sizes: fix them first
            raise
        except Exception as exc:  # Kafka down at start: serve anyway, /readyz says not ready
            log.warning("could not create broker topics now (%s); creating them once Kafka is reachable", exc)
    paths = ", ".join(f"POST /{b.namespace}/{b.name}" for b in plan.brokers)
    print(f"knflow ingress on http://{host}:{port} ({workers} worker{'s' if workers > 1 else ''}) for {paths}", flush=True)
    args = (plan, bootstrap_servers, host, port, max_body, partitions, topics_ready, workers > 1, writer_factory,
            tune_gc)
    if server == "granian":
        _serve_granian(*args, workers=workers)
        return
    if workers <= 1:
        _serve_one(*args)
        return
    import multiprocessing

    context = multiprocessing.get_context("fork")  # before any producer thread exists
    children = [context.Process(target=_serve_one, args=args, name=f"knflow-ingress-{n}") for n in range(workers)]
    for child in children:
        child.start()

    def stop(signum: int, _frame: object) -> None:
        for child in children:
            if child.is_alive():
                os.kill(child.pid, signal.SIGINT)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for child in children:
        child.join()
