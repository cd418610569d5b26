"""The RocketMQSource bridge on a real RocketMQ 5 (deploy/rocketmq.sh) and a real Kafka.

Messages reach the broker's Kafka topic wrapped as Knative would wrap them (or unchanged
when they are CloudEvents), the tag selector filters, a message whose Kafka write failed is
not acked and RocketMQ delivers it again, and a bridge killed mid-stream loses nothing.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from eventing.compiler import load_plan
from eventing.kafka_topics import ensure_topics
from eventing.sources_rocketmq import BridgeError, RocketMQBridge
from tests.conftest import REPO, free_port
from tests.plans import configured_broker_yaml
from tests.processes import stop
from transforms.codec import decode_kafka, event_to_dict

pytestmark = [pytest.mark.rocketmq, pytest.mark.kafka, pytest.mark.slow]


def write_manifests(tmp_path: Path, topic: str, group: str, selector: str = "*") -> tuple[Path, str]:
    namespace = f"ns{uuid.uuid4().hex[:8]}"
    path = tmp_path / "sources.yaml"
    path.write_text(f"""
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: live, namespace: {namespace}}}
---
apiVersion: sources.eventing.knative.dev/v1alpha1
kind: RocketMQSource
metadata: {{name: platform, namespace: {namespace}}}
spec:
  topic: {topic}
  namesrvAddr: 127.0.0.1:9876
  groupName: {group}
  selectorExpression: "{selector}"
  initialOffset: earliest
  sink: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: live}}
""")
    return path, f"knative-broker-{namespace}-live"


def source_of(path: Path):
    [source] = load_plan(path, allow_sources=True).sources
    return source


class Producer:
    def __init__(self, endpoints: str, topic: str) -> None:
        from rocketmq import ClientConfiguration, Credentials, Producer as RmqProducer

        self.topic = topic
        self.producer = RmqProducer(ClientConfiguration(endpoints, Credentials(), request_timeout=10), (topic,))
        self.producer.startup()

    def send(self, body: bytes, tag: str | None = None, keys: tuple[str, ...] = (), properties: dict | None = None) -> str:
        from rocketmq import Message

        message = Message()
        message.topic = self.topic
        message.body = body
        if tag:
            message.tag = tag
        if keys:
            message.keys = keys[0]
        for name, value in (properties or {}).items():
            message.add_property(name, value)
        # Right after the broker starts, the proxy may not know the seeded topic's route yet:
        # the client then fails before it sends anything, so trying again cannot duplicate.
        deadline = time.monotonic() + 60
        while True:
            try:
                return self.producer.send(message).message_id
            except Exception as exc:  # noqa: BLE001 - the client raises a bare Exception
                if "route" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(1.0)

    def close(self) -> None:
        self.producer.shutdown()


def read_events(bootstrap: str, topic: str, done, timeout: float = 240.0) -> list:
    """Every event in ``topic`` (from the start) once ``done(events)`` holds; fails after ``timeout``."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=None)
    events = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                events.extend(decode_kafka(list(r.headers), r.value) for r in records)
            if done(events):
                return events
        raise AssertionError(f"condition not met after {timeout}s; {len(events)} events: "
                             f"{[event_to_dict(e) for e in events[:5]]}")
    finally:
        consumer.close()


def bodies(events) -> list[bytes]:
    return [e.get_data() for e in events]


def start_bridge(source, rocketmq, bootstrap: str, **options) -> tuple[RocketMQBridge, threading.Thread]:
    options.setdefault("startup_timeout_s", 90)  # generous: the machine is shared
    bridge = RocketMQBridge(source, endpoints=rocketmq.endpoints, bootstrap_servers=bootstrap, **options)
    thread = threading.Thread(target=bridge.run, daemon=True)
    thread.start()
    return bridge, thread


def stop_bridge(bridge: RocketMQBridge, thread: threading.Thread) -> None:
    bridge.stop()
    thread.join(60)
    assert not thread.is_alive()


def test_messages_reach_the_broker_topic_wrapped(tmp_path, rocketmq, kafka):
    path, broker_topic = write_manifests(tmp_path, "knflow-t-wrap", "knflow-g-wrap")
    source = source_of(path)
    ensure_topics(kafka.bootstrap, [broker_topic], partitions=2)
    producer = Producer(rocketmq.endpoints, "knflow-t-wrap")
    ids = [producer.send(b'{"coins": %d}' % n, tag="gift", keys=(f"room-{n}",), properties={"Room-Id": f"r{n}"})
           for n in range(3)]
    producer.send(b'{"likes": 1}', properties={"CE_specversion": "1.0", "CE_id": "ce-1", "CE_source": "/platform",
                                               "CE_type": "com.live.like", "CE_contenttype": "application/json",
                                               "CE_room": "r9"})
    producer.close()
    bridge, thread = start_bridge(source, rocketmq, kafka.bootstrap)
    try:
        events = read_events(kafka.bootstrap, broker_topic, lambda evs: len(evs) >= 4)
    finally:
        stop_bridge(bridge, thread)
    docs = {e.get_id(): event_to_dict(e) for e in events}
    assert len(docs) == 4
    for n, message_id in enumerate(ids):
        doc = docs[message_id]
        assert doc["type"] == "dev.knative.rocketmq.event"
        assert doc["source"] == f"/apis/v1/namespaces/{source.namespace}/rocketmqsources/platform#knflow-t-wrap"
        assert (doc["rocketmqtag"], doc["rocketmqkeys"], doc["rocketmqpropertyroomid"]) == ("gift", f"room-{n}", f"r{n}")
        assert doc["data_base64"]  # the body, unchanged
    passthrough = docs["ce-1"]
    assert passthrough == {"specversion": "1.0", "id": "ce-1", "source": "/platform", "type": "com.live.like",
                           "datacontenttype": "application/json", "room": "r9", "data": {"likes": 1}}
    assert bridge.stats.acked == bridge.stats.written >= 4 and bridge.stats.failed_writes == 0


def test_tag_selector_filters(tmp_path, rocketmq, kafka):
    path, broker_topic = write_manifests(tmp_path, "knflow-t-tags", "knflow-g-tags", selector="gift || like")
    producer = Producer(rocketmq.endpoints, "knflow-t-tags")
    for n, tag in enumerate(["gift", "join", "like", "join", "comment", "gift"]):
        producer.send(f"{tag}-{n}".encode(), tag=tag)
    bridge, thread = start_bridge(source_of(path), rocketmq, kafka.bootstrap)
    try:
        events = read_events(kafka.bootstrap, broker_topic, lambda evs: len(evs) >= 3)
        producer.send(b"gift-last", tag="gift")   # sent after the others: once it is there, they all were
        events = read_events(kafka.bootstrap, broker_topic, lambda evs: b"gift-last" in bodies(evs))
    finally:
        stop_bridge(bridge, thread)
        producer.close()
    assert sorted(bodies(events)) == [b"gift-0", b"gift-5", b"gift-last", b"like-2"]


def test_unacked_message_is_redelivered(tmp_path, rocketmq, kafka):
    path, broker_topic = write_manifests(tmp_path, "knflow-t-redeliver", "knflow-g-redeliver")
    source = source_of(path)
    ensure_topics(kafka.bootstrap, [broker_topic], partitions=1)
    producer = Producer(rocketmq.endpoints, "knflow-t-redeliver")
    message_id = producer.send(b"must-not-be-lost", tag="gift")
    producer.close()
    # Kafka unreachable: the write fails, so the bridge must not ack
    dead = f"127.0.0.1:{free_port()}"
    # (a write that takes longer than half the invisible duration extends the invisibility)
    broken, thread = start_bridge(source, rocketmq, dead, kafka_timeout_s=8, invisible_duration=10)
    deadline = time.monotonic() + 60
    while broken.stats.failed_writes < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    stop_bridge(broken, thread)
    assert broken.stats.received >= 1 and broken.stats.failed_writes >= 1 and broken.stats.acked == 0
    assert broken.stats.extended >= 1
    # RocketMQ hands it out again once its invisibility ends; a working bridge writes it
    good, thread = start_bridge(source, rocketmq, kafka.bootstrap, invisible_duration=10)
    try:
        events = read_events(kafka.bootstrap, broker_topic, lambda evs: any(e.get_id() == message_id for e in evs))
    finally:
        stop_bridge(good, thread)
    assert bodies(events) == [b"must-not-be-lost"] and good.stats.acked == 1


def test_bridge_killed_midstream_loses_nothing(tmp_path, rocketmq, kafka):
    path, broker_topic = write_manifests(tmp_path, "knflow-t-kill", "knflow-g-kill")
    ensure_topics(kafka.bootstrap, [broker_topic], partitions=2)
    command = [sys.executable, "-m", "pipelines.cli", "rocketmq-bridge", str(path), "--endpoints", rocketmq.endpoints,
               "--bootstrap-servers", kafka.bootstrap, "--batch", "8", "--invisible-duration", "10"]
    env = dict(os.environ, PYTHONPATH=str(REPO))

    def launch() -> subprocess.Popen:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)

    total = 300
    sent: list[bytes] = []
    producer = Producer(rocketmq.endpoints, "knflow-t-kill")

    def produce() -> None:
        for n in range(total):
            body = f"m-{n:04d}".encode()
            producer.send(body, tag="gift")
            sent.append(body)
            if n % 10 == 9:
                time.sleep(0.05)

    bridge = launch()
    sender = threading.Thread(target=produce)
    sender.start()
    try:
        read_events(kafka.bootstrap, broker_topic, lambda evs: len(evs) >= 60)
        os.killpg(bridge.pid, signal.SIGKILL)          # mid-stream, without warning
        bridge.wait(30)
        sender.join(120)
        assert len(sent) == total
        bridge = launch()
        events = read_events(kafka.bootstrap, broker_topic, lambda evs: set(sent) <= set(bodies(evs)), timeout=300)
    finally:
        if bridge.poll() is None:
            bridge.send_signal(signal.SIGTERM)
            bridge.wait(60)
        producer.close()
    written = bodies(events)
    assert set(sent) <= set(written)
    print(f"\nkill test: {total} messages sent, {len(written)} records written, "
          f"{len(written) - len(set(written))} duplicates (at least once)")


def test_unknown_group_fails_with_a_clear_error(tmp_path, rocketmq, kafka):
    path, _ = write_manifests(tmp_path, "knflow-t-wrap", "knflow-g-never-created")
    bridge = RocketMQBridge(source_of(path), endpoints=rocketmq.endpoints, bootstrap_servers=kafka.bootstrap,
                            startup_timeout_s=15)
    with pytest.raises(BridgeError, match="do topic 'knflow-t-wrap' and group 'knflow-g-never-created' exist"):
        bridge.run()


def test_the_bridge_logs_in_to_the_brokers_kafka_with_the_configmaps_secret(tmp_path, rocketmq, kafka):
    """``knflow rocketmq-bridge`` given no --bootstrap-servers: it writes through Kafka's SASL
    listener named by the broker's ConfigMap, logging in with the ConfigMap's Secret (a
    plaintext client there is refused), and creates the broker's topic the same way."""
    namespace = f"ns{uuid.uuid4().hex[:8]}"
    path = tmp_path / "secured.yaml"
    path.write_text(configured_broker_yaml(namespace, {"bootstrap.servers": kafka.sasl_bootstrap},
                                           kafka.broker_secret()) + f"""---
apiVersion: sources.knative.dev/v1alpha1
kind: RocketMQSource
metadata: {{name: platform, namespace: {namespace}}}
spec:
  topic: knflow-t-sasl
  namesrvAddr: 127.0.0.1:9876
  groupName: knflow-g-sasl
  initialOffset: earliest
  sink: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: live}}
""")
    producer = Producer(rocketmq.endpoints, "knflow-t-sasl")
    ids = [producer.send(b'{"coins": %d}' % n, tag="gift") for n in range(3)]
    producer.close()
    log_path = tmp_path / "bridge.log"
    with open(log_path, "wb") as log:
        bridge = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "rocketmq-bridge", str(path),
                                   "--endpoints", rocketmq.endpoints], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        # read through the plaintext listener of the same Kafka: what the bridge wrote via SASL
        events = read_events(kafka.bootstrap, f"knative-broker-{namespace}-live",
                             lambda evs: {e.get_id() for e in evs} >= set(ids) or bridge.poll() is not None)
    finally:
        stopped = stop(bridge, signal.SIGINT)
    output = log_path.read_text()
    assert {e.get_id() for e in events} >= set(ids), output
    assert stopped and bridge.returncode == 0, output  # SIGINT stops it cleanly
    assert {e.get_attributes()["rocketmqtag"] for e in events} == {"gift"}
