"""Topics knflow creates take the job's largest records: a retry of an event at the
ingress's 1 MiB limit is ~2 MiB, over Kafka's 1 MiB default."""
from __future__ import annotations

import pytest
from kafka import KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

from eventing.kafka_topics import DEFAULT_MAX_RECORD_BYTES, ensure_topics, kafka_limit

pytestmark = pytest.mark.kafka


def topic_config(bootstrap: str, topic: str) -> dict[str, str]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        # {resource type: {resource name: {config key: {config data}}}}, non-default keys only
        [by_name] = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)]).values()
        return {key: data["value"] if isinstance(data, dict) else data for key, data in by_name[topic].items()}
    finally:
        admin.close()


def test_created_topics_take_records_over_kafkas_default_limit(kafka):
    topic = kafka.unique_topic("big")
    assert ensure_topics(kafka.bootstrap, [topic], partitions=1) == [topic]
    assert topic_config(kafka.bootstrap, topic)["max.message.bytes"] == str(kafka_limit(DEFAULT_MAX_RECORD_BYTES))
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, max_request_size=kafka_limit(DEFAULT_MAX_RECORD_BYTES))
    try:
        producer.send(topic, b"x" * (2 * 1024 * 1024)).get(timeout=30)  # refused with Kafka's default
    finally:
        producer.close()
    assert ensure_topics(kafka.bootstrap, [topic]) == []  # an existing topic is left alone
