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

Served by aiohttp on uvloop; ``serve(workers=N)`` runs N processes on one port
(SO_REUSEPORT), each with its own producer.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from datetime import datetime, timezone
from typing import Callable

from aiohttp import web

from eventing.ingress_kafka import KafkaUnavailable, KafkaWriter
from eventing.plan import Plan
from transforms.codec import CodecError, decode_http, encode_kafka
from transforms.delivery import DEFAULT_TTL, TTL_EXTENSION

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


class Ingress:
    def __init__(self, plan: Plan, writer: KafkaWriter, *, max_body: int = DEFAULT_MAX_BODY,
                 clock: Callable[[], float] = time.time, retry_after_s: int = 1) -> None:
        self.topics = {(b.namespace, b.name): b.topic for b in plan.brokers}
        self.writer = writer
        self.max_body = max_body
        self.arrival = _ArrivalClock(clock)
        self.retry_after = {"Retry-After": str(retry_after_s)}
        self.accepted = 0
        self.rejected = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_route("*", "/{namespace}/{broker}", self.handle)
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(self, request: web.Request) -> web.Response:
        ready, reason = self.writer.status()
        if ready:
            return web.Response(text="ready\n")
        return web.Response(status=503, text=f"not ready: {reason}\n", headers=self.retry_after)

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
        self.rejected += 1
        return web.Response(status=status, text=message + "\n", headers=headers)

    def _unavailable(self, reason: str) -> web.Response:
        log.debug("503: %s", reason)
        return self._error(503, f"event not stored: {reason}", self.retry_after)

    async def handle(self, request: web.Request) -> web.Response:
        method = request.method
        if method != "POST":
            if method == "OPTIONS":
                return web.Response(status=200, headers=_ALLOW)
            return self._error(405, f"method {method} not allowed: POST CloudEvents to the broker", _ALLOW)
        match = request.match_info
        topic = self.topics.get((match["namespace"], match["broker"]))
        if topic is None:
            return self._error(404, f"broker {match['namespace']}/{match['broker']} not found")
        length = request.content_length
        if length is not None and length > self.max_body:
            return self._error(413, f"request body of {length} bytes exceeds the limit of {self.max_body}")
        writer = self.writer
        if not writer.up:  # before reading the body: Kafka cannot take it anyway
            return self._unavailable(writer.status()[1] or "Kafka is unreachable")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._error(413, f"request body exceeds the limit of {self.max_body} bytes")
        try:
            events = decode_http(request.headers, body, keep_payload=True)
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
                key, headers, value = encode_kafka(event, "binary")
            except CodecError as exc:
                return self._error(400, f"{_where(events, index)}: cannot be stored: {exc}")
            # An event without data is a record with an empty value (Kafka needs a key or a value).
            records.append((key, headers, b"" if value is None else value))
        try:
            await writer.write_many(topic, records)
        except KafkaUnavailable as exc:
            return self._unavailable(str(exc))
        self.accepted += len(records)
        return web.Response(status=202)


def _where(events: list, index: int) -> str:
    event_id = events[index].get_attributes().get("id")
    return f"event {index} (id {event_id!r})" if len(events) > 1 else f"event id {event_id!r}"


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is in requirements.txt
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _serve_one(plan: Plan, bootstrap_servers: str, host: str, port: int, max_body: int, partitions: int,
               topics_ready: bool, reuse_port: bool, writer_factory: Callable[..., KafkaWriter]) -> None:
    from eventing.kafka_topics import ensure_topics

    topics = [b.topic for b in plan.brokers]
    # Kafka down at start: the writer creates the topics once it reaches Kafka.
    on_connect = None if topics_ready else (lambda: ensure_topics(bootstrap_servers, topics, partitions, timeout_s=5.0))
    writer = writer_factory(bootstrap_servers, on_connect=on_connect)
    ingress = Ingress(plan, writer, max_body=max_body)
    try:
        web.run_app(ingress.app(), host=host, port=port, print=None, access_log=None,
                    reuse_port=reuse_port or None, loop=_new_loop(), handle_signals=True)
    finally:
        writer.close()


def serve(plan: Plan, bootstrap_servers: str, *, host: str = "127.0.0.1", port: int = 8080,
          max_body: int = DEFAULT_MAX_BODY, partitions: int = 4, workers: int = 1,
          writer_factory: Callable[..., KafkaWriter] = KafkaWriter, create_topics: bool = True) -> None:
    """Run the ingress until interrupted (``knflow ingress``); ``workers`` processes share
    the port (SO_REUSEPORT), the kernel spreads connections over them. ``writer_factory``
    makes each worker's writer (``bench/ingress.py`` passes one without Kafka)."""
    from eventing.kafka_topics import ensure_topics

    topics_ready = not create_topics
    if create_topics:
        try:
            ensure_topics(bootstrap_servers, [b.topic for b in plan.brokers], partitions, timeout_s=5.0)
            topics_ready = True
        except Exception as exc:  # Kafka down at start: serve anyway, /readyz says not ready
            log.warning("could not create broker topics now (%s); creating them once Kafka is reachable", exc)
    paths = ", ".join(f"POST /{b.namespace}/{b.name}" for b in plan.brokers)
    print(f"knflow ingress on http://{host}:{port} ({workers} worker{'s' if workers > 1 else ''}) for {paths}", flush=True)
    args = (plan, bootstrap_servers, host, port, max_body, partitions, topics_ready, workers > 1, writer_factory)
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
