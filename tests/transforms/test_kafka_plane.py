"""Intake and outbox of the Kafka data plane: which records each outcome produces."""
from __future__ import annotations

import json

from cloudevents.core.v1.event import CloudEvent

from tests.plans import broker_yaml, plan_from_yaml, trigger_yaml
from transforms.codec import decode_kafka, encode_kafka, event_from_dict
from transforms.delivery import (
    DeadLettered, Delivered, DeliveryError, DeliveryTask, Replied, Retrying,
)
from transforms.kafka_plane import Intake, OutRecord, Outbox, Topics
from transforms.scheduler import WorkItem

PLAN = plan_from_yaml(
    broker_yaml("b", "ns")
    + trigger_yaml("gifts", "http://gifts.local/", "[{exact: {type: gift}}]")
    + trigger_yaml("ordered", "http://ordered.local/", "[{exact: {type: gift}}]",
                   annotations="{kafka.eventing.knative.dev/delivery.order: ordered}")
    + trigger_yaml("dls", "http://x.local/", delivery="deadLetterSink: {uri: 'http://dls.local/'}"))
TOPICS = Topics.for_job("j")


def event(id_: str = "e1", type_: str = "gift", **ext) -> CloudEvent:
    return event_from_dict({"specversion": "1.0", "id": id_, "source": "/s", "type": type_, "data": {"n": 1}, **ext})


def outcome_kinds(records: list[OutRecord]) -> list[str]:
    return [json.loads(r.value)["k"] for r in records if r.topic == TOPICS.outcomes]


def test_intake_routes_to_work_items_and_ordered_gates():
    key, headers, value = encode_kafka(event(partitionkey="room-1"))
    out = Intake(PLAN, TOPICS).ingest("knative-broker-ns-b", key, headers, value, "t/0@1", now=100.0)
    items = [o for o in out if isinstance(o, WorkItem)]
    work = [o for o in items if not o.ordered]
    assert [w.key for w in work] == ["u|ns/gifts|e1", "u|ns/dls|e1"]
    assert [g.key for g in items if g.ordered] == ["o|ns/ordered|room-1"]
    tasks = [w.task for w in work]
    assert [t.event.get_id() for t in tasks] == ["e1", "e1"] and tasks[0].due_at == 100.0
    # each record carries its subscriber's request, encoded at intake (ttl removed, Prefer set)
    request = tasks[0].request
    assert request is not None and request == tasks[1].request and request.mode == "binary"
    assert request.headers["ce-id"] == "e1" and request.headers["Prefer"] == "reply"
    assert json.loads(request.body) == {"n": 1}
    assert outcome_kinds([o for o in out if isinstance(o, OutRecord)]) == ["routed"]


def test_intake_dead_letters_undecodable_records_with_reason():
    out = Intake(PLAN, TOPICS).ingest("knative-broker-ns-b", None, {"x": b"1"}, b"garbage", "t/0@7", now=0)
    [dead] = [o for o in out if o.topic == TOPICS.dead_letters]
    doc = json.loads(dead.value)
    assert doc["origin"] == "t/0@7" and doc["reason"].startswith("not a valid CloudEvent") and doc["raw"] == "garbage"


def test_outbox_retry_is_a_follow_up_task_not_a_record():
    later = DeliveryTask("ns/gifts", event(), attempt=1, first_attempt_at=1.0, due_at=3.5)
    out, follow_up = Outbox(PLAN, TOPICS).records(Retrying(later, 503, "status 503"))
    assert follow_up is later and follow_up.due_at == 3.5
    assert [r.topic for r in out] == [TOPICS.outcomes] and outcome_kinds(out) == ["retried"]


def test_outbox_settled_outcomes_have_no_follow_up():
    task = DeliveryTask("ns/ordered", event())
    out, follow_up = Outbox(PLAN, TOPICS).records(Delivered(task, 200))
    assert follow_up is None and outcome_kinds(out) == ["delivered"]


def test_outbox_reply_goes_to_the_broker_topic():
    task = DeliveryTask("ns/gifts", event())
    reply = event("r1", "flagged", knativebrokerttl=254)
    out, follow_up = Outbox(PLAN, TOPICS).records(Replied(task, 200, reply))
    assert follow_up is None
    [record] = [r for r in out if r.topic == "knative-broker-ns-b"]
    decoded = decode_kafka(list(record.headers.items()), record.value)
    assert decoded.get_id() == "r1" and decoded.get_attributes()["knativebrokerttl"] == "254"
    assert outcome_kinds(out) == ["delivered", "replied"]


def test_outbox_dead_letters_to_sink_task_or_job_topic():
    box = Outbox(PLAN, TOPICS)
    task = DeliveryTask("ns/dls", event())
    error = DeliveryError("http://x.local/", 400, "", "status 400 is not retryable")
    to_sink = DeliveryTask("ns/dls", event(), target="dead_letter", error=error)
    out, follow_up = box.records(DeadLettered(task, event(), PLAN.brokers[0].triggers[2].delivery.dead_letter_sink,
                                              "status 400 is not retryable", to_sink))
    assert follow_up is to_sink and [r.topic for r in out] == [TOPICS.outcomes]
    no_sink, follow_up = box.records(DeadLettered(DeliveryTask("ns/gifts", event()), event(), None,
                                                  "status 400 is not retryable"))
    assert follow_up is None
    [dead] = [r for r in no_sink if r.topic == TOPICS.dead_letters]
    doc = json.loads(dead.value)
    assert doc["trigger"] == "ns/gifts" and doc["event"]["id"] == "e1" and doc["reason"] == "status 400 is not retryable"


def test_outbox_writes_dead_letters_to_a_kafka_sink_topic():
    from eventing.plan import Destination, Ref

    sink = Destination(ref=Ref("KafkaSink", "dlq", "ns"), kafka_topic="live-dlq")
    task = DeliveryTask("ns/gifts", event())
    dead = event(knativeerrorcode="400")
    out, _ = Outbox(PLAN, TOPICS).records(DeadLettered(task, dead, sink, "status 400 is not retryable"))
    [record] = [r for r in out if r.topic == "live-dlq"]
    decoded = decode_kafka(list(record.headers.items()), record.value)
    assert decoded.get_id() == "e1" and decoded.get_attributes()["knativeerrorcode"] == "400"
    assert not [r for r in out if r.topic == TOPICS.dead_letters]


# Oversized records: Kafka refuses a record over its limit, which fails the job's sink and
# restarts the job onto the same record; each is dead-lettered with a sample instead.
SMALL = Topics.for_job("j", max_record_bytes=50_000)


def big_event(id_: str = "e1", size: int = 30_000) -> CloudEvent:
    return event_from_dict({"specversion": "1.0", "id": id_, "source": "/s", "type": "gift", "partitionkey": "room-1",
                            "data": {"blob": "x" * size}})


def test_an_oversized_reply_is_dead_lettered_and_the_delivery_still_counts():
    task = DeliveryTask("ns/gifts", event())
    out, _ = Outbox(PLAN, SMALL).records(Replied(task, 200, big_event("r1", size=70_000)))
    assert not [r for r in out if r.topic == "knative-broker-ns-b"]
    [dead] = [r for r in out if r.topic == SMALL.dead_letters]
    doc = json.loads(dead.value)
    assert "for topic 'knative-broker-ns-b'" in doc["reason"] and doc["headers"]["ce_id"] == "r1"
    assert len(doc["raw"]) == 64 * 1024 and doc["event_id"] == "e1"  # a sample of the reply's value
    assert outcome_kinds(out) == ["delivered", "replied", "dead_lettered"]


def test_an_oversized_undecodable_record_is_dead_lettered_with_a_sample():
    garbage = bytes(range(256)) * 200  # not UTF-8: its raw text is hex, twice its size
    out = Intake(PLAN, SMALL).ingest("knative-broker-ns-b", None, {}, garbage, "t/0@9", now=0)
    [dead] = [o for o in out if o.topic == SMALL.dead_letters]
    doc = json.loads(dead.value)
    assert doc["origin"] == "t/0@9" and "exceeds the job's record limit" in doc["reason"]
    assert len(dead.value) < 200_000 and doc["raw"]  # the dead letter of the dead letter keeps a sample
