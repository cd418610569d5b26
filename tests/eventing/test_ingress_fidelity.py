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


# ---------------------------------------------------------------------------------------
# The whole way: ingress -> Kafka -> the job's intake (Intake.ingest: decode, route) ->
# delivery to real HTTP consumers, a retry through its task record, a dead letter to a
# deadLetterSink, a reply to the broker topic. What the producer sent arrives byte for byte.
# ---------------------------------------------------------------------------------------

ODD = b'{ "price": 1.10, "big": 123456789012345678901234567890, "e": "caf\\u00e9 \xc3\xa9",\n "k": [1E+2] }'
REPLY = b'{"score": 0.50, "n": 18446744073709551616}'
EXTENSIONS = {"ce-boolext": "true", "ce-intext": "-2147483648", "ce-binext": "AQID/w==",
              "ce-uriext": "https://example.com/a?b=c#d", "ce-urirefext": "../x", "ce-timeext": NANO,
              "ce-quotedext": '"a, \\"b\\""'}


def _fidelity_plan(namespace: str, urls: dict[str, str]):
    from tests.plans import broker_yaml, plan_from_yaml, trigger_yaml

    def trigger(name, filters, delivery=""):
        return trigger_yaml(name, urls[name], filters, broker="live", namespace=namespace, delivery=delivery)

    return plan_from_yaml(
        broker_yaml("live", namespace)
        + trigger("binary", f"[{{exact: {{time: '{NANO}'}}}}]")  # the filter sees time's text
        + trigger("structured", "[{cel: 'data.price == 1.1 && data.big > 1.0e29'}]", "format: json\n")
        + trigger("flaky", "[{cesql: \"subject = 'café' AND boolext = 'true'\"}]",
                  "retry: 2\nbackoffDelay: PT0.1S\n")
        + trigger("broken", "[{exact: {type: com.live.like}}]",
                  f"retry: 0\ndeadLetterSink: {{uri: '{urls['dls']}'}}\n")
        + trigger("replier", "[{prefix: {type: com.live.}}]"))


def test_events_reach_consumers_byte_for_byte_through_intake(ingress, kafka):  # noqa: F811
    import asyncio

    from tests.consumers import ConsumerServer, accept, always, fail_then, reply_event
    from transforms.delivery import (
        DeadLettered, DeadLetterStored, Delivered, DeliveryEngine, Replied, Retrying,
    )
    from transforms.kafka_plane import Intake, Outbox, Topics
    from transforms.scheduler import WorkItem
    from transforms.sender import make_sender

    url, topic, _ = ingress
    namespace = url.rstrip("/").split("/")[-2]
    servers = {"binary": ConsumerServer(accept()), "structured": ConsumerServer(accept()),
               "flaky": ConsumerServer(fail_then(1, 503)), "broken": ConsumerServer(always(400, b"no")),
               "dls": ConsumerServer(accept(202)),
               "replier": ConsumerServer(reply_event({"id": "r-1", "source": "/r", "type": "com.reply",
                                                      "time": "2026-11-29T10:00:20.5-03:30"}, REPLY))}
    for server in servers.values():
        server.start()
    try:
        plan = _fidelity_plan(namespace, {k: s.url for k, s in servers.items()})
        assert plan.brokers[0].topic == topic
        binary = {"ce-specversion": "1.0", "ce-id": "way-1", "ce-source": "/rooms/7", "ce-type": "com.live.like",
                  "ce-time": NANO, "ce-subject": "caf%C3%A9", **EXTENSIONS, "content-type": "application/json"}
        response = requests.post(url, headers=binary, data=ODD, timeout=10)
        assert response.status_code == 202, response.text
        structured = {"specversion": "1.0", "id": "way-2", "source": "/rooms/7", "type": "com.live.gift",
                      "time": "2026-11-29t10:00:20.000000001z", "subject": "café", "intext": 7, "boolext": False,
                      "data": {"price": 1.10, "big": 123456789012345678901234567890}}
        # the data's text as a person or another SDK writes it: written out again it would differ
        data_text = '{"price": 1.10, "big": 123456789012345678901234567890, "e": 2.5e3, "s": "caf\\u00e9"}'
        structured["data"]["e"], structured["data"]["s"] = 2500.0, "café"
        document = json.dumps({k: v for k, v in structured.items() if k != "data"}, ensure_ascii=False)
        response = requests.post(url, data=(document[:-1] + ', "data": ' + data_text + "}").encode(),
                                 headers={"content-type": "application/cloudevents+json"}, timeout=10)
        assert response.status_code == 202, response.text
        records = {dict(r.headers)["ce_id"]: r for r in consume(kafka.bootstrap, topic, 2, ids=[b"way-1", b"way-2"])
                   if dict(r.headers).get("ce_id") in (b"way-1", b"way-2")}
        intake, outbox = Intake(plan, Topics.for_job("fid")), Outbox(plan, Topics.for_job("fid"))
        tasks = []
        for record in records.values():
            out = intake.ingest(topic, record.key, record.headers, record.value, f"{topic}@{record.offset}", 1.0)
            tasks += [item.task for item in out if isinstance(item, WorkItem)]
        routed = sorted((t.event_id, t.trigger.split("/")[1]) for t in tasks)
        assert routed == [("way-1", "binary"), ("way-1", "broken"), ("way-1", "flaky"), ("way-1", "replier"),
                          ("way-1", "structured"), ("way-2", "replier"), ("way-2", "structured")]
        replies = []

        async def settle() -> None:
            engine = DeliveryEngine({t.key: t for t in plan.brokers[0].triggers}, make_sender())
            async with engine:
                for task in tasks:
                    while task is not None:
                        outcome = await engine.attempt(task)
                        follow_up = None
                        if isinstance(outcome, Retrying):
                            follow_up = outcome.task
                        elif isinstance(outcome, DeadLettered):
                            follow_up = outcome.next_task
                        elif isinstance(outcome, Replied):
                            replies.extend(r for r in outbox.records(outcome)[0] if r.topic == topic)
                        else:
                            assert isinstance(outcome, (Delivered, DeadLetterStored)), outcome
                        # what waits is held in the job's state as a task record
                        task = None if follow_up is None else DeliveryTask.from_bytes(follow_up.to_bytes())

        asyncio.run(settle())
        sent = {name: [r for r in server.requests if r.headers.get("ce-id") == "way-1"
                       or (r.body.startswith(b"{") and b'"way-1"' in r.body)] for name, server in servers.items()}

        def same_attributes(headers):
            assert headers["ce-time"] == NANO and headers["ce-subject"] == "caf%C3%A9"
            assert {k: headers[k] for k in EXTENSIONS if k != "ce-quotedext"} == {
                k: v for k, v in EXTENSIONS.items() if k != "ce-quotedext"}
            assert headers["ce-quotedext"] == "a,%20%22b%22"  # the value a, "b", percent-encoded
            assert headers["content-type"] == "application/json"

        for name in ("binary", "flaky", "broken", "replier", "dls"):
            assert [r.body for r in sent[name]] == [ODD] * (2 if name == "flaky" else 1), name
            for request in sent[name]:
                same_attributes(request.headers)
        assert sent["dls"][0].headers["ce-knativeerrorcode"] == "400"
        # structured delivery: the payload is embedded as it came, the attributes as they came
        [doc] = [r.body for r in sent["structured"]]
        assert doc.endswith(b',"data":' + ODD + b"}")
        parsed = json.loads(doc)
        assert parsed["time"] == NANO and parsed["subject"] == "café" and parsed["quotedext"] == 'a, "b"'
        assert {k: parsed[k[3:]] for k in EXTENSIONS if k != "ce-quotedext"} == {
            k: v for k, v in EXTENSIONS.items() if k != "ce-quotedext"}
        # the structured event: its attribute texts as sent; its data, a JSON value, as the same value
        [two] = [r for r in servers["structured"].requests if b'"way-2"' in r.body]
        two_doc = json.loads(two.body)
        assert two_doc["time"] == "2026-11-29t10:00:20.000000001z" and two_doc["subject"] == "café"
        assert two_doc["intext"] == "7"  # stored in Kafka's binary mode, whose header values are strings (spec)
        assert two_doc["data"] == structured["data"]
        assert two.body.endswith(b',"data":' + data_text.encode() + b"}")  # its data's text as it came
        [two_binary] = [r for r in servers["replier"].requests if r.headers.get("ce-id") == "way-2"]
        assert two_binary.headers["ce-time"] == "2026-11-29t10:00:20.000000001z"
        assert two_binary.body == data_text.encode()
        # replies go to the broker topic with the subscriber's payload and time as sent
        assert [r.value for r in replies] == [REPLY, REPLY]
        assert {r.headers["ce_time"] for r in replies} == {b"2026-11-29T10:00:20.5-03:30"}
    finally:
        for server in servers.values():
            server.stop()
