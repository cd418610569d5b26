"""The Kafka data plane, engine-neutral: what goes in and out of Kafka around delivery.

A streaming engine (the Flink job) only moves bytes between these functions:

- ``Intake.ingest``: a broker-topic record -> decoded, routed work (a ``WorkItem`` per
  matching trigger, with its scheduling key) or a dead letter.
- ``Outbox.records``: the outcome of one attempt -> Kafka records (a reply to the broker
  topic, a dead letter to the dead-letter topic, an outcome record for observability)
  and the follow-up task, if the event is not settled yet (a retry, or the delivery to
  its deadLetterSink), which the engine holds in its checkpointed state until due
  (``transforms.scheduler``).

Everything here is pure (no I/O) and unit-tested without an engine.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import orjson
from cloudevents.core.v1.event import CloudEvent

from eventing.kafka_topics import DEFAULT_MAX_RECORD_BYTES
from eventing.plan import KAFKA_SOURCE, ORDERED, PING_SOURCE, ROCKETMQ_SOURCE, Plan, direct_name
from transforms.codec import CodecError, decode_kafka, encode_kafka, event_to_dict
from transforms.delivery import (
    DeadLettered, DeadLetterStored, Delivered, DeliveryTask, Outcome, Replied, Retrying, first_attempts,
)
from transforms.records import DeadLetter, raw_text
from transforms.packing import InRecord
from transforms.router import Router
from transforms.sources import KafkaSourceRecord, kafka_record_to_event
from transforms.scheduler import WorkItem, ordered_key, unordered_key

KIND_HEADER = "knflow_kind"


@dataclass(frozen=True)
class Topics:
    """The job's own topics besides the broker topics, and the largest record it writes."""

    dead_letters: str
    outcomes: str | None = None
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES

    @classmethod
    def for_job(cls, job_name: str, outcomes: bool = True, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> "Topics":
        return cls(f"knflow-{job_name}-dead-letters", f"knflow-{job_name}-outcomes" if outcomes else None,
                   max_record_bytes)


@dataclass(frozen=True)
class OutRecord:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Mapping[str, bytes]


#: How much of an oversized record's value its dead letter keeps.
OVERSIZED_SAMPLE_BYTES = 64 * 1024


def record_size(record: OutRecord) -> int:
    """What Kafka counts against its limits for one record (without batch framing)."""
    return (len(record.key or b"") + len(record.value or b"")
            + sum(len(name) + len(value) for name, value in record.headers.items()))


def fit(topics: Topics, record: OutRecord, origin: str = "", event_id: str | None = None,
        trigger: str | None = None) -> OutRecord:
    """``record`` if it is within ``topics.max_record_bytes``; else a dead letter that names
    its topic and size and keeps its headers and the first ``OVERSIZED_SAMPLE_BYTES`` of its
    value. Kafka would refuse the record, and that would fail the job's sink, restart the
    job from its checkpoint and meet the same record again: one event must not stop them all.
    The job's limit is at least 1 MiB (``--max-record-bytes``), which the dead letter, its
    sample escaped as JSON or hex, always fits."""
    size = record_size(record)
    if size <= topics.max_record_bytes:
        return record
    value = record.value or b""
    dead = DeadLetter(
        reason=(f"a {size}-byte record for topic {record.topic!r} exceeds the job's record limit of "
                f"{topics.max_record_bytes} bytes (--max-record-bytes); the first {OVERSIZED_SAMPLE_BYTES} "
                f"bytes of its {len(value)}-byte value are kept in raw"),
        origin=origin or record.topic, trigger=trigger, event_id=event_id,
        raw=raw_text(value[:OVERSIZED_SAMPLE_BYTES]),
        headers={name: (raw_text(v[:1024]) or "") for name, v in record.headers.items()})
    return OutRecord(topics.dead_letters, None, dead.to_json().encode(), {KIND_HEADER: b"oversized"})


def dead_letter_record(topics: Topics, letter: DeadLetter, kind: bytes | None, key: bytes | None = None) -> OutRecord:
    """``letter`` for the job's dead-letter topic (``kind``: its ``knflow_kind`` header), within
    the record limit (``fit``). Every dead letter the job writes to Kafka is made here."""
    record = OutRecord(topics.dead_letters, key, letter.to_json().encode(), {KIND_HEADER: kind} if kind else {})
    return fit(topics, record, letter.origin, letter.event_id, letter.trigger)


def _outcome(topics: Topics, kind: str, trigger: str | None, event_id: str | None, **extra) -> list[OutRecord]:
    if topics.outcomes is None:
        return []
    doc = {"k": kind, "t": trigger, "id": event_id, **extra}
    return [OutRecord(topics.outcomes, None, orjson.dumps(doc), {})]


class Intake:
    """Decode and route records of the broker topics of ``plan``, of the topics of its
    KafkaSources (their records become CloudEvents as Knative's KafkaSource makes them,
    ``transforms.sources``), its PingSources' ticks (records of the pseudo topic
    ``knflow-ping/<ns>/<name>``, ``transforms.ping``) and the internal topics of its
    RocketMQSources with a direct sink (``knflow-rocketmq-<ns>-<name>``: the bridge wrote
    CloudEvents there in the Kafka binding), each routed by the broker the source feeds or
    by its direct broker of one trigger (``Plan.direct_sources``).

    An ordered direct KafkaSource orders per source partition, as Knative's
    ``OrderedConsumerVerticle`` does (one executor per topic partition, whatever the keys);
    everywhere else an ordered trigger orders per ``partitionkey`` (else the record key).
    ``cel_native``: the brokers' CEL filters run as C (``Router``)."""

    def __init__(self, plan: Plan, topics: Topics, cel_native: bool = False) -> None:
        self.topics = topics
        self.routers = {b.topic: Router(b, cel_native) for b in plan.brokers}
        self.ordered = {t.key for t in plan.delivery_triggers() if t.ordering == ORDERED}
        directs = {(b.namespace, b.name): Router(b) for b in plan.direct_sources()}
        self.sources = {}
        for source in plan.sources:
            if source.kind not in (KAFKA_SOURCE, PING_SOURCE, ROCKETMQ_SOURCE):
                continue
            router = self.routers.get(source.topic) or directs.get((source.namespace, direct_name(source)))
            if router is None:
                continue
            if source.kind == PING_SOURCE:  # ticks are CloudEvents in the Kafka binding: the broker-topic path
                self.routers[source.tick_topic] = router
            elif source.kind == ROCKETMQ_SOURCE:  # so are the bridge's records (a broker sink's: its topic)
                self.routers[source.kafka_topic] = router
            else:
                self.sources.update({topic: (source, router, source.broker is None) for topic in source.topics})

    def ingest_record(self, record: InRecord, now: float) -> list[WorkItem | OutRecord]:
        """One record the job read: of a broker topic, or of a KafkaSource's topic."""
        source = self.sources.get(record.topic)
        if source is None:
            return self.ingest(record.topic, record.key, record.headers, record.value, record.origin, now)
        plan, router, direct = source
        try:
            event = kafka_record_to_event(
                KafkaSourceRecord(record.topic, record.partition, record.offset, record.timestamp, record.key,
                                  list(record.headers.items()), record.value),
                namespace=plan.namespace, name=plan.name, key_type=plan.key_type, ce_overrides=plan.ce_overrides)
        except (CodecError, ValueError) as exc:
            return self._dead_letter(f"KafkaSource {plan.key}: the record is no valid event: {exc}", record.origin,
                                     record.headers, record.value)
        # a direct source's order is its partition's (Knative); a broker's trigger keeps its own rule
        order_key = f"{record.topic}/{record.partition}" if direct else None
        return self._route(router, event, record.key, record.origin, now, order_key)

    def ingest(self, topic: str, key: bytes | None, headers: Mapping[str, bytes] | Iterable[tuple[str, bytes]],
               value: bytes | None, origin: str, now: float) -> list[WorkItem | OutRecord]:
        router = self.routers.get(topic)
        if router is None:
            return self._dead_letter(f"record from unexpected topic {topic!r}", origin, headers, value)
        try:
            # The payload stays the record's bytes: delivered byte for byte, parsed only
            # if a filter reads the data (transforms.router.event_view).
            event = decode_kafka(headers, value, keep_payload=True)
        except CodecError as exc:
            return self._dead_letter(f"not a valid CloudEvent: {exc}", origin, headers, value)
        return self._route(router, event, key, origin, now)

    def _route(self, router: Router, event: CloudEvent, key: bytes | None, origin: str,
               now: float, order_key: str | None = None) -> list[WorkItem | OutRecord]:
        matches = router.route(event)
        out: list[WorkItem | OutRecord] = []
        event_id = event.get_id()
        # Encoded for HTTP once per delivery format, not once per trigger.
        for trigger, task in zip(matches, first_attempts(event, matches, now)):
            if trigger.key in self.ordered:
                partition_key = order_key if order_key is not None else event.get_attributes().get("partitionkey")
                if partition_key is None:
                    partition_key = raw_text(key) if key is not None else origin.rsplit("@", 1)[0]
                out.append(WorkItem(ordered_key(trigger.key, str(partition_key)), True, task))
            else:
                out.append(WorkItem(unordered_key(trigger.key, event_id), False, task))
        out.extend(_outcome(self.topics, "routed", None, event_id, triggers=[t.key for t in matches]))
        return out

    def _dead_letter(self, reason: str, origin: str, headers, value: bytes | None) -> list[OutRecord]:
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        record = DeadLetter(reason=reason, origin=origin, raw=raw_text(value),
                            headers={k: raw_text(v) or "" for k, v in pairs})
        return ([dead_letter_record(self.topics, record, b"undecodable")]
                + _outcome(self.topics, "undecodable", None, None, origin=origin))


class Outbox:
    """Turn one attempt's outcome into the Kafka records that carry it forward, and the
    follow-up task of an event that is not settled yet."""

    def __init__(self, plan: Plan, topics: Topics) -> None:
        self.topics = topics
        self.broker_topics = {t.key: b.topic for b in plan.brokers for t in b.triggers}

    def records(self, outcome: Outcome) -> tuple[list[OutRecord], DeliveryTask | None]:
        """(records to write, the follow-up task or None when the event settled)."""
        topics = self.topics
        task = outcome.task
        trigger, event_id = task.trigger, task.event_id
        out: list[OutRecord] = []
        follow_up = None
        if isinstance(outcome, Retrying):
            follow_up = outcome.task
            out += _outcome(topics, "stuck" if outcome.stuck else "retried", trigger, event_id,
                            n=outcome.task.attempt, error=outcome.error)
        elif isinstance(outcome, Delivered):
            out += _outcome(topics, "delivered", trigger, event_id, s=outcome.status, n=task.attempt + 1)
        elif isinstance(outcome, Replied):
            out += _outcome(topics, "delivered", trigger, event_id, s=outcome.status, n=task.attempt + 1)
            broker_topic = self.broker_topics.get(trigger)
            if broker_topic is not None:  # a source's sink has no reply path: its reply is dropped, as Knative does
                key, headers, value = encode_kafka(outcome.reply, "binary")
                out.insert(0, OutRecord(broker_topic, key, value, dict(headers)))
                out += _outcome(topics, "replied", trigger, event_id, reply=outcome.reply.get_id())
        elif isinstance(outcome, DeadLetterStored):
            out += _outcome(topics, "dead_letter_stored", trigger, event_id, s=outcome.status)
        elif isinstance(outcome, DeadLettered):
            if outcome.delivered:
                out += _outcome(topics, "delivered", trigger, event_id, n=task.attempt + 1)
            out += _outcome(topics, "dead_lettered", trigger, event_id, reason=outcome.reason)
            sink = outcome.destination
            if outcome.next_task is not None:  # to the deadLetterSink: one more (retried) delivery
                follow_up = outcome.next_task
            elif sink is not None and sink.kafka_topic is not None:  # a KafkaSink: the event, as Knative writes it
                key, headers, value = encode_kafka(outcome.event, sink.kafka_content_mode)
                out.append(OutRecord(sink.kafka_topic, key, value, dict(headers)))
            else:
                record = DeadLetter(reason=outcome.reason, trigger=trigger, event_id=outcome.event.get_id(),
                                    event=event_to_dict(outcome.event))
                out.append(dead_letter_record(topics, record, b"dead_letter", event_id.encode()))
        # outcome documents are small: only replies and dead letters can be oversized
        if any(record.topic != topics.outcomes and record_size(record) > topics.max_record_bytes for record in out):
            out = self._fit(task, out)
        return out, follow_up

    def _fit(self, task: DeliveryTask, out: list[OutRecord]) -> list[OutRecord]:
        """``out`` with each oversized record (a reply, a KafkaSink dead letter) dead-lettered
        with its reason and a sample (``fit``)."""
        fitted: list[OutRecord] = []
        after: list[OutRecord] = []
        for record in out:
            if record_size(record) <= self.topics.max_record_bytes:
                fitted.append(record)
                continue
            fitted.append(fit(self.topics, record, f"outcome of {task.trigger}", task.event_id, task.trigger))
            after += _outcome(self.topics, "dead_lettered", task.trigger, task.event_id, reason="oversized record")
        return fitted + after
