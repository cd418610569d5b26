"""Through the ingress and a REAL Kafka, an event is stored as it came: attribute texts
byte for byte (nanosecond times, +05:45 offsets, extension values, unusual header
encodings), the binary payload byte for byte, and the delivery request made from the
record carries the same texts (binary and structured mode)."""
from __future__ import annotations

import json

import pytest
import requests

from tests.eventing.test_ingress import consume, ingress  # noqa: F401 - the module's ingress fixture
from transforms.codec import decode_kafka
from transforms.delivery import DeliveryTask, subscriber_request

pytestmark = pytest.mark.kafka

NANO = "2026-11-29T10:00:20.123456789+05:45"
PAYLOAD = b'{ "price": 1.10, "big": 123456789012345678901234567890, "e": "\\u00e9" }'


def stored(kafka, topic, event_id):
    [record] = [r for r in consume(kafka.bootstrap, topic, 1, ids=[event_id.encode()])
                if dict(r.headers).get("ce_id") == event_id.encode()]
    return record


def test_binary_event_is_stored_byte_for_byte(ingress, kafka):  # noqa: F811
    url, topic, _ = ingress
    headers = {"ce-specversion": "1.0", "ce-id": "fid-1", "ce-source": "/rooms/7", "ce-type": "com.live.like",
               "ce-time": NANO, "ce-subject": "caf%c3%a9", "ce-boolext": "true", "ce-intext": "-5",
               "ce-uriext": "https://example.com/a?b=c", "ce-quoted": '"a, b"', "content-type": "application/json"}
    response = requests.post(url, headers=headers, data=PAYLOAD, timeout=10)
    assert response.status_code == 202, response.text
    record = stored(kafka, topic, "fid-1")
    got = dict(record.headers)
    assert got["ce_time"] == NANO.encode()
    assert got["ce_subject"] == "café".encode()
    assert (got["ce_boolext"], got["ce_intext"], got["ce_uriext"], got["ce_quoted"]) == (
        b"true", b"-5", b"https://example.com/a?b=c", b"a, b")
    assert record.value == PAYLOAD
    # the subscriber's request made from the record: the same texts
    event = decode_kafka(record.headers, record.value)
    binary = subscriber_request(event, "binary")
    assert binary.headers["ce-time"] == NANO and binary.headers["ce-subject"] == "caf%C3%A9"
    structured = json.loads(subscriber_request(event, "structured").body)
    assert structured["time"] == NANO and structured["subject"] == "café"
    # and through a retry's task record
    task = DeliveryTask.from_bytes(DeliveryTask("ns/t", event, due_at=1.0).to_bytes())
    assert subscriber_request(task.event, "binary").headers["ce-time"] == NANO


@pytest.mark.parametrize("content_type", ["application/cloudevents+json", "application/cloudevents-batch+json"])
def test_structured_time_is_stored_as_sent(ingress, kafka, content_type):  # noqa: F811
    url, topic, _ = ingress
    event_id = f"fid-{content_type.split('/')[1][:20]}"
    doc = {"specversion": "1.0", "id": event_id, "source": "/x", "type": "t", "time": "2026-11-29t10:00:20.000000001z",
           "intext": 7, "data": {"a": 1}}
    body = json.dumps([doc] if "batch" in content_type else doc)
    response = requests.post(url, data=body, headers={"content-type": content_type}, timeout=10)
    assert response.status_code == 202, response.text
    got = dict(stored(kafka, topic, event_id).headers)
    assert got["ce_time"] == b"2026-11-29t10:00:20.000000001z"
    assert got["ce_intext"] == b"7"
