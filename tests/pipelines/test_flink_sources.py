"""KafkaSources run inside the Flink job on the embedded mini-cluster.

Records already on a source's topic (initialOffset: earliest) enter the job where the
broker topic enters: a plain JSON record is wrapped as Knative's KafkaSource wraps it
(``dev.knative.kafka.event``, id ``partition:<p>/offset:<o>``, a ``kafkaheader*``
extension per header, the ``key``), CloudEvent records in binary and structured mode
pass through, and the broker's triggers filter and deliver them like any other event. A
second source whose sink is a uri delivers its events straight to it.

The second test runs three jobs over eight sources with uri sinks: initialOffset earliest
reads what was there before the job, latest skips it; the key-type label decodes the key
into the ``key`` extension; ordered delivers a partition one record at a time and in order,
unordered concurrently; a job restored from the savepoint of a stopped one delivers only
what came while it was stopped, and a new job resumes each group from its committed
offsets: no record acknowledged before a stop is lost or delivered again.
"""
from __future__ import annotations

import json
import re
import uuid

import pytest
import yaml
from kafka import KafkaProducer

from eventing.kafka_topics import ensure_topics
from tests.consumers import ConsumerServer, accept, slow
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


# --------------------------------------------------------------------------------------
# initialOffset, committed offsets, key types, ordering and a restart, through the job.
# Expected values are Knative's (knative-extensions/eventing-kafka-broker):
# - initialOffset latest: the control plane commits each partition's end offset for a new
#   group before the source is ready (control-plane/pkg/kafka/offset/offsets.go InitOffsets,
#   called by reconcileInitialOffset unless the offset is earliest); earliest: the consumer's
#   auto.offset.reset. A group's committed offsets win over both.
# - key type: data-plane .../dispatcher/impl/consumer/KeyDeserializer.java (int: 4 bytes
#   big-endian, else text; float: 4-byte float or 8-byte double, else text; byte-array: the
#   bytes) and InvalidCloudEventInterceptor.setKey (the key as `key` and `partitionkey`);
#   binary-mode HTTP writes a number as Java's toString and bytes as base64.
# - ordering: OrderedConsumerVerticle runs one executor per topic partition (one record of a
#   partition at a time, whatever its key); UnorderedConsumerVerticle dispatches concurrently.
# --------------------------------------------------------------------------------------


def _send(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for key, value in records:
        producer.send(topic, key=key, value=value, partition=0)
    producer.flush()
    producer.close()


def _committed(bootstrap: str, group: str, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        [tp] = consumer.committed([TopicPartition(topic, 0)], timeout=30)
        return tp.offset
    finally:
        consumer.close()


def _bodies(consumer: ConsumerServer, source: str) -> list:
    """The payloads one source delivered to ``consumer``, in arrival order."""
    return [json.loads(r.body) for r in consumer.requests if r.headers["ce-source"].split("/")[-1].startswith(f"{source}#")]


def test_kafka_source_offsets_key_types_ordering_and_a_restart(kafka, tmp_path):
    import struct

    namespace = f"off{uuid.uuid4().hex[:6]}"
    topics = {name: f"{name}-{uuid.uuid4().hex[:8]}" for name in
              ("early", "late", "kstring", "kint", "kfloat", "kbytes", "ordered", "unordered")}
    ensure_topics(kafka.bootstrap, topics.values(), partitions=1)
    # written before the job first starts
    _send(kafka.bootstrap, topics["early"], [(None, json.dumps({"early": n}).encode()) for n in range(3)])
    _send(kafka.bootstrap, topics["late"], [(None, json.dumps({"late-before": n}).encode()) for n in range(2)])
    keys = {
        "kstring": [(b"room-1", "room-1")],
        "kint": [(struct.pack(">i", -42), "-42"), (b"abc", "abc")],  # not 4 bytes: read as text
        "kfloat": [(struct.pack(">f", 1.5), "1.5"), (struct.pack(">d", 1e10), "1.0E10"), (b"x1", "x1")],
        "kbytes": [(b"\x00\xffkey", "AP9rZXk=")],
    }
    for name, pairs in keys.items():
        _send(kafka.bootstrap, topics[name], [(raw, json.dumps({name: n}).encode()) for n, (raw, _) in enumerate(pairs)])
    # one partition, a different key (or none) per record: ordered still means one at a time
    for name in ("ordered", "unordered"):
        _send(kafka.bootstrap, topics[name],
              [(f"k{n}".encode() if n % 3 else None, json.dumps({name: n}).encode()) for n in range(6)])

    plain = ConsumerServer(accept()).start()
    ordered = ConsumerServer(slow(0.2)).start()
    unordered = ConsumerServer(slow(1.5)).start()
    docs = []
    for name, topic in topics.items():
        labels = ""
        if name.startswith("k"):
            key_type = {"kstring": "string", "kint": "int", "kfloat": "float", "kbytes": "byte-array"}[name]
            labels = f"\n  labels: {{kafkasources.sources.knative.dev/key-type: {key_type}}}"
        sink = {"ordered": ordered, "unordered": unordered}.get(name, plain)
        docs.append(f"""
apiVersion: sources.knative.dev/v1
kind: KafkaSource
metadata:
  name: {name}
  namespace: {namespace}{labels}
spec:
  bootstrapServers: ['{kafka.bootstrap}']
  topics: ['{topic}']
  consumerGroup: g-{namespace}-{name}
  initialOffset: {"latest" if name == "late" else "earliest"}
  ordering: {"unordered" if name == "unordered" else "ordered"}
  sink: {{uri: '{sink.url}'}}
""")
    manifest = tmp_path / "m" / "sources.yaml"
    manifest.parent.mkdir()
    manifest.write_text("---".join(docs))
    args = ["--bootstrap-servers", kafka.bootstrap, "--job-name", namespace, "--checkpoint-interval", "2",
            "--checkpoint-dir", str(tmp_path / "ckpt")]
    jobs = []

    def start(*extra: str) -> KnflowJob:
        job = KnflowJob(manifest.parent, args + list(extra), tmp_path / f"job{len(jobs)}.log")
        jobs.append(job)
        job.wait_running()
        return job

    def delivered(source: str, count: int, consumer: ConsumerServer = plain) -> None:
        wait_until(lambda: len(_bodies(consumer, source)) >= count, 120, f"{count} deliveries of KafkaSource {source}")

    def acknowledged() -> None:
        """Every request the consumers got was answered: the deliveries are settled."""
        wait_until(lambda: not any(c.in_flight for c in (plain, ordered, unordered)), 60, "the consumers' answers")

    try:
        # 1. a new job: earliest reads what was there, latest starts at the end when `knflow run` starts
        job = start("--savepoint-dir", str(tmp_path / "savepoints"))
        _send(kafka.bootstrap, topics["late"], [(None, b'{"late-after": 0}')])
        delivered("early", 3)
        delivered("late", 1)
        for name, pairs in keys.items():
            delivered(name, len(pairs))
        delivered("ordered", 6, ordered)
        delivered("unordered", 6, unordered)
        acknowledged()
        output = job.stop()
        match = re.search(r"job stopped with a savepoint: (\S+) ", output)
        assert match, output[-3000:]
        assert _bodies(plain, "early") == [{"early": n} for n in range(3)]
        assert _bodies(plain, "late") == [{"late-after": 0}]  # the records before the start are skipped
        for name, pairs in keys.items():  # the key, decoded per key type, as `key` and `partitionkey`
            got = [(r.headers["ce-key"], r.headers["ce-partitionkey"]) for r in plain.requests
                   if r.headers["ce-source"].endswith(f"/kafkasources/{name}#{topics[name]}")]
            assert got == [(text, text) for _, text in pairs], name
        # ordered: one at a time, in the partition's order, though each record has its own key
        assert _bodies(ordered, "ordered") == [{"ordered": n} for n in range(6)] and ordered.max_in_flight == 1
        assert unordered.max_in_flight > 1  # unordered: concurrently

        # 2. stopped: more records; restored from the savepoint, only those are delivered
        _send(kafka.bootstrap, topics["early"], [(None, b'{"early": "stopped"}')])
        _send(kafka.bootstrap, topics["late"], [(None, b'{"late-after": "stopped"}')])
        start("--restore-from", match.group(1))
        delivered("early", 4)
        delivered("late", 2)
        # the groups' committed offsets follow the checkpoints
        wait_until(lambda: _committed(kafka.bootstrap, f"g-{namespace}-early", topics["early"]) == 4
                   and _committed(kafka.bootstrap, f"g-{namespace}-late", topics["late"]) == 4, 120,
                   "the sources' offsets committed")
        acknowledged()
        jobs[-1].stop()

        # 3. stopped again; a new job (no restore) resumes each group from its committed
        # offsets: neither earliest (nothing read again) nor latest (nothing skipped)
        _send(kafka.bootstrap, topics["early"], [(None, b'{"early": "new job"}')])
        _send(kafka.bootstrap, topics["late"], [(None, b'{"late-after": "new job"}')])
        start()
        delivered("early", 5)
        delivered("late", 3)
        jobs[-1].stop()
    finally:
        for job in jobs:
            job.stop()
        plain.stop()
        ordered.stop()
        unordered.stop()
    assert _bodies(plain, "early") == [{"early": 0}, {"early": 1}, {"early": 2}, {"early": "stopped"},
                                       {"early": "new job"}]
    assert _bodies(plain, "late") == [{"late-after": 0}, {"late-after": "stopped"}, {"late-after": "new job"}]
    # nothing acknowledged before a stop was delivered again
    ids = [(r.headers["ce-source"], r.headers["ce-id"]) for c in (plain, ordered, unordered) for r in c.requests]
    assert len(ids) == len(set(ids)) == 5 + 3 + 1 + 2 + 3 + 1 + 6 + 6


def _secured_source(name: str, namespace: str, bootstrap: str, topic: str, sink: str, *, sasl: bool, tls: bool) -> str:
    """A KafkaSource (initialOffset latest) whose spec.net takes its values from the Secret kafka-auth."""
    def ref(key: str) -> dict:
        return {"secretKeyRef": {"name": "kafka-auth", "key": key}}

    net: dict = {}
    if sasl:
        net["sasl"] = {"enable": True, "type": ref("saslType"), "user": ref("user"), "password": ref("password")}
    if tls:
        net["tls"] = {"enable": True, "caCert": ref("ca.crt")}
    return yaml.safe_dump({"apiVersion": "sources.knative.dev/v1", "kind": "KafkaSource",
                           "metadata": {"name": name, "namespace": namespace},
                           "spec": {"bootstrapServers": [bootstrap], "topics": [topic], "initialOffset": "latest",
                                    "net": net, "sink": {"uri": sink}}})


def test_kafka_sources_with_sasl_and_tls_from_a_secret_read_a_secured_kafka(kafka, tmp_path):
    """``spec.net`` with its values in a v1 Secret of the manifests. One source logs in with
    SCRAM through Kafka's SASL_PLAINTEXT listener, one trusts the CA of Kafka's TLS listener
    (``tls.caCert``), one does both through the SASL_SSL listener: a plaintext client, one
    without that CA or without the login, fails there. For each, the job's consumer and the
    ``initialOffset: latest`` set-up connect that way, and the source delivers what arrives
    after the start, not what was there before."""
    namespace = f"sasl{uuid.uuid4().hex[:6]}"
    topic = f"secured-{uuid.uuid4().hex[:8]}"
    tls_topic = f"tls-{uuid.uuid4().hex[:8]}"
    both_topic = f"both-{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka.bootstrap, [topic, tls_topic, both_topic], partitions=1)
    for name in (topic, tls_topic, both_topic):
        _send(kafka.bootstrap, name, [(None, b'{"n": 0}')])  # before the job: latest skips it
    consumer = ConsumerServer(accept()).start()
    ca_yaml = "\n".join("      " + line for line in kafka.ssl_ca_pem.splitlines())
    manifest = tmp_path / "m" / "secured.yaml"
    manifest.parent.mkdir()
    manifest.write_text(f"""
apiVersion: v1
kind: Secret
metadata: {{name: kafka-auth, namespace: {namespace}}}
stringData:
  user: knflow
  password: {kafka.SASL_PASSWORD}
  saslType: SCRAM-SHA-512
  ca.crt: |
{ca_yaml}
---
{_secured_source("secured", namespace, kafka.sasl_bootstrap, topic, consumer.url, sasl=True, tls=False)}
---
{_secured_source("tls", namespace, kafka.ssl_bootstrap, tls_topic, consumer.url, sasl=False, tls=True)}
---
{_secured_source("both", namespace, kafka.sasl_ssl_bootstrap, both_topic, consumer.url, sasl=True, tls=True)}
""")
    job = KnflowJob(manifest.parent, ["--bootstrap-servers", kafka.bootstrap, "--job-name", namespace,
                                      "--checkpoint-interval", "2", "--checkpoint-dir", str(tmp_path / "ckpt")],
                    tmp_path / "job.log")
    try:
        job.wait_running()
        for name in (topic, tls_topic, both_topic):
            _send(kafka.bootstrap, name, [(None, json.dumps({"n": n}).encode()) for n in (1, 2, 3)])
        wait_until(lambda: len(consumer.requests) >= 9, 120, "the secured sources' records at the consumer")
    finally:
        job.stop()
        consumer.stop()
    assert _bodies(consumer, "secured") == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert _bodies(consumer, "tls") == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert _bodies(consumer, "both") == [{"n": 1}, {"n": 2}, {"n": 3}]


def test_a_kafka_source_whose_login_kafka_refuses_stops_knflow_run_with_the_reason(kafka, tmp_path):
    """initialOffset earliest (no offsets to set up): knflow logs in before it starts the job."""
    import subprocess
    import sys

    from tests.conftest import REPO

    manifest = tmp_path / "refused.yaml"
    manifest.write_text(f"""
apiVersion: v1
kind: Secret
metadata: {{name: kafka-auth, namespace: refused}}
data: {{user: a25mbG93, password: d3Jvbmc=}}
---
apiVersion: sources.knative.dev/v1
kind: KafkaSource
metadata: {{name: secured, namespace: refused}}
spec:
  bootstrapServers: ['{kafka.sasl_bootstrap}']
  topics: [anything]
  initialOffset: earliest
  net:
    sasl:
      enable: true
      user: {{secretKeyRef: {{name: kafka-auth, key: user}}}}
      password: {{secretKeyRef: {{name: kafka-auth, key: password}}}}
  sink: {{uri: 'http://127.0.0.1:9/'}}
""")
    result = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", str(manifest), "--bootstrap-servers",
                             kafka.bootstrap, "--job-name", "refused"], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    assert (f"knflow run: Kafka at {kafka.sasl_bootstrap} refused group knative-kafka-source-refused-secured: "
            in result.stderr), result.stderr
    assert "SASL authentication error" in result.stderr and "running" not in result.stdout
