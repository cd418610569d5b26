"""Create the Kafka topics a plan needs (broker topics, and the job's retry/dead-letter topics)."""
from __future__ import annotations

import logging
from typing import Iterable

log = logging.getLogger(__name__)


def ensure_topics(bootstrap_servers: str, topics: Iterable[str], partitions: int = 4,
                  replication_factor: int = 1, timeout_s: float = 30.0) -> list[str]:
    """Create every missing topic; returns the ones created. Existing topics are left alone."""
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
                admin.create_topics([NewTopic(t, partitions, replication_factor) for t in missing],
                                    timeout_ms=int(timeout_s * 1000))
            except TopicAlreadyExistsError:  # raced with another creator: fine
                pass
            log.info("created Kafka topics %s (%d partitions)", ", ".join(missing), partitions)
        return missing
    finally:
        admin.close()
