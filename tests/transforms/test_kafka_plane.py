"""Intake and outbox of the Kafka data plane: which records each outcome produces."""
from __future__ import annotations

import json

from cloudevents.core.v1.event import CloudEvent

from tests.plans import broker_yaml, plan_from_yaml, trigger_yaml
from transforms.codec import decode_kafka, encode_kafka, event_from_dict
from transforms.delivery import (
    DeadLettered, Delivered, DeliveryError, DeliveryTask, Replied, Retrying, first_attempts,
)
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


# Oversized records: Kafka refuses a record over its limit, which fails the job's sink and
# restarts the job onto the same record; each is dead-lettered with a sample instead.
SMALL = Topics.for_job("j", max_record_bytes=50_000)


def big_event(id_: str = "e1", size: int = 30_000) -> CloudEvent:
    return event_from_dict({"specversion": "1.0", "id": id_, "source": "/s", "type": "gift", "partitionkey": "room-1",
                            "data": {"blob": "x" * size}})


def intake_task(trigger: str, event: CloudEvent) -> DeliveryTask:
    """A task as intake makes it: carrying its subscriber's request (the event again)."""
    [task] = first_attempts(event, [t for t in PLAN.brokers[0].triggers if t.key == trigger], 0.0)
    return task


def test_an_oversized_retry_dead_letters_its_whole_event_with_the_reason():
    task = intake_task("ns/gifts", big_event())
    item = WorkItem("u|ns/gifts|e1", False, task.to_bytes())
    later = task.retried(1, 1.0, 3.5)
    out = Outbox(PLAN, SMALL).records(item, Retrying(later, 503, "status 503"))
    assert not [r for r in out if r.topic == SMALL.retry]  # its record holds the event twice: ~60 KB
    [dead] = [r for r in out if r.topic == SMALL.dead_letters]
    assert dead.headers == {"knflow_kind": b"oversized"} and dead.key == b"e1"
    doc = json.loads(dead.value)
    assert doc["event_id"] == "e1" and doc["trigger"] == "ns/gifts"
    assert doc["reason"].startswith("not retried: its ") and "exceeds the job's record limit of 50000 bytes" in doc["reason"]
    assert doc["event"]["id"] == "e1" and doc["event"]["data"] == {"blob": "x" * 30_000}  # ~30 KB: kept whole
    assert [json.loads(r.value)["k"] for r in out if r.topic == SMALL.outcomes] == ["retried", "dead_lettered"]
    # Within the limit, the same outcome is a retry as before.
    assert [r.topic for r in Outbox(PLAN, TOPICS).records(item, Retrying(later, 503, "status 503"))
            if r.topic != TOPICS.outcomes] == [TOPICS.retry]


def test_an_oversized_retry_of_an_ordered_key_releases_its_gate():
    task = intake_task("ns/ordered", big_event())
    assert len(task.to_bytes()) > SMALL.max_record_bytes
    item = WorkItem("o|ns/ordered|room-1", True, task.to_bytes(), ticket=4)
    out = Outbox(PLAN, SMALL).records(item, Retrying(task, 500, "status 500"))
    [release] = [parse_retry_record(r.key, dict(r.headers), r.value) for r in out if r.topic == SMALL.retry]
    assert (release.kind, release.key, release.ticket) == (RELEASE, "o|ns/ordered|room-1", 4)
    assert len([r for r in out if r.topic == SMALL.dead_letters]) == 1


def test_an_oversized_reply_is_dead_lettered_and_the_delivery_still_counts():
    task = DeliveryTask("ns/gifts", event())
    out = Outbox(PLAN, SMALL).records(WorkItem("u|ns/gifts|e1", False, task.to_bytes()),
                                      Replied(task, 200, big_event("r1", size=70_000)))
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
