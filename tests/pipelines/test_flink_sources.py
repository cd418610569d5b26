"""KafkaSources run inside the Flink job on the embedded mini-cluster.

Records already on a source's topic (initialOffset: earliest) enter the job where the
broker topic enters: a plain JSON record is wrapped as Knative's KafkaSource wraps it
(``dev.knative.kafka.event``, id ``partition:<p>/offset:<o>``, a ``kafkaheader*``
extension per header, the ``key``), CloudEvent records in binary and structured mode
pass through, and the broker's triggers filter and deliver them like any other event. A
second source whose sink is a uri delivers its events straight to it.
"""
from __future__ import annotations

import json
import uuid

import pytest
from kafka import KafkaProducer

from eventing.kafka_topics import ensure_topics
from tests.consumers import ConsumerServer, accept
from tests.pipelines.flink_harness import KnflowJob, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.flink, pytest.mark.slow]


def test_kafka_source_records_reach_the_brokers_triggers(kafka, tmp_path):
    namespace = f"src{uuid.uuid4().hex[:6]}"
    topic = f"platform-{uuid.uuid4().hex[:8]}"
    audit_topic = f"audit-{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka.bootstrap, [topic, audit_topic], partitions=2)
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    producer.send(topic, key=b"room-1", value=json.dumps({"user": "u1", "coins": 500}).encode(),
                  headers=[("X-Room", b"r1")], partition=0)
    producer.send(topic, key=b"room-2", partition=1, value=b'{"coins": 5}',
                  headers=[("ce_specversion", b"1.0"), ("ce_id", b"gift-1"), ("ce_source", b"/live"),
                           ("ce_type", b"com.live.gift.sent"), ("content-type", b"application/json")])
    producer.send(topic, partition=1, value=json.dumps({
        "specversion": "1.0", "id": "gift-2", "source": "/live", "type": "com.live.gift.sent",
        "data": {"coins": 7}}).encode(), headers=[("content-type", b"application/cloudevents+json")])
    for n in range(3):
        producer.send(audit_topic, key=f"k{n}".encode(), value=json.dumps({"n": n}).encode(), partition=0)
    producer.flush()
    producer.close()

    wrapped, gifts, audit = (ConsumerServer(accept()).start(), ConsumerServer(accept()).start(),
                             ConsumerServer(accept()).start())
    manifest = tmp_path / "m" / "sources.yaml"
    manifest.parent.mkdir()
    manifest.write_text(f"""
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: live, namespace: {namespace}}}
---
apiVersion: sources.knative.dev/v1
kind: KafkaSource
metadata: {{name: platform, namespace: {namespace}}}
spec:
  bootstrapServers: ['{kafka.bootstrap}']
  topics: ['{topic}']
  consumerGroup: knflow-test-{namespace}
  initialOffset: earliest
  sink: {{ref: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: live}}}}
---
apiVersion: sources.knative.dev/v1
kind: KafkaSource
metadata: {{name: audit, namespace: {namespace}}}
spec:
  bootstrapServers: ['{kafka.bootstrap}']
  topics: ['{audit_topic}']
  initialOffset: earliest
  sink: {{uri: '{audit.url}'}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: wrapped, namespace: {namespace}}}
spec:
  broker: live
  filters: [{{exact: {{type: dev.knative.kafka.event, kafkaheaderxroom: r1}}}}]
  subscriber: {{uri: '{wrapped.url}'}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: gifts, namespace: {namespace}}}
spec:
  broker: live
  filters: [{{exact: {{type: com.live.gift.sent}}}}]
  subscriber: {{uri: '{gifts.url}'}}
""")
    job = KnflowJob(manifest.parent, ["--bootstrap-servers", kafka.bootstrap, "--job-name", namespace,
                                      "--checkpoint-interval", "2", "--checkpoint-dir", str(tmp_path / "ckpt")],
                    tmp_path / "job.log")
    try:
        job.wait_running()
        wait_until(lambda: len(wrapped.requests) >= 1 and len(gifts.requests) >= 2 and len(audit.requests) >= 3, 120,
                   "the sources' records at the consumers")
    finally:
        job.stop()
        wrapped.stop()
        gifts.stop()
        audit.stop()
    [plain] = wrapped.requests
    headers = plain.headers
    assert headers["ce-type"] == "dev.knative.kafka.event"
    assert headers["ce-source"] == f"/apis/v1/namespaces/{namespace}/kafkasources/platform#{topic}"
    assert headers["ce-id"] == "partition:0/offset:0" and headers["ce-subject"] == "partition:0#0"
    assert headers["ce-key"] == "room-1" and headers["ce-kafkaheaderxroom"] == "r1"
    assert json.loads(plain.body) == {"user": "u1", "coins": 500}
    passed = {r.headers["ce-id"]: json.loads(r.body) for r in gifts.requests}
    assert passed == {"gift-1": {"coins": 5}, "gift-2": {"coins": 7}}  # CloudEvents pass through, both modes
    # The source with a uri sink: every record, wrapped, in the partition's order (ordered by default).
    assert [r.headers["ce-id"] for r in audit.requests] == [f"partition:0/offset:{n}" for n in range(3)]
    assert {r.headers["ce-source"] for r in audit.requests} == {
        f"/apis/v1/namespaces/{namespace}/kafkasources/audit#{audit_topic}"}
    assert [json.loads(r.body) for r in audit.requests] == [{"n": 0}, {"n": 1}, {"n": 2}]
