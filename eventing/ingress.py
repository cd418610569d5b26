"""The broker ingress: Knative's ``POST /<namespace>/<broker>`` in front of Kafka.

A producer's event is acknowledged (202) only after Kafka acknowledged the record with
``acks=all``; nothing is acknowledged that was not stored. Events are written to the
broker's topic in the Kafka binary content mode, keyed by the ``partitionkey``
extension, stamped with ``knativearrivaltime`` and the ``knativebrokerttl`` hop counter.
"""
from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from typing import Any, Callable

from aiohttp import web

from eventing.plan import Plan
from filters.base import format_rfc3339
from transforms.codec import CodecError, decode_http, encode_kafka
from transforms.delivery import DEFAULT_TTL, TTL_EXTENSION

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY = 1024 * 1024
ARRIVAL_EXTENSION = "knativearrivaltime"


class KafkaUnavailable(Exception):
    """Kafka did not take the record (down, timed out): answer 503, acknowledge nothing."""


class KafkaWriter:
    """A lazily connected kafka-python producer with ``acks=all``, bridged to asyncio."""

    def __init__(self, bootstrap_servers: str, *, timeout_s: float = 5.0, **config: Any) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.bootstrap_servers = bootstrap_servers
        self.timeout_s = timeout_s
        self.config = config
        self._producer = None
        # kafka-python can block (connecting, waiting for metadata up to max_block_ms):
        # never on the event loop; a small pool keeps the ingress answering meanwhile.
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="knflow-kafka")

    def _get(self):
        if self._producer is None:
            from kafka import KafkaProducer

            try:
                self._producer = KafkaProducer(
                    bootstrap_servers=self.bootstrap_servers, acks="all", linger_ms=1,
                    max_block_ms=int(self.timeout_s * 1000), request_timeout_ms=int(self.timeout_s * 1000),
                    delivery_timeout_ms=int(self.timeout_s * 2000), retries=3,
                    bootstrap_timeout_ms=int(self.timeout_s * 1000),
                    client_id="knflow-ingress", **self.config,
                )
            except Exception as exc:  # NoBrokersAvailable and friends
                raise KafkaUnavailable(f"cannot connect to Kafka at {self.bootstrap_servers}: {exc}") from exc
        return self._producer

    async def write(self, topic: str, key: bytes | None, headers: list[tuple[str, bytes]], value: bytes | None) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()
        future = await loop.run_in_executor(self._executor, self._send, topic, key, headers, value)

        def ok(_metadata: Any) -> None:
            loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))

        def failed(exc: BaseException) -> None:
            loop.call_soon_threadsafe(lambda: done.done() or done.set_exception(KafkaUnavailable(f"Kafka did not acknowledge the record: {exc}")))

        future.add_callback(ok)
        future.add_errback(failed)
        await asyncio.wait_for(done, timeout=self.timeout_s * 3)

    def _send(self, topic: str, key: bytes | None, headers: list[tuple[str, bytes]], value: bytes | None):
        try:
            return self._get().send(topic, key=key, value=value, headers=headers)
        except KafkaUnavailable:
            raise
        except Exception as exc:  # metadata timeout (max_block_ms) when Kafka is down
            raise KafkaUnavailable(f"Kafka did not accept the record: {exc}") from exc

    def reachable(self) -> bool:
        try:
            producer = self._get()
            return bool(producer.bootstrap_connected()) or bool(producer.partitions_for("__consumer_offsets") is not None)
        except Exception:
            return False

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=2)
            self._producer = None
        self._executor.shutdown(wait=False)


class Ingress:
    def __init__(self, plan: Plan, writer: KafkaWriter, *, max_body: int = DEFAULT_MAX_BODY,
                 clock: Callable[[], float] = time.time) -> None:
        self.topics = {(b.namespace, b.name): b.topic for b in plan.brokers}
        self.writer = writer
        self.max_body = max_body
        self.clock = clock
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
        reachable = await asyncio.get_running_loop().run_in_executor(None, self.writer.reachable)
        if reachable:
            return web.Response(text="ready\n")
        return web.Response(status=503, text=f"not ready: Kafka at {self.writer.bootstrap_servers} is not reachable\n")

    def _error(self, status: int, message: str, **headers: str) -> web.Response:
        self.rejected += 1
        return web.Response(status=status, text=message + "\n", headers=headers)

    async def handle(self, request: web.Request) -> web.Response:
        key = (request.match_info["namespace"], request.match_info["broker"])
        if request.method == "OPTIONS":
            return web.Response(status=200, headers={"Allow": "POST, OPTIONS"})
        if request.method != "POST":
            return self._error(405, f"method {request.method} not allowed: POST CloudEvents to the broker", Allow="POST, OPTIONS")
        topic = self.topics.get(key)
        if topic is None:
            return self._error(404, f"broker {key[0]}/{key[1]} not found")
        if request.content_length is not None and request.content_length > self.max_body:
            return self._error(413, f"request body of {request.content_length} bytes exceeds the limit of {self.max_body}")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._error(413, f"request body exceeds the limit of {self.max_body} bytes")
        try:
            events = decode_http(dict(request.headers), body)
        except CodecError as exc:
            return self._error(400, f"invalid CloudEvent: {exc}")
        records = []
        arrival = format_rfc3339(datetime.fromtimestamp(self.clock(), timezone.utc))
        for index, event in enumerate(events):
            attrs = event.get_attributes()
            where = f"event {index} (id {attrs.get('id')!r})" if len(events) > 1 else f"event id {attrs.get('id')!r}"
            ttl = attrs.get(TTL_EXTENSION, DEFAULT_TTL)
            try:
                ttl = int(ttl)
            except (TypeError, ValueError):
                return self._error(400, f"{where}: {TTL_EXTENSION} must be an integer, got {ttl!r}")
            if ttl <= 0:
                return self._error(400, f"{where}: {TTL_EXTENSION} is exhausted ({ttl}): the event looped through brokers too often")
            attrs[TTL_EXTENSION] = ttl
            attrs[ARRIVAL_EXTENSION] = arrival
            try:
                key, headers, value = encode_kafka(event, "binary")
                # An event without data is a record with an empty value (Kafka needs a key or a value).
                records.append((key, headers, b"" if value is None else value))
            except CodecError as exc:
                return self._error(400, f"{where}: cannot be stored: {exc}")
        try:
            await asyncio.gather(*(self.writer.write(topic, k, h, v) for k, h, v in records))
        except (KafkaUnavailable, asyncio.TimeoutError) as exc:
            log.warning("503 for %s: %s", request.path, exc)
            return self._error(503, f"event not stored: {exc or 'Kafka timed out'}")
        self.accepted += len(records)
        return web.Response(status=202)


def serve(plan: Plan, bootstrap_servers: str, *, host: str = "127.0.0.1", port: int = 8080,
          max_body: int = DEFAULT_MAX_BODY, partitions: int = 4) -> None:
    """Run the ingress until interrupted (``knflow ingress``)."""
    from eventing.kafka_topics import ensure_topics

    try:
        ensure_topics(bootstrap_servers, [b.topic for b in plan.brokers], partitions)
    except Exception as exc:  # Kafka down at start: serve anyway, /readyz says not ready
        log.warning("could not create broker topics now (%s); retrying on first write", exc)
    writer = KafkaWriter(bootstrap_servers)
    ingress = Ingress(plan, writer, max_body=max_body)
    print(f"knflow ingress on http://{host}:{port} for " + ", ".join(f"POST /{ns}/{name}" for ns, name in ingress.topics), flush=True)
    try:
        web.run_app(ingress.app(), host=host, port=port, print=None, access_log=None)
    finally:
        writer.close()
