"""The RocketMQSource bridge: RocketMQ messages into a Kafka topic the job reads, at least once.

There is no RocketMQ connector for Flink 2.x on Maven Central, and the broker's Kafka topic
is already where the job reads every event of a broker (the ingress writes there too). So
a RocketMQSource runs as this bridge beside the job: one whose sink is a Broker writes into
the broker's topic, one whose sink is a service or uri into its internal topic
``knflow-rocketmq-<ns>-<name>`` (``RocketMQSourcePlan.kafka_topic``), which the job reads
with its own consumer group and delivers to the sink as a trigger without filter
(``Plan.direct_sources``). Either way its events enter the job exactly where the broker
topic enters: whatever shape the job's graph takes, the bridge needs nothing from it.

One loop per source, with the Apache RocketMQ 5 client's ``SimpleConsumer`` (the gRPC proxy):

1. ``receive`` a batch; each message stays invisible to other consumers of the group for
   ``invisible_duration`` seconds;
2. convert each message (``transforms.sources.rocketmq_message_to_event``: CloudEvents in the
   RocketMQ binding pass through, others are wrapped) and write it to the source's Kafka topic
   in the Kafka binary mode with ``acks=all`` (one request in flight: ``kafka_topics.ACKED_IN_ORDER``);
3. ``ack`` a message only after Kafka acknowledged its record. A message whose write failed is
   not acked: RocketMQ delivers it again when its invisibility ends (and after its group's
   ``retryMaxTimes`` moves it to the group's ``%DLQ%`` topic). While a batch waits for Kafka
   longer than half the invisible duration, the messages' invisibility is extended
   (``change_invisible_duration``), so a slow Kafka does not make RocketMQ hand them to
   another consumer meanwhile.

A crash between the Kafka write and the ack writes the message again on redelivery: at least
once, never lost (Knative's RocketMQ adapter acks before it delivers: at most once). The
group's start position (``initialOffset``) is RocketMQ's to keep, per group: see
``deploy/rocketmq.sh`` (groups seeded ``NAME:earliest``) and the README.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from eventing.kafka_topics import ACKED_IN_ORDER
from eventing.plan import RocketMQSourcePlan
from filters.errors import KnflowError
from transforms.codec import encode_kafka
from transforms.sources import RocketMQSourceMessage, rocketmq_message_to_event

log = logging.getLogger(__name__)

ACCESS_KEY_ENV = "KNFLOW_ROCKETMQ_ACCESS_KEY"
SECRET_KEY_ENV = "KNFLOW_ROCKETMQ_SECRET_KEY"


class _DebugLog:
    """librdkafka's log lines at DEBUG: it reports every failed reconnect as an error, and the
    bridge reports the writes that failed itself."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def log(self, _level: int, message: str, *args: Any) -> None:
        self.logger.debug(message, *args)


class BridgeError(KnflowError):
    """A RocketMQSource the bridge cannot run (its credentials, its group)."""


@dataclass
class BridgeStats:
    received: int = 0
    written: int = 0
    acked: int = 0
    failed_writes: int = 0
    extended: int = 0


def source_message(message: Any) -> RocketMQSourceMessage:
    """The client's received message as the pure conversion takes it."""
    return RocketMQSourceMessage(
        topic=message.topic, message_id=message.message_id, body=bytes(message.body or b""),
        born_timestamp_ms=int(message.born_timestamp or 0), tag=message.tag or None,
        keys=tuple(message.keys or ()), properties=dict(message.properties or {}),
    )


def credentials_for(source: RocketMQSourcePlan) -> Any:
    from rocketmq import Credentials

    if source.access_token is None:
        return Credentials()
    access, secret = os.environ.get(ACCESS_KEY_ENV), os.environ.get(SECRET_KEY_ENV)
    if not access or not secret:
        name, key = source.access_token
        raise BridgeError(f"{source.kind}/{source.name}: spec.accessToken names secret {name}/{key}, which knflow cannot "
                          f"read outside Kubernetes; set {ACCESS_KEY_ENV} and {SECRET_KEY_ENV}")
    return Credentials(access, secret)


class RocketMQBridge:
    """Runs one RocketMQSource until ``stop()``: into its broker's topic, or into its internal
    topic when its sink is a service or uri (``source.kafka_topic``)."""

    def __init__(self, source: RocketMQSourcePlan, *, endpoints: str, bootstrap_servers: str, batch: int = 32,
                 invisible_duration: int = 30, await_duration: int = 5, kafka_timeout_s: float = 10.0,
                 startup_timeout_s: float = 30.0, producer_config: dict[str, Any] | None = None) -> None:
        if invisible_duration < 10:
            raise BridgeError("invisible_duration must be at least 10 seconds")
        self.source = source
        self.endpoints = endpoints
        self.bootstrap_servers = bootstrap_servers
        self.batch = batch
        self.invisible_duration = invisible_duration
        self.await_duration = await_duration
        self.kafka_timeout_s = kafka_timeout_s
        self.startup_timeout_s = startup_timeout_s
        self.producer_config = dict(producer_config or {})
        self.stats = BridgeStats()
        self._stop = threading.Event()
        self._consumer: Any = None
        self._producer: Any = None
        self.error: BaseException | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        from confluent_kafka import Producer
        from rocketmq import ClientConfiguration, FilterExpression, SimpleConsumer

        source = self.source
        config = ClientConfiguration(self.endpoints, credentials_for(source),
                                     request_timeout=self.await_duration + 10)
        self._producer = Producer({
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": f"knflow-rocketmq-bridge-{source.namespace}-{source.name}",
            **ACKED_IN_ORDER,  # acks=all, one request in flight, not idempotent (why: kafka_topics)
            "linger.ms": 5,
            "message.timeout.ms": int(self.kafka_timeout_s * 1000),
            "request.timeout.ms": max(1000, int(self.kafka_timeout_s * 1000) - 500),
            "logger": _DebugLog(logging.getLogger("knflow.librdkafka")),
            **self.producer_config,
        })
        self._consumer = SimpleConsumer(config, source.group_name,
                                        {source.topic_name: FilterExpression(source.selector_expression)},
                                        await_duration=self.await_duration)
        # The client's startup never returns when the proxy refuses the group or topic (it
        # only logs "group not found" to ~/logs/rocketmq_python): bound it.
        starting = threading.Thread(target=self._consumer.startup, name=f"rocketmq-start-{source.name}", daemon=True)
        starting.start()
        starting.join(self.startup_timeout_s)
        if starting.is_alive():
            self._consumer = None
            raise BridgeError(
                f"{source.kind}/{source.name}: the RocketMQ consumer did not start within {self.startup_timeout_s:g}s at "
                f"{self.endpoints}. Is the proxy up, and do topic {source.topic_name!r} and group {source.group_name!r} "
                f"exist? RocketMQ 5's gRPC clients cannot create them: seed them (deploy/rocketmq.sh: "
                f"KNFLOW_ROCKETMQ_TOPICS, KNFLOW_ROCKETMQ_GROUPS) or create them with mqadmin (deploy/rocketmq.sh admin "
                f"updateSubGroup -c DefaultCluster -g {source.group_name})")
        log.info("%s/%s: bridging RocketMQ topic %s (tags %r, group %s, proxy %s) into Kafka topic %s",
                 source.namespace, source.name, source.topic_name, source.selector_expression, source.group_name,
                 self.endpoints, source.kafka_topic)

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.shutdown()
            except Exception:  # noqa: BLE001 - shutting down anyway
                log.debug("consumer shutdown failed", exc_info=True)
            self._consumer = None
        if self._producer is not None:
            self._producer.flush(self.kafka_timeout_s)
            self._producer = None

    def run(self) -> None:
        """Start, then bridge until ``stop()``; always closes. A failure is kept in ``error``."""
        try:
            self.start()
            while not self._stop.is_set():
                self.poll_once()
        except BaseException as exc:
            self.error = exc
            log.error("%s: bridge stopped: %s", self.source.key, exc)
            raise
        finally:
            self.close()

    # -- one batch -----------------------------------------------------------------------

    def poll_once(self) -> int:
        """Receive one batch, write it to Kafka, ack what Kafka acknowledged; the number acked."""
        try:
            messages = self._consumer.receive(self.batch, self.invisible_duration)
        except Exception as exc:  # noqa: BLE001 - a proxy hiccup: log, wait, go on
            log.warning("%s: receive failed: %s", self.source.key, exc)
            self._stop.wait(1.0)
            return 0
        if not messages:
            return 0
        self.stats.received += len(messages)
        received_at = time.monotonic()
        results: list[Any] = [None] * len(messages)  # None: pending; True: written; an error
        for index, message in enumerate(messages):
            try:
                event = rocketmq_message_to_event(source_message(message), namespace=self.source.namespace,
                                                  name=self.source.name, ce_overrides=self.source.ce_overrides)
                key, headers, value = encode_kafka(event, "binary")
                self._produce(index, results, key, headers, value)
            except Exception as exc:  # noqa: BLE001 - this message only; it is not acked
                results[index] = exc
        self._wait_for_kafka(messages, results, received_at)
        acked = 0
        for message, result in zip(messages, results):
            if result is True:
                self.stats.written += 1
                try:
                    self._consumer.ack(message)
                    acked += 1
                except Exception as exc:  # noqa: BLE001 - redelivered later: written twice, not lost
                    log.warning("%s: ack of %s failed (it will be written again): %s", self.source.key,
                                message.message_id, exc)
            else:
                self.stats.failed_writes += 1
                log.warning("%s: message %s not written to Kafka (%s); not acked, RocketMQ delivers it again",
                            self.source.key, message.message_id, result or "timed out")
        self.stats.acked += acked
        return acked

    def _produce(self, index: int, results: list[Any], key: bytes | None, headers: list[tuple[str, bytes]],
                 value: bytes | None) -> None:
        def delivered(error: Any, _record: Any) -> None:
            results[index] = True if error is None else error

        while True:
            try:
                self._producer.produce(self.source.kafka_topic, value=value, key=key, headers=headers, on_delivery=delivered)
                return
            except BufferError:  # librdkafka's queue is full: let it drain
                self._producer.poll(0.1)

    def _wait_for_kafka(self, messages: list[Any], results: list[Any], received_at: float) -> None:
        deadline = time.monotonic() + self.kafka_timeout_s + 5.0
        extend_at = received_at + self.invisible_duration / 2
        while any(r is None for r in results) and time.monotonic() < deadline:
            self._producer.flush(0.5)
            if time.monotonic() >= extend_at and any(r is None for r in results):
                for message, result in zip(messages, results):
                    if result is None:
                        try:
                            self._consumer.change_invisible_duration(message, self.invisible_duration)
                            self.stats.extended += 1
                        except Exception as exc:  # noqa: BLE001 - then it may be delivered twice
                            log.warning("%s: could not extend %s: %s", self.source.key, message.message_id, exc)
                extend_at = time.monotonic() + self.invisible_duration / 2


def run_bridges(sources: list[RocketMQSourcePlan], *, endpoints: str, bootstrap_servers: str,
                duration: float = 0.0, on_started: Callable[[list[RocketMQBridge]], None] | None = None,
                **options: Any) -> list[RocketMQBridge]:
    """Run one bridge per source (a thread each) until SIGTERM/SIGINT or ``duration`` seconds."""
    import signal

    bridges = [RocketMQBridge(s, endpoints=endpoints, bootstrap_servers=bootstrap_servers, **options) for s in sources]
    for bridge in bridges:
        credentials_for(bridge.source)  # fail before starting anything
    # a plain flag: Event.set from a signal handler could wait forever on the lock that the
    # interrupted Event.wait of this same thread holds
    requested: list[int] = []

    def stop(signum: int, _frame: Any) -> None:
        requested.append(signum)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
    threads = [threading.Thread(target=bridge.run, name=f"bridge-{bridge.source.name}", daemon=True) for bridge in bridges]
    for thread in threads:
        thread.start()
    if on_started is not None:
        on_started(bridges)
    started = time.monotonic()
    while True:
        time.sleep(0.5)
        if requested:
            break
        if duration and time.monotonic() - started >= duration:
            break
        if not any(t.is_alive() for t in threads):
            break
    for bridge in bridges:
        bridge.stop()
    for bridge, thread in zip(bridges, threads):
        thread.join(bridge.await_duration + bridge.kafka_timeout_s + 10)
    failed = [f"{b.source.kind}/{b.source.name}: {b.error}" for b in bridges if b.error is not None]
    if failed:
        raise BridgeError("bridge failed: " + "; ".join(failed))
    return bridges
