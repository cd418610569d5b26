"""The ingress through Kafka faults, with a REAL Kafka of the test's own (free ports, own
state dir), so the session broker is never disturbed: a restart under load, and a Kafka
that is down when the ingress starts. No timing assertions: conditions are waited for
with generous limits."""
from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest
import requests

from eventing.ingress import Ingress, KafkaWriter
from eventing.kafka_topics import ensure_topics
from tests.conftest import KafkaService, free_port_pair
from tests.eventing.test_ingress import BINARY, AppThread, consume
from tests.plans import broker_yaml, plan_from_yaml

pytestmark = pytest.mark.kafka


@pytest.fixture
def own_kafka(kafka):  # `kafka`: skips with the session's reason when Kafka cannot run here
    port = free_port_pair()
    service = KafkaService(f"127.0.0.1:{port}", port, Path(tempfile.mkdtemp(prefix="knflow-kafka-own-")))
    try:
        yield service
    finally:
        service.stop()
        shutil.rmtree(service.state_dir, ignore_errors=True)


def wait_until(condition, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s: {what}")


def post(url: str, event_id: str) -> requests.Response:
    return requests.post(url, headers=dict(BINARY, **{"ce-id": event_id}), data=b'{"n": 1}', timeout=60)


class Poster:
    """Posts events one after another from a thread, recording every answer."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers: list[tuple[str, int, str | None, float]] = []  # id, status, Retry-After, seconds taken
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            event_id = f"load-{n}"
            started = time.monotonic()
            try:
                response = post(self.url, event_id)
            except requests.RequestException:
                self.answers.append((event_id, 0, None, time.monotonic() - started))
                continue
            self.answers.append((event_id, response.status_code, response.headers.get("Retry-After"),
                                 time.monotonic() - started))
            time.sleep(0.02)

    def statuses_since(self, index: int) -> list[int]:
        return [a[1] for a in self.answers[index:]]


def test_kafka_restart_under_load_recovers_and_loses_nothing(own_kafka):
    own_kafka.start()
    namespace = own_kafka.unique_topic("ns")
    plan = plan_from_yaml(broker_yaml("live", namespace))
    topic = plan.brokers[0].topic
    ensure_topics(own_kafka.bootstrap, [topic], partitions=2)
    writer = KafkaWriter(own_kafka.bootstrap, timeout_s=3.0)
    with AppThread(Ingress(plan, writer).app()) as base:
        url = f"{base}/{namespace}/live"
        wait_until(lambda: requests.get(base + "/readyz", timeout=10).status_code == 200, 60, "ready at start")
        poster = Poster(url)
        poster.thread.start()
        try:
            wait_until(lambda: poster.statuses_since(0).count(202) >= 20, 60, "20 events accepted before the stop")
            own_kafka.stop()
            stopped_at = len(poster.answers)
            # While Kafka is down: 503 with Retry-After, and /readyz not ready.
            wait_until(lambda: poster.statuses_since(stopped_at).count(503) >= 10, 60, "503s while Kafka is down")
            down = [a for a in poster.answers[stopped_at:] if a[1] == 503]
            assert all(a[2] for a in down), "every 503 carries Retry-After"
            readyz = requests.get(base + "/readyz", timeout=30)
            assert readyz.status_code == 503 and "not ready" in readyz.text, readyz.text
            assert readyz.headers.get("Retry-After")
            # Refused at once, not after waiting for Kafka: most 503s while down took well
            # under the producer's timeout (3 s); a lenient bound, not a speed test.
            quick = [a for a in down if a[3] < 2.5]
            assert len(quick) >= len(down) // 2, down
            own_kafka.start()
            restarted_at = len(poster.answers)
            # Back by itself: 202 again, and ready.
            wait_until(lambda: poster.statuses_since(restarted_at).count(202) >= 20, 120, "202 again after the restart")
            wait_until(lambda: requests.get(base + "/readyz", timeout=10).status_code == 200, 60, "ready again")
        finally:
            poster.stop.set()
            poster.thread.join(60)
    writer.close()
    answers = poster.answers
    assert {a[1] for a in answers} <= {202, 503}, {a[1] for a in answers}
    accepted = [a[0] for a in answers if a[1] == 202]
    # No event answered 202 is lost: every one is in the topic.
    records = consume(own_kafka.bootstrap, topic, len(accepted), timeout=120, ids=[i.encode() for i in accepted])
    stored = {dict(r.headers).get("ce_id") for r in records}
    missing = [i for i in accepted if i.encode() not in stored]
    assert not missing, f"{len(missing)} events answered 202 are not in Kafka: {missing[:10]}"


def test_kafka_down_at_start_then_up(own_kafka):
    """The ingress starts before Kafka: 503 + Retry-After and not ready; once Kafka runs,
    it creates its topic (on_connect) and answers 202 by itself."""
    namespace = own_kafka.unique_topic("ns")
    plan = plan_from_yaml(broker_yaml("live", namespace))
    topic = plan.brokers[0].topic
    created = []

    def on_connect() -> None:
        created.extend(ensure_topics(own_kafka.bootstrap, [topic], partitions=2, timeout_s=5.0))

    writer = KafkaWriter(own_kafka.bootstrap, timeout_s=2.0, on_connect=on_connect)
    with AppThread(Ingress(plan, writer).app()) as base:
        url = f"{base}/{namespace}/live"
        [response] = wait_until(lambda: (r := post(url, "early")).status_code == 503 and [r], 60, "503 while Kafka is down")
        assert response.headers.get("Retry-After") and "not stored" in response.text, response.text
        assert requests.get(base + "/readyz", timeout=30).status_code == 503
        own_kafka.start()
        wait_until(lambda: post(url, "late").status_code == 202, 120, "202 once Kafka runs")
        assert requests.get(base + "/readyz", timeout=30).status_code == 200
    writer.close()
    # created by the ingress with its partitions, never auto-created by the broker (one
    # partition) when librdkafka asks about the topic of a record taken at start
    assert created == [topic]
    from kafka import KafkaConsumer

    reader = KafkaConsumer(bootstrap_servers=own_kafka.bootstrap)
    try:
        assert reader.partitions_for_topic(topic) == {0, 1}
    finally:
        reader.close()
    [record] = [r for r in consume(own_kafka.bootstrap, topic, 1, timeout=60, ids=[b"late"])
                if dict(r.headers).get("ce_id") == b"late"]
    assert record.key == b"room-7"


def test_full_producer_queue_is_503_not_a_wait(kafka):
    """A producer whose queue holds one record: while it waits for Kafka, the next request
    is refused with 503 + Retry-After instead of being buffered."""
    namespace = kafka.unique_topic("ns")
    plan = plan_from_yaml(broker_yaml("live", namespace))
    topic = plan.brokers[0].topic
    ensure_topics(kafka.bootstrap, [topic], partitions=1)
    # linger: the first record waits in the queue for a while, holding its one place
    writer = KafkaWriter(kafka.bootstrap, max_queued_messages=1, linger_ms=3000, timeout_s=10.0)
    with AppThread(Ingress(plan, writer).app()) as base:
        url = f"{base}/{namespace}/live"
        wait_until(lambda: writer.status()[0], 60, "writer connected")
        first: list[requests.Response] = []
        sender = threading.Thread(target=lambda: first.append(post(url, "q-1")))
        sender.start()
        wait_until(lambda: len(writer._producer) >= 1, 30, "first record queued")
        second = post(url, "q-2")
        assert second.status_code == 503 and second.headers.get("Retry-After"), second.text
        assert "queue is full" in second.text
        assert requests.get(base + "/readyz", timeout=30).status_code == 503
        sender.join(60)
        assert first[0].status_code == 202, first[0].text
        wait_until(lambda: requests.get(base + "/readyz", timeout=10).status_code == 200, 30, "ready when drained")
    writer.close()
