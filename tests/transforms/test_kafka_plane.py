"""Intake and outbox of the Kafka data plane: which records each outcome produces."""
from __future__ import annotations

import json

from cloudevents.core.v1.event import CloudEvent

from tests.plans import broker_yaml, plan_from_yaml, trigger_yaml
from transforms.codec import decode_kafka, encode_kafka, event_from_dict
from transforms.delivery import DeadLettered, Delivered, DeliveryError, DeliveryTask, Replied, Retrying
from transforms.kafka_plane import Intake, OutRecord, Outbox, Topics, parse_retry_record
from transforms.scheduler import NEW, RELEASE, RETRY, Scheduled, WorkItem

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
    work = [o for o in out if isinstance(o, WorkItem)]
    gated = [o for o in out if isinstance(o, Scheduled)]
    assert [w.key for w in work] == ["u|ns/gifts|e1", "u|ns/dls|e1"]
    assert [(g.kind, g.key) for g in gated] == [(NEW, "o|ns/ordered|room-1")]
    tasks = [DeliveryTask.from_bytes(w.task) for w in work]
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


def test_outbox_retry_goes_to_retry_topic_and_parses_back():
    task = DeliveryTask("ns/gifts", event())
    item = WorkItem("u|ns/gifts|e1", False, task.to_bytes())
    later = DeliveryTask("ns/gifts", event(), attempt=1, first_attempt_at=1.0, due_at=3.5)
    out = Outbox(PLAN, TOPICS).records(item, Retrying(later, 503, "status 503"))
    [retry] = [r for r in out if r.topic == TOPICS.retry]
    parsed = parse_retry_record(retry.key, dict(retry.headers), retry.value)
    assert (parsed.kind, parsed.key, parsed.due_ms) == (RETRY, "u|ns/gifts|e1", 3500)
    assert DeliveryTask.from_bytes(parsed.task).attempt == 1
    assert outcome_kinds(out) == ["retried"]


def test_outbox_ordered_release_only_when_settled():
    task = DeliveryTask("ns/ordered", event())
    item = WorkItem("o|ns/ordered|room-1", True, task.to_bytes(), ticket=7)
    box = Outbox(PLAN, TOPICS)
    delivered = box.records(item, Delivered(task, 200))
    [release] = [r for r in delivered if r.topic == TOPICS.retry]
    parsed = parse_retry_record(release.key, dict(release.headers), release.value)
    assert (parsed.kind, parsed.key, parsed.ticket) == (RELEASE, "o|ns/ordered|room-1", 7)
    retrying = box.records(item, Retrying(task, 500, "status 500"))
    retries = [parse_retry_record(r.key, dict(r.headers), r.value) for r in retrying if r.topic == TOPICS.retry]
    assert [(r.kind, r.ticket) for r in retries] == [(RETRY, 7)]  # the next attempt keeps the ticket


def test_outbox_reply_goes_to_the_broker_topic():
    task = DeliveryTask("ns/gifts", event())
    reply = event("r1", "flagged", knativebrokerttl=254)
    out = Outbox(PLAN, TOPICS).records(WorkItem("u|ns/gifts|e1", False, task.to_bytes()), Replied(task, 200, reply))
    [record] = [r for r in out if r.topic == "knative-broker-ns-b"]
    decoded = decode_kafka(list(record.headers.items()), record.value)
    assert decoded.get_id() == "r1" and decoded.get_attributes()["knativebrokerttl"] == "254"
    assert outcome_kinds(out) == ["delivered", "replied"]


def test_outbox_dead_letters_to_sink_task_or_job_topic():
    box = Outbox(PLAN, TOPICS)
    task = DeliveryTask("ns/dls", event())
    item = WorkItem("u|ns/dls|e1", False, task.to_bytes())
    error = DeliveryError("http://x.local/", 400, "", "status 400 is not retryable")
    to_sink = DeliveryTask("ns/dls", event(), target="dead_letter", error=error)
    out = box.records(item, DeadLettered(task, event(), PLAN.brokers[0].triggers[2].delivery.dead_letter_sink,
                                         "status 400 is not retryable", to_sink))
    assert [r.topic for r in out if r.topic != TOPICS.outcomes] == [TOPICS.retry]
    no_sink = box.records(WorkItem("u|ns/gifts|e1", False, task.to_bytes()),
                          DeadLettered(DeliveryTask("ns/gifts", event()), event(), None, "status 400 is not retryable"))
    [dead] = [r for r in no_sink if r.topic == TOPICS.dead_letters]
    doc = json.loads(dead.value)
    assert doc["trigger"] == "ns/gifts" and doc["event"]["id"] == "e1" and doc["reason"] == "status 400 is not retryable"


def test_outbox_writes_dead_letters_to_a_kafka_sink_topic():
    from eventing.plan import Destination, Ref

    sink = Destination(ref=Ref("KafkaSink", "dlq", "ns"), kafka_topic="live-dlq")
    task = DeliveryTask("ns/gifts", event())
    dead = event(knativeerrorcode="400")
    out = Outbox(PLAN, TOPICS).records(WorkItem("u|ns/gifts|e1", False, task.to_bytes()),
                                       DeadLettered(task, dead, sink, "status 400 is not retryable"))
    [record] = [r for r in out if r.topic == "live-dlq"]
    decoded = decode_kafka(list(record.headers.items()), record.value)
    assert decoded.get_id() == "e1" and decoded.get_attributes()["knativeerrorcode"] == "400"
    assert not [r for r in out if r.topic == TOPICS.dead_letters]
