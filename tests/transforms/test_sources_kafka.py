"""KafkaSource conversion of records read back from a real Kafka broker (kafka-python)."""
from __future__ import annotations

import struct
import time

import pytest

from transforms.codec import encode_kafka, event_from_dict, event_to_dict
from transforms.sources import KafkaSourceRecord, kafka_record_to_event

pytestmark = pytest.mark.kafka


def test_records_from_kafka_convert_per_key_type(kafka):
    from kafka import KafkaConsumer, KafkaProducer

    topic = kafka.unique_topic("kafkasource")
    ce = event_from_dict({"specversion": "1.0", "id": "ce-1", "source": "/app", "type": "com.live.gift",
                          "datacontenttype": "application/json", "data": {"coins": 3}})
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    sent = [
        (b"room-1", [("Room-Id", b"r1")], b'{"n": 1}'),
        (struct.pack(">i", 7), [], b"plain text"),
        (struct.pack(">d", 2.5), [("content-type", b"text/plain")], b"two and a half"),
        (None, [], b""),
    ]
    for key, headers, value in sent:
        producer.send(topic, key=key, value=value, headers=headers, partition=0)
    key, headers, value = encode_kafka(ce, "structured")
    producer.send(topic, key=key, value=value, headers=headers, partition=0)
    producer.flush()
    producer.close()

    consumer = KafkaConsumer(topic, bootstrap_servers=kafka.bootstrap, auto_offset_reset="earliest", group_id=None)
    records = []
    deadline = time.monotonic() + 60
    while len(records) < 5 and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
    consumer.close()
    assert len(records) == 5

    def convert(r, key_type):
        rec = KafkaSourceRecord(r.topic, r.partition, r.offset, r.timestamp, r.key, list(r.headers), r.value)
        return event_to_dict(kafka_record_to_event(rec, namespace="ns", name="src", key_type=key_type))

    first, second, third, empty, passthrough = records
    doc = convert(first, "string")
    assert (doc["id"], doc["subject"], doc["key"], doc["kafkaheaderroomid"]) == \
        ("partition:0/offset:0", "partition:0#0", "room-1", "r1")
    assert doc["source"] == f"/apis/v1/namespaces/ns/kafkasources/src#{topic}"
    assert convert(second, "int")["key"] == 7
    doc = convert(third, "float")
    assert doc["key"] == "2.5" and doc["datacontenttype"] == "text/plain"
    assert "key" not in convert(empty, "string") and "partitionkey" not in convert(empty, "string")
    doc = convert(passthrough, "string")
    assert doc == dict(event_to_dict(ce), knativekafkapartition=0, knativekafkaoffset=4)
