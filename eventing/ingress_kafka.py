"""The ingress's Kafka producer: librdkafka (confluent-kafka) with ``acks=all``, bridged to asyncio.

A request's records are handed to librdkafka in one go (``produce`` never blocks: it only
queues); librdkafka batches them with everything else in flight (``linger.ms``), and its
delivery reports resolve one asyncio future per request. A request is answered 202 only
when every one of its records was acknowledged by all in-sync replicas; nothing is
acknowledged that Kafka did not store.

Under load (``pump_threshold`` records or more waiting for their reports) the event loop
itself polls librdkafka every ``poll_interval_s`` (a non-blocking ``poll(0)``), so the
delivery callbacks complete the futures right there: a poll thread would fight the loop
for the GIL on every callback (measured: ~20% fewer events/s). Otherwise a background
thread polls (blocking, so a lone request's report is served at once; it is handed to the
request's loop with ``call_soon_threadsafe``), and probes Kafka while it is unreachable.

Backpressure, never an unbounded buffer, never a hang:

- librdkafka's queue is bounded (``queue.buffering.max.messages``/``kbytes``): a full queue
  is :class:`KafkaUnavailable` at once (the ingress answers 503 with ``Retry-After``).
- Kafka unreachable (librdkafka's "all brokers down", or not yet reached since the start):
  the writer is *down* and refuses records at once. While down, the poll thread probes
  Kafka (a metadata request) every ``probe_interval_s``; the first answer makes it *up*
  again, so the ingress recovers by itself within about a second of Kafka's return.
- A record in flight when Kafka vanished is reported failed by librdkafka after at most
  ``message.timeout.ms`` (``timeout_s``), and its request gets 503; a guard on the event
  loop (checked once a second) answers 503 a little later should a report never come.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from threading import get_ident
from typing import Any, Callable, Iterable

from eventing.kafka_topics import ACKED_IN_ORDER, DEFAULT_MAX_RECORD_BYTES, kafka_limit

log = logging.getLogger(__name__)

Record = tuple[bytes | None, list[tuple[str, bytes]], bytes]  # key, headers, value


class KafkaUnavailable(Exception):
    """Kafka did not take the record (down, queue full, timed out): answer 503, acknowledge nothing."""


class _QuietLogger:
    """What librdkafka logs, at DEBUG."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def log(self, _level: int, message: str, *args: Any) -> None:
        self.logger.debug(message, *args)


class _Request:
    """The records of one HTTP request: its future completes when all are acknowledged,
    or with the first failure. It is the delivery callback of each of its records
    (librdkafka calls it in whichever thread polls: the request's loop, or the poll thread)."""

    __slots__ = ("future", "remaining", "error", "thread", "writer")

    def __init__(self, future: asyncio.Future, count: int, thread: int, writer: "KafkaWriter") -> None:
        self.future = future
        self.remaining = count
        self.error: Any = None
        self.thread = thread  # its event loop's thread
        self.writer = writer

    def __call__(self, error: Any, _message: Any) -> None:
        if error is not None:
            if self.error is not None:
                return
            self.error = error.str()
        else:
            self.remaining -= 1
            if self.remaining:
                return
        if self.thread == get_ident():  # polled by the request's own loop
            _settle((self,))
        else:  # the background thread: _run hands it over
            self.writer._done.append(self)


def _settle(requests: list[_Request]) -> None:
    """On the request's event loop: complete the futures of finished requests."""
    for request in requests:
        future = request.future
        if not future.done():
            if request.error is None:
                future.set_result(None)
            else:
                future.set_exception(KafkaUnavailable(f"Kafka did not acknowledge the record: {request.error}"))


def _expire(future: asyncio.Future, seconds: float) -> None:
    if not future.done():
        future.set_exception(KafkaUnavailable(f"no acknowledgement from Kafka within {seconds:g} s"))


class KafkaWriter:
    """Writes records with ``acks=all``, one request in flight; ``await write_many(...)`` returns
    once Kafka has them all, or raises :class:`KafkaUnavailable`.

    ``timeout_s`` bounds a record's time in the producer (librdkafka's
    ``message.timeout.ms``). ``on_connect`` runs in the poll thread each time Kafka is
    reached after being unreachable until it returns without raising (the ingress creates
    its topics there when Kafka was down at start). ``config`` adds or overrides librdkafka
    settings.
    """

    def __init__(self, bootstrap_servers: str, *, timeout_s: float = 5.0, linger_ms: float = 0,
                 max_queued_messages: int = 50_000, max_queued_kbytes: int = 256 * 1024,
                 max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES, probe_interval_s: float = 0.5,
                 on_connect: Callable[[], Any] | None = None, poll_interval_s: float = 0.001, pump_threshold: int = 16,
                 **config: Any) -> None:
        from confluent_kafka import Producer

        self.bootstrap_servers = bootstrap_servers
        self.timeout_s = timeout_s
        self.probe_interval_s = probe_interval_s
        self.max_queued_messages = max_queued_messages
        self._guard_s = timeout_s + 5.0  # librdkafka reports every record within timeout_s; this never fires normally
        self._on_connect = on_connect
        settings = {
            "bootstrap.servers": bootstrap_servers,
            "client.id": "knflow-ingress",
            **ACKED_IN_ORDER,  # acks=all, one request in flight, not idempotent (why: kafka_topics)
            # 0: a record goes out as soon as the sender thread is free, and records arriving
            # meanwhile batch up behind the requests in flight; measured, any linger > 0 added
            # ~2 ms to a lone request (its timer).
            "linger.ms": linger_ms,
            # The ingress creates its topics itself (partitions, max.message.bytes). A
            # producer's metadata request would otherwise make the broker auto-create a
            # topic it asks about with the broker's defaults (one partition): a record
            # taken while Kafka was down at start did, before the ingress created it.
            "allow.auto.create.topics": False,
            # No compression by default: kafka-python readers of the broker topic (tests,
            # tools) need the lz4 package for lz4 batches. ``**config`` may set it: with
            # JSON payloads lz4 gave more events/s (less for Kafka to write).
            "queue.buffering.max.messages": max_queued_messages,
            "queue.buffering.max.kbytes": max_queued_kbytes,
            "message.max.bytes": kafka_limit(max_record_bytes),
            "message.timeout.ms": int(timeout_s * 1000),
            "request.timeout.ms": max(1000, int(timeout_s * 1000) - 500),
            "socket.connection.setup.timeout.ms": max(1000, int(timeout_s * 1000)),
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 500,  # back within about a second of Kafka's return
            "error_cb": self._on_error,
            # librdkafka's lines at DEBUG (not its stderr): it reports each failed reconnect as an
            # error; the writer logs the transitions (unreachable, reachable) itself.
            "logger": _QuietLogger(logging.getLogger("knflow.librdkafka")),
        }
        settings.update(config)
        self._producer = Producer(settings)
        self._produce = self._producer.produce
        self._poll = self._producer.poll
        # None: starting; records are taken (librdkafka holds them until it connects) while
        # the first probe runs; if that fails, the writer is down and they get 503 at once.
        self._up: bool | None = None
        self._reason = f"Kafka at {bootstrap_servers} not reached yet"
        self._done: list[_Request] = []  # filled by delivery callbacks, in the poll thread
        self._closed = False
        self.poll_interval_s = poll_interval_s
        self.pump_threshold = pump_threshold
        self._queued: list[tuple[str, list[Record], _Request]] = []  # not produced yet (_produce_queued)
        self._produce_scheduled = False
        self._deadlines: deque[tuple[float, asyncio.Future]] = deque()  # (guard deadline, future), in order
        self._sweeping = False
        self._loop: Any = None  # the loop write_many ran on last, in thread _loop_thread
        self._loop_thread = -1
        self._pumping = False  # an event loop polls (see _pump)
        self._next_probe = 0.0
        self._purge = True
        self._thread = threading.Thread(target=self._run, name="knflow-kafka-poll", daemon=True)
        self._thread.start()

    # -- state ---------------------------------------------------------------------------

    @property
    def up(self) -> bool:
        """Records are taken: Kafka reachable (or not known to be unreachable yet, at the
        start) and the queue not full."""
        return self._up is not False and len(self._producer) < self.max_queued_messages

    def status(self) -> tuple[bool, str]:
        """(ready, reason when not): ready once Kafka answered, while it is reachable and
        the queue is not full."""
        if not self._up:
            return False, self._reason
        queued = len(self._producer)
        if queued >= self.max_queued_messages:
            return False, f"the producer's queue is full ({queued} records waiting for Kafka)"
        return True, ""

    def reachable(self) -> bool:
        return self._up is True

    def _on_error(self, error: Any) -> None:
        from confluent_kafka import KafkaError

        code = error.code()
        if code == KafkaError._ALL_BROKERS_DOWN or error.fatal():
            if self._up:
                log.warning("Kafka at %s is unreachable: %s", self.bootstrap_servers, error.str())
            self._reason = f"Kafka at {self.bootstrap_servers} is unreachable: {error.str()}"
            if self._up is not False:
                self._up = False
                self._next_probe = 0.0  # now: an idle connection closed by Kafka also looks like this
                self._purge = True  # if the probe fails too: what waits in the queue gets 503 now
        else:
            log.debug("librdkafka: %s", error.str())

    # -- the poll thread -----------------------------------------------------------------

    def _run(self) -> None:
        poll = self._poll
        while not self._closed:
            try:
                if self._up:
                    if self._pumping:
                        time.sleep(0.005)
                    else:
                        poll(0.005)
                else:
                    poll(0.01)
                    now = time.monotonic()
                    if now >= self._next_probe:
                        self._next_probe = now + self.probe_interval_s
                        self._probe()
            except Exception:  # never let the thread die: requests would hang until their guard
                log.exception("Kafka poll thread")
            self._hand_over()

    def _probe(self) -> None:
        try:
            self._producer.list_topics(timeout=max(0.2, self.probe_interval_s))
        except Exception as exc:
            self._reason = f"Kafka at {self.bootstrap_servers} is unreachable: {exc}"
            self._up = False
            if self._purge:  # records not sent yet would wait message.timeout.ms for their 503
                self._purge = False
                self._producer.purge(in_queue=True, in_flight=False, blocking=False)
            return
        self._purge = False
        if self._on_connect is not None:
            try:
                self._on_connect()
            except Exception as exc:
                self._reason = f"Kafka at {self.bootstrap_servers} answered, but: {exc}"
                return
            self._on_connect = None
        log.info("Kafka at %s is reachable", self.bootstrap_servers)
        self._up = True

    def _hand_over(self) -> None:
        if not self._done:
            return
        done, self._done = self._done, []
        by_loop: dict[Any, list[_Request]] = {}
        for request in done:
            by_loop.setdefault(request.future.get_loop(), []).append(request)
        for loop, requests in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, requests)
            except RuntimeError:  # that loop is closed: nobody waits any more
                pass

    # -- writing -------------------------------------------------------------------------

    def _pump(self) -> None:
        """On the event loop: serve delivery reports while at least ``pump_threshold``
        records wait for theirs (librdkafka's count); below, the background thread serves
        them as they come (no 1 ms poll period: a lone request's latency)."""
        self._poll(0)
        if len(self._producer) >= self.pump_threshold and not self._closed:
            asyncio.get_running_loop().call_later(self.poll_interval_s, self._pump)
        else:
            self._pumping = False

    async def write_many(self, topic: str, records: Iterable[Record]) -> None:
        """Store ``records`` (key, headers, value) in ``topic``; returns when Kafka
        acknowledged every one (acks=all), raises :class:`KafkaUnavailable` otherwise.

        The records are handed to librdkafka at the end of the loop's current iteration,
        with those of every other request of that iteration (``_produce_queued``): one
        burst wakes librdkafka's sender thread once, not once per request."""
        if self._up is False:
            raise KafkaUnavailable(self._reason)
        records = records if isinstance(records, list) else list(records)
        thread = get_ident()
        loop = self._loop
        # asyncio.get_running_loop() makes a getpid() system call per call on Python 3.11:
        # the loop of the thread that wrote last is kept (checked: same thread, still running)
        if thread != self._loop_thread or not loop.is_running():
            loop = self._loop = asyncio.get_running_loop()
            self._loop_thread = thread
        future = loop.create_future()
        self._queued.append((topic, records, _Request(future, len(records), thread, self)))
        if not self._produce_scheduled:
            self._produce_scheduled = True
            loop.call_soon(self._produce_queued)
        self._deadlines.append((loop.time() + self._guard_s, future))
        if not self._sweeping:
            self._sweeping = True
            loop.call_later(1.0, self._sweep)
        await future

    def _produce_queued(self) -> None:
        """On the event loop: produce the records of the requests queued since the last call."""
        self._produce_scheduled = False
        queued, self._queued = self._queued, []
        produce = self._produce
        for topic, records, request in queued:
            try:
                for key, headers, value in records:
                    produce(topic, value, key, headers=headers, on_delivery=request)
            except BufferError:
                self._refuse(request, f"the producer's queue is full ({len(self._producer)} records waiting for Kafka)")
            except Exception as exc:  # KafkaException: e.g. a record over message.max.bytes
                self._refuse(request, f"Kafka did not accept the record: {exc}")
        if not self._pumping and not self._closed and len(self._producer) >= self.pump_threshold:
            self._pumping = True
            asyncio.get_running_loop().call_later(self.poll_interval_s, self._pump)

    @staticmethod
    def _refuse(request: _Request, reason: str) -> None:
        # records of it already produced report later: their callbacks find the error set
        request.error = reason
        future = request.future
        if request.thread == get_ident():
            if not future.done():
                future.set_exception(KafkaUnavailable(reason))
        else:
            future.get_loop().call_soon_threadsafe(_settle, (request,))

    def _sweep(self) -> None:
        """Once a second while requests wait: a request whose report never came (it always
        comes within ``timeout_s``; this is the guard) gets 503 after ``timeout_s + 5``."""
        deadlines = self._deadlines
        now = asyncio.get_running_loop().time()
        while deadlines and (deadlines[0][1].done() or deadlines[0][0] <= now):
            _, future = deadlines.popleft()
            if not future.done():
                future.get_loop().call_soon_threadsafe(_expire, future, self._guard_s)
        if deadlines:
            asyncio.get_running_loop().call_later(1.0, self._sweep)
        else:
            self._sweeping = False

    async def write(self, topic: str, key: bytes | None, headers: list[tuple[str, bytes]], value: bytes | None) -> None:
        await self.write_many(topic, [(key, headers, b"" if value is None else value)])

    def close(self, timeout_s: float = 5.0) -> None:
        """Flush what is queued (up to ``timeout_s``), then stop the poll thread."""
        if self._closed:
            return
        try:
            self._producer.flush(timeout_s)
        finally:
            self._closed = True
            self._thread.join(timeout_s)
            self._hand_over()
