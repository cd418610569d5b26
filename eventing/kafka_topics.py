"""Create the Kafka topics a plan needs (broker topics, and the job's retry/dead-letter topics)."""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Iterable, Mapping

from filters.errors import KnflowError

log = logging.getLogger(__name__)

#: librdkafka's partitioner for knflow's producers (the ingress, the RocketMQ bridge): keys
#: hashed with murmur2 as the Java client hashes them (no key: random), so a partition key
#: lands in the same partition whoever writes it (Knative's own ingress, the job's Kafka
#: sink writing replies, kafka-python); librdkafka's default (CRC32) puts it elsewhere and
#: splits its order.
JAVA_PARTITIONER = "murmur2_random"
#: How knflow's librdkafka producers (the ingress, the RocketMQ bridge) write a record:
#: acknowledged by every in-sync replica, keys partitioned as Java clients do, one request in
#: flight, not idempotent. Measured: librdkafka's idempotent producer (2.16; its master too)
#: lets a partition have at most 5 *messages* in flight, and while it waits for them its
#: broker thread wakes itself again at once (rd_kafka_toppar_producer_serve sets the next
#: wake-up for the ready batch before that limit says no): a busy loop. With a warm Kafka it
#: cost ~13% of a core; with a slow one (a young broker, two ingress workers) a core per
#: producer, which starved Kafka until records timed out: 550-4,000 events/s and 503s where
#: 12,000 was possible. One request in flight keeps a partition's records in order across
#: retries (and costs nothing: Kafka serves a connection's requests one at a time); a retry
#: after a lost answer may store a record twice: at least once, as every other hop.
ACKED_IN_ORDER = {
    "acks": "all",
    "partitioner": JAVA_PARTITIONER,
    "enable.idempotence": False,
    "max.in.flight.requests.per.connection": 1,
}
#: The largest record (key + value + headers) the job writes to Kafka. A task record holds
#: its event twice (the event, and the request body ready to send), so a retry of an event
#: at the ingress's 1 MiB limit needs ~2 MiB; Kafka's own default (1 MiB) would fail the
#: job's sink, and with it the job, on such a record. Larger records are dead-lettered
#: with a sample instead (``transforms.kafka_plane.fit``).
DEFAULT_MAX_RECORD_BYTES = 4 * 1024 * 1024
#: Kafka's own default; below it, an oversized record's dead letter might not fit either.
MIN_MAX_RECORD_BYTES = 1024 * 1024
#: What a record batch adds around one record: the producer's and the topic's limits are
#: this much above the record limit.
BATCH_OVERHEAD_BYTES = 64 * 1024


def kafka_limit(max_record_bytes: int) -> int:
    """``max.request.size`` (producer) and ``max.message.bytes`` (topic) for a record limit."""
    return max_record_bytes + BATCH_OVERHEAD_BYTES


def ensure_topics(bootstrap_servers: str, topics: Iterable[str], partitions: int = 4,
                  replication_factor: int = 1, timeout_s: float = 30.0,
                  max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
                  client_config: Mapping[str, Any] | None = None,
                  layouts: Mapping[str, Any] | None = None) -> list[str]:
    """Create every missing topic, taking records of ``max_record_bytes``; returns the ones
    created. Existing topics are left alone (their ``max.message.bytes`` must be at least
    ``kafka_limit(max_record_bytes)`` for the job to write its largest records there).
    ``client_config``: more kafka-python settings (``Plan.kafka_python_config``: the login).
    ``layouts``: topic -> ``plan.TopicLayout``, the partitions and replication factor the
    manifests give a topic (``Plan.topic_layouts``); ``partitions`` and
    ``replication_factor`` size the others. A size Kafka refuses (a replication factor above
    its number of brokers) is a :class:`TopicCreationError` naming the topic and where the
    size comes from. A retriable refusal (a timeout, a controller moving) is tried again
    until ``timeout_s`` has passed; a Kafka that cannot be reached, or that keeps failing
    the request, is a :class:`KafkaAccessError` naming the address and the topics."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    wanted = sorted(set(topics))
    deadline = time.monotonic() + timeout_s
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="knflow-admin",
                                 request_timeout_ms=int(timeout_s * 1000), bootstrap_timeout_ms=int(timeout_s * 1000),
                                 **(client_config or {}))
    except KafkaError as exc:
        raise KafkaAccessError(f"cannot reach Kafka at {bootstrap_servers} to create topics "
                               f"{', '.join(wanted)} (waited {timeout_s:g} s): {exc}") from None
    try:
        return _create_missing(admin, bootstrap_servers, wanted, partitions, replication_factor, deadline,
                               max_record_bytes, layouts or {})
    except KafkaError as exc:
        raise KafkaAccessError(f"Kafka at {bootstrap_servers} did not create topics {', '.join(wanted)} "
                               f"within {timeout_s:g} s: {exc}") from None
    finally:
        admin.close()


def _create_missing(admin: Any, bootstrap_servers: str, wanted: list[str], partitions: int, replication_factor: int,
                    deadline: float, max_record_bytes: int, layouts: Mapping[str, Any]) -> list[str]:
    """:func:`ensure_topics` with its admin client: one request per missing topic (a
    refusal names its topic), a retriable error tried again until ``deadline``."""
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    existing = set(admin.list_topics())
    missing = [t for t in wanted if t not in existing]
    config = {"max.message.bytes": str(kafka_limit(max_record_bytes))}
    for topic in missing:  # one request per topic: a refusal names its topic
        layout = layouts.get(topic)
        count = (layout and layout.partitions) or partitions
        factor = (layout and layout.replication_factor) or replication_factor
        while True:
            try:
                admin.create_topics([NewTopic(topic, count, factor, topic_configs=config)],
                                    timeout_ms=max(1000, int((deadline - time.monotonic()) * 1000)))
            except TopicAlreadyExistsError:  # raced with another creator, or an earlier try got through
                break
            except KafkaError as exc:
                if not exc.retriable:
                    origin = f" ({layout.origin})" if layout is not None else ""
                    raise TopicCreationError(f"Kafka at {bootstrap_servers} refused to create topic {topic!r} with "
                                             f"{count} partitions, replication factor {factor}{origin}: {exc}") from None
                if time.monotonic() >= deadline:  # Kafka busy (a timeout, a controller moving): given up
                    raise
                log.warning("Kafka at %s: creating topic %s: %s; trying again", bootstrap_servers, topic, exc)
                time.sleep(0.5)
                continue
            log.info("created Kafka topic %s (%d partitions, replication factor %d)", topic, count, factor)
            break
    return missing


class TopicCreationError(KnflowError):
    """Kafka refused a topic knflow needed (a replication factor above its brokers, a
    partition count it does not allow): the start stops, naming the topic and the setting."""


class KafkaAccessError(KnflowError, ConnectionError):
    """A client could not get in: Kafka refused its SASL login or TLS handshake
    (:class:`KafkaLoginRefused`), did not answer in time, or librdkafka refused the
    client's settings."""


class KafkaLoginRefused(KafkaAccessError):
    """Kafka answered and refused the SASL login or the TLS handshake: waiting will not help."""


def _until_coordinated(call: Callable[[], Any], deadline: float) -> Any:
    """``call()``, again while Kafka answers with a retriable error until ``deadline``: on a
    fresh broker the group coordinator (``__consumer_offsets``) is created by the first
    group request, which is answered ``NOT_COORDINATOR`` or ``COORDINATOR_LOAD_IN_PROGRESS``
    meanwhile, and librdkafka hands that to the caller instead of waiting."""
    from confluent_kafka import KafkaException

    while True:
        try:
            return call()
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if not (hasattr(error, "retriable") and error.retriable()) or time.monotonic() > deadline:
                raise
            log.info("Kafka: %s; trying again", error.str())
            time.sleep(0.2)


def check_access(bootstrap_servers: str, group: str, timeout_s: float = 30.0,
                 config: Mapping[str, str] | None = None) -> None:
    """Connect and read metadata as ``group`` would (a KafkaSource with SASL/TLS, before the
    job starts): a refused login or handshake is a ``KafkaAccessError`` now, instead of a
    job whose source fails and restarts."""
    consumer, _ = _logged_in(bootstrap_servers, group, timeout_s, config)
    consumer.close()


def _logged_in(bootstrap_servers: str, group: str, timeout_s: float,
               config: Mapping[str, str] | None) -> tuple[Any, Any]:
    """(a librdkafka consumer of ``group``, the cluster's metadata), or KafkaAccessError
    with Kafka's reason as soon as it refused the login or the TLS handshake (librdkafka
    reports those to the error callback, which only ``poll`` serves, and keeps retrying
    until the metadata request fails as a mere transport failure)."""
    from confluent_kafka import Consumer, KafkaError, KafkaException

    refused: list[Any] = []

    def on_error(error: Any) -> None:
        if error.code() in (KafkaError._AUTHENTICATION, KafkaError._SSL):
            refused.append(error)
        else:
            log.warning("Kafka at %s (group %s): %s", bootstrap_servers, group, error.str())

    try:
        consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": group, "enable.auto.commit": False,
                             "logger": logging.getLogger("knflow.librdkafka"), "error_cb": on_error, **(config or {})})
    except KafkaException as exc:  # a setting librdkafka refuses (a certificate it cannot read, ...)
        raise KafkaAccessError(f"cannot connect to Kafka at {bootstrap_servers} as group {group}: "
                               f"{exc.args[0].str() if exc.args else exc}") from None
    deadline = time.monotonic() + timeout_s
    while True:  # in steps of a second: a refusal ends the wait at once
        try:
            return consumer, consumer.list_topics(timeout=max(0.1, min(1.0, deadline - time.monotonic())))
        except KafkaException as exc:
            consumer.poll(0)
            if refused:
                consumer.close()
                raise KafkaLoginRefused(f"Kafka at {bootstrap_servers} refused group {group}: {refused[-1].str()}") from exc
            if time.monotonic() >= deadline:
                consumer.close()
                raise KafkaAccessError(f"Kafka at {bootstrap_servers} did not answer group {group} within "
                                       f"{timeout_s:g} s: {exc.args[0].str() if exc.args else exc}") from exc


def init_latest_offsets(bootstrap_servers: str, topics: Iterable[str], group: str,
                        timeout_s: float = 30.0, config: Mapping[str, str] | None = None) -> dict[tuple[str, int], int]:
    """Commit the current end offset of every partition of ``topics`` on which ``group`` has
    no committed offset yet; returns what it committed ((topic, partition) -> offset).

    What Knative's control plane does for a KafkaSource with ``initialOffset: latest``
    before the source becomes ready (eventing-kafka-broker ``control-plane/pkg/kafka/offset/
    offsets.go`` ``InitOffsets``, called by the consumer group reconciler unless the
    initial offset is earliest): "latest" is then the end of each partition when the source
    starts, and a record written after that is never skipped, however long the consumer
    takes to reach the partition (a consumer left to ``auto.offset.reset=latest`` would
    skip what arrived before its first fetch). A topic that does not exist is left out.
    ``config``: more librdkafka settings (a KafkaSource's SASL/TLS); a refused login or
    handshake is a ``KafkaAccessError`` that says so, not a metadata timeout."""
    from confluent_kafka import TopicPartition

    consumer, metadata = _logged_in(bootstrap_servers, group, timeout_s, config)
    try:
        partitions = [TopicPartition(topic, p) for topic in sorted(set(topics)) if topic in metadata.topics
                      for p in sorted(metadata.topics[topic].partitions)]
        if not partitions:
            return {}
        deadline = time.monotonic() + timeout_s
        committed = _until_coordinated(lambda: consumer.committed(partitions, timeout=timeout_s), deadline)
        uncommitted = [tp for tp in committed if tp.offset < 0]
        commit = [TopicPartition(tp.topic, tp.partition, consumer.get_watermark_offsets(tp, timeout=timeout_s)[1])
                  for tp in uncommitted]
        if commit:
            _until_coordinated(lambda: consumer.commit(offsets=commit, asynchronous=False), deadline)
            log.info("group %s starts at the end of %s (initialOffset latest)", group,
                     ", ".join(f"{tp.topic}/{tp.partition}@{tp.offset}" for tp in commit))
        return {(tp.topic, tp.partition): tp.offset for tp in commit}
    finally:
        consumer.close()
