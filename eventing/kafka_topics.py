"""Create the Kafka topics a plan needs (broker topics, and the job's retry/dead-letter topics)."""
from __future__ import annotations

import logging
from typing import Iterable

log = logging.getLogger(__name__)

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
                  max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> list[str]:
    """Create every missing topic, taking records of ``max_record_bytes``; returns the ones
    created. Existing topics are left alone (their ``max.message.bytes`` must be at least
    ``kafka_limit(max_record_bytes)`` for the job to write its largest records there)."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    wanted = sorted(set(topics))
    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="knflow-admin",
                             request_timeout_ms=int(timeout_s * 1000))
    try:
        existing = set(admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        if missing:
            try:
                config = {"max.message.bytes": str(kafka_limit(max_record_bytes))}
                admin.create_topics([NewTopic(t, partitions, replication_factor, topic_configs=config) for t in missing],
                                    timeout_ms=int(timeout_s * 1000))
            except TopicAlreadyExistsError:  # raced with another creator: fine
                pass
            log.info("created Kafka topics %s (%d partitions)", ", ".join(missing), partitions)
        return missing
    finally:
        admin.close()
